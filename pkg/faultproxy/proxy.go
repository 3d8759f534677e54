package faultproxy

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// dialTimeout bounds the proxy's connection to its target.
const dialTimeout = 5 * time.Second

// Proxy forwards connections accepted on its listener to a target.
type Proxy struct {
	ln      net.Listener
	network string
	target  string

	mu      sync.Mutex
	conns   map[*pair]struct{}
	stalled bool
	refuse  bool
	closed  bool
	// gate is closed while traffic may flow; a stall replaces it by an
	// open channel that Resume closes.
	gate     chan struct{}
	accepted int

	wg sync.WaitGroup
}

// pair is one proxied connection: the client side and the target side.
type pair struct {
	client, server net.Conn
	once           sync.Once
	// dead is closed when the pair is closed, releasing a pump that
	// waits out a stall.
	dead chan struct{}
}

func (p *pair) close() {
	p.once.Do(func() {
		close(p.dead)
		p.client.Close()
		p.server.Close()
	})
}

// New serves on ln and forwards each connection to target, dialled on
// network ("tcp" or "unix"). It takes ownership of ln.
func New(ln net.Listener, network, target string) *Proxy {
	open := make(chan struct{})
	close(open)
	p := &Proxy{ln: ln, network: network, target: target, conns: map[*pair]struct{}{}, gate: open}
	p.wg.Add(1)
	go p.accept()
	return p
}

// Listen listens on network/addr and forwards to target on the same network.
func Listen(network, addr, target string) (*Proxy, error) {
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listen %s %s: %w", network, addr, err)
	}
	return New(ln, network, target), nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() net.Addr { return p.ln.Addr() }

// Accepted is the number of connections accepted so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Conns is the number of connections open now.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Cut closes every open connection, both sides.
func (p *Proxy) Cut() {
	p.mu.Lock()
	pairs := make([]*pair, 0, len(p.conns))
	for c := range p.conns {
		pairs = append(pairs, c)
	}
	p.mu.Unlock()
	for _, c := range pairs {
		c.close()
	}
}

// Stall stops all traffic, like a link that went down: open connections
// stay open but carry nothing, and new connections are accepted but not
// forwarded until Resume.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.stalled {
		p.stalled = true
		p.gate = make(chan struct{})
	}
}

// Resume lets traffic flow again after Stall.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stalled {
		p.stalled = false
		close(p.gate)
	}
}

// Refuse makes the proxy close new connections at once (on) or forward
// them again (off), like a server that is down but whose host answers.
func (p *Proxy) Refuse(on bool) {
	p.mu.Lock()
	p.refuse = on
	p.mu.Unlock()
}

// Close stops accepting, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	if p.stalled {
		p.stalled = false
		close(p.gate)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.Cut()
	p.wg.Wait()
	return err
}

// wait blocks while the proxy is stalled; false once it is closed or
// dead (the connection waiting) is.
func (p *Proxy) wait(dead <-chan struct{}) bool {
	p.mu.Lock()
	gate, closed := p.gate, p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	select {
	case <-gate:
	case <-dead:
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return
		}
		p.mu.Lock()
		p.accepted++
		refuse, closed := p.refuse, p.closed
		p.mu.Unlock()
		if refuse || closed {
			c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects c to the target (once traffic may flow) and pumps bytes
// both ways until either side ends or the proxy cuts it.
func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	if !p.wait(nil) {
		c.Close()
		return
	}
	s, err := net.DialTimeout(p.network, p.target, dialTimeout)
	if err != nil {
		c.Close()
		return
	}
	pr := &pair{client: c, server: s, dead: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pr.close()
		return
	}
	p.conns[pr] = struct{}{}
	p.mu.Unlock()
	var done sync.WaitGroup
	done.Add(2)
	go func() { defer done.Done(); p.pump(pr.dead, s, c) }()
	go func() { defer done.Done(); p.pump(pr.dead, c, s) }()
	done.Wait()
	pr.close()
	p.mu.Lock()
	delete(p.conns, pr)
	p.mu.Unlock()
}

// pump copies src to dst, holding each chunk while the proxy is stalled.
// When src ends, dst's write side is shut (half-close) when it can be; on
// any error both sides are closed.
func (p *Proxy) pump(dead <-chan struct{}, dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait(dead) {
				dst.Close()
				src.Close()
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
					return
				}
			}
			dst.Close()
			src.Close()
			return
		}
	}
}
