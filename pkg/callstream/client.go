package callstream

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// errClosed is the error of calls after Close.
var errClosed = status.Error(codes.Canceled, "callstream: client closed")

// streamDesc describes FileSystem.Calls for NewStream.
var streamDesc = &grpc.StreamDesc{StreamName: "Calls", ServerStreams: true, ClientStreams: true}

// ClientOptions configure a Client.
type ClientOptions struct {
	// Direct, when set, picks the calls sent as plain unary calls on the
	// connection rather than on the stream (large transfers).
	Direct func(method string, req any) bool
	// Channel, when set, connects to the server for a call channel: it
	// dials and does the transport's security handshake (see
	// transport.DialChannel). Calls then go on a pool of channels, bound
	// with the token SetChannelToken gave; a call that finds no channel
	// idle, or comes while none can be opened, goes on a Calls stream.
	Channel func(ctx context.Context) (net.Conn, error)
	// ChannelFailed, when set, is told why a channel could not be opened
	// (once per failure after a success, so that logs are not flooded).
	ChannelFailed func(error)
	// MaxChannels bounds the channels open at once, each carrying one
	// call at a time; more calls at once go on a stream. 0: 4.
	MaxChannels int
	// NoReply, when set, picks the calls whose outcome the caller does
	// not need: on a channel they are sent without waiting for (or
	// getting) a reply, and succeed with an empty reply once sent.
	NoReply func(method string, req any) bool
	// MaxFrameBytes bounds a frame read from a channel; 0: 4 MiB.
	MaxFrameBytes int
}

// Client sends unary calls over FileSystem.Calls streams of cc. It is safe
// for concurrent use.
type Client struct {
	cc   grpc.ClientConnInterface
	opts ClientOptions

	ctx    context.Context // the streams' context; Close cancels it
	cancel context.CancelFunc

	mu      sync.Mutex
	cur     *stream       // the stream new calls use; nil: open one
	opening chan struct{} // closed when the open under way ends; nil: none
	openErr error         // the last open's error, for callers that waited on it

	nextID atomic.Uint64 // ids of calls on channels

	poolMu      sync.Mutex // guards the channel pool (pool.go)
	token       []byte     // binds a call channel; nil: use streams
	gen         uint64     // counts tokens: channels of an older one are closed
	idle        []*channel // channels between calls, the last used last
	chanOpen    int        // channels open or being opened, idle or in use
	chanOpening bool       // a channel is being opened
	trimArmed   bool       // trimIdle will run
	retryAt     time.Time  // no channel is opened before (the last open failed)
	chanBad     bool       // the last channel open failed (ChannelFailed was told)
}

var _ grpc.ClientConnInterface = (*Client)(nil)

// NewClient returns a Client over cc. No stream is opened until the first
// call.
func NewClient(cc grpc.ClientConnInterface, opts ClientOptions) *Client {
	ctx, cancel := context.WithCancel(context.Background())
	if opts.MaxFrameBytes <= 0 {
		opts.MaxFrameBytes = defaultMaxFrame
	}
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = defaultMaxChannels
	}
	return &Client{cc: cc, opts: opts, ctx: ctx, cancel: cancel}
}

// SetChannelToken sets the token that binds call channels to the session
// (HandshakeResponse.call_channel_token; nil: no channels). A new token
// means a new server connection: the channels and the stream in use are
// retired (calls in flight on them finish there) and the next call opens
// a channel with it.
func (c *Client) SetChannelToken(token []byte) {
	c.poolMu.Lock()
	if string(token) == string(c.token) {
		c.poolMu.Unlock()
		return
	}
	c.token = append([]byte(nil), token...)
	c.gen++
	c.retryAt = time.Time{}
	c.poolMu.Unlock()
	c.dropIdleChannels()
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.cur; st != nil {
		c.cur = nil
		st.retire()
	}
}

// Close ends the stream and the channels; calls in flight on the stream
// fail with codes.Canceled, those on channels end as the server answers,
// and later calls fail at once. It does not close cc.
func (c *Client) Close() error {
	c.cancel()
	c.dropIdleChannels()
	return nil
}

// NewStream opens a stream on the underlying connection: only unary calls
// are carried.
func (c *Client) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	return c.cc.NewStream(ctx, desc, method, opts...)
}

