package fifo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	qfs "github.com/qtfs/qtfs/pkg/fs"
	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Direction is the way a bridge carries bytes.
type Direction int

const (
	// ToDPU: a host process writes, a DPU process reads (stdout, stderr).
	ToDPU Direction = iota + 1
	// FromDPU: a DPU process writes, a host process reads (stdin).
	FromDPU
)

func (d Direction) String() string {
	switch d {
	case ToDPU:
		return dirToDPU
	case FromDPU:
		return dirFromDPU
	}
	return "direction(" + strconv.Itoa(int(d)) + ")"
}

func (d Direction) wire() qtfsv1.FifoDirection {
	if d == ToDPU {
		return qtfsv1.FifoDirection_FIFO_DIRECTION_TO_DPU
	}
	return qtfsv1.FifoDirection_FIFO_DIRECTION_FROM_DPU
}

// ClientMetrics are the DPU side's collectors, shared by the Bridgers of
// a process: qtfs_client_fifo_*.
type ClientMetrics struct {
	m      *metrics
	active atomic.Int64
}

// NewClientMetrics registers the DPU side's collectors on reg (nil: none).
func NewClientMetrics(reg prometheus.Registerer) (*ClientMetrics, error) {
	cm := &ClientMetrics{}
	m, err := newMetrics("qtfs_client_fifo", "from the DPU", reg, func() float64 { return float64(cm.active.Load()) })
	if err != nil {
		return nil, err
	}
	cm.m = m
	return cm, nil
}

// BridgerOptions configure a Bridger.
type BridgerOptions struct {
	// Root is the directory in which the DPU's paths are resolved, as
	// chroot(2) would resolve them (the offload chroot); "" is "/".
	Root string
	// Logger receives a line per bridge; nil logs nothing.
	Logger *zap.Logger
	// Metrics counts bridges and bytes; nil counts nothing exported.
	Metrics *ClientMetrics
}

// Bridger starts bridges between FIFOs of the DPU and of the host.
type Bridger struct {
	client qtfsv1.FifoClient
	root   string // resolved, "/" for none
	rootFd int
	log    *zap.Logger
	m      *ClientMetrics
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	live map[*Bridge]struct{}
}

// NewBridger returns a Bridger that reaches the host over cc.
func NewBridger(cc grpc.ClientConnInterface, opts BridgerOptions) (*Bridger, error) {
	root := opts.Root
	if root == "" {
		root = "/"
	}
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("fifo: root %s: %w", root, err)
	}
	fd, err := unix.Open(real, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("fifo: root %s: %w", root, err)
	}
	b := &Bridger{client: qtfsv1.NewFifoClient(cc), root: real, rootFd: fd, log: opts.Logger, m: opts.Metrics,
		live: map[*Bridge]struct{}{}}
	if b.log == nil {
		b.log = zap.NewNop()
	}
	if b.m == nil {
		b.m, _ = NewClientMetrics(nil)
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Close ends every bridge and waits for them.
func (b *Bridger) Close() error {
	b.cancel()
	b.wg.Wait()
	return unix.Close(b.rootFd)
}

// Active is the number of bridges open now.
func (b *Bridger) Active() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.live)
}

// openInRoot opens p beneath the root as a process chrooted there would
// (absolute symlinks lead to the root, ".." stops at it), O_PATH.
func (b *Bridger) openInRoot(p string) (int, error) {
	return unix.Openat2(b.rootFd, p, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// Resolve returns the path of the FIFO p, as a process in the root names
// it, with its symlinks resolved (/var/run/docker/x -> /run/docker/x),
// which is the host path the bridge uses. It fails when p is not a FIFO.
func (b *Bridger) Resolve(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("fifo %q: want an absolute path", p)
	}
	fd, err := b.openInRoot(p)
	if err != nil {
		return "", fmt.Errorf("fifo %s: %w", p, err)
	}
	defer unix.Close(fd)
	if err := checkFifo(fd); err != nil {
		return "", fmt.Errorf("fifo %s: %w", p, err)
	}
	real, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", fmt.Errorf("fifo %s: %w", p, err)
	}
	rel, ok := qfs.InRoot(real, b.root)
	if !ok {
		return "", fmt.Errorf("fifo %s: resolves to %s, outside the root %s", p, real, b.root)
	}
	return rel, nil
}

