package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/callstream"
	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// ProtocolVersion is the qtfs.v1 protocol version this client speaks.
const ProtocolVersion = 1

// MaxChunk is the most data one Read or Write RPC carries (a FUSE mount's
// max_write); a server with a smaller message limit makes a session's
// chunk smaller (Session.Chunk).
const MaxChunk = 1 << 20

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
// on, which the caller owns and closes (after Session.Close).
//
// A Session survives the loss of its server session (a server restart)
// and of the connection (a cut or silent link): it reconnects and
// handshakes again, and maps the mount and handle ids its callers hold to
// the new server session's, mounting and opening files again on first
// use. Calls wait for that at most Options.ReconnectTimeout.
type Session struct {
	client qtfsv1.FileSystemClient
	// dataCodec carries the parts of large reads and writes
	// (CallOptions.Data); dataOpts is the call option that selects it.
	dataCodec *dataCodec
	dataOpts  []grpc.CallOption
	// calls carries client's calls over one stream when the server serves
	// it (FEATURE_CALL_STREAM); nil otherwise.
	calls *callstream.Client
	// rc keeps the session alive across connection failures; nil without
	// reconnecting (Options.ReconnectTimeout negative, NewDirect).
	rc      *reconn
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

// Options configure a Session.
type Options struct {
	// ReconnectTimeout bounds how long a call waits for a lost server
	// session or connection to come back: past it, calls that were in
	// flight fail with EIO and new calls with ENOTCONN, at once, until it
	// is back. DefaultReconnectTimeout when zero; negative turns
	// reconnecting off (every transport failure is EIO).
	ReconnectTimeout time.Duration

	// DialChannel, when set, connects to the server for a call channel
	// (transport.DialChannel): small calls then go on a connection of
	// their own rather than on a stream of the gRPC connection, when the
	// server offers it (FEATURE_CALL_CHANNEL).
	DialChannel func(ctx context.Context) (net.Conn, error)

	// Timing paces liveness checks and reconnect attempts; tests shorten
	// it. nil means DefaultTiming.
	Timing *Timing
}

// New opens a session on cc with the Handshake RPC. clientName
// ("qtfs-client 1.2") goes into the server's logs. When ctx has no
// deadline, the handshake gets one of a minute. Close the Session before
// the connection.
func New(ctx context.Context, cc grpc.ClientConnInterface, clientName string, log *zap.Logger, opts Options) (*Session, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, handshakeTimeout)
		defer cancel()
	}
	client := qtfsv1.NewFileSystemClient(cc)
	hello := &qtfsv1.HandshakeRequest{
		ProtocolVersion: ProtocolVersion,
		Client:          clientName,
		Features: []qtfsv1.Feature{
			qtfsv1.Feature_FEATURE_OPEN_READ_INLINE,
			qtfsv1.Feature_FEATURE_READDIR_PLUS,
			qtfsv1.Feature_FEATURE_LOCKS,
		},
	}
	resp, err := client.Handshake(ctx, hello)
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	if resp.GetProtocolVersion() != ProtocolVersion {
		return nil, fmt.Errorf("handshake: server %q speaks protocol version %d, this client %d",
			resp.GetServer(), resp.GetProtocolVersion(), ProtocolVersion)
	}
	chunk := MaxChunk
	if m := int(resp.GetMaxMessageBytes()); m > 0 {
		if m-messageMargin < minChunk {
			return nil, fmt.Errorf("handshake: server %q accepts messages of %d bytes, too small",
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
	s.setDataCodec()
	for _, f := range resp.GetFeatures() {
		s.features[f] = true
	}
	if s.features[qtfsv1.Feature_FEATURE_CALL_STREAM] {
		copts := callstream.ClientOptions{Direct: bulkCall, NoReply: s.releaseNoReply, MaxFrameBytes: chunk + messageMargin}
		if opts.DialChannel != nil {
			copts.Channel = opts.DialChannel
			copts.ChannelFailed = func(err error) {
				log.Warn("qtfs call channel: cannot open one; calls go on a stream of the gRPC connection meanwhile",
					zap.String("server", resp.GetServer()), zap.Error(err))
			}
		}
		s.calls = callstream.NewClient(cc, copts)
		s.calls.SetChannelToken(channelToken(resp))
		s.client = qtfsv1.NewFileSystemClient(s.calls)
	}
	for _, e := range resp.GetExports() {
		s.exports = append(s.exports, proto.Clone(e).(*qtfsv1.ExportInfo))
	}
	timeout := opts.ReconnectTimeout
	if timeout == 0 {
		timeout = DefaultReconnectTimeout
	}
	if timeout > 0 {
		t := DefaultTiming
		if opts.Timing != nil {
			t = *opts.Timing
		}
		s.rc = newReconn(s, cc, timeout, t, hello)
	}
	s.metrics.sessionUp.Set(1)
	log.Info("qtfs session open", zap.String("server", s.server), zap.Uint32("protocol", s.version),
		zap.Int("exports", len(s.exports)), zap.Int("chunk", s.chunk), zap.Duration("reconnect_timeout", timeout))
	return s, nil
}

// NewDirect returns a Session that sends each call to c as it is: no
// handshake, no call stream, no reconnecting (a transport failure is
// EIO), no feature, chunks of MaxChunk. Unit tests of the FUSE layer serve
// their mounts from fakes of c through it.
func NewDirect(c qtfsv1.FileSystemClient, log *zap.Logger) *Session {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Session{client: c, log: log, chunk: MaxChunk, metrics: newMetrics(), features: map[qtfsv1.Feature]bool{}}
	s.setDataCodec()
	return s
}

// Close stops reconnecting; calls waiting for the server fail. It does
// not close the connection.
func (s *Session) Close() error {
	if s.rc != nil {
		s.rc.close()
	}
	if s.calls != nil {
		s.calls.Close()
	}
	return nil
}

// ReopensHandles reports whether a handle the server no longer has is
// opened again on its next use (the reconnect machinery, which a session
// without a reconnect timeout lacks). Only then may an Open ask the
// server to close the file at once (OpenRequest.close_at_eof).
func (s *Session) ReopensHandles() bool { return s.rc != nil }

// channelToken is the call channel token of a handshake's reply; nil when
// the server offers no channels.
func channelToken(resp *qtfsv1.HandshakeResponse) []byte {
	for _, f := range resp.GetFeatures() {
		if f == qtfsv1.Feature_FEATURE_CALL_CHANNEL && len(resp.GetCallChannelToken()) > 0 {
			return resp.GetCallChannelToken()
		}
	}
	return nil
}

// bulkCallBytes is the data size from which a Read or Write is sent as a
// call of its own rather than on the call stream: large transfers would
// hold small calls behind them in the stream's flow-control window, and
// their per-call overhead is small next to the data.
const bulkCallBytes = 64 << 10

// bulkCall reports whether a call goes outside the call stream (the
// method's route).
func bulkCall(_ string, req any) bool {
	switch c := callOf(req); c.route {
	case onConn:
		return true
	case onConnWhenBulk:
		return c.bulk(req)
	}
	return false
}

// releaseNoReply reports whether a call (a Release: its method is
// noReply) is sent without waiting for its reply: the kernel sends RELEASE after close(2) returned
// and ignores its errors, and a client that waits only keeps a thread and
// a channel from the next call. A Release waits while a handle of the
// session holds locks (it may be that one, and a lock is free for others
// only once the server closed it), and without reconnects (which count
// them).
func (s *Session) releaseNoReply(_ string, req any) bool {
	return callOf(req).noReply && s.rc != nil && s.rc.lockHolders.Load() == 0
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
	if s.rc == nil {
		return s.ping(ctx, mount)
	}
	up, gen := s.rc.state()
	if !up {
		return 0, fmt.Errorf("ping %s: %w (reconnecting)", s.server, syscall.ENOTCONN)
	}
	s.rc.genMu.RLock()
	rtt, err := s.ping(ctx, s.rc.currentMount(gen, mount))
	s.rc.genMu.RUnlock()
	if c := status.Code(errors.Unwrap(err)); c == codes.FailedPrecondition || c == codes.Unavailable {
		// The server restarted or the link broke while the mount was
		// idle: reconnect now rather than on the next call.
		s.rc.markDown(gen, "ping failed", err)
		return 0, fmt.Errorf("ping %s: %w (reconnecting)", s.server, syscall.ENOTCONN)
	}
	return rtt, err
}

// ping times one Getattr of the root of mount.
func (s *Session) ping(ctx context.Context, mount uint64) (time.Duration, error) {
	start := time.Now()
	_, err := s.client.Getattr(ctx, &qtfsv1.GetattrRequest{Mount: mount, Caller: &qtfsv1.Caller{}})
	if err != nil {
		return 0, fmt.Errorf("ping %s: %w", s.server, err)
	}
	return time.Since(start), nil
}

// HasFeature reports whether the server offered f.
func (s *Session) HasFeature(f qtfsv1.Feature) bool { return s.features[f] }

// Chunk is the most file data one Read or Write RPC of the session
// carries: MaxChunk, or less when the server's messages are smaller.
func (s *Session) Chunk() int { return s.chunk }

// Logger is the session's logger.
func (s *Session) Logger() *zap.Logger { return s.log }

// Mounted records mount id, the reply of a Mount call, as one of the
// session's (Ping uses the oldest).
func (s *Session) Mounted(id uint64) {
	s.mu.Lock()
	s.mounts = append(s.mounts, id)
	s.mu.Unlock()
}

// Unmounted forgets mount id: the mount is gone on the client.
func (s *Session) Unmounted(id uint64) {
	if s.rc != nil {
		s.rc.forgetMount(id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, m := range s.mounts {
		if m == id {
			s.mounts = append(s.mounts[:i], s.mounts[i+1:]...)
			return
		}
	}
}

// TrackPath lets a re-open after a reconnect find open handle h at the
// path fn returns then (the node's path: a file renamed since is found
// where it is now) rather than where it was opened.
func (s *Session) TrackPath(h uint64, fn func() ([]byte, syscall.Errno)) {
	if s.rc != nil && h != 0 {
		s.rc.setPath(h, fn)
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
	case code == codes.ResourceExhausted:
		s.log.Warn("qtfs rpc refused: a server limit was reached", zap.String("op", op),
			zap.String("server", s.server), zap.Error(err))
		return syscall.EAGAIN
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
func errnoLabel(e syscall.Errno) string { return qfs.ErrnoName(e) }

// CountRead counts n bytes of file data read from the server.
func (s *Session) CountRead(n int) { s.metrics.readBytes.Add(float64(n)) }

// CountWritten counts n bytes of file data the server acknowledged as
// written.
func (s *Session) CountWritten(n int) { s.metrics.writtenBytes.Add(float64(n)) }

// HandleOpened and HandleClosed count the handles open on the server.
func (s *Session) HandleOpened() { s.metrics.openHandles.Inc() }

// HandleClosed: see HandleOpened.
func (s *Session) HandleClosed() { s.metrics.openHandles.Dec() }

// metrics are the client's Prometheus collectors. They always count; they
// are exported only once RegisterMetrics is called.
type metrics struct {
	ops          *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	rpcErrors    *prometheus.CounterVec
	readBytes    prometheus.Counter
	writtenBytes prometheus.Counter
	openHandles  prometheus.Gauge
	sessionUp    prometheus.Gauge
	reconnects   prometheus.Counter
	reopens      *prometheus.CounterVec
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
		sessionUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "qtfs_client_session_up",
			Help: "1 while the session with the server works, 0 while it is reconnecting.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "qtfs_client_reconnects_total",
			Help: "Server sessions opened again after the server lost the previous one (a restart, a new connection).",
		}),
		reopens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "qtfs_client_reopens_total",
			Help: "Open files and directories opened again after a reconnect, by result (ok; gone: the file is no longer there; lock_lost: a lock it held was taken by someone else meanwhile; the callers of gone and lock_lost files get EIO).",
		}, []string{"result"}),
	}
}

// RegisterMetrics exports the session's metrics on reg.
func (s *Session) RegisterMetrics(reg prometheus.Registerer) error {
	m := s.metrics
	for _, c := range []prometheus.Collector{m.ops, m.latency, m.rpcErrors, m.readBytes, m.writtenBytes, m.openHandles,
		m.sessionUp, m.reconnects, m.reopens} {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	return nil
}
