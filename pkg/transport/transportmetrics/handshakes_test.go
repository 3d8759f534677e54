package transportmetrics_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtfs/qtfs/pkg/transport"
	"github.com/qtfs/qtfs/pkg/transport/transportmetrics"
)

var _ transport.HandshakeCounter = (*transportmetrics.Handshakes)(nil)

// TestHandshakesShared: two counters on one registry (two credentials of
// one server) count into one metric.
func TestHandshakesShared(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := transportmetrics.NewHandshakes(reg)
	if err != nil {
		t.Fatal(err)
	}
	b, err := transportmetrics.NewHandshakes(reg)
	if err != nil {
		t.Fatalf("second counter on one registry: %v", err)
	}
	a.CountHandshake("unix", "ok")
	b.CountHandshake("unix", "ok")
	b.CountHandshake("tcp", "refused")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "qtfs_transport_handshakes_total" || mf.GetHelp() == "" {
			t.Fatalf("metric %q, help %q", mf.GetName(), mf.GetHelp())
		}
		for _, m := range mf.GetMetric() {
			key := ""
			for _, l := range m.GetLabel() {
				key += l.GetName() + "=" + l.GetValue() + " "
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	if got["result=ok transport=unix "] != 2 || got["result=refused transport=tcp "] != 1 || len(got) != 2 {
		t.Fatalf("counted %v", got)
	}
}
