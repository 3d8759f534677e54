package hostfs

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/qtfs/qtfs/pkg/callstream"
	qfs "github.com/qtfs/qtfs/pkg/fs"
	"github.com/qtfs/qtfs/pkg/transport"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// DefaultMaxMessageBytes is the data bound per Read or Write when
// Options.MaxMessageBytes is 0.
const DefaultMaxMessageBytes = 8 << 20

// Limits on what one session may hold and one request may ask for (the
// configurable ones are in Limits).
const (
	maxMountsPerSession = 1024
	maxReaddirEntries   = 4096
	maxXattrSize        = 64 << 10 // XATTR_SIZE_MAX and XATTR_LIST_MAX
	maxXattrNameLen     = 255      // XATTR_NAME_MAX
	maxGroups           = 65536    // NGROUPS_MAX
	maxCopyLength       = 128 << 20
	messageMargin       = 64 << 10 // room for the envelope around data
)

// Export is one host directory the server offers.
type Export struct {
	// Path is the absolute host path of the directory.
	Path string
	// ReadOnly refuses every change beneath Path with EROFS.
	ReadOnly bool
	// Ops, when not empty, are the only operations allowed beneath Path:
	// FileSystem rpc names ("Lookup", "Read") and group names ("read",
	// "write", "xattr", "lock", "mount"; see OpNames). Others get EPERM.
	// Handshake, Mount, Release and Flush are always allowed.
	Ops []string
}

// Options configure a Server.
type Options struct {
	Exports []Export
	// Logger receives the server's logs; nil means zap.NewNop().
	Logger *zap.Logger
	// Registerer receives the server's metrics; nil means no metrics.
	Registerer prometheus.Registerer
	// MaxMessageBytes bounds the data of one Read or Write; 0 means
	// DefaultMaxMessageBytes. It is reported in HandshakeResponse.
	MaxMessageBytes int
	// ServerName is reported in HandshakeResponse.server.
	ServerName string
	// Limits bound sessions and what each holds; zero fields take the
	// defaults (DefaultMaxSessions, ...).
	Limits Limits
	// Interceptor, when set, wraps every FileSystem call inside the
	// server's own interceptors (metrics, panic recovery, limits), for
	// plain calls and calls on a Calls stream alike (tests count and delay
	// calls with it).
	Interceptor grpc.UnaryServerInterceptor
	// CallChannels offers call channels in Handshake: set it when the
	// server's listener hands them to ServeChannel
	// (transport.SplitChannels).
	CallChannels bool
	// MountAllow are the kinds of host mount MountOnHost may make and
	// UnmountOnHost may undo ("overlay", "tmpfs", "bind"; see MountKinds).
	// Empty refuses both with EPERM.
	MountAllow []string
}

// export is an Export with its root directory open.
type export struct {
	path     string
	readOnly bool
	ops      opSet
	kind     qtfsv1.FsKind
	fd       int // O_PATH|O_DIRECTORY; closed by Server.Close
	// mnt is the id of the host mount fd lies on (hostMountID), 0 when
	// unknown: MountOnHost never changes that mount.
	mnt uint64
}

// Server implements qtfsv1.FileSystemServer over the configured exports.
type Server struct {
	qtfsv1.UnimplementedFileSystemServer

	calls *callstream.Server          // serves Calls streams
	extra grpc.UnaryServerInterceptor // Options.Interceptor
	codec *dataCodec                  // encodes and decodes gRPC messages
	// lentReads ties large Read replies to the pooled buffers their data
	// is in, for codec to send.
	lentReads transport.BufferTable[qtfsv1.ReadResponse]
	// callChannels is Options.CallChannels.
	callChannels bool
	// silentClose caches closeIsSilent by device number.
	silentClose sync.Map

	log     *zap.Logger
	met     *metrics
	maxData int
	name    string
	creds   credSwitcher
	limits  Limits
	// limitLog rate-limits the log lines of refusals by limit or policy.
	limitLog rateLog

	// mu guards exports' fds against Close (read-held while an export fd is
	// used), conns and closed.
	mu      sync.RWMutex
	exports []*export // sorted by path length, longest first
	conns   map[*connState]struct{}
	closed  bool

	tokenMu sync.Mutex            // a leaf
	tokens  map[string]*connState // call channel tokens

	sessionSeq  atomic.Uint64
	sessions    atomic.Int64
	openHandles atomic.Int64

	// mountAllow is Options.MountAllow as a set.
	mountAllow map[string]bool
	// hostMountMu serialises MountOnHost and UnmountOnHost and guards
	// hostMounts, the host mounts they made (hostmount_linux.go).
	hostMountMu sync.Mutex
	hostMounts  map[uint64]hostMountRecord
}

