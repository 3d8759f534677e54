package hostfs

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtfs/qtfs/pkg/internal/metricsreg"
)

// metrics are the server's Prometheus collectors. They exist even when no
// Registerer was given (then nobody gathers them).
type metrics struct {
	ops      *prometheus.CounterVec
	duration *prometheus.HistogramVec
	bytes    *prometheus.CounterVec
	refusals *prometheus.CounterVec
	// created counts the directories Mount made with create.
	created prometheus.Counter
	// hostMounts counts MountOnHost and UnmountOnHost requests.
	hostMounts *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) (*metrics, error) {
	m := &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_server_ops_total",
			Help: "FileSystem operations served, by operation and result (OK, an errno name, or grpc_<code>).",
		}, []string{"op", "errno"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "qtfs_server_op_duration_seconds",
			Help:    "Time to serve one FileSystem operation, by operation.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}, []string{"op"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_server_bytes_total",
			Help: "File data moved by Read and Write (and Open's inline read), by direction.",
		}, []string{"direction"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_server_refusals_total",
			Help: "Requests refused by policy or validation (read-only export, bad path or name, symlink in a path, limits), by reason.",
		}, []string{"reason"}),
		created: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtfs_server_mount_created_dirs_total",
			Help: "Host directories made by Mount requests with create (the missing part of the path, as mkdir -p).",
		}),
		hostMounts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_server_host_mounts_total",
			Help: "Host mounts made, changed and unmounted for the DPU (MountOnHost, UnmountOnHost), by operation (mount, bind, remount, propagation, move, unmount), type (overlay, tmpfs, bind, other) and result (OK or an errno name).",
		}, []string{"op", "type", "result"}),
	}
	if reg == nil {
		return m, nil
	}
	cs := []prometheus.Collector{
		m.ops, m.duration, m.bytes, m.refusals, m.created, m.hostMounts,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qtfs_server_open_handles",
			Help: "File and directory handles open across all sessions.",
		}, func() float64 { return float64(s.OpenHandles()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qtfs_server_sessions",
			Help: "Live FileSystem sessions (connections that completed Handshake).",
		}, func() float64 { return float64(s.Sessions()) }),
	}
	if err := metricsreg.Register(reg, "hostfs", cs...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) op(op, result string, d time.Duration) {
	m.ops.WithLabelValues(op, result).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}

func (m *metrics) refusal(reason string) { m.refusals.WithLabelValues(reason).Inc() }

func (m *metrics) mountCreated(n int) { m.created.Add(float64(n)) }

func (m *metrics) hostMount(op, typ, result string) {
	m.hostMounts.WithLabelValues(op, typ, result).Inc()
}

func (m *metrics) read(n int) {
	if n > 0 {
		m.bytes.WithLabelValues("read").Add(float64(n))
	}
}

func (m *metrics) wrote(n int) {
	if n > 0 {
		m.bytes.WithLabelValues("write").Add(float64(n))
	}
}
