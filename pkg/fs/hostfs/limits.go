package hostfs

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Defaults of Limits.
const (
	DefaultMaxSessions                = 256
	DefaultMaxHandlesPerSession       = 1 << 16
	DefaultMaxInflightPerSession      = 1024
	DefaultMaxInflightBytesPerSession = 256 << 20
)

// requestOverhead is what any request is counted for in the in-flight
// bytes of its session, on top of its data.
const requestOverhead = 1 << 10

// streamMargin is how many more concurrent streams a connection may open
// than its session may have requests in flight: the other services (exec,
// socket proxy) share the connection, and a request over the limit must
// reach the server to be refused with an errno.
const streamMargin = 64

// Limits bound what the server holds for its peers. Past them a request
// is refused, logged and counted (qtfs_server_refusals_total) and the
// server goes on: a Handshake with RESOURCE_EXHAUSTED (the client says
// ENFILE), an open with EMFILE, any other request with EAGAIN.
type Limits struct {
	// MaxSessions is how many sessions (handshaken connections) may live
	// at once.
	MaxSessions int
	// MaxHandlesPerSession is how many files and directories one session
	// may hold open.
	MaxHandlesPerSession int
	// MaxInflightPerSession is how many requests of one session may be
	// served at once.
	MaxInflightPerSession int
	// MaxInflightBytesPerSession bounds the data (written, or asked to be
	// read) of the requests of one session being served at once. It is
	// at least the largest message's data.
	MaxInflightBytesPerSession int64
}

// withDefaults fills zero fields and checks the others.
func (l Limits) withDefaults(maxData int) (Limits, error) {
	if l.MaxSessions == 0 {
		l.MaxSessions = DefaultMaxSessions
	}
	if l.MaxHandlesPerSession == 0 {
		l.MaxHandlesPerSession = DefaultMaxHandlesPerSession
	}
	if l.MaxInflightPerSession == 0 {
		l.MaxInflightPerSession = DefaultMaxInflightPerSession
	}
	if l.MaxInflightBytesPerSession == 0 {
		l.MaxInflightBytesPerSession = max(DefaultMaxInflightBytesPerSession, int64(maxData)+requestOverhead)
	}
	switch {
	case l.MaxSessions < 1, l.MaxHandlesPerSession < 1, l.MaxInflightPerSession < 1:
		return l, fmt.Errorf("hostfs: limits must be positive: %+v", l)
	case l.MaxInflightBytesPerSession < int64(maxData)+requestOverhead:
		return l, fmt.Errorf("hostfs: max in-flight bytes per session %d is less than one message's data (%d) plus %d",
			l.MaxInflightBytesPerSession, maxData, requestOverhead)
	}
	return l, nil
}

// opGroups name sets of operations for Export.Ops.
var opGroups = map[string][]string{
	"read":  {"Lookup", "Getattr", "Readlink", "Open", "Read", "Readdir", "Statfs", "Mounts", "Getxattr", "Listxattr", "Lseek", "Fsync"},
	"write": {"Setattr", "Write", "Create", "Mknod", "Mkdir", "Symlink", "Unlink", "Rmdir", "Rename", "Link", "Fallocate", "CopyFileRange", "Setxattr", "Removexattr"},
	"xattr": {"Getxattr", "Listxattr", "Setxattr", "Removexattr"},
	"lock":  {"Getlk", "Setlk"},
	"mount": {"MountOnHost", "UnmountOnHost"},
}

// alwaysAllowed are operations no policy refuses: opening the session and
// the mount (the export decides), and closing what was opened.
var alwaysAllowed = map[string]bool{"Handshake": true, "Mount": true, "Release": true, "Flush": true}

// opSet is the set of operations an export allows; nil allows all.
type opSet map[string]bool

func (o opSet) allows(op string) bool { return o == nil || alwaysAllowed[op] || o[op] }

// OpNames returns the operation and group names Export.Ops accepts.
func OpNames() []string {
	var out []string
	for g := range opGroups {
		out = append(out, g)
	}
	for op := range replyTypes {
		out = append(out, op)
	}
	sort.Strings(out)
	return out
}

