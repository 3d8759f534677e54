package client

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
	"github.com/qtfs/qtfs/pkg/supervise"
)

// superviseSocket is where the run daemon of root takes the listeners of
// the programs `qtfs-client exec` starts in its chroot.
func superviseSocket(runDir, root string) string {
	sum := sha256.Sum256([]byte(root))
	return filepath.Join(runDir, "root-"+hex.EncodeToString(sum[:8])+".supervise")
}

// supervisors is the run daemon's side of `qtfs-client exec`: it takes
// each launcher's seccomp listener and answers its program's calls
// (pkg/supervise) until the program is gone or the daemon stops.
type supervisors struct {
	l   *net.UnixListener
	log *zap.Logger
	wg  sync.WaitGroup

	mu   sync.Mutex
	live map[*supervise.Supervisor]struct{}
}

func startSupervisors(path string, log *zap.Logger) (*supervisors, error) {
	_ = os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("run: supervise socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("run: supervise socket: %w", err)
	}
	s := &supervisors{l: l, log: log, live: map[*supervise.Supervisor]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

func (s *supervisors) accept() {
	defer s.wg.Done()
	for {
		c, err := s.l.AcceptUnix()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				s.log.Warn("supervise socket", zap.Error(err))
			}
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			if err := s.take(c); err != nil {
				s.log.Warn("supervise: a launcher's listener", zap.Error(err))
			}
		}()
	}
}

// take receives one listener, answers the launcher once the supervisor
// serves it, and supervises until the program is gone.
func (s *supervisors) take(c *net.UnixConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var fd int
	var rerr error
	if err := rc.Read(func(sock uintptr) bool {
		fd, rerr = supervise.ReceiveListener(int(sock))
		return !errors.Is(rerr, unix.EAGAIN)
	}); err != nil {
		return err
	}
	if rerr != nil {
		return rerr
	}
	sv := supervise.Serve(fd, supervise.Options{
		Statfs:  fuseclient.HostStatfs,
		Mounter: fuseclient.HostMounter{Log: s.log},
		// kubelet kills host pids it read from the host's cgroups.
		ConfineSignals: true,
		Logger:         s.log,
	})
	s.mu.Lock()
	s.live[sv] = struct{}{}
	s.mu.Unlock()
	s.log.Info("supervising a program started by qtfs-client exec")
	c.Write([]byte{'k'})
	<-sv.Done()
	s.mu.Lock()
	delete(s.live, sv)
	s.mu.Unlock()
	st := sv.Stats()
	s.log.Info("a supervised program is gone", zap.Uint64("answered", st.Answered), zap.Uint64("continued", st.Continued), zap.Uint64("mounts", st.Mounts))
	return nil
}

// Close stops taking listeners and ends the supervisors: the programs'
// notified calls fail with ENOSYS from then on.
func (s *supervisors) Close() {
	s.l.Close()
	s.mu.Lock()
	live := s.live
	s.live = map[*supervise.Supervisor]struct{}{}
	s.mu.Unlock()
	for sv := range live {
		sv.Close()
	}
	s.wg.Wait()
}

// Exec is `qtfs-client exec`: it runs argv in the chroot of rc's run
// daemon, as RootDirectory= would (chroot, working directory /), under
// that daemon's supervisor: statfs of the qtfs mounts answers with the
// host's filesystem, and mount(2)/umount2(2) beneath them are carried out
// on the host (as far as the server allows). It returns only when it
// fails.
func Exec(rc *RunConfig, argv []string) error {
	if len(argv) == 0 {
		return errors.New("exec: no program (qtfs-client exec [--config FILE] -- PROGRAM [ARG...])")
	}
	plan, err := rc.check()
	if err != nil {
		return err
	}
	root := plan.chroot.Root
	sock := superviseSocket(filepath.Join(rc.RuntimeDir, "run"), root)
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return fmt.Errorf("exec: no qtfs-client run serves %s (%v): start it first (systemctl start qtfs-client)", root, err)
	}
	f, err := c.File() // a blocking descriptor of the connection
	c.Close()
	if err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	defer f.Close()
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("exec: chroot %s: %w", root, err)
	}
	if err := os.Chdir("/"); err != nil {
		return fmt.Errorf("exec: %w", err)
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return fmt.Errorf("exec: in %s: %w", root, err)
	}
	return supervise.Exec(path, argv, os.Environ(), func(l int) error {
		if err := supervise.SendListener(int(f.Fd()), l); err != nil {
			return err
		}
		ack := make([]byte, 1)
		if n, err := unix.Read(int(f.Fd()), ack); err != nil || n != 1 || ack[0] != 'k' {
			return fmt.Errorf("the run daemon did not take the listener (%v)", err)
		}
		return nil
	})
}