var _ qtfsv1.FileSystemServer = (*Server)(nil)

// New opens each export's root directory and returns a Server for them.
func New(opts Options) (*Server, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	maxData := opts.MaxMessageBytes
	if maxData == 0 {
		maxData = DefaultMaxMessageBytes
	}
	if maxData < 4096 || maxData > 1<<30 {
		return nil, fmt.Errorf("hostfs: max message bytes %d out of range [4096, 1 GiB]", maxData)
	}
	limits, err := opts.Limits.withDefaults(maxData)
	if err != nil {
		return nil, err
	}
	mountAllow, err := parseMountAllow(opts.MountAllow)
	if err != nil {
		return nil, err
	}
	if err := probeOpenat2(); err != nil {
		return nil, fmt.Errorf("hostfs: openat2 (Linux 5.6 or later) is required: %w", err)
	}
	s := &Server{
		extra:        opts.Interceptor,
		callChannels: opts.CallChannels,
		log:          log,
		maxData:      maxData,
		name:         opts.ServerName,
		limits:       limits,
		conns:        make(map[*connState]struct{}),
		tokens:       make(map[string]*connState),
		mountAllow:   mountAllow,
		hostMounts:   make(map[uint64]hostMountRecord),
	}
	s.codec = s.newDataCodec()
	creds, err := newCredSwitcher(log)
	if err != nil {
		return nil, err
	}
	s.creds = creds
	seen := make(map[string]bool)
	for _, e := range opts.Exports {
		if !filepath.IsAbs(e.Path) {
			s.closeExports()
			return nil, fmt.Errorf("hostfs: export %q: not an absolute path", e.Path)
		}
		p := filepath.Clean(e.Path)
		if seen[p] {
			s.closeExports()
			return nil, fmt.Errorf("hostfs: export %q: listed twice", p)
		}
		seen[p] = true
		ops, err := parseOps(e.Ops)
		if err != nil {
			s.closeExports()
			return nil, fmt.Errorf("hostfs: export %q: %w", p, err)
		}
		ex, err := openExport(p, e.ReadOnly)
		if err != nil {
			s.closeExports()
			return nil, err
		}
		ex.ops = ops
		s.exports = append(s.exports, ex)
	}
	sort.SliceStable(s.exports, func(i, j int) bool { return len(s.exports[i].path) > len(s.exports[j].path) })
	met, err := newMetrics(opts.Registerer, s)
	if err != nil {
		s.closeExports()
		return nil, err
	}
	s.met = met
	s.calls = callstream.NewServer(&qtfsv1.FileSystem_ServiceDesc, s, callstream.ServerOptions{
		Interceptor:   s.interceptAll,
		MaxInflight:   limits.MaxInflightPerSession,
		MaxFrameBytes: maxData + messageMargin,
		Blocking:      s.blockingCalls(),
	})
	for _, ex := range s.exports {
		log.Info("export", zap.String("path", ex.path), zap.Bool("read_only", ex.readOnly),
			zap.Stringer("fs_kind", ex.kind), zap.Stringer("ops", ex.ops))
	}
	if len(mountAllow) > 0 {
		log.Info("host mounts allowed", zap.Strings("mount_allow", sortedKeys(mountAllow)))
	}
	log.Info("limits", zap.Int("max_sessions", limits.MaxSessions), zap.Int("max_handles_per_session", limits.MaxHandlesPerSession),
		zap.Int("max_inflight_per_session", limits.MaxInflightPerSession),
		zap.Int64("max_inflight_bytes_per_session", limits.MaxInflightBytesPerSession))
	return s, nil
}

// Register registers the FileSystem service on g, and nothing else.
func (s *Server) Register(g *grpc.Server) {
	qtfsv1.RegisterFileSystemServer(g, s)
}

// Sessions returns the number of live sessions (connections that did a
// Handshake and have not ended).
func (s *Server) Sessions() int { return int(s.sessions.Load()) }

// OpenHandles returns the number of file handles whose host fd is open,
// across all sessions.
func (s *Server) OpenHandles() int { return int(s.openHandles.Load()) }