// Bridge is one FIFO carried one way.
type Bridge struct {
	// Path is the FIFO's path, on the DPU in the root and on the host.
	Path string
	Dir  Direction
	// Created is true when the host FIFO was made for this bridge.
	Created bool

	cancel context.CancelFunc
	done   chan struct{}
	eof    atomic.Bool
}

// Done is closed once the bridge ended.
func (br *Bridge) Done() <-chan struct{} { return br.done }

// EOF reports whether the bridge ended by carrying EOF, rather than by
// being cut (Close, a side that went away).
func (br *Bridge) EOF() bool { return br.eof.Load() }

// Close ends the bridge and waits for it; a side still waiting for its
// peer is released.
func (br *Bridge) Close() {
	br.cancel()
	<-br.done
}

// Start bridges the FIFO at path p (resolved, see Resolve) of the root
// with the host's FIFO at the same path, which the server makes when it
// is missing. It returns once the host FIFO exists; the bytes then go in
// the background until EOF, a side going away, or Close.
func (b *Bridger) Start(p string, dir Direction) (*Bridge, error) {
	pfd, err := b.openInRoot(p)
	if err != nil {
		return nil, fmt.Errorf("fifo %s: %w", p, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		unix.Close(pfd)
		if err == nil {
			err = errNotFifo
		}
		return nil, fmt.Errorf("fifo %s: %w", p, err)
	}
	ctx, cancel := context.WithCancel(b.ctx)
	fail := func(err error) (*Bridge, error) {
		cancel()
		unix.Close(pfd)
		b.m.m.bridges.WithLabelValues(dir.String(), resultFailed).Inc()
		return nil, err
	}
	stream, err := b.client.Bridge(ctx)
	if err != nil {
		return fail(fmt.Errorf("fifo %s: %w", p, err))
	}
	open := &qtfsv1.FifoOpen{Path: []byte(p), Direction: dir.wire(), Mode: st.Mode & 0o777}
	if err := stream.Send(&qtfsv1.FifoRequest{Msg: &qtfsv1.FifoRequest_Open{Open: open}}); err != nil {
		return fail(fmt.Errorf("fifo %s: %w", p, recvErr(stream, err)))
	}
	first, err := stream.Recv()
	if err != nil {
		return fail(fmt.Errorf("fifo %s: %w", p, err))
	}
	ready := first.GetReady()
	if ready == nil {
		if e := first.GetError(); e != nil {
			return fail(fmt.Errorf("fifo %s: the host refused: %s (%w)", p, e.GetMessage(), syscall.Errno(e.GetErrno())))
		}
		return fail(fmt.Errorf("fifo %s: unexpected first answer from the host", p))
	}
	br := &Bridge{Path: p, Dir: dir, Created: ready.GetCreated(), cancel: cancel, done: make(chan struct{})}
	b.mu.Lock()
	b.live[br] = struct{}{}
	b.mu.Unlock()
	b.m.active.Add(1)
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer close(br.done)
		defer func() {
			b.mu.Lock()
			delete(b.live, br)
			b.mu.Unlock()
			b.m.active.Add(-1)
		}()
		defer cancel()
		defer unix.Close(pfd)
		log := b.log.With(zap.String("path", p), zap.Stringer("direction", dir))
		var err error
		if dir == ToDPU {
			err = b.toDPU(ctx, pfd, stream, br)
		} else {
			err = b.fromDPU(ctx, pfd, stream, br)
		}
		result := resultOK
		switch {
		case br.eof.Load():
		case ctx.Err() != nil && err == nil:
			result = resultCut
		case err != nil:
			result = resultFailed
			log.Warn("fifo: bridge failed", zap.Error(err))
		default:
			result = resultCut
		}
		b.m.m.bridges.WithLabelValues(dir.String(), result).Inc()
		log.Debug("fifo: bridge ended", zap.String("result", result))
	}()
	return br, nil
}

