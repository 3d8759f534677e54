package callstream

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

const (
	// defaultMaxChannels is the size of a client's channel pool when the
	// options give none: calls beyond it at once go on a Calls stream.
	defaultMaxChannels = 4
	// channelRetry is how long a client uses streams only after a channel
	// could not be opened (a new token tries again at once).
	channelRetry = 10 * time.Second
	// channelIdleKeep is how long a channel beyond the first stays open
	// unused: the pool shrinks back to one once calls stop coming at once,
	// so an idle client holds one connection (and server goroutine).
	channelIdleKeep = 5 * time.Second
)

// The client's pool of call channels. Each channel carries one call at a
// time, written and answered on the caller's goroutine: no reader
// goroutine hands the reply over, which on a busy machine is a thread
// wake-up per call. Idle channels are kept, the most recently used first
// (its buffers are warm). A call that finds none idle goes on the Calls
// stream, and, while the pool is below MaxChannels, has one more opened
// in the background: a caller never waits for a dial, which on a link
// that went silent would outlast its deadline.
//
// The pool's fields are guarded by Client.poolMu.

// takeChannel returns a channel for one call, or nil when the call goes
// on a stream: no token or dialer, none idle, or a recent failure to
// open one.
func (c *Client) takeChannel() *channel {
	c.poolMu.Lock()
	defer c.poolMu.Unlock()
	if c.opts.Channel == nil || c.token == nil || c.ctx.Err() != nil {
		return nil
	}
	if n := len(c.idle); n > 0 {
		ch := c.idle[n-1]
		c.idle[n-1] = nil
		c.idle = c.idle[:n-1]
		return ch
	}
	if !c.chanOpening && c.chanOpen < c.opts.MaxChannels && !time.Now().Before(c.retryAt) {
		c.chanOpening = true
		c.chanOpen++
		go c.addChannel(c.token, c.gen)
	}
	return nil
}

// OpenChannels returns how many call channels are open, idle or carrying
// a call (not counting one being opened).
func (c *Client) OpenChannels() int {
	c.poolMu.Lock()
	defer c.poolMu.Unlock()
	if c.chanOpening {
		return c.chanOpen - 1
	}
	return c.chanOpen
}

// addChannel opens a channel with token (of generation gen) and adds it
// to the idle ones.
func (c *Client) addChannel(token []byte, gen uint64) {
	ch, err := c.openChannel(token)
	c.poolMu.Lock()
	c.chanOpening = false
	if err != nil {
		c.chanOpen--
		if gen == c.gen {
			c.retryAt = time.Now().Add(channelRetry)
		}
		tell := !c.chanBad
		c.chanBad = true
		c.poolMu.Unlock()
		if tell && c.opts.ChannelFailed != nil {
			c.opts.ChannelFailed(err)
		}
		return
	}
	c.chanBad = false
	ch.gen = gen
	c.poolMu.Unlock()
	c.putChannel(ch, false)
}

// openChannel dials and binds a channel with token, under the client's
// context.
func (c *Client) openChannel(token []byte) (*channel, error) {
	ctx, cancel := context.WithTimeout(c.ctx, helloTimeout)
	defer cancel()
	conn, err := c.opts.Channel(ctx)
	if err == nil {
		conn, err = OpenChannel(ctx, conn, token)
	}
	if err != nil {
		return nil, err
	}
	return newChannel(conn, c.opts.MaxFrameBytes), nil
}

// putChannel gives back a channel whose call ended; a broken one, one
// bound with an old token, or any after Close is closed instead.
func (c *Client) putChannel(ch *channel, broken bool) {
	c.poolMu.Lock()
	if broken || ch.gen != c.gen || c.ctx.Err() != nil {
		c.chanOpen--
		c.poolMu.Unlock()
		ch.close()
		return
	}
	ch.idleSince = time.Now()
	c.idle = append(c.idle, ch)
	arm := len(c.idle) > 1 && !c.trimArmed
	c.trimArmed = c.trimArmed || arm
	c.poolMu.Unlock()
	if arm {
		time.AfterFunc(channelIdleKeep, c.trimIdle)
	}
}

// trimIdle closes the channels beyond the first that have been idle for
// channelIdleKeep, and looks again later while there are more than one.
func (c *Client) trimIdle() {
	c.poolMu.Lock()
	n := 0 // the idle list is oldest first: count the stale ones
	for n < len(c.idle)-1 && time.Since(c.idle[n].idleSince) >= channelIdleKeep {
		n++
	}
	old := c.removeIdle(n)
	again := len(c.idle) > 1
	c.trimArmed = again
	c.poolMu.Unlock()
	closeChannels(old)
	if again {
		time.AfterFunc(channelIdleKeep, c.trimIdle)
	}
}

// dropIdleChannels closes the idle channels (a new token, Close); the
// ones in use are closed as they come back.
func (c *Client) dropIdleChannels() {
	c.poolMu.Lock()
	old := c.removeIdle(len(c.idle))
	c.poolMu.Unlock()
	closeChannels(old)
}

// removeIdle takes the n oldest idle channels out of the pool and returns
// them, to be closed once poolMu is released. Called with poolMu held.
func (c *Client) removeIdle(n int) []*channel {
	old := append([]*channel(nil), c.idle[:n]...)
	rest := copy(c.idle, c.idle[n:])
	clear(c.idle[rest:])
	c.idle = c.idle[:rest]
	c.chanOpen -= n
	return old
}

func closeChannels(chs []*channel) {
	for _, ch := range chs {
		ch.close()
	}
}

// invokeOnChannel sends frame on ch and, unless noReply (the call gets
// no reply: the server runs a channel's calls in order, so the next call
// finds this one done), reads its reply on this goroutine and decodes it
// into out before the channel, whose buffer holds the reply, goes back to
// the pool. A caller that gives up closes the channel (the server ends
// the call if it waits) and gets its context's status; a channel that
// fails fails the call with Unavailable (it may or may not have run).
func (c *Client) invokeOnChannel(ctx context.Context, ch *channel, frame *qtfsv1.CallFrame, out proto.Message, noReply bool) error {
	frame.Id = c.nextID.Add(1)
	frame.NoReply = noReply
	stop := context.AfterFunc(ctx, func() { _ = ch.conn.SetDeadline(time.Unix(1, 0)) })
	err := ch.write(frame)
	var reply *qtfsv1.CallFrame
	if err == nil && !noReply {
		reply, err = ch.recv()
	}
	if !stop() {
		// The context ended while the call ran: its wake-up may have cut
		// a read or write short, and the deadline stays on the channel.
		c.putChannel(ch, true)
		return status.FromContextError(ctx.Err()).Err()
	}
	if err == nil && !noReply && reply.GetId() != frame.GetId() {
		err = fmt.Errorf("reply to call %d, want %d", reply.GetId(), frame.GetId())
	}
	if err != nil {
		c.putChannel(ch, true)
		return status.Errorf(codes.Unavailable, "callstream: channel: %v", err)
	}
	if !noReply {
		err = decodeReply(frame.GetMethod(), reply, out)
	}
	c.putChannel(ch, false)
	return err
}