// Close ends every session, releasing their mounts and handles, and closes
// the exports. Calls after Close fail with FAILED_PRECONDITION.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*connState, 0, len(s.conns))
	for cs := range s.conns {
		conns = append(conns, cs)
	}
	s.conns = map[*connState]struct{}{}
	s.closeExports()
	s.mu.Unlock()
	for _, cs := range conns {
		s.endConn(cs)
	}
	return nil
}

// closeExports closes the export fds; s.mu is held or s is not shared yet.
func (s *Server) closeExports() {
	for _, ex := range s.exports {
		if ex.fd >= 0 {
			closeFd(ex.fd)
			ex.fd = -1
		}
	}
}

// findExport returns the export holding the absolute host path p and p
// relative to it. s.mu is read-held.
func (s *Server) findExport(p string) (*export, string, bool) {
	for _, ex := range s.exports {
		switch {
		case ex.path == "/":
			return ex, p[1:], true
		case p == ex.path:
			return ex, "", true
		case len(p) > len(ex.path) && p[:len(ex.path)] == ex.path && p[len(ex.path)] == '/':
			return ex, p[len(ex.path)+1:], true
		}
	}
	return nil, "", false
}

// ---------------------------------------------------------------- connections and sessions

type connKey struct{}

// connState is what the server knows about one connection.
type connState struct {
	peer string

	mu     sync.Mutex
	sess   *session // nil until Handshake
	ended  bool
	server *Server
	// token binds call channels to the connection (made at its first
	// Handshake; "" before), principal is who may present it, channels
	// are those bound.
	token     string
	principal string
	channels  map[net.Conn]struct{}
}

func withConn(ctx context.Context, cs *connState) context.Context {
	return context.WithValue(ctx, connKey{}, cs)
}

func connFrom(ctx context.Context) *connState {
	cs, _ := ctx.Value(connKey{}).(*connState)
	return cs
}

// newConn registers a connection; it returns nil when the server is closed.
func (s *Server) newConn(peer string) *connState {
	cs := &connState{peer: peer, server: s, channels: map[net.Conn]struct{}{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		cs.ended = true
		return cs
	}
	s.conns[cs] = struct{}{}
	return cs
}

// endConn releases the connection's session.
func (s *Server) endConn(cs *connState) {
	s.mu.Lock()
	delete(s.conns, cs)
	s.mu.Unlock()
	cs.mu.Lock()
	sess := cs.sess
	cs.sess = nil
	cs.ended = true
	s.endChannels(cs)
	cs.mu.Unlock()
	if sess != nil {
		s.sessions.Add(-1)
		s.log.Info("session ended", zap.Uint64("session", sess.id), zap.String("peer", cs.peer),
			zap.String("client", sess.client))
		sess.release()
	}
}

var errNoSession = status.Error(codes.FailedPrecondition,
	"hostfs: no session on this connection: call Handshake first")

// session returns the session bound to ctx's connection.
func (s *Server) session(ctx context.Context) (*session, error) {
	cs := connFrom(ctx)
	if cs == nil {
		return nil, status.Error(codes.FailedPrecondition,
			"hostfs: connection not bound to a session: the grpc.Server needs hostfs ServerOptions")
	}
	cs.mu.Lock()
	sess := cs.sess
	cs.mu.Unlock()
	if sess == nil {
		s.met.refusal("no_session")
		return nil, errNoSession
	}
	return sess, nil
}

// session is one peer's mounts and handles.
type session struct {
	id     uint64
	client string
	srv    *Server

	// inflight and inflightBytes count the requests being served and
	// their data (see Limits).
	inflight      atomic.Int64
	inflightBytes atomic.Int64

	mu         sync.Mutex
	closed     bool
	nextMount  uint64
	mounts     map[uint64]*mount
	nextHandle uint64
	handles    map[uint64]*handle
}

func (s *Server) newSession(client string) *session {
	return &session{
		id:      s.sessionSeq.Add(1),
		client:  client,
		srv:     s,
		mounts:  make(map[uint64]*mount),
		handles: make(map[uint64]*handle),
	}
}

// release closes every mount and handle of the session.
func (ss *session) release() {
	ss.mu.Lock()
	ss.closed = true
	mounts, handles := ss.mounts, ss.handles
	ss.mounts, ss.handles = nil, nil
	ss.mu.Unlock()
	for _, m := range mounts {
		m.put()
	}
	for _, h := range handles {
		h.put()
	}
}

// mount is a directory beneath an export, the root of a client's mount.
type mount struct {
	refs     atomic.Int32
	fd       int // O_PATH|O_DIRECTORY
	readOnly bool
	ops      opSet // the export's allowed operations
	kind     qtfsv1.FsKind
	// ex is the export the mount lies in and rel its path relative to
	// the export's root ("" for the root): MountOnHost names host paths
	// with them and tells export roots apart.
	ex  *export
	rel string
}

func (m *mount) put() {
	if m.refs.Add(-1) == 0 {
		closeFd(m.fd)
	}
}

// addMount stores m (holding one reference) and returns its id.
func (ss *session) addMount(m *mount) (uint64, syscall.Errno) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.closed {
		return 0, syscall.ESTALE
	}
	if len(ss.mounts) >= maxMountsPerSession {
		return 0, syscall.EMFILE
	}
	ss.nextMount++
	ss.mounts[ss.nextMount] = m
	return ss.nextMount, 0
}

