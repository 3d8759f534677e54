package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// ProcUse is the resource use of one role's processes during a workload.
type ProcUse struct {
	CPUms   float64 `json:"cpu_ms"`   // utime+stime spent during the workload
	PeakKiB uint64  `json:"peak_kib"` // peak RSS during the workload (VmHWM after a reset), summed over the processes
	RSSKiB  uint64  `json:"rss_kib"`  // RSS at the end of the workload, summed
	Procs   int     `json:"procs"`    // processes counted
}

// Sample is one workload on one peer in one round.
type Sample struct {
	Round    int                `json:"round"`
	Peer     string             `json:"peer"`
	Workload string             `json:"workload"`
	Value    float64            `json:"value"`
	Extra    map[string]float64 `json:"extra,omitempty"`
	Err      string             `json:"error,omitempty"`
	WallS    float64            `json:"wall_s"`
	Client   *ProcUse           `json:"client,omitempty"`
	Server   *ProcUse           `json:"server,omitempty"`
	// RPCs are the FileSystem RPCs the qtfs-server served during the
	// workload, by operation (qtfs peers only).
	RPCs map[string]float64 `json:"rpcs,omitempty"`
}

// WorkloadInfo describes a workload in the results.
type WorkloadInfo struct {
	ID     string `json:"id"`
	Title  string `json:"title"`
	Unit   string `json:"unit"`
	Higher bool   `json:"higher_is_better"`
	Class  string `json:"class"`
}

// PeerInfo describes a peer in the results.
type PeerInfo struct {
	Name     string `json:"name"`
	Data     string `json:"data"`
	Proc     string `json:"proc,omitempty"`
	ProcNote string `json:"proc_note,omitempty"`
	Err      string `json:"error,omitempty"`
}

// IdleSample is the resource use of a peer's daemons while nothing runs.
type IdleSample struct {
	Peer    string   `json:"peer"`
	Seconds float64  `json:"seconds"`
	Client  *ProcUse `json:"client,omitempty"`
	Server  *ProcUse `json:"server,omitempty"`
}

// Results is everything one run found.
type Results struct {
	Started     time.Time      `json:"started"`
	Finished    time.Time      `json:"finished"`
	Quick       bool           `json:"quick"`
	Runs        int            `json:"runs"`
	Machine     Machine        `json:"machine"`
	Peers       []PeerInfo     `json:"peers"`
	Workloads   []WorkloadInfo `json:"workloads"`
	Samples     []Sample       `json:"samples"`
	Idle        []IdleSample   `json:"idle,omitempty"`
	Notes       []string       `json:"notes,omitempty"`
	Interrupted bool           `json:"interrupted,omitempty"`
}

// env is a run's working state: directories, what to undo, notes.
type env struct {
	cfg                          Config
	log                          *zap.Logger
	data, runDir, logDir, tmpDir string
	closers                      []func()
	notes                        []string
	dropFailed, peakFailed       bool
}

// onClose registers f to run at teardown (last registered, first run).
func (e *env) onClose(f func()) { e.closers = append(e.closers, f) }

func (e *env) close() {
	for i := len(e.closers) - 1; i >= 0; i-- {
		e.closers[i]()
	}
	e.closers = nil
}

func (e *env) note(s string) {
	if !slices.Contains(e.notes, s) {
		e.notes = append(e.notes, s)
	}
}

// dropCaches writes back dirty data and drops the page, dentry and inode
// caches, so the next workload starts cold on every peer alike.
func (e *env) dropCaches() {
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil && !e.dropFailed {
		e.dropFailed = true
		e.note(fmt.Sprintf("caches could NOT be dropped (%v): 'caches dropped' workloads ran with warm caches", err))
		e.log.Warn("cannot drop caches", zap.Error(err))
	}
}

// marker marks a work directory as the benchmark's, so that a mistyped
// --work-dir is never wiped.
const marker = ".qtfs-bench"

