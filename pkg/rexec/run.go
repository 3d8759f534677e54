package rexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

// Exit codes of runs that did not get to run, as a shell reports them.
const (
	CodeCannotRun = 126 // refused by the host's allow-list, or not executable
	CodeNotFound  = 127 // no such binary on the host
	CodeFailed    = 255 // rexec failed: server, connection, usage
)

// stdinChunk is the largest stdin message.
const stdinChunk = 128 << 10

// Options describe one remote run.
type Options struct {
	Binary string   // absolute host path or a name in the host's PATH
	Argv0  string   // argv[0] for the process; "" means Binary
	Args   []string // argv[1:]
	Env    []string // KEY=VALUE; the server filters them
	Cwd    string   // working directory on the host; "" means "/"
	TTY    bool     // allocate a pty on the host
	// Window is the initial window size with TTY (nil: the host's default).
	Window *qtfsv1.WindowSize
	// Files are the open files to reopen on the host (see InheritedFiles).
	Files []*qtfsv1.ExecFile

	// Stdin is copied to the process until EOF, which is then sent; nil
	// sends EOF at once. A read blocked when Run returns is left behind.
	Stdin io.Reader
	// Stdout and Stderr receive the process's output; nil discards it.
	Stdout, Stderr io.Writer
	// Signals are forwarded to the process until Run returns; with TTY, a
	// SIGWINCH sends WindowSize() as the new size instead.
	Signals    <-chan os.Signal
	WindowSize func() *qtfsv1.WindowSize
	// Started, when set, is called with the host pid and path once the
	// process runs.
	Started func(pid uint32, path string)
}

// Result is how a remote run ended.
type Result struct {
	// Code is the exit code as a shell reports it: the status, 128+signal,
	// CodeCannotRun or CodeNotFound.
	Code int
	// Signal is the signal that ended the process, 0 if it exited.
	Signal int
	// Pid and Path are the host's pid and executable, when it started.
	Pid  uint32
	Path string
	// Err says why the process could not run ("" when it ran).
	Err string
}

// Run runs one process on the host over cc and returns once it ended.
// The error is for transport and protocol failures (the remote process is
// then killed by the server); a refusal by the host is a Result with Err.
// Cancelling ctx ends the stream, which kills the remote process.
func Run(ctx context.Context, cc grpc.ClientConnInterface, o Options) (Result, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := qtfsv1.NewExecClient(cc).Run(ctx)
	if err != nil {
		return Result{}, callError(err)
	}
	start := &qtfsv1.ExecStart{
		Binary: []byte(o.Binary),
		Argv0:  []byte(o.Argv0),
		Cwd:    []byte(o.Cwd),
		Tty:    o.TTY,
		Window: o.Window,
		Files:  o.Files,
	}
	for _, a := range o.Args {
		start.Args = append(start.Args, []byte(a))
	}
	for _, e := range o.Env {
		start.Env = append(start.Env, []byte(e))
	}
	// A failed Send means the stream ended; Recv tells why.
	_ = stream.Send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_Start{Start: start}})
	first, err := stream.Recv()
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			return Result{Code: CodeCannotRun, Err: "the server runs no binaries: its allow-list is empty (start qtfs-server with --exec-allow BINARY)"}, nil
		}
		return Result{}, callError(err)
	}
	var res Result
	switch m := first.GetMsg().(type) {
	case *qtfsv1.ExecResponse_Exit:
		return exitResult(res, m.Exit), nil
	case *qtfsv1.ExecResponse_Started:
		res.Pid, res.Path = m.Started.GetPid(), string(m.Started.GetPath())
	default:
		return res, fmt.Errorf("protocol error: the server answered %T before started", m)
	}
	if o.Started != nil {
		o.Started(res.Pid, res.Path)
	}

	var sendMu sync.Mutex
	send := func(req *qtfsv1.ExecRequest) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(req)
	}
	go copyStdin(ctx, o.Stdin, send)
	if o.Signals != nil {
		go forwardSignals(ctx, o, send)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return res, errors.New("protocol error: the stream ended without an exit status")
			}
			return res, callError(err)
		}
		switch m := resp.GetMsg().(type) {
		case *qtfsv1.ExecResponse_Stdout:
			if err := write(o.Stdout, m.Stdout); err != nil {
				return res, fmt.Errorf("write stdout: %w", err)
			}
		case *qtfsv1.ExecResponse_Stderr:
			if err := write(o.Stderr, m.Stderr); err != nil {
				return res, fmt.Errorf("write stderr: %w", err)
			}
		case *qtfsv1.ExecResponse_Exit:
			return exitResult(res, m.Exit), nil
		}
	}
}

func exitResult(res Result, e *qtfsv1.ExecExit) Result {
	res.Code, res.Signal, res.Err = int(e.GetCode()), int(e.GetSignal()), e.GetError()
	return res
}

func write(w io.Writer, b []byte) error {
	if w == nil {
		return nil
	}
	_, err := w.Write(b)
	return err
}

// callError turns a gRPC failure into a message a user can act on.
func callError(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable:
		return fmt.Errorf("server unavailable: %s", st.Message())
	case codes.Unauthenticated, codes.PermissionDenied:
		return fmt.Errorf("refused by the server: %s", st.Message())
	case codes.Canceled:
		return fmt.Errorf("cancelled: %s", st.Message())
	}
	return fmt.Errorf("%s: %s", st.Code(), st.Message())
}

// copyStdin sends r as stdin messages, then stdin EOF.
func copyStdin(ctx context.Context, r io.Reader, send func(*qtfsv1.ExecRequest) error) {
	if r != nil {
		buf := make([]byte, stdinChunk)
		for {
			n, err := r.Read(buf)
			if n > 0 {
				if send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_Stdin{Stdin: bytes.Clone(buf[:n])}}) != nil {
					return
				}
			}
			if err != nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
		}
	}
	send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_StdinEof{StdinEof: true}})
}

// forwardSignals sends the signals rexec receives to the process.
func forwardSignals(ctx context.Context, o Options, send func(*qtfsv1.ExecRequest) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-o.Signals:
			if o.TTY && sig == syscall.SIGWINCH {
				if o.WindowSize != nil {
					if w := o.WindowSize(); w != nil {
						send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_Resize{Resize: w}})
					}
				}
				continue
			}
			if s, ok := sig.(syscall.Signal); ok {
				send(&qtfsv1.ExecRequest{Msg: &qtfsv1.ExecRequest_Signal{Signal: uint32(s)}})
			}
		}
	}
}
