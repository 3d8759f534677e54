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

	"github.com/qtfs/qtfs/pkg/fs/fuseclient"
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

type control struct {
	path string
	srv  *http.Server
}

// startControl serves GET /status on <dir>/<pid>.sock (mode 0600).
func startControl(dir string, st Status, sess *fuseclient.Session, log *zap.Logger) (*control, error) {
	path := filepath.Join(dir, strconv.Itoa(st.PID)+".sock")
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
		s := st
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if rtt, err := sess.Ping(ctx); err != nil {
			s.Error = err.Error()
		} else {
			s.RTT = rtt
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s)
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

// queryStatus asks one mount daemon for its status.
func queryStatus(ctx context.Context, sock string) (Status, error) {
	var st Status
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://qtfs/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("status %s", resp.Status)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	return st, err
}
