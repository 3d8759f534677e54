package fuseclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/qtfs/qtfs/pkg/callstream"
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
// on, which the caller owns and closes (after Session.Close).
//
// A Session survives the loss of its server session (a server restart)
// and of the connection (a cut or silent link): it reconnects and
// handshakes again, and maps the mount and handle ids its callers hold to
// the new server session's, mounting and opening files again on first
// use. Calls wait for that at most SessionOptions.ReconnectTimeout.
type Session struct {
	client qtfsv1.FileSystemClient
	// dataCodec carries the parts of large reads and writes (readPart,
	// writePart).
	dataCodec *dataCodec
	// calls carries client's calls over one stream when the server serves
	// it (FEATURE_CALL_STREAM); nil otherwise.
	calls *callstream.Client
	// rc keeps the session alive across connection failures; nil in a
	// Session built without NewSession (calls then fail with EIO).
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

// SessionOptions configure a Session.
type SessionOptions struct {
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

	// timing paces liveness checks and reconnect attempts; tests shorten
	// it. nil means defaultTiming.
	timing *timing
}

// NewSession opens a session on cc with the Handshake RPC, with default
// options. clientName ("qtfs-client 1.2") goes into the server's logs.
// When ctx has no deadline, the handshake gets one of a minute.
func NewSession(ctx context.Context, cc grpc.ClientConnInterface, clientName string, log *zap.Logger) (*Session, error) {
	return NewSessionWith(ctx, cc, clientName, log, SessionOptions{})
}

// NewSessionWith is NewSession with options. Close the Session before
// the connection.
func NewSessionWith(ctx context.Context, cc grpc.ClientConnInterface, clientName string, log *zap.Logger, opts SessionOptions) (*Session, error) {
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
	chunk := maxChunk
	if m := int(resp.GetMaxMessageBytes()); m > 0 {
		if m-messageMargin < minChunk {
			return nil, fmt.Errorf("handshake: server %q accepts messages of %d bytes, too small",
				resp.GetServer(), m)
		}
		chunk = min(chunk, m-messageMargin)
	}
	s := &Session{
		client:    client,
		log:       log,
		server:    resp.GetServer(),
		version:   resp.GetProtocolVersion(),
		features:  map[qtfsv1.Feature]bool{},
		chunk:     chunk,
		metrics:   newMetrics(),
		dataCodec: newDataCodec(),
	}
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
		t := defaultTiming
		if opts.timing != nil {
			t = *opts.timing
		}
		s.rc = newReconn(s, cc, timeout, t, hello)
	}
	s.metrics.sessionUp.Set(1)
	log.Info("qtfs session open", zap.String("server", s.server), zap.Uint32("protocol", s.version),
		zap.Int("exports", len(s.exports)), zap.Int("chunk", s.chunk), zap.Duration("reconnect_timeout", timeout))
	return s, nil
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

// reopensHandles reports whether a handle the server no longer has is
// opened again on its next use (the reconnect machinery, which a session
// without a reconnect timeout lacks). Only then may an Open ask the
// server to close the file at once (OpenRequest.close_at_eof).
func (s *Session) reopensHandles() bool { return s.rc != nil }

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

// hasFeature reports whether the server offered f.
func (s *Session) hasFeature(f qtfsv1.Feature) bool { return s.features[f] }

func (s *Session) addMount(id uint64) {
	s.mu.Lock()
	s.mounts = append(s.mounts, id)
	s.mu.Unlock()
}

func (s *Session) removeMount(id uint64) {
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

// trackPath lets a re-open after a reconnect find open handle h at the
// path fn returns then (the node's path: a file renamed since is found
// where it is now) rather than where it was opened.
func (s *Session) trackPath(h uint64, fn func() ([]byte, syscall.Errno)) {
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
	return invoke(context.Background(), nil, s, timeout, op, fn, req)
}

// callFor is call for the FUSE request ctx: the RPC is not cancelled when
// the request is merely interrupted, but it is (EINTR) once the caller is
// being killed, so that a killed process does not wait for the server and
// the server stops the operation.
func callFor[Req any, Resp errnoReply](ctx context.Context, s *Session, timeout time.Duration, op string,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	fc, _ := ctx.(*fuse.Context)
	return invoke(context.Background(), fc, s, timeout, op, fn, req)
}

// callCtx is call under a context the caller chose, with no deadline of
// its own.
func callCtx[Req any, Resp errnoReply](ctx context.Context, s *Session, op string,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	return invoke(ctx, nil, s, 0, op, fn, req)
}

// invoke runs one RPC, each attempt under ctx and a deadline of timeout
// (none when 0). Across a lost session or connection it waits for the
// reconnect, sends the request again when that is safe (it never reached
// the server, or sending it twice does no harm) and fails with EIO when
// it is not, or when the outage outlasts the reconnect timeout (ENOTCONN
// for a request that was never sent).
func invoke[Req any, Resp errnoReply](ctx context.Context, fuseReq *fuse.Context, s *Session, timeout time.Duration, op string,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	start := time.Now()
	r := s.rc
	if r == nil {
		resp, e := attempt(ctx, nil, timeout, op, s, fn, req)
		s.observe(op, start, e)
		return resp, e
	}
	var zero Resp
	if c := callOf(req); c.releases {
		h := c.handlesF[0].uint(req)
		if r.release(h) {
			s.observe(op, start, 0)
			return zero, 0
		}
		defer r.forget(h)
	}
	sent := false
	for {
		gen, epoch, e := r.waitUp(ctx, sent)
		if e != 0 {
			s.observe(op, start, e)
			return zero, e
		}
		r.genMu.RLock()
		if up, g := r.state(); !up || g != gen {
			r.genMu.RUnlock()
			continue
		}
		restore, e, retry := r.translate(ctx, gen, req)
		if retry {
			restore()
			r.genMu.RUnlock()
			continue
		}
		if e != 0 {
			restore()
			r.genMu.RUnlock()
			s.observe(op, start, e)
			return zero, e
		}
		once := !r.retryable(req)
		if once && !r.ready(ctx) {
			// Not sent: wait for the connection like any call.
			restore()
			r.genMu.RUnlock()
			r.markDown(gen, "connection not ready", nil)
			continue
		}
		actx, cancel := withTimeout(ctx, timeout)
		stop := context.AfterFunc(epoch, cancel)
		var k *killedCall
		if fuseReq != nil {
			k = &killedCall{req: fuseReq, start: time.Now(), cancel: cancel}
			r.callers.add(k)
		}
		r.begin()
		resp, err := fn(actx, req)
		r.end(err == nil)
		if k != nil {
			r.callers.remove(k)
		}
		stop()
		cancel()
		restore()
		sent = true
		if err != nil && k != nil && k.wasKilled() {
			r.genMu.RUnlock()
			s.metrics.rpcErrors.WithLabelValues(op, "CallerKilled").Inc()
			s.observe(op, start, syscall.EINTR)
			return zero, syscall.EINTR
		}
		if err == nil {
			e := s.wireErrno(op, resp.GetErrno())
			if e == 0 {
				r.register(gen, req, resp)
			}
			r.genMu.RUnlock()
			s.observe(op, start, e)
			return resp, e
		}
		r.genMu.RUnlock()
		code := status.Code(err)
		switch {
		case epoch.Err() != nil && ctx.Err() == nil:
			// The outage outlasted the reconnect timeout.
			s.metrics.rpcErrors.WithLabelValues(op, "GaveUp").Inc()
			s.observe(op, start, syscall.EIO)
			return zero, syscall.EIO
		case code == codes.FailedPrecondition:
			// The server does not know the session: nothing was done.
			r.markDown(gen, "the server lost the session", err)
			continue
		case code == codes.Unavailable && ctx.Err() == nil:
			r.markDown(gen, "the connection failed", err)
			if !once {
				continue
			}
			s.log.Warn("qtfs call lost with the connection; it may or may not have been done, and is not sent twice",
				zap.String("op", op), zap.String("server", s.server), zap.Error(err))
		}
		e = s.rpcErrno(op, err)
		s.observe(op, start, e)
		return zero, e
	}
}

// attempt is one RPC without reconnection.
func attempt[Req any, Resp errnoReply](ctx context.Context, _ *reconn, timeout time.Duration, op string, s *Session,
	fn func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, syscall.Errno) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	resp, err := fn(ctx, req)
	if err != nil {
		return resp, s.rpcErrno(op, err)
	}
	return resp, s.wireErrno(op, resp.GetErrno())
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