// Allows reports whether the export allows the FileSystem operation op
// (an rpc name such as "Mknod"): other services that act beneath exports
// (the Fifo service) follow the same list. An invalid list allows nothing.
func (e Export) Allows(op string) bool {
	set, err := parseOps(e.Ops)
	return err == nil && set.allows(op)
}

// parseOps turns Export.Ops (operation names and group names) into a set;
// an empty list allows everything.
func parseOps(names []string) (opSet, error) {
	if len(names) == 0 {
		return nil, nil
	}
	set := opSet{}
	for _, n := range names {
		if ops, ok := opGroups[n]; ok {
			for _, op := range ops {
				set[op] = true
			}
			continue
		}
		if _, ok := replyTypes[n]; !ok {
			return nil, fmt.Errorf("unknown operation %q (known: %s)", n, strings.Join(OpNames(), ", "))
		}
		set[n] = true
	}
	return set, nil
}

func (o opSet) String() string {
	if o == nil {
		return "all"
	}
	var names []string
	for op := range o {
		names = append(names, op)
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// replyTypes are the reply message types of the FileSystem operations,
// by operation name, for refusing a request with an errno reply.
var replyTypes = func() map[string]protoreflect.MessageType {
	out := map[string]protoreflect.MessageType{}
	sd := qtfsv1.File_qtfs_v1_qtfs_proto.Services().ByName("FileSystem")
	ms := sd.Methods()
	for i := 0; i < ms.Len(); i++ {
		m := ms.Get(i)
		if mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName()); err == nil {
			out[string(m.Name())] = mt
		}
	}
	return out
}()

// errnoReplyOf returns a reply of op's type carrying errno e, or nil when
// op has none (Handshake).
func errnoReplyOf(op string, e syscall.Errno) any {
	mt, ok := replyTypes[op]
	if !ok {
		return nil
	}
	m := mt.New()
	f := m.Descriptor().Fields().ByName("errno")
	if f == nil {
		return nil
	}
	m.Set(f, protoreflect.ValueOfInt32(int32(e)))
	return m.Interface()
}

// limitOptions are the gRPC options that go with the limits: a
// connection cannot have more streams than its session may have requests
// in flight (plus a margin), so what a peer makes the server hold stays
// bounded before any request is decoded.
func (s *Server) limitOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxConcurrentStreams(uint32(s.limits.MaxInflightPerSession + streamMargin))}
}

// requestBytes is what req is counted for in its session's in-flight
// bytes.
func (s *Server) requestBytes(req any) int64 {
	n := int64(requestOverhead)
	switch q := req.(type) {
	case *qtfsv1.WriteRequest:
		n += int64(len(q.GetData()))
	case *qtfsv1.ReadRequest:
		n += min(int64(q.GetSize()), int64(s.maxData))
	case *qtfsv1.OpenRequest:
		n += min(int64(q.GetReadInline()), int64(s.maxData))
	case *qtfsv1.ReaddirRequest:
		n += int64(s.maxData)
	case *qtfsv1.GetxattrRequest:
		n += min(int64(q.GetSize()), maxXattrSize)
	case *qtfsv1.ListxattrRequest:
		n += min(int64(q.GetSize()), maxXattrSize)
	case *qtfsv1.SetxattrRequest:
		n += int64(len(q.GetValue()))
	}
	return n
}