// prepareWorkDir clears what a previous run left (stale mounts included)
// and makes the directories of this one.
func (e *env) prepareWorkDir() error {
	w := e.cfg.WorkDir
	if ents, err := os.ReadDir(w); err == nil && len(ents) > 0 {
		if _, err := os.Stat(filepath.Join(w, marker)); err != nil {
			return fmt.Errorf("bench: work dir %s is not empty and has no %s marker: refusing to clear it", w, marker)
		}
		detachAll(e.log, w)
		if err := os.RemoveAll(w); err != nil {
			return fmt.Errorf("bench: clear work dir: %w", err)
		}
	}
	e.data = filepath.Join(w, "data")
	e.runDir = filepath.Join(w, "run")
	e.logDir = filepath.Join(w, "logs")
	e.tmpDir = filepath.Join(w, "tmp")
	for _, d := range []string{e.data, e.runDir, e.logDir, e.tmpDir, filepath.Join(w, "mnt")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("bench: work dir: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(w, marker), []byte("qtfs benchmark work directory; removed by the next run\n"), 0o644); err != nil {
		return fmt.Errorf("bench: work dir: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(e.data, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		e.note(fmt.Sprintf("the backing directory %s is on tmpfs, not a disk: the local figures are memory figures", e.data))
	}
	return nil
}

// buildData makes the data every peer works on: the find+stat tree and the
// cp -a source.
func (e *env) buildData(ctx context.Context) error {
	t0 := time.Now()
	if err := buildTree(filepath.Join(e.data, treeDir), e.cfg.TreeEntries); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "cp", "-a", e.cfg.CopySource, filepath.Join(e.data, srcDir)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("bench: copy source tree %s: %w: %s", e.cfg.CopySource, err, out)
	}
	n, err := countTree(filepath.Join(e.data, srcDir))
	if err != nil {
		return err
	}
	e.note(fmt.Sprintf("cp -a source: %s (%s entries)", e.cfg.CopySource, count(n)))
	unix.Sync()
	e.log.Info("data set ready", zap.Int("tree_entries", e.cfg.TreeEntries), zap.Int("source_entries", n), zap.Duration("took", time.Since(t0)))
	return nil
}

// checkTools fails early, with the fix, when a tool the run needs is missing.
func checkTools(cfg Config) error {
	var missing []string
	tools := []string{"fio", "find", "cp"}
	if slices.Contains(cfg.Peers, PeerSSHFS) {
		tools = append(tools, "sshfs", "ssh", "ssh-keygen")
		if _, err := exec.LookPath("sshd"); err != nil {
			if _, err := os.Stat("/usr/sbin/sshd"); err != nil {
				missing = append(missing, "sshd")
			}
		}
	}
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
		}
	}
	bins := map[string][]string{
		PeerLoopback: {cfg.Loopback}, PeerNoPT: {cfg.LoopbackNoPT},
		PeerQtfsTLS: {cfg.QtfsServer, cfg.QtfsClient}, PeerQtfsUnix: {cfg.QtfsServer, cfg.QtfsClient},
	}
	for _, p := range cfg.Peers {
		for _, b := range bins[p] {
			if _, err := os.Stat(b); err != nil && !slices.Contains(missing, b) {
				missing = append(missing, b)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("bench: missing %v: run `make bench` (it installs fio, sshfs and openssh and builds the binaries)", missing)
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("bench: /dev/fuse: %w", err)
	}
	return nil
}

// Run measures every configured peer on every workload, cfg.Runs rounds,
// and tears everything down before it returns. On cancellation it returns
// what it measured so far with Interrupted set, and ctx's error.
func Run(ctx context.Context, cfg Config, log *zap.Logger) (*Results, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bench: needs root (FUSE mounts without fusermount, drop_caches, an sshd of its own)")
	}
	if err := checkTools(cfg); err != nil {
		return nil, err
	}
	// sshfs double-forks its ssh; as a subreaper the runner adopts it, so
	// it can be counted, stopped by pid and reaped.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("bench: become a child subreaper: %w", err)
	}
	e := &env{cfg: cfg, log: log}
	defer e.close()
	res := &Results{Started: time.Now(), Quick: cfg.Quick, Runs: cfg.Runs}
	wls := workloads(cfg)
	for _, w := range wls {
		res.Workloads = append(res.Workloads, WorkloadInfo{ID: w.id, Title: w.title, Unit: w.unit, Higher: w.higher, Class: w.class})
	}
	if err := e.prepareWorkDir(); err != nil {
		return nil, err
	}
	res.Machine = describeMachine(ctx, cfg, e.data)
	e.note("load average at the start: " + loadAvg())
	if err := e.buildData(ctx); err != nil {
		return nil, err
	}
	var peers []*peer
	for _, name := range cfg.Peers {
		p, err := e.startPeer(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return e.finish(res, true), ctx.Err()
			}
			log.Error("peer did not start: it is left out", zap.String("peer", name), zap.Error(err))
			res.Peers = append(res.Peers, PeerInfo{Name: name, Err: err.Error()})
			continue
		}
		if p.proc != "" {
			// A /proc view whose files read empty is no view: say so once
			// instead of failing the scan in every round.
			if _, err := procScan(p.proc); err != nil {
				p.procNote = fmt.Sprintf("%s: unusable (%v)", p.procNote, err)
				p.proc = ""
			}
		}
		log.Info("peer ready", zap.String("peer", name), zap.String("data", p.data), zap.String("proc", p.proc))
		res.Peers = append(res.Peers, PeerInfo{Name: name, Data: p.data, Proc: p.proc, ProcNote: p.procNote})
		peers = append(peers, p)
	}
	for round := 1; round <= cfg.Runs; round++ {
		for _, p := range peers {
			for _, w := range wls {
				if ctx.Err() != nil {
					return e.finish(res, true), ctx.Err()
				}
				smp := e.runStep(ctx, w, &step{e: e, p: p, round: round})
				res.Samples = append(res.Samples, smp)
			}
		}
	}
	res.Idle = e.measureIdle(ctx, peers)
	e.note("load average at the end: " + loadAvg() + " (other processes on the machine disturb the figures: compare the spread)")
	if ctx.Err() != nil {
		return e.finish(res, true), ctx.Err()
	}
	return e.finish(res, false), nil
}

