package hostexec

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/qtfs/qtfs/pkg/internal/metricsreg"
)

// Results of a run, the values of qtfs_exec_runs_total's label.
const (
	resultOK        = "ok"        // exited with status 0
	resultNonZero   = "nonzero"   // exited with another status
	resultSignaled  = "signaled"  // died of a signal it was not sent by us
	resultKilled    = "killed"    // killed because the stream ended first
	resultRefused   = "refused"   // not on the allow-list, or an invalid request
	resultNotFound  = "not_found" // no such binary on the host
	resultFailed    = "failed"    // could not be started (cwd, files, exec)
	resultExhausted = "exhausted" // too many processes running
)

// metrics are the service's collectors; they exist without a Registerer.
type metrics struct {
	runs     *prometheus.CounterVec
	duration prometheus.Histogram
	refusals *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, running func() float64) (*metrics, error) {
	m := &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_exec_runs_total",
			Help: "rexec runs by result: ok, nonzero, signaled, killed (the client went away first), refused, not_found, failed (could not start), exhausted.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "qtfs_exec_duration_seconds",
			Help:    "Time from a rexec run's start request to the process's exit.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_exec_refusals_total",
			Help: "rexec requests refused, by reason: not_allowed (not on the allow-list), invalid (malformed request), exhausted (too many runs).",
		}, []string{"reason"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_exec_bytes_total",
			Help: "Bytes carried for rexec processes, by stream: stdin, stdout, stderr.",
		}, []string{"stream"}),
	}
	if reg == nil {
		return m, nil
	}
	if err := metricsreg.Register(reg, "hostexec", m.runs, m.duration, m.refusals, m.bytes,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "qtfs_exec_running",
			Help: "rexec processes running now.",
		}, running),
	); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) run(result string, d time.Duration) {
	m.runs.WithLabelValues(result).Inc()
	if d > 0 {
		m.duration.Observe(d.Seconds())
	}
}

func (m *metrics) refusal(reason string) { m.refusals.WithLabelValues(reason).Inc() }

func (m *metrics) moved(stream string, n int) {
	if n > 0 {
		m.bytes.WithLabelValues(stream).Add(float64(n))
	}
}
