package transportmetrics

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Handshakes is a transport.HandshakeCounter on a Prometheus registry.
type Handshakes struct {
	total *prometheus.CounterVec
}

// NewHandshakes registers the handshake counter on reg; a second one on
// the same reg shares the first's counter (one server, several
// credentials).
func NewHandshakes(reg prometheus.Registerer) (*Handshakes, error) {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "qtfs_transport_handshakes_total",
		Help: "Server-side connection handshakes by transport (tcp, unix, vsock, other) and result (ok, refused, aborted: the peer left first).",
	}, []string{"transport", "result"})
	if err := reg.Register(cv); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("transport: register metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.CounterVec)
		if !ok {
			return nil, fmt.Errorf("transport: register metrics: %w", err)
		}
		cv = existing
	}
	return &Handshakes{total: cv}, nil
}

// CountHandshake implements transport.HandshakeCounter.
func (h *Handshakes) CountHandshake(transport, result string) {
	h.total.WithLabelValues(transport, result).Inc()
}