// finish tears down and completes the results.
func (e *env) finish(res *Results, interrupted bool) *Results {
	e.close()
	res.Finished = time.Now()
	res.Interrupted = interrupted
	res.Notes = e.notes
	return res
}

// runStep runs one workload on one peer and measures it.
func (e *env) runStep(ctx context.Context, w workload, s *step) Sample {
	smp := Sample{Round: s.round, Peer: s.p.name, Workload: w.id}
	log := e.log.With(zap.Int("round", s.round), zap.String("peer", s.p.name), zap.String("workload", w.id))
	if w.proc && s.p.proc == "" {
		smp.Err = "not run: " + s.p.procNote
		return smp
	}
	if err := s.p.alive(); err != nil {
		smp.Err = err.Error()
		log.Error("peer is down", zap.Error(err))
		return smp
	}
	defer func() {
		if w.after == nil {
			return
		}
		if err := w.after(ctx, s); err != nil && !errors.Is(err, os.ErrNotExist) {
			log.Warn("clean-up after the workload failed", zap.Error(err))
		}
	}()
	if w.prepare != nil {
		if err := w.prepare(ctx, s); err != nil {
			smp.Err = "prepare: " + err.Error()
			log.Error("workload not run", zap.Error(err))
			return smp
		}
	}
	client, server := s.p.dataClient, s.p.dataServer
	if w.proc {
		client, server = s.p.procClient, s.p.procServer
	}
	var cpids, spids []int
	if client != nil {
		cpids = client()
	}
	if server != nil {
		spids = server()
	}
	if err := resetPeak(append(slices.Clone(cpids), spids...)); err != nil && !e.peakFailed {
		e.peakFailed = true
		e.note("peak RSS could not be reset per workload (" + err.Error() + "): peaks are since process start")
	}
	var rpc0 map[string]float64
	if s.p.rpcs != nil {
		if r, err := s.p.rpcs(ctx); err == nil {
			rpc0 = r
		} else {
			log.Warn("server RPC counts not read", zap.Error(err))
		}
	}
	c0, s0 := readUsage(cpids), readUsage(spids)
	t0 := time.Now()
	m, err := w.run(ctx, s)
	smp.WallS = time.Since(t0).Seconds()
	c1, s1 := readUsage(cpids), readUsage(spids)
	if rpc0 != nil {
		if r, err := s.p.rpcs(ctx); err == nil {
			smp.RPCs = rpcDelta(rpc0, r)
		}
	}
	if client != nil {
		smp.Client = useBetween(c0, c1)
	}
	if server != nil {
		smp.Server = useBetween(s0, s1)
	}
	if err == nil {
		err = s.p.alive()
	}
	if err != nil {
		smp.Err = err.Error()
		log.Error("workload failed", zap.Error(err))
		return smp
	}
	smp.Value, smp.Extra = m.value, m.extra
	fields := []zap.Field{zap.String("result", fmt.Sprintf("%.4g %s", m.value, w.unit))}
	if smp.Client != nil {
		fields = append(fields, zap.Float64("client_cpu_ms", smp.Client.CPUms), zap.Uint64("client_peak_kib", smp.Client.PeakKiB))
	}
	if smp.Server != nil {
		fields = append(fields, zap.Float64("server_cpu_ms", smp.Server.CPUms), zap.Uint64("server_peak_kib", smp.Server.PeakKiB))
	}
	log.Info("measured", fields...)
	return smp
}

