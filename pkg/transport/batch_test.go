package transport

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestBatchedTLS: a large Write over TLS leaves in one write(2), not one
// per record, and arrives whole; records written between two Writes keep
// their order.
func TestBatchedTLS(t *testing.T) {
	pki, err := WritePKI(t.TempDir(), PKIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scfg, err := serverTLSConfig(pki.ServerSecurity())
	if err != nil {
		t.Fatal(err)
	}
	ccfg, err := clientTLSConfig(pki.ClientSecurity())
	if err != nil {
		t.Fatal(err)
	}
	ccfg.ServerName = "127.0.0.1"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer raw.Close()
		conn := tls.Server(raw, scfg)
		b, _ := io.ReadAll(conn)
		got <- b
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	sock := &batchSocket{Conn: counted}
	tc := tls.Client(sock, ccfg)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c := &batchedTLS{Conn: tc, sock: sock}
	msg := make([]byte, 256<<10)
	rand.Read(msg)
	before := counted.writes.Load()
	if n, err := c.Write(msg); n != len(msg) || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	if w := counted.writes.Load() - before; w != 1 {
		t.Errorf("a 256 KiB Write made %d socket writes, want 1", w)
	}
	if _, err := c.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if b := <-got; !bytes.Equal(b, append(msg, "tail"...)) {
		t.Errorf("received %d bytes, want %d (or different content)", len(b), len(msg)+4)
	}
}

// TestBatchSocketOrder: what is gathered goes out before any later write,
// in the order written.
func TestBatchSocketOrder(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	s := &batchSocket{Conn: a}
	got := make(chan []byte, 1)
	go func() {
		all, _ := io.ReadAll(b)
		got <- all
	}()
	s.begin()
	s.Write([]byte("1"))
	s.Write([]byte("2"))
	if err := s.end(); err != nil {
		t.Fatal(err)
	}
	s.begin()
	s.Write([]byte("3"))
	s.mu.Lock()
	s.batching = false // as if end had not flushed yet when a write came
	s.mu.Unlock()
	s.Write([]byte("4"))
	s.end()
	a.Close()
	if all := string(<-got); all != "1234" {
		t.Errorf("socket got %q, want 1234", all)
	}
}
