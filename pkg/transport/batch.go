package transport

import (
	"net"
	"sync"
)

// TLS writes a message as records of at most 16 KiB and hands each to the
// socket with its own write(2). On loopback TCP every write(2) also runs
// the receive path in the writer's context and wakes the reader, so a
// 256 KiB gRPC write cost sixteen of each. A batchSocket under the TLS
// connection and a batchedTLS over it gather the records of one Write and
// send them with one write(2).

// batchSocket is the socket under a TLS connection. While batching, the
// records written to it are gathered; flush sends them.
type batchSocket struct {
	net.Conn
	mu       sync.Mutex // serialises writes to the socket with the batch
	batching bool
	buf      []byte
}

// maxKeptBatch is the largest batch buffer kept for the next Write.
const maxKeptBatch = 512 << 10

func (s *batchSocket) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.batching {
		s.buf = append(s.buf, p...)
		return len(p), nil
	}
	// Records gathered earlier go first: a record must never overtake
	// one encrypted before it.
	if err := s.flushLocked(); err != nil {
		return 0, err
	}
	return s.Conn.Write(p)
}

// begin starts gathering records.
func (s *batchSocket) begin() {
	s.mu.Lock()
	s.batching = true
	s.mu.Unlock()
}

// end stops gathering and sends what was gathered, with any record
// written in between (a TLS key update answered from a Read) in order.
func (s *batchSocket) end() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.batching = false
	return s.flushLocked()
}

func (s *batchSocket) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.Conn.Write(s.buf)
	if cap(s.buf) > maxKeptBatch {
		s.buf = nil
	} else {
		s.buf = s.buf[:0]
	}
	return err
}

// batchedTLS is a TLS connection over a batchSocket: each Write leaves in
// one write(2).
type batchedTLS struct {
	net.Conn // the TLS connection
	sock     *batchSocket
	wmu      sync.Mutex
}

func (c *batchedTLS) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.sock.begin()
	n, err := c.Conn.Write(p)
	if ferr := c.sock.end(); err == nil && ferr != nil {
		return 0, ferr
	}
	return n, err
}
