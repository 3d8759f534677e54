package sockproxy

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtfs/qtfs/pkg/internal/metricsreg"
)

// Results of opening a connection, the values of the result label.
const (
	resultOK        = "ok"        // connected to the host socket
	resultRefused   = "refused"   // not on the allow-list, or an invalid request
	resultNotFound  = "not_found" // no socket at the path
	resultFailed    = "failed"    // the connect failed otherwise (refused, timed out)
	resultExhausted = "exhausted" // too many connections
	resultError     = "error"     // the stream failed before an answer (DPU side)
)

// Reasons a connection was cut, the values of the reason label.
const (
	cutFDPassing = "fd_passing"
	cutIO        = "io"
)

// metrics are one side's collectors; they exist without a Registerer.
type metrics struct {
	conns *prometheus.CounterVec
	cuts  *prometheus.CounterVec
	bytes *prometheus.CounterVec
}

// newMetrics builds the collectors named prefix+"_…" and registers them
// with a gauge of the active connections on reg (when not nil).
func newMetrics(prefix, side string, reg prometheus.Registerer, active func() float64) (*metrics, error) {
	m := &metrics{
		conns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_connections_total",
			Help: "Proxied unix socket connections " + side + ", by result: ok, refused (not allowed), not_found, failed (connect error), exhausted (too many), error (the stream failed).",
		}, []string{"result"}),
		cuts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_cuts_total",
			Help: "Proxied connections " + side + " closed on an error, by reason: fd_passing (a peer passed file descriptors), io (a read or write failed).",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_bytes_total",
			Help: "Bytes carried over proxied connections " + side + ", by direction: to_host, from_host.",
		}, []string{"direction"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := metricsreg.Register(reg, "sockproxy", m.conns, m.cuts, m.bytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: prefix + "_active",
			Help: "Proxied connections open now " + side + ".",
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
