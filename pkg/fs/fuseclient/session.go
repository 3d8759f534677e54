package fuseclient

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// ProtocolVersion is the qtfs.v1 protocol version this client speaks.
const ProtocolVersion = 1

// maxChunk is the most data one Read or Write RPC carries (the mount's
// max_write).
const maxChunk = 1 << 20

// minChunk is the least a server must accept for a useful session.
const minChunk = 4096

// messageMargin is left free in a message for everything that is not file
// data (field tags, handle, offset).
const messageMargin = 4096

// handshakeTimeout bounds NewSession when its ctx has no deadline.
const handshakeTimeout = 60 * time.Second

// slowOp is the duration past which an RPC is logged at warn.
const slowOp = time.Second

// Session is one handshaken connection to a qtfs-server. Mounts made on a
// Session share it; it lives as long as the gRPC connection it was built
// on, which the caller owns and closes.
type Session struct {
	client  qtfsv1.FileSystemClient
	log     *zap.Logger
	server  string
	version uint32
	exports []*qtfsv1.ExportInfo
	// features the server offers.
	features map[qtfsv1.Feature]bool
	// chunk is the most file data one RPC carries.
	chunk   int
	metrics *metrics

	mu sync.Mutex
	// mounts are the mount ids made on this session, oldest first (Ping
	// uses the first).
	mounts []uint64
}

// NewSession opens a session on cc with the Handshake RPC. clientName
// ("qtfs-client 1.2") goes into the server's logs. When ctx has no
// deadline, the handshake gets one of a minute.
func NewSession(ctx context.Context, cc grpc.ClientConnInterface, clientName string, log *zap.Logger) (*Session, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	client := qtfsv1.NewFileSystemClient(cc)
	resp, err := client.Handshake(ctx, &qtfsv1.HandshakeRequest{
		ProtocolVersion: ProtocolVersion,
		Client:          clientName,
		Features: []qtfsv1.Feature{
			qtfsv1.Feature_FEATURE_OPEN_READ_INLINE,
			qtfsv1.Feature_FEATURE_READDIR_PLUS,
			qtfsv1.Feature_FEATURE_LOCKS,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("qtfs-client: handshake: %w", err)
	}
	if resp.GetProtocolVersion() != ProtocolVersion {
		return nil, fmt.Errorf("qtfs-client: handshake: server %q speaks protocol version %d, this client %d",
			resp.GetServer(), resp.GetProtocolVersion(), ProtocolVersion)
	}
	chunk := maxChunk
	if m := int(resp.GetMaxMessageBytes()); m > 0 {
		if m-messageMargin < minChunk {
			return nil, fmt.Errorf("qtfs-client: handshake: server %q accepts messages of %d bytes, too small",
				resp.GetServer(), m)
		}
		chunk = min(chunk, m-messageMargin)
	}
	s := &Session{
		client:   client,
		log:      log,
		server:   resp.GetServer(),
		version:  resp.GetProtocolVersion(),
		features: map[qtfsv1.Feature]bool{},
		chunk:    chunk,
		metrics:  newMetrics(),
	}
	for _, f := range resp.GetFeatures() {
		s.features[f] = true
	}
	for _, e := range resp.GetExports() {
		s.exports = append(s.exports, proto.Clone(e).(*qtfsv1.ExportInfo))
	}
	log.Info("qtfs session open", zap.String("server", s.server), zap.Uint32("protocol", s.version),
		zap.Int("exports", len(s.exports)), zap.Int("chunk", s.chunk))
	return s, nil
}

// Exports returns the exports the server lets this peer mount.
func (s *Session) Exports() []*qtfsv1.ExportInfo {
	out := make([]*qtfsv1.ExportInfo, len(s.exports))
	for i, e := range s.exports {
		out[i] = proto.Clone(e).(*qtfsv1.ExportInfo)
	}
	return out
}

// ServerName returns the server's name and version from the handshake.
func (s *Session) ServerName() string { return s.server }

// Ping measures one round trip: a Getattr of the oldest mount's root, or,
// before any mount, a Getattr the server answers with an errno. Only a
// transport or session failure is an error. Without a deadline in ctx it
// gives up after a minute.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	s.mu.Lock()
	var mount uint64
	if len(s.mounts) > 0 {
		mount = s.mounts[0]
	}
	s.mu.Unlock()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	start := time.Now()
	_, err := s.client.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: mount, Caller: &qtfsv1.Caller{}})
	if err != nil {
		return 0, fmt.Errorf("qtfs-client: ping %s: %w", s.server, err)
	}
	return time.Since(start), nil
}

// hasFeature reports whether the server offered f.
func (s *Session) hasFeature(f qtfsv1.Feature) bool { return s.features[f] }

func (s *Session) addMount(id uint64) {
	s.mu.Lock()
	s.mounts = append(s.mounts, id)
	s.mu.Unlock()
}

func (s *Session) removeMount(id uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.mounts {
		if m == id {
			s.mounts = append(s.mounts[:i], s.mounts[i+1:]...)
			return
		}
	}
}

