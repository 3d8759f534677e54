package callstream

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// carrier moves CallFrames between client and server on a Calls stream.
// send is called by one goroutine at a time (the caller holds a send
// lock), recv by the one reading goroutine.
type carrier interface {
	send(*qtfsv1.CallFrame) error
	recv() (*qtfsv1.CallFrame, error)
	close()
}

// ---------------------------------------------------------------- Calls streams

// clientStream carries frames on a FileSystem.Calls stream.
type clientStream struct {
	cs     grpc.ClientStream
	cancel context.CancelFunc // ends the stream
}

func (s clientStream) send(f *qtfsv1.CallFrame) error { return s.cs.SendMsg(f) }

func (s clientStream) recv() (*qtfsv1.CallFrame, error) {
	f := new(qtfsv1.CallFrame)
	return f, s.cs.RecvMsg(f)
}

func (s clientStream) close() { s.cancel() }

// serverStreamCarrier is the server's end of a Calls stream.
type serverStreamCarrier struct {
	st grpc.BidiStreamingServer[qtfsv1.CallFrame, qtfsv1.CallFrame]
}

func (s serverStreamCarrier) send(f *qtfsv1.CallFrame) error   { return s.st.Send(f) }
func (s serverStreamCarrier) recv() (*qtfsv1.CallFrame, error) { return s.st.Recv() }
func (serverStreamCarrier) close()                             {}

// ---------------------------------------------------------------- call channels

const (
	// frameHeader is the length prefix of every frame on a channel.
	frameHeader = 4
	// helloTimeout bounds the exchange of ChannelHello and ChannelWelcome.
	helloTimeout = 10 * time.Second
	// maxHelloBytes bounds the first frames, which carry a token or a
	// short message.
	maxHelloBytes = 4 << 10
	// keptWriteBuffer and keptReadBuffer are the largest buffers a channel
	// keeps for the next frame.
	keptWriteBuffer = 64 << 10
	keptReadBuffer  = 256 << 10
	// defaultMaxFrame bounds the frames a channel reads when the options
	// give no bound (ClientOptions, ServerOptions MaxFrameBytes).
	defaultMaxFrame = 4 << 20
)

// channel carries frames on a connection of its own: each frame is a
// 4-byte big-endian length and the marshalled message. It carries one
// call at a time (see ChannelHello in the proto), so it needs no locks:
// its user, the client's caller or the server's serving goroutine, owns
// it for the call.
type channel struct {
	conn      net.Conn
	r         *bufio.Reader
	maxFrame  int       // the largest frame recv accepts
	wbuf      []byte    // reused by write
	rbuf      []byte    // reused by readFrame
	gen       uint64    // client: the token generation it was bound with
	idleSince time.Time // client: when it went back to the pool
}

func newChannel(conn net.Conn, maxFrame int) *channel {
	return &channel{conn: conn, r: bufio.NewReaderSize(conn, 64<<10), maxFrame: maxFrame}
}

// write sends m as one frame, in one write(2). It sets no deadline: on
// the client a call's context ends a write that cannot finish, on the
// server the end of the session does (both close the connection), and a
// deadline per write would arm a runtime timer per call, which wakes an
// idle thread.
func (c *channel) write(m proto.Message) error {
	b := append(c.wbuf[:0], 0, 0, 0, 0)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, m)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint32(b, uint32(len(b)-frameHeader))
	_, err = c.conn.Write(b)
	if cap(b) <= keptWriteBuffer {
		c.wbuf = b[:0]
	} else {
		c.wbuf = nil
	}
	return err
}

// recv reads one CallFrame. Its body is not copied: it stays valid only
// until the channel's next read.
func (c *channel) recv() (*qtfsv1.CallFrame, error) {
	b, err := c.readFrame(c.maxFrame)
	if err != nil {
		return nil, err
	}
	return decodeFrame(b)
}

// read reads one frame of at most max bytes into m.
func (c *channel) read(m proto.Message, max int) error {
	b, err := c.readFrame(max)
	if err != nil {
		return err
	}
	return proto.Unmarshal(b, m)
}