func useBetween(a, b usage) *ProcUse {
	var cpu float64
	if b.cpuTicks >= a.cpuTicks {
		cpu = float64(b.cpuTicks-a.cpuTicks) * 1000 / userHZ
	}
	return &ProcUse{CPUms: cpu, PeakKiB: b.hwmKiB, RSSKiB: b.rssKiB, Procs: b.procs}
}

// measureIdle watches every peer's daemons, all at once, while nothing runs.
func (e *env) measureIdle(ctx context.Context, peers []*peer) []IdleSample {
	union := func(gs ...group) (pids []int, some bool) {
		for _, g := range gs {
			if g == nil {
				continue
			}
			some = true
			for _, pid := range g() {
				if !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
		}
		return pids, some
	}
	type watch struct {
		p          *peer
		cp, sp     []int
		hasC, hasS bool
		c0, s0     usage
	}
	var ws []*watch
	for _, p := range peers {
		w := &watch{p: p}
		w.cp, w.hasC = union(p.dataClient, p.procClient)
		w.sp, w.hasS = union(p.dataServer, p.procServer)
		if w.hasC || w.hasS {
			ws = append(ws, w)
		}
	}
	if len(ws) == 0 {
		return nil
	}
	e.log.Info("watching the idle daemons", zap.Duration("for", e.cfg.IdleWindow))
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(2 * time.Second): // let write-back and timers of the last workload settle
	}
	for _, w := range ws {
		w.c0, w.s0 = readUsage(w.cp), readUsage(w.sp)
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(e.cfg.IdleWindow):
	}
	secs := time.Since(t0).Seconds()
	var out []IdleSample
	for _, w := range ws {
		is := IdleSample{Peer: w.p.name, Seconds: secs}
		if w.hasC {
			is.Client = useBetween(w.c0, readUsage(w.cp))
		}
		if w.hasS {
			is.Server = useBetween(w.s0, readUsage(w.sp))
		}
		out = append(out, is)
	}
	return out
}
