package callstream

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Server runs the calls of Calls streams through a service's method
// handlers.
type Server struct {
	impl        any
	methods     map[string]method
	intercept   grpc.UnaryServerInterceptor
	maxInflight int
	maxFrame    int
}

// ServerOptions configure a Server.
type ServerOptions struct {
	// Interceptor wraps every call, as grpc.UnaryInterceptor does for plain
	// calls; nil: none.
	Interceptor grpc.UnaryServerInterceptor
	// MaxInflight bounds the calls of one stream that run at once; 0: 64.
	MaxInflight int
	// MaxFrameBytes bounds a frame read from a call channel; 0: 4 MiB.
	MaxFrameBytes int
	// Blocking declares, by full method name ("/qtfs.v1.FileSystem/Setlk"),
	// the methods whose calls may wait for something outside the server (a
	// lock, data in a pipe) for as long as it takes; the function says,
	// from the call's context and decoded request, whether this call may
	// (nil: every call of the method may). A call on a call channel runs on
	// the goroutine that reads the channel, so while a call declared here
	// runs the server watches the channel for the client's cancel; other
	// calls run without the watch (a goroutine and two deadline changes).
	// The function runs for every call of its method on a channel, before
	// the interceptor: it must be cheap. A name that is not a unary method
	// of the service panics NewServer.
	Blocking map[string]func(ctx context.Context, req any) bool
}

// method is one unary method of the service.
type method struct {
	handler grpc.MethodHandler
	// blocks, set for the methods ServerOptions.Blocking declares, says
	// whether a call may wait.
	blocks func(ctx context.Context, req any) bool
}

// everyCallWaits is the blocks of a method whose every call may wait.
func everyCallWaits(context.Context, any) bool { return true }

// NewServer returns a Server for the unary methods of desc, implemented by
// impl (what desc.HandlerType requires).
func NewServer(desc *grpc.ServiceDesc, impl any, opts ServerOptions) *Server {
	s := &Server{
		impl:        impl,
		methods:     make(map[string]method, len(desc.Methods)),
		intercept:   opts.Interceptor,
		maxInflight: opts.MaxInflight,
		maxFrame:    opts.MaxFrameBytes,
	}
	if s.maxInflight <= 0 {
		s.maxInflight = 64
	}
	if s.maxFrame <= 0 {
		s.maxFrame = defaultMaxFrame
	}
	for _, m := range desc.Methods {
		s.methods["/"+desc.ServiceName+"/"+m.MethodName] = method{handler: m.Handler}
	}
	for name, blocks := range opts.Blocking {
		m, ok := s.methods[name]
		if !ok {
			panic("callstream: Blocking names " + name + ", not a unary method of " + desc.ServiceName)
		}
		if blocks == nil {
			blocks = everyCallWaits
		}
		m.blocks = blocks
		s.methods[name] = m
	}
	return s
}

// Serve runs one stream until the client ends it or it fails; it returns
// once every call it started has finished.
func (s *Server) Serve(st grpc.BidiStreamingServer[qtfsv1.CallFrame, qtfsv1.CallFrame]) error {
	return s.serve(st.Context(), serverStreamCarrier{st})
}

