package client

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qtfs/qtfs/pkg/chroot"
	"github.com/qtfs/qtfs/pkg/sockproxy"
)

// RunStatus is what a `qtfs-client run` daemon reports about itself on
// GET /status of <runtime-dir>/run/<pid>.sock.
type RunStatus struct {
	PID        int       `json:"pid"`
	Config     string    `json:"config"`
	Root       string    `json:"root"`
	Server     string    `json:"server"`
	ServerName string    `json:"server_name,omitempty"`
	State      string    `json:"state"`
	Started    time.Time `json:"started"`
	// RTT is one round trip to the server, measured when asked; Error
	// says why it could not be, or why the daemon is still connecting.
	RTT     time.Duration `json:"rtt_ns"`
	Error   string        `json:"error,omitempty"`
	Mounts  []RunMount    `json:"mounts"`
	Proxies []RunProxy    `json:"proxies"`
	Shims   []string      `json:"shims,omitempty"`
}

// RunMount is one mount of the chroot.
type RunMount struct {
	// Path is the path inside the chroot; Mountpoint the DPU's path.
	Path       string `json:"path"`
	Mountpoint string `json:"mountpoint"`
	Kind       string `json:"kind"`
	Source     string `json:"source,omitempty"`
	Result     string `json:"result"`
}

// RunProxy is one socket proxy.
type RunProxy struct {
	Listen string `json:"listen"`
	Host   string `json:"host"`
	sockproxy.Stats
}

// snapshot is the current status, with the round trip measured now.
func (d *runDaemon) snapshot(ctx context.Context) RunStatus {
	d.mu.Lock()
	st := d.st
	sess, tree, proxies := d.sess, d.tree, append([]*sockproxy.Proxy(nil), d.proxies...)
	d.mu.Unlock()
	if tree != nil {
		for _, ap := range tree.Applied() {
			if ap.Kind == chroot.Link || ap.Result == chroot.Skipped || ap.AsLink {
				continue
			}
			st.Mounts = append(st.Mounts, RunMount{Path: ap.Path, Mountpoint: ap.Target, Kind: ap.Kind.String(),
				Source: ap.Source, Result: ap.Result.String()})
		}
	}
	for _, p := range proxies {
		st.Proxies = append(st.Proxies, RunProxy{Listen: p.Listen(), Host: p.Remote(), Stats: p.Stats()})
	}
	if sess != nil {
		st.RTT, st.Error = ping(ctx, sess)
	}
	return st
}

// RunStatuses asks every run daemon of runtimeDir for its status.
func RunStatuses(ctx context.Context, runtimeDir string) []RunStatus {
	socks, _ := filepath.Glob(filepath.Join(runtimeDir, "run", "*.sock"))
	var out []RunStatus
	for _, s := range socks {
		var st RunStatus
		if err := getStatus(ctx, s, &st); err == nil {
			out = append(out, st)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Root < out[j].Root })
	return out
}

// PrintStatus writes a table of the mounts: those with a live daemon,
// a mount daemon's or a run daemon's host mount (with the server and
// round trip), and qtfs mounts whose daemon is gone; then a table of
// socket proxies and one of run daemons.
func PrintStatus(ctx context.Context, w io.Writer, runtimeDir string) error {
	runs := RunStatuses(ctx, runtimeDir)
	socks, _ := filepath.Glob(filepath.Join(runtimeDir, "client", "*.sock"))
	var live []Status
	claimed := map[string]bool{}
	for _, s := range socks {
		var st Status
		if err := getStatus(ctx, s, &st); err != nil {
			continue // a daemon that died leaves its socket; nothing answers
		}
		live = append(live, st)
		claimed[st.Mountpoint] = true
	}
	for _, r := range runs {
		for _, m := range r.Mounts {
			if m.Kind != chroot.Remote.String() {
				continue
			}
			live = append(live, Status{PID: r.PID, Mountpoint: m.Mountpoint, Remote: m.Source, Server: r.Server,
				ServerName: r.ServerName, RTT: r.RTT, Error: r.Error})
			claimed[m.Mountpoint] = true
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Mountpoint < live[j].Mountpoint })
	mounts, err := QtfsMounts()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MOUNTPOINT\tREMOTE\tSERVER\tRTT\tPID\tSTATE")
	for _, st := range live {
		rtt, state := st.RTT.Round(time.Microsecond).String(), "ok"
		if st.Error != "" {
			rtt, state = "-", "error: "+st.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", st.Mountpoint, st.Remote, st.Server, rtt, st.PID, state)
	}
	for _, m := range mounts {
		if !claimed[m.MountPoint] {
			fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t%s\n", m.MountPoint, m.Source, "no daemon answers in this --runtime-dir (stale? umount --lazy it)")
		}
	}
	if len(live) == 0 && len(mounts) == 0 {
		fmt.Fprintln(tw, strings.Repeat("-\t", 5)+"no qtfs mounts")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(runs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROXY\tHOST SOCKET\tACTIVE\tTOTAL\tFAILED\tPID")
	for _, r := range runs {
		for _, p := range r.Proxies {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\n", p.Listen, p.Host, p.Active, p.Total, p.Failed, r.PID)
		}
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "RUN ROOT\tSERVER\tRTT\tMOUNTS\tPROXIES\tSHIMS\tPID\tSTATE")
	for _, r := range runs {
		rtt, state := r.RTT.Round(time.Microsecond).String(), r.State
		if r.Error != "" {
			rtt, state = "-", r.State+": "+r.Error
		}
		server := r.Server
		if r.ServerName != "" {
			server += " (" + r.ServerName + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", r.Root, server, rtt, len(r.Mounts), len(r.Proxies), len(r.Shims), r.PID, state)
	}
	return tw.Flush()
}