// Invoke sends one call and waits for its reply, as grpc.ClientConn.Invoke.
// A call with call options (grpc.WaitForReady...) is sent directly, since
// they mean nothing on the stream.
func (c *Client) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	if hasOptions(opts) || (c.opts.Direct != nil && c.opts.Direct(method, args)) {
		return c.cc.Invoke(ctx, method, args, reply, opts...)
	}
	req, ok := args.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "callstream: %s: request %T is not a protobuf message", method, args)
	}
	out, ok := reply.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "callstream: %s: reply %T is not a protobuf message", method, reply)
	}
	if err := ctx.Err(); err != nil {
		return status.FromContextError(err).Err()
	}
	if c.ctx.Err() != nil {
		return errClosed
	}
	body, err := proto.Marshal(req)
	if err != nil {
		return status.Errorf(codes.Internal, "callstream: %s: marshal request: %v", method, err)
	}
	frame := &qtfsv1.CallFrame{Method: method, Body: body}
	if dl, ok := ctx.Deadline(); ok {
		d := time.Until(dl)
		if d <= 0 {
			return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
		}
		frame.TimeoutNs = uint64(d)
	}
	if ch := c.takeChannel(); ch != nil {
		noReply := c.opts.NoReply != nil && c.opts.NoReply(method, args)
		return c.invokeOnChannel(ctx, ch, frame, out, noReply)
	}
	st, err := c.stream(ctx)
	if err != nil {
		return err
	}
	pc, err := st.send(frame)
	if err != nil {
		return err
	}
	select {
	case r := <-pc:
		if r.err != nil {
			return r.err
		}
		return decodeReply(method, r.frame, out)
	case <-ctx.Done():
		st.abandon(frame.GetId())
		return status.FromContextError(ctx.Err()).Err()
	}
}

// decodeReply is the outcome of a call whose reply is f: its status, or
// its body unmarshalled into out.
func decodeReply(method string, f *qtfsv1.CallFrame, out proto.Message) error {
	if f.GetCode() != 0 {
		return status.Error(codes.Code(f.GetCode()), f.GetMessage())
	}
	if err := proto.Unmarshal(f.GetBody(), out); err != nil {
		return status.Errorf(codes.Internal, "callstream: %s: unmarshal reply: %v", method, err)
	}
	return nil
}

// hasOptions reports whether opts hold more than the StaticMethod option
// generated clients always pass.
func hasOptions(opts []grpc.CallOption) bool {
	for _, o := range opts {
		if _, static := o.(grpc.StaticMethodCallOption); !static {
			return true
		}
	}
	return false
}

