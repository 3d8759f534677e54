package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T, network, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	return ln
}

func newProxy(t *testing.T, network string) (*Proxy, func() net.Conn) {
	t.Helper()
	var target, listen string
	switch network {
	case "tcp":
		target = echoServer(t, "tcp", "127.0.0.1:0").Addr().String()
		listen = "127.0.0.1:0"
	case "unix":
		dir := t.TempDir()
		target = echoServer(t, "unix", filepath.Join(dir, "echo")).Addr().String()
		listen = filepath.Join(dir, "proxy")
	}
	p, err := Listen(network, listen, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dial := func() net.Conn {
		c, err := net.Dial(network, p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	return p, dial
}

// roundTrip writes msg and reads it back within d; it reports what came.
func roundTrip(c net.Conn, msg []byte, d time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(d))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	n, err := io.ReadFull(c, got)
	return got[:n], err
}

func TestProxy(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			t.Run("forwards", func(t *testing.T) {
				_, dial := newProxy(t, network)
				c := dial()
				msg := bytes.Repeat([]byte("qtfs"), 100000)
				got, err := roundTrip(c, msg, 5*time.Second)
				if err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("round trip: %d bytes, %v", len(got), err)
				}
			})
			t.Run("stall holds bytes, resume delivers them in order", func(t *testing.T) {
				p, dial := newProxy(t, network)
				c := dial()
				if _, err := roundTrip(c, []byte("before"), 5*time.Second); err != nil {
					t.Fatal(err)
				}
				p.Stall()
				got, err := roundTrip(c, []byte("during"), 300*time.Millisecond)
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() || len(got) != 0 {
					t.Fatalf("stalled round trip: %q, %v; want a timeout and nothing", got, err)
				}
				p.Resume()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 6)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "during" {
					t.Fatalf("after resume: %q, %v", buf, err)
				}
			})
			t.Run("stall holds new connections", func(t *testing.T) {
				p, dial := newProxy(t, network)
				p.Stall()
				c := dial()
				if got, err := roundTrip(c, []byte("x"), 300*time.Millisecond); err == nil {
					t.Fatalf("new connection answered while stalled: %q", got)
				}
				p.Resume()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 1)
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "x" {
					t.Fatalf("after resume: %q, %v", buf, err)
				}
			})
			t.Run("cut closes connections, even stalled ones", func(t *testing.T) {
				p, dial := newProxy(t, network)
				c := dial()
				if _, err := roundTrip(c, []byte("hi"), 5*time.Second); err != nil {
					t.Fatal(err)
				}
				p.Stall()
				c.Write([]byte("lost"))
				time.Sleep(50 * time.Millisecond)
				p.Cut()
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, err := c.Read(make([]byte, 8))
				if err == nil || n != 0 {
					t.Fatalf("read after cut: %d, %v; want the connection closed", n, err)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("read after cut timed out: the connection stayed open")
				}
				deadline := time.Now().Add(5 * time.Second)
				for p.Conns() != 0 && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				if n := p.Conns(); n != 0 {
					t.Fatalf("%d connections left after cut", n)
				}
				p.Resume()
				if _, err := roundTrip(dial(), []byte("again"), 5*time.Second); err != nil {
					t.Fatalf("new connection after cut: %v", err)
				}
			})
			t.Run("refuse", func(t *testing.T) {
				p, dial := newProxy(t, network)
				p.Refuse(true)
				if got, err := roundTrip(dial(), []byte("x"), 5*time.Second); err == nil {
					t.Fatalf("refused connection answered %q", got)
				}
				p.Refuse(false)
				if _, err := roundTrip(dial(), []byte("x"), 5*time.Second); err != nil {
					t.Fatalf("after refuse off: %v", err)
				}
				if p.Accepted() != 2 {
					t.Fatalf("accepted %d, want 2", p.Accepted())
				}
			})
		})
	}
}

func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	target := echoServer(t, "tcp", "127.0.0.1:0").Addr().String()
	p, err := Listen("tcp", "127.0.0.1:0", target)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 5 {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := roundTrip(c, []byte("x"), 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	p.Stall()
	for _, c := range conns {
		c.Write([]byte("held"))
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while stalled")
	}
	for _, c := range conns {
		c.Close()
	}
	// The echo server's goroutines end once their peers are closed.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+1 {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
	if _, err := net.DialTimeout("tcp", p.Addr().String(), time.Second); err == nil {
		t.Fatal("proxy still accepts after Close")
	}
}
