package hostfs

import (
	"context"
	"strings"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// servicePrefix is the prefix of the FileSystem service's full method names.
var servicePrefix = "/" + qtfsv1.FileSystem_ServiceDesc.ServiceName + "/"

// slowOp is the duration above which an operation is logged at warn.
const slowOp = time.Second

// ServerOptions returns the options the grpc.Server serving s must be built
// with: a stats.Handler that binds a session to each connection (and
// releases it when the connection ends), a unary interceptor that counts,
// times and logs FileSystem calls and turns a handler panic into INTERNAL,
// message size limits that fit Options.MaxMessageBytes of data, and the
// server's dataCodec, which leaves a large Write's data where it was
// received and sends a large Read's data from the buffer it was read into
// (every other message it encodes and decodes as the proto codec does).
func (s *Server) ServerOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.ForceServerCodecV2(s.codec),
		grpc.StatsHandler(connBinder{s: s}),
		grpc.UnaryInterceptor(s.interceptAll),
		grpc.MaxRecvMsgSize(s.maxData + messageMargin),
		grpc.MaxSendMsgSize(s.maxData + messageMargin),
	}, s.limitOptions()...)
}

// interceptAll wraps every FileSystem call, plain or on a Calls stream:
// intercept, then limit, then Options.Interceptor. Once the call is over,
// the buffer a Write's data aliases is released.
func (s *Server) interceptAll(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if w, ok := req.(*qtfsv1.WriteRequest); ok {
		defer s.releaseData(w)
	}
	return s.intercept(ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return s.limit(ctx, req, info, func(ctx context.Context, req any) (any, error) {
			if s.extra == nil {
				return handler(ctx, req)
			}
			return s.extra(ctx, req, info, handler)
		})
	})
}

// Calls serves a stream of calls (FEATURE_CALL_STREAM) on the session of
// the stream's connection.
func (s *Server) Calls(st grpc.BidiStreamingServer[qtfsv1.CallFrame, qtfsv1.CallFrame]) error {
	return s.calls.Serve(st)
}

// blockingCalls declares the calls that may wait for something outside
// the server for as long as it takes (callstream.ServerOptions.Blocking):
// a Setlk that waits for the lock, and a Read or Write of a handle
// without positions, which waits for data or room.
func (s *Server) blockingCalls() map[string]func(context.Context, any) bool {
	return map[string]func(context.Context, any) bool{
		qtfsv1.FileSystem_Setlk_FullMethodName: func(_ context.Context, req any) bool {
			r, _ := req.(*qtfsv1.SetlkRequest)
			return r.GetWait()
		},
		qtfsv1.FileSystem_Read_FullMethodName: func(ctx context.Context, req any) bool {
			r, _ := req.(*qtfsv1.ReadRequest)
			return s.withoutPositions(ctx, r.GetHandle())
		},
		qtfsv1.FileSystem_Write_FullMethodName: func(ctx context.Context, req any) bool {
			r, _ := req.(*qtfsv1.WriteRequest)
			return s.withoutPositions(ctx, r.GetHandle())
		},
	}
}

// withoutPositions reports whether handle id of the session of ctx refuses
// positions; false when there is no such handle (the call itself refuses).
func (s *Server) withoutPositions(ctx context.Context, id uint64) bool {
	cs := connFrom(ctx)
	if cs == nil {
		return false
	}
	cs.mu.Lock()
	ss := cs.sess
	cs.mu.Unlock()
	if ss == nil {
		return false
	}
	h, e := ss.handle(id)
	if e != 0 {
		return false
	}
	defer h.put()
	return h.noPositions
}

// connBinder is the stats.Handler that ties sessions to connections.
type connBinder struct{ s *Server }

func (b connBinder) TagConn(ctx context.Context, info *stats.ConnTagInfo) context.Context {
	peer := ""
	if info != nil && info.RemoteAddr != nil {
		peer = info.RemoteAddr.Network() + ":" + info.RemoteAddr.String()
	}
	return withConn(ctx, b.s.newConn(peer))
}

func (b connBinder) HandleConn(ctx context.Context, st stats.ConnStats) {
	if _, ok := st.(*stats.ConnEnd); !ok {
		return
	}
	if cs := connFrom(ctx); cs != nil && cs.server == b.s {
		b.s.endConn(cs)
	}
}

func (connBinder) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (connBinder) HandleRPC(context.Context, stats.RPCStats) {}

// errnoReply is what every FileSystem reply has.
type errnoReply interface{ GetErrno() int32 }

// intercept wraps every FileSystem call: metrics, logs, panic recovery.
// Calls of other services pass through untouched.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo,
	handler grpc.UnaryHandler) (resp any, err error) {
	if !strings.HasPrefix(info.FullMethod, servicePrefix) {
		return handler(ctx, req)
	}
	op := info.FullMethod[len(servicePrefix):]
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("hostfs: handler panic", zap.String("op", op), zap.Any("panic", r), zap.Stack("stack"))
			resp, err = nil, status.Errorf(codes.Internal, "hostfs: %s: internal error", op)
		}
		d := time.Since(start)
		label := "OK"
		var errno int32
		if err != nil {
			label = "grpc_" + status.Code(err).String()
		} else if r, ok := resp.(errnoReply); ok && r.GetErrno() != 0 {
			errno = r.GetErrno()
			label = errnoName(errno)
		}
		s.met.op(op, label, d)
		if d > slowOp {
			s.log.Warn("slow operation", zap.String("op", op), zap.Duration("took", d),
				zap.Int32("errno", errno), zap.Error(err))
		} else if ce := s.log.Check(zap.DebugLevel, "op"); ce != nil {
			ce.Write(zap.String("op", op), zap.Duration("took", d), zap.Int32("errno", errno), zap.Error(err))
		}
	}()
	return handler(ctx, req)
}