// stream returns the stream to send on, opening one when there is none.
// The open runs under the Client's context, not the caller's, so that a
// caller that gives up does not end the stream the others use; the caller
// waits for it only as long as its ctx allows.
func (c *Client) stream(ctx context.Context) (*stream, error) {
	for {
		c.mu.Lock()
		if st := c.cur; st != nil {
			c.mu.Unlock()
			return st, nil
		}
		if err := c.ctx.Err(); err != nil {
			c.mu.Unlock()
			return nil, errClosed
		}
		wait := c.opening
		if wait == nil {
			wait = make(chan struct{})
			c.opening = wait
			go c.open(wait)
		}
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		c.mu.Lock()
		st, err := c.cur, c.openErr
		c.mu.Unlock()
		if st != nil {
			return st, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// open opens a stream and makes it current, then closes done.
func (c *Client) open(done chan struct{}) {
	car, err := c.openStream()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.opening = nil
	defer close(done)
	if err != nil {
		if _, ok := status.FromError(err); !ok {
			err = status.Errorf(codes.Unavailable, "callstream: open: %v", err)
		}
		c.openErr = err
		return
	}
	st := &stream{c: car, pending: map[uint64]chan result{}}
	c.cur, c.openErr = st, nil
	go c.receive(st)
}

// openStream opens a Calls stream.
func (c *Client) openStream() (carrier, error) {
	ctx, cancel := context.WithCancel(c.ctx)
	cs, err := c.cc.NewStream(ctx, streamDesc, qtfsv1.FileSystem_Calls_FullMethodName)
	if err != nil {
		cancel()
		return nil, err
	}
	return clientStream{cs: cs, cancel: cancel}, nil
}

// receive delivers replies until the stream fails, then fails the calls in
// flight and drops the stream so that the next call opens another.
func (c *Client) receive(st *stream) {
	for {
		f, err := st.c.recv()
		if err != nil {
			c.mu.Lock()
			if c.cur == st {
				c.cur = nil
			}
			c.mu.Unlock()
			st.fail(brokenErr(err))
			st.c.close()
			return
		}
		st.deliver(f)
	}
}

// brokenErr is the error calls in flight get when their stream fails: the
// status of the failure when it says the call was not refused on purpose,
// else Unavailable (the call may or may not have been done).
func brokenErr(err error) error {
	s, ok := status.FromError(err)
	if errors.Is(err, context.Canceled) || (ok && s.Code() == codes.Canceled) {
		return status.Error(codes.Canceled, "callstream: client closed")
	}
	msg := err.Error()
	if ok {
		msg = s.Message()
	}
	return status.Errorf(codes.Unavailable, "callstream: stream ended: %s", msg)
}

// result is what a caller waiting for a reply gets.
type result struct {
	frame *qtfsv1.CallFrame
	err   error
}

// stream is one open carrier (Calls stream or call channel) and its calls
// in flight.
type stream struct {
	c carrier

	sendMu sync.Mutex // carrier.send is not safe for concurrent use

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan result
	err     error // set once the stream failed
	retired bool  // no new calls: closed when the last reply is in
}

// remove takes call id off the calls in flight and returns the channel
// its caller waits on (nil: nobody waits). over reports that the stream
// takes no more frames: it failed, or it was retired and this was its
// last call, and is now closed.
func (st *stream) remove(id uint64) (ch chan result, over bool) {
	st.mu.Lock()
	ch = st.pending[id]
	delete(st.pending, id)
	broken := st.err != nil
	idle := st.retired && len(st.pending) == 0
	st.mu.Unlock()
	if idle {
		st.c.close()
	}
	return ch, broken || idle
}

// retire closes the stream once its calls in flight have their replies.
func (st *stream) retire() {
	st.mu.Lock()
	st.retired = true
	idle := len(st.pending) == 0
	st.mu.Unlock()
	if idle {
		st.c.close()
	}
}

// send assigns frame an id and sends it; the reply arrives on the channel.
func (st *stream) send(frame *qtfsv1.CallFrame) (chan result, error) {
	ch := make(chan result, 1)
	st.mu.Lock()
	if st.err != nil {
		err := st.err
		st.mu.Unlock()
		return nil, err
	}
	st.nextID++
	frame.Id = st.nextID
	st.pending[frame.Id] = ch
	st.mu.Unlock()

	st.sendMu.Lock()
	err := st.c.send(frame)
	st.sendMu.Unlock()
	if err != nil {
		// A stream's send fails with io.EOF when the stream ended; the
		// reason comes from recv, which fails every call in flight; a
		// channel closes itself, which ends recv.
		st.mu.Lock()
		if st.err != nil {
			err = st.err
		} else {
			err = status.Errorf(codes.Unavailable, "callstream: send: %v", err)
		}
		delete(st.pending, frame.Id)
		st.mu.Unlock()
		return nil, err
	}
	return ch, nil
}

// abandon forgets call id and asks the server to cancel it.
func (st *stream) abandon(id uint64) {
	if ch, over := st.remove(id); ch == nil || over {
		return
	}
	st.sendMu.Lock()
	_ = st.c.send(&qtfsv1.CallFrame{Id: id, Cancel: true})
	st.sendMu.Unlock()
}

// deliver hands a reply to the caller waiting for it; replies to calls
// already given up are dropped.
func (st *stream) deliver(f *qtfsv1.CallFrame) {
	if ch, _ := st.remove(f.GetId()); ch != nil {
		ch <- result{frame: f}
	}
}

// fail ends every call in flight with err.
func (st *stream) fail(err error) {
	st.mu.Lock()
	st.err = err
	pending := st.pending
	st.pending = map[uint64]chan result{}
	st.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: err}
	}
}