// toDPU writes what the host sends into the DPU's FIFO. The stream is
// read from the start, so that a failure of the host end also releases a
// DPU end still waiting for its reader; one message at most waits
// between the two.
func (b *Bridger) toDPU(ctx context.Context, pfd int, stream qtfsv1.Fifo_BridgeClient, br *Bridge) error {
	msgs := make(chan *qtfsv1.FifoResponse, 1)
	var recvErr error
	go func() {
		defer close(msgs)
		for {
			resp, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return // what came before is still to be written
			}
			if err != nil {
				if ctx.Err() == nil {
					recvErr = err
				}
				br.cancel()
				return
			}
			select {
			case msgs <- resp:
			case <-ctx.Done():
				return
			}
		}
	}()
	f, err := openWait(ctx, pfd, true)
	if err != nil {
		cut := ctx.Err() != nil
		br.cancel()
		for range msgs {
		}
		if cut {
			return recvErr
		}
		return err
	}
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	for resp := range msgs {
		switch m := resp.GetMsg().(type) {
		case *qtfsv1.FifoResponse_Data:
			if _, err := f.Write(m.Data); err != nil {
				b.log.Debug("fifo: write on the DPU", zap.Error(err))
				// The DPU's reader went away (EPIPE): the host's writer
				// keeps its FIFO, a new bridge may carry it on.
				br.cancel()
				for range msgs {
				}
				return nil
			}
			b.m.m.moved(dirToDPU, len(m.Data))
		case *qtfsv1.FifoResponse_Eof:
			br.eof.Store(true)
			br.cancel()
			for range msgs {
			}
			return nil
		case *qtfsv1.FifoResponse_Error:
			br.cancel()
			for range msgs {
			}
			return fmt.Errorf("the host: %s (%w)", m.Error.GetMessage(), syscall.Errno(m.Error.GetErrno()))
		}
	}
	return recvErr
}

// fromDPU sends what the DPU's writers write, then EOF.
func (b *Bridger) fromDPU(ctx context.Context, pfd int, stream qtfsv1.Fifo_BridgeClient, br *Bridge) error {
	// The server's answers: only an error or the end of the stream, which
	// end the bridge, also while it waits for the DPU's writer.
	ended := make(chan error, 1)
	go func() {
		for {
			resp, err := stream.Recv()
			if err == nil {
				if e := resp.GetError(); e != nil {
					err = fmt.Errorf("the host: %s (%w)", e.GetMessage(), syscall.Errno(e.GetErrno()))
				} else {
					continue
				}
			}
			if errors.Is(err, io.EOF) {
				err = nil
			}
			ended <- err
			br.cancel()
			return
		}
	}()
	err := b.carryFromDPU(ctx, pfd, stream, br)
	br.cancel()
	if rerr := <-ended; err == nil && !br.eof.Load() {
		if s, ok := status.FromError(rerr); !ok || s.Message() != context.Canceled.Error() {
			err = rerr
		}
	}
	return err
}

func (b *Bridger) carryFromDPU(ctx context.Context, pfd int, stream qtfsv1.Fifo_BridgeClient, br *Bridge) error {
	f, err := openWait(ctx, pfd, false)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer f.Close()
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	buf := make([]byte, ChunkSize)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if err := stream.Send(&qtfsv1.FifoRequest{Msg: &qtfsv1.FifoRequest_Data{Data: buf[:n]}}); err != nil {
				return nil // the stream ended: its reason comes from Recv
			}
			b.m.m.moved(dirFromDPU, n)
		}
		if errors.Is(rerr, io.EOF) {
			if err := stream.Send(&qtfsv1.FifoRequest{Msg: &qtfsv1.FifoRequest_CloseWrite{CloseWrite: true}}); err != nil {
				return nil
			}
			if err := stream.CloseSend(); err != nil {
				return nil
			}
			// The host closes its writer, then ends the stream.
			br.eof.Store(true)
			<-ctx.Done()
			return nil
		}
		if rerr != nil {
			if ctx.Err() != nil {
				return nil
			}
			return rerr
		}
	}
}

// recvErr is the reason a Send failed, which comes with Recv.
func recvErr(stream qtfsv1.Fifo_BridgeClient, err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.Recv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// Remove removes host FIFOs that bridges made (and their directory once
// empty).
func (b *Bridger) Remove(ctx context.Context, paths []string) error {
	req := &qtfsv1.FifoRemoveRequest{}
	for _, p := range paths {
		req.Paths = append(req.Paths, []byte(p))
	}
	resp, err := b.client.Remove(ctx, req)
	if err != nil {
		return fmt.Errorf("fifo: remove on the host: %w", err)
	}
	if e := syscall.Errno(resp.GetErrno()); e != 0 {
		return fmt.Errorf("fifo: remove on the host: %w", e)
	}
	return nil
}