// readFrame reads one frame of at most max bytes into the channel's read
// buffer, which it returns: valid until the next read. The buffer is kept
// across frames up to keptReadBuffer bytes: a fresh one per frame was
// zeroed, then returned to the system, which on large replies (listings)
// was a third of the client's CPU.
func (c *channel) readFrame(max int) ([]byte, error) {
	var hdr [frameHeader]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if uint64(n) > uint64(max) {
		return nil, fmt.Errorf("callstream: channel frame of %d bytes, more than the %d accepted", n, max)
	}
	buf := c.rbuf
	if uint64(cap(buf)) < uint64(n) {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if cap(buf) <= keptReadBuffer {
		c.rbuf = buf
	}
	if _, err := io.ReadFull(c.r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf, nil
}

// decodeFrame decodes a marshalled CallFrame, as proto.Unmarshal does but
// with the body aliasing b (the caller unmarshals it at once).
func decodeFrame(b []byte) (*qtfsv1.CallFrame, error) {
	f := new(qtfsv1.CallFrame)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		if !num.IsValid() {
			return nil, errors.New("callstream: frame: invalid field number")
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType && (num == 1 || num == 4 || num == 5 || num == 6 || num == 8):
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			switch num {
			case 1:
				f.Id = v
			case 4:
				f.TimeoutNs = v
			case 5:
				f.Cancel = v != 0
			case 6:
				f.Code = uint32(v)
			case 8:
				f.NoReply = v != 0
			}
		case typ == protowire.BytesType && (num == 2 || num == 3 || num == 7):
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
			if num != 3 && !utf8.Valid(v) {
				return nil, errors.New("callstream: frame: string field contains invalid UTF-8")
			}
			switch num {
			case 2:
				f.Method = string(v)
			case 3:
				f.Body = v
			case 7:
				f.Message = string(v)
			}
		default: // a field this version does not know, or of another type
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return f, nil
}

func (c *channel) close() { c.conn.Close() }

// OpenChannel binds conn, a connection to the server on which the
// transport's security handshake is done, as a call channel of the
// session whose token it presents. On failure conn is closed; a refusal
// by the server is a status error with the server's code and reason.
func OpenChannel(ctx context.Context, conn net.Conn, token []byte) (net.Conn, error) {
	ch := newChannel(conn, maxHelloBytes)
	dl := time.Now().Add(helloTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	if err := conn.SetDeadline(dl); err != nil {
		conn.Close()
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var w qtfsv1.ChannelWelcome
	err := ch.write(&qtfsv1.ChannelHello{Token: token})
	if err == nil {
		err = ch.read(&w, maxHelloBytes)
	}
	if err == nil && ch.r.Buffered() > 0 {
		err = fmt.Errorf("callstream: channel: the server sent frames before the first call")
	}
	if err == nil && w.GetCode() != 0 {
		err = status.Error(codes.Code(w.GetCode()), "callstream: channel refused: "+w.GetMessage())
	}
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if err == nil {
		err = conn.SetDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// BindFunc binds a call channel that presented token: it returns the
// context its calls run in (the session's connection, the peer), and a
// function the server calls when the channel ends. An error (a status:
// its code and message reach the client) refuses the channel.
type BindFunc func(token []byte) (ctx context.Context, done func(), err error)

// ServeChannel serves the call channel on conn, a connection on which the
// transport's security handshake is done: it reads the ChannelHello,
// binds it with bind, then runs its calls as Serve runs those of a
// stream, until the client closes it, the connection fails or the bound
// context ends. It closes conn before it returns.
func (s *Server) ServeChannel(conn net.Conn, bind BindFunc) error {
	defer conn.Close()
	ch := newChannel(conn, s.maxFrame)
	if err := conn.SetDeadline(time.Now().Add(helloTimeout)); err != nil {
		return err
	}
	var hello qtfsv1.ChannelHello
	if err := ch.read(&hello, maxHelloBytes); err != nil {
		return fmt.Errorf("callstream: channel hello: %w", err)
	}
	ctx, done, err := bind(hello.GetToken())
	if err != nil {
		st := status.Convert(err)
		_ = ch.write(&qtfsv1.ChannelWelcome{Code: uint32(st.Code()), Message: st.Message()})
		return err
	}
	defer done()
	if err := ch.write(&qtfsv1.ChannelWelcome{}); err != nil {
		return err
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	// The bound context ending (the session's connection closed) ends the
	// channel: closing conn wakes the reader, or the call that waits.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	s.serveChannel(ctx, ch)
	return nil
}

// serveChannel runs the calls of ch one after the other on this
// goroutine, each under a context of ctx, until the channel fails or
// breaks the one-call-at-a-time rule.
func (s *Server) serveChannel(ctx context.Context, ch *channel) {
	for {
		f, err := ch.recv()
		if err != nil {
			return
		}
		if f.GetCancel() {
			continue // the cancel of a call that had already ended
		}
		w := &watch{ch: ch, id: f.GetId()}
		var cctx context.Context
		cctx, w.cancel = context.WithCancel(ctx)
		if t := f.GetTimeoutNs(); t > 0 {
			cctx = clientDeadline{cctx, time.Now().Add(time.Duration(min(t, uint64(1<<62))))}
		}
		out := s.call(context.WithValue(cctx, watchKey{}, w), f)
		ok := w.stop()
		w.cancel()
		if !ok || (!f.GetNoReply() && ch.write(out) != nil) {
			return
		}
	}
}

// clientDeadline is the context of a call on a channel that has a
// deadline: it reports the client's deadline but arms no timer for it (a
// runtime timer per call wakes an idle thread to watch it). The client
// enforces the deadline by closing the channel, which ends a call that
// waits (see ServerOptions.Blocking); a call that does not wait ends soon
// on its own.
type clientDeadline struct {
	context.Context
	deadline time.Time
}

func (c clientDeadline) Deadline() (time.Time, bool) { return c.deadline, true }

// watchKey keys the watch of a call running on a channel in its context.
type watchKey struct{}

// watch lets a call that runs on a channel's serving goroutine be
// cancelled while it waits: start starts a goroutine that reads the
// channel (the serving goroutine is busy with the call) until the
// client's cancel of the call, the channel's end, or the call's end.
type watch struct {
	ch     *channel
	id     uint64
	cancel context.CancelFunc

	// Set and read by the call's goroutine (start, then stop).
	started bool
	done    chan struct{}
	broken  bool // set by the watching goroutine before done closes
}

// watchOf returns the watch of the call of ctx, nil when the call does not
// run on a call channel.
func watchOf(ctx context.Context) *watch {
	w, _ := ctx.Value(watchKey{}).(*watch)
	return w
}

// start starts watching the channel while the call runs; once started,
// it does nothing.
func (w *watch) start() {
	if w.started {
		return
	}
	w.started = true
	w.done = make(chan struct{})
	go w.run()
}

// run reads what the client sends while the call runs: its cancel ends
// the call, as does an error (the channel closed); anything else breaks
// the channel's rule, and the channel is dropped. A read that stop cuts
// short with a deadline ends it with the channel intact.
func (w *watch) run() {
	defer close(w.done)
	// Peek first: stop's deadline then never cuts a frame in two, since
	// a frame is read only once its first byte is in.
	if _, err := w.ch.r.Peek(1); err != nil {
		w.broken = !errors.Is(err, os.ErrDeadlineExceeded)
		w.cancel()
		return
	}
	f, err := w.ch.recv()
	if err != nil || !f.GetCancel() || f.GetId() != w.id {
		w.broken = true
	}
	w.cancel()
}

// stop ends the watch of a call that has ended and reports whether the
// channel can carry the next call.
func (w *watch) stop() bool {
	if !w.started {
		return true
	}
	// The deadline wakes a read that waits; a call's cancel that was
	// being read completes first (it is a few bytes, in the socket).
	_ = w.ch.conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	return !w.broken && w.ch.conn.SetReadDeadline(time.Time{}) == nil
}
