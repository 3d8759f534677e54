package fifo

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtfs/qtfs/pkg/internal/metricsreg"
)

// Results of a bridge, the values of the result label.
const (
	resultOK      = "ok"      // carried to the end (EOF)
	resultRefused = "refused" // the path is not exported, not a FIFO, or invalid
	resultCut     = "cut"     // the other side or the stream went away first
	resultFailed  = "failed"  // a host or DPU operation failed
)

// metrics are one side's collectors; they exist without a Registerer.
type metrics struct {
	bridges *prometheus.CounterVec
	bytes   *prometheus.CounterVec
}

func newMetrics(prefix, side string, reg prometheus.Registerer, active func() float64) (*metrics, error) {
	m := &metrics{
		bridges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_bridges_total",
			Help: "FIFO bridges ended " + side + ", by direction (to_dpu, from_dpu) and result: ok (EOF carried), refused, cut (a side went away first), failed.",
		}, []string{"direction", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_bytes_total",
			Help: "Bytes carried through FIFO bridges " + side + ", by direction: to_dpu, from_dpu.",
		}, []string{"direction"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := metricsreg.Register(reg, "fifo", m.bridges, m.bytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: prefix + "_active",
			Help: "FIFO bridges open now " + side + ".",
		}, active),
	); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) moved(direction string, n int) {
	if n > 0 {
		m.bytes.WithLabelValues(direction).Add(float64(n))
	}
}
