package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/qtfs/qtfs/pkg/fs/session"
)

// Status is what a mount daemon reports about itself.
type Status struct {
	PID        int       `json:"pid"`
	Mountpoint string    `json:"mountpoint"`
	Remote     string    `json:"remote"`
	Server     string    `json:"server"`
	ServerName string    `json:"server_name"`
	Started    time.Time `json:"started"`
	Log        string    `json:"log,omitempty"`
	// RTT is one round trip to the server, measured when asked; Error
	// says why it could not be measured.
	RTT   time.Duration `json:"rtt_ns"`
	Error string        `json:"error,omitempty"`
}

// control is a daemon's control socket: it serves GET /status.
type control struct {
	path string
	srv  *http.Server
}

// controlSocket is the path of the control socket of daemon pid in dir.
func controlSocket(dir string, pid int) string {
	return filepath.Join(dir, strconv.Itoa(pid)+".sock")
}

// startControl serves GET /status on path (mode 0600): the JSON of what
// status returns when asked.
func startControl(path string, status func(ctx context.Context) any, log *zap.Logger) (*control, error) {
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(status(r.Context()))
	})
	c := &control{path: path, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := c.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("control socket", zap.Error(err))
		}
	}()
	return c, nil
}

func (c *control) Close() error {
	err := c.srv.Close()
	os.Remove(c.path)
	return err
}

// ping measures one round trip to sess's server, or says why it could
// not.
func ping(ctx context.Context, sess *session.Session) (rtt time.Duration, failed string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rtt, err := sess.Ping(ctx)
	if err != nil {
		return 0, err.Error()
	}
	return rtt, ""
}

// getStatus asks the daemon of control socket sock for its status, into
// v.
func getStatus(ctx context.Context, sock string, v any) error {
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://qtfs/status", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