// mount returns the mount id with a reference the caller must put.
func (ss *session) mount(id uint64) (*mount, syscall.Errno) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	m, ok := ss.mounts[id]
	if !ok {
		return nil, syscall.ESTALE
	}
	m.refs.Add(1)
	return m, 0
}

// handle is an open host file or directory.
type handle struct {
	refs     atomic.Int32
	srv      *Server
	fd       int
	flags    int
	dir      bool
	readOnly bool
	ops      opSet          // the export's allowed operations
	caller   *qtfsv1.Caller // who opened it; Readdir stats entries as them

	// noPositions: the file refuses pread(2), so its reads and writes
	// may wait (stream_linux.go).
	noPositions bool

	ra readahead // sequential reads (data_linux.go)

	dirMu  sync.Mutex // serialises Readdir
	dirPos uint64     // the cookie the kernel's directory position stands at
	dirBuf []byte
}

func (h *handle) put() {
	if h.refs.Add(-1) == 0 {
		closeFd(h.fd)
		h.srv.openHandles.Add(-1)
	}
}

// addHandle stores a new handle for fd, opened beneath m, and returns its
// id. On failure the fd is closed.
func (ss *session) addHandle(fd, flags int, dir bool, m *mount, caller *qtfsv1.Caller) (uint64, syscall.Errno) {
	h := &handle{srv: ss.srv, fd: fd, flags: flags, dir: dir, readOnly: m.readOnly, ops: m.ops, caller: copyCaller(caller)}
	h.noPositions = !dir && noPositions(fd)
	h.refs.Store(1)
	ss.srv.openHandles.Add(1)
	ss.mu.Lock()
	if ss.closed || len(ss.handles) >= ss.srv.limits.MaxHandlesPerSession {
		closed, n := ss.closed, len(ss.handles)
		ss.mu.Unlock()
		h.put()
		if closed {
			return 0, syscall.EBADF
		}
		s := ss.srv
		s.met.refusal("max_handles")
		s.limitLog.log(s.log, "max_handles", zap.Uint64("session", ss.id), zap.String("client", ss.client),
			zap.Int("handles", n), zap.Int("max", s.limits.MaxHandlesPerSession), zap.String("errno", "EMFILE"))
		return 0, syscall.EMFILE
	}
	defer ss.mu.Unlock()
	ss.nextHandle++
	ss.handles[ss.nextHandle] = h
	return ss.nextHandle, 0
}

// handle returns handle id with a reference the caller must put.
func (ss *session) handle(id uint64) (*handle, syscall.Errno) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	h, ok := ss.handles[id]
	if !ok {
		return nil, syscall.EBADF
	}
	h.refs.Add(1)
	return h, 0
}

// removeHandle takes handle id out of the table and drops the table's
// reference.
func (ss *session) removeHandle(id uint64) syscall.Errno {
	ss.mu.Lock()
	h, ok := ss.handles[id]
	if ok {
		delete(ss.handles, id)
	}
	ss.mu.Unlock()
	if !ok {
		return syscall.EBADF
	}
	h.put()
	return 0
}

func copyCaller(c *qtfsv1.Caller) *qtfsv1.Caller {
	if c == nil {
		return nil
	}
	return &qtfsv1.Caller{Uid: c.GetUid(), Gid: c.GetGid(), Pid: c.GetPid(),
		Groups: append([]uint32(nil), c.GetGroups()...)}
}

// errnoOf converts err into an errno, logging the ones that had to be
// guessed.
func (s *Server) errnoOf(op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	e, ok := qfs.ToErrno(err)
	if !ok {
		s.log.Error("hostfs: unexpected error, returning EIO", zap.String("op", op), zap.Error(err))
	}
	return e
}
