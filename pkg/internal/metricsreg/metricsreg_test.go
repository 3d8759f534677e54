package metricsreg

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestRegisterTwice(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := func() prometheus.Collector {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "qtfs_test_total", Help: "A test counter."})
	}
	if err := Register(reg, "fifo", c()); err != nil {
		t.Fatal(err)
	}
	err := Register(reg, "fifo", c())
	if err == nil || !strings.Contains(err.Error(), "fifo: metrics: already registered (one fifo per Registerer)") {
		t.Fatalf("second registration: %v", err)
	}
}