// rpcErrno turns the error of a failed RPC (a gRPC status, never a
// filesystem error) into the errno the caller sees. It is the one place
// that decides this, so that a reconnecting layer can change it.
func (s *Session) rpcErrno(op string, err error) syscall.Errno {
	st, _ := status.FromError(err)
	code := st.Code()
	s.metrics.rpcErrors.WithLabelValues(op, code.String()).Inc()
	switch {
	case code == codes.Canceled || errors.Is(err, context.Canceled):
		// Only a lock wait passes the caller's interruption on.
		return syscall.EINTR
	case code == codes.FailedPrecondition:
		s.log.Error("qtfs session is gone: the server no longer knows this connection",
			zap.String("op", op), zap.String("server", s.server), zap.Error(err))
	default:
		s.log.Warn("qtfs rpc failed", zap.String("op", op), zap.String("server", s.server),
			zap.Stringer("code", code), zap.Error(err))
	}
	return syscall.EIO
}

// maxErrno is the largest errno accepted from the wire (MAX_ERRNO).
const maxErrno = 4095

// wireErrno validates the errno field of a reply.
func (s *Session) wireErrno(op string, e int32) syscall.Errno {
	switch {
	case e == 0:
		return 0
	case e < 0 || e > maxErrno:
		s.log.Warn("qtfs reply with an invalid errno", zap.String("op", op), zap.Int32("errno", e))
		return syscall.EIO
	case syscall.Errno(e) == syscall.ENOSYS:
		// ENOSYS makes the kernel disable the operation for good.
		return syscall.EOPNOTSUPP
	}
	return syscall.Errno(e)
}

// errnoReply is a reply with an errno field; all FileSystem replies are.
type errnoReply interface {
	GetErrno() int32
}

// call runs one RPC with its own deadline (not the FUSE request's
// context, see the package documentation) and returns the reply and the
// errno of the reply or of the transport failure. The reply is meaningful
// only when the errno is 0.
func call[Req any, Resp errnoReply](s *Session, timeout time.Duration, op string,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return callCtx(ctx, s, op, fn, req)
}

// callCtx is call under a context the caller chose.
func callCtx[Req any, Resp errnoReply](ctx context.Context, s *Session, op string,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	start := time.Now()
	resp, err := fn(ctx, req)
	var e syscall.Errno
	if err != nil {
		e = s.rpcErrno(op, err)
	} else {
		e = s.wireErrno(op, resp.GetErrno())
	}
	s.observe(op, start, e)
	return resp, e
}

// observe counts one operation and logs it at debug, or at warn when slow.
func (s *Session) observe(op string, start time.Time, e syscall.Errno) {
	d := time.Since(start)
	s.metrics.ops.WithLabelValues(op, errnoLabel(e)).Inc()
	s.metrics.latency.WithLabelValues(op).Observe(d.Seconds())
	if d > slowOp {
		s.log.Warn("slow qtfs op", zap.String("op", op), zap.Duration("took", d), zap.String("errno", errnoLabel(e)))
		return
	}
	if ce := s.log.Check(zap.DebugLevel, "qtfs op"); ce != nil {
		ce.Write(zap.String("op", op), zap.Duration("took", d), zap.String("errno", errnoLabel(e)))
	}
}

// errnoLabel names an errno for a metric label or a log line.
func errnoLabel(e syscall.Errno) string {
	if e == 0 {
		return "OK"
	}
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return strconv.Itoa(int(e))
}

// metrics are the client's Prometheus collectors. They always count; they
// are exported only once RegisterMetrics is called.
type metrics struct {
	ops          *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	rpcErrors    *prometheus.CounterVec
	readBytes    prometheus.Counter
	writtenBytes prometheus.Counter
	openHandles  prometheus.Gauge
}

func newMetrics() *metrics {
	return &metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_client_ops_total",
			Help: "Filesystem operations sent to the server, by operation and result errno.",
		}, []string{"op", "errno"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "qtfs_client_op_seconds",
			Help:    "Round-trip time of filesystem operations, by operation.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10),
		}, []string{"op"}),
		rpcErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_client_rpc_errors_total",
			Help: "Operations that failed in transport (gRPC status), by operation and status code.",
		}, []string{"op", "code"}),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtfs_client_read_bytes_total",
			Help: "File data bytes read from the server.",
		}),
		writtenBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtfs_client_written_bytes_total",
			Help: "File data bytes the server acknowledged as written.",
		}),
		openHandles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qtfs_client_open_handles",
			Help: "File and directory handles open on the server.",
		}),
	}
}

// RegisterMetrics exports the session's metrics on reg.
func (s *Session) RegisterMetrics(reg prometheus.Registerer) error {
	m := s.metrics
	for _, c := range []prometheus.Collector{m.ops, m.latency, m.rpcErrors, m.readBytes, m.writtenBytes, m.openHandles} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("qtfs-client: metrics: %w", err)
		}
	}
	return nil
}