// admitSession counts a new session, or refuses it past MaxSessions.
func (s *Server) admitSession() bool {
	for {
		n := s.sessions.Load()
		if n >= int64(s.limits.MaxSessions) {
			return false
		}
		if s.sessions.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// limit is the unary interceptor that applies the per-session limits and
// the exports' operation allow-lists to FileSystem calls. It runs inside
// intercept, so a refusal is counted as an operation too.
func (s *Server) limit(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if !strings.HasPrefix(info.FullMethod, servicePrefix) {
		return handler(ctx, req)
	}
	op := info.FullMethod[len(servicePrefix):]
	cs := connFrom(ctx)
	if cs == nil || op == "Handshake" {
		return handler(ctx, req)
	}
	cs.mu.Lock()
	ss := cs.sess
	cs.mu.Unlock()
	if ss == nil {
		return handler(ctx, req)
	}
	if n := ss.inflight.Add(1); n > int64(s.limits.MaxInflightPerSession) {
		ss.inflight.Add(-1)
		return s.refuseLimit(op, ss, "inflight", syscall.EAGAIN,
			zap.Int64("inflight", n-1), zap.Int("max", s.limits.MaxInflightPerSession))
	}
	defer ss.inflight.Add(-1)
	b := s.requestBytes(req)
	if n := ss.inflightBytes.Add(b); n > s.limits.MaxInflightBytesPerSession {
		ss.inflightBytes.Add(-b)
		return s.refuseLimit(op, ss, "inflight_bytes", syscall.EAGAIN,
			zap.Int64("inflight_bytes", n-b), zap.Int64("request_bytes", b), zap.Int64("max", s.limits.MaxInflightBytesPerSession))
	}
	defer ss.inflightBytes.Add(-b)
	if e := s.checkOps(op, ss, req); e != 0 {
		return s.refuseLimit(op, ss, "op_not_allowed", e)
	}
	return handler(ctx, req)
}

// checkOps applies the allow-list of the export a request reaches through
// its mount or handles: EPERM when the export does not allow the
// operation. An open for writing needs Write too.
func (s *Server) checkOps(op string, ss *session, req any) syscall.Errno {
	mount, handles := requestIDs(req)
	check := func(ops opSet) syscall.Errno {
		if !ops.allows(op) {
			return syscall.EPERM
		}
		if o, ok := req.(*qtfsv1.OpenRequest); ok && writeIntent(int(o.GetFlags())) && !ops.allows("Write") {
			return syscall.EPERM
		}
		return 0
	}
	if mount != 0 {
		ss.mu.Lock()
		m := ss.mounts[mount]
		ss.mu.Unlock()
		if m != nil {
			if e := check(m.ops); e != 0 {
				return e
			}
		}
	}
	for _, id := range handles {
		if id == 0 {
			continue
		}
		ss.mu.Lock()
		h := ss.handles[id]
		ss.mu.Unlock()
		if h != nil {
			if e := check(h.ops); e != 0 {
				return e
			}
		}
	}
	return 0
}

// requestIDs returns the mount id and handle ids a request names.
func requestIDs(req any) (mount uint64, handles []uint64) {
	type mounter interface{ GetMount() uint64 }
	type handler interface{ GetHandle() uint64 }
	if m, ok := req.(mounter); ok {
		mount = m.GetMount()
	}
	if h, ok := req.(handler); ok {
		handles = append(handles, h.GetHandle())
	}
	if c, ok := req.(*qtfsv1.CopyFileRangeRequest); ok {
		handles = append(handles, c.GetHandleIn(), c.GetHandleOut())
	}
	return mount, handles
}

// refuseLimit counts and logs a refusal by limit or policy and returns
// the errno reply.
func (s *Server) refuseLimit(op string, ss *session, reason string, e syscall.Errno, fields ...zap.Field) (any, error) {
	s.met.refusal(reason)
	s.limitLog.log(s.log, reason, append(fields, zap.String("op", op), zap.Uint64("session", ss.id),
		zap.String("client", ss.client), zap.String("errno", errnoName(int32(e))))...)
	return errnoReplyOf(op, e), nil
}

// rateLog logs refusals at warn, at most once a second per reason, and
// says how many were not logged in between: a peer hammering a limit must
// not flood the log.
type rateLog struct {
	mu   sync.Mutex
	last map[string]time.Time
	skip map[string]int
}

func (r *rateLog) log(l *zap.Logger, reason string, fields ...zap.Field) {
	r.mu.Lock()
	if r.last == nil {
		r.last, r.skip = map[string]time.Time{}, map[string]int{}
	}
	now := time.Now()
	if now.Sub(r.last[reason]) < time.Second {
		r.skip[reason]++
		r.mu.Unlock()
		return
	}
	skipped := r.skip[reason]
	r.last[reason], r.skip[reason] = now, 0
	r.mu.Unlock()
	l.Warn("refused: "+reason, append(fields, zap.String("reason", reason), zap.Int("not_logged_since_last", skipped))...)
}