// serve runs the calls that arrive on c under ctx.
func (s *Server) serve(ctx context.Context, c carrier) error {
	ss := &serverStream{
		s:       s,
		ctx:     ctx,
		c:       c,
		running: map[uint64]context.CancelFunc{},
		slots:   make(chan struct{}, s.maxInflight),
	}
	defer ss.wg.Wait()
	defer ss.cancelAll()
	for {
		f, err := c.recv()
		if err != nil {
			// The client ended the stream or the connection failed: the
			// calls still running are cancelled (nobody waits for them).
			return nil
		}
		if f.GetCancel() {
			ss.cancel(f.GetId())
			continue
		}
		select {
		case ss.slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		ctx, cancel := ss.callContext(f)
		if !ss.start(f.GetId(), cancel) {
			cancel()
			<-ss.slots
			ss.reply(&qtfsv1.CallFrame{Id: f.GetId(), Code: uint32(codes.InvalidArgument),
				Message: "callstream: call id already in flight"})
			continue
		}
		ss.wg.Add(1)
		go ss.run(ctx, f)
	}
}

// serverStream is the state of one stream or channel being served.
type serverStream struct {
	s   *Server
	ctx context.Context // the calls' parent
	c   carrier
	wg  sync.WaitGroup

	slots chan struct{} // one per call running

	sendMu sync.Mutex // carrier.send is not safe for concurrent use

	mu      sync.Mutex
	running map[uint64]context.CancelFunc
}

// callContext is the context of call f: the stream's (the connection's
// session and peer), with f's deadline.
func (ss *serverStream) callContext(f *qtfsv1.CallFrame) (context.Context, context.CancelFunc) {
	if t := f.GetTimeoutNs(); t > 0 {
		return context.WithTimeout(ss.ctx, time.Duration(min(t, uint64(1<<62))))
	}
	return context.WithCancel(ss.ctx)
}

func (ss *serverStream) start(id uint64, cancel context.CancelFunc) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if _, dup := ss.running[id]; dup {
		return false
	}
	ss.running[id] = cancel
	return true
}

func (ss *serverStream) cancel(id uint64) {
	ss.mu.Lock()
	cancel := ss.running[id]
	ss.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (ss *serverStream) cancelAll() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, cancel := range ss.running {
		cancel()
	}
}

// run runs one call and sends its reply.
func (ss *serverStream) run(ctx context.Context, f *qtfsv1.CallFrame) {
	defer ss.wg.Done()
	out := ss.s.call(ctx, f)
	ss.mu.Lock()
	cancel := ss.running[f.GetId()]
	delete(ss.running, f.GetId())
	ss.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	<-ss.slots
	if !f.GetNoReply() {
		ss.reply(out)
	}
}

// call runs call f and returns its reply.
func (s *Server) call(ctx context.Context, f *qtfsv1.CallFrame) *qtfsv1.CallFrame {
	out := &qtfsv1.CallFrame{Id: f.GetId()}
	resp, err := s.handle(ctx, f)
	if err == nil {
		out.Body, err = proto.Marshal(resp.(proto.Message))
	}
	if err != nil {
		st := status.Convert(err)
		out.Code, out.Message = uint32(st.Code()), st.Message()
	}
	return out
}

// handle runs the method handler of f; a panic outside the interceptor
// (which recovers those of the handler) becomes INTERNAL. On a call
// channel, a call its method's blocks says may wait has the channel
// watched from the moment its request is decoded.
func (s *Server) handle(ctx context.Context, f *qtfsv1.CallFrame) (resp any, err error) {
	m, ok := s.methods[f.GetMethod()]
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "callstream: unknown method %q", f.GetMethod())
	}
	defer func() {
		if r := recover(); r != nil {
			resp, err = nil, status.Errorf(codes.Internal, "callstream: %s: internal error", f.GetMethod())
		}
	}()
	dec := func(req any) error {
		msg, ok := req.(proto.Message)
		if !ok {
			return status.Errorf(codes.Internal, "callstream: %s: request %T is not a protobuf message", f.GetMethod(), req)
		}
		if err := proto.Unmarshal(f.GetBody(), msg); err != nil {
			return status.Errorf(codes.InvalidArgument, "callstream: %s: bad request: %v", f.GetMethod(), err)
		}
		if m.blocks != nil {
			if w := watchOf(ctx); w != nil && m.blocks(ctx, req) {
				w.start()
			}
		}
		return nil
	}
	return m.handler(s.impl, ctx, dec, s.intercept)
}

// reply sends one reply; when the stream has failed the reply is dropped
// (the client fails the call itself).
func (ss *serverStream) reply(f *qtfsv1.CallFrame) {
	ss.sendMu.Lock()
	defer ss.sendMu.Unlock()
	_ = ss.c.send(f) // a channel that fails closes itself, which ends the reader
}
