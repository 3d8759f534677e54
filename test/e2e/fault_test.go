package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The fault tests break a running setup while the DPU side works through
// the mount (faultio, in testdata, is the workload): the server killed
// with SIGKILL and restarted, the veth link down for a few seconds, and
// the link down for longer than the client's reconnect timeout.

var (
	faultioOnce sync.Once
	faultioPath string
	faultioErr  error
)

// faultio builds the workload program once per run.
func faultio(t *testing.T) string {
	t.Helper()
	faultioOnce.Do(func() {
		faultioPath = filepath.Join(binDir, "faultio")
		cmd := exec.Command("go", "build", "-o", faultioPath, "./test/e2e/testdata/faultio")
		cmd.Dir = moduleRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			faultioErr = fmt.Errorf("build faultio: %v\n%s", err, out)
		}
	})
	if faultioErr != nil {
		t.Fatal(faultioErr)
	}
	return faultioPath
}

// workloadSummary is faultio's JSON summary line.
type workloadSummary struct {
	Mode       string         `json:"mode"`
	Ops        int64          `json:"ops"`
	Errors     int64          `json:"errors"`
	Errnos     map[string]int `json:"errnos"`
	Mismatches int64          `json:"mismatches"`
	MaxLatency float64        `json:"max_latency_seconds"`
	Done       int64          `json:"done"`
	FirstError string         `json:"first_error"`
	Seconds    float64        `json:"seconds"`
}

// workload is a faultio process running on the DPU.
type workload struct {
	name   string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr lockedBuffer
	// exited is closed once the process was waited for; err is its
	// result.
	exited chan struct{}
	err    error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startWorkload runs faultio with args on the DPU; cleanup kills it by
// pid if it still runs.
func (e *env) startWorkload(t *testing.T, args ...string) *workload {
	t.Helper()
	w := &workload{name: args[0], cmd: e.dpu.cmd(faultio(t), args...), exited: make(chan struct{})}
	w.cmd.Stdout = &w.stdout
	w.cmd.Stderr = &w.stderr
	if err := w.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { w.err = w.cmd.Wait(); close(w.exited) }()
	t.Cleanup(func() {
		select {
		case <-w.exited:
		default:
			w.cmd.Process.Kill()
			<-w.exited
		}
		if t.Failed() {
			t.Logf("faultio %s stderr:\n%s", w.name, w.stderr.String())
		}
	})
	return w
}

// wait waits for the workload to end and returns its summary.
func (w *workload) wait(t *testing.T, timeout time.Duration) workloadSummary {
	t.Helper()
	select {
	case <-w.exited:
		if w.err != nil {
			t.Fatalf("faultio %s: %v\nstdout: %s\nstderr: %s", w.name, w.err, w.stdout.String(), w.stderr.String())
		}
	case <-time.After(timeout):
		w.cmd.Process.Kill()
		<-w.exited
		t.Fatalf("faultio %s did not finish within %v (hung?)\nstderr: %s", w.name, timeout, w.stderr.String())
	}
	var s workloadSummary
	line := strings.TrimSpace(w.stdout.String())
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:]
	}
	if err := json.Unmarshal([]byte(line), &s); err != nil {
		t.Fatalf("faultio %s summary %q: %v", w.name, line, err)
	}
	t.Logf("%s: %+v", w.name, s)
	return s
}

// vethNames are the two ends of e's veth pair (see newNetPair).
func (e *env) vethNames() (host, dpu string) {
	return e.net.HostVeth, e.net.DPUVeth
}

// setLink takes the veth pair down (both ends) or up again.
func (e *env) setLink(t *testing.T, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	vh, vd := e.vethNames()
	run(t, "ip", "-n", e.net.DPU, "link", "set", vd, state)
	run(t, "ip", "-n", e.net.Host, "link", "set", vh, state)
	if !up {
		t.Cleanup(func() {
			exec.Command("ip", "-n", e.net.DPU, "link", "set", vd, "up").Run()
			exec.Command("ip", "-n", e.net.Host, "link", "set", vh, "up").Run()
		})
	}
}

// killServer kills the running qtfs-server with SIGKILL, by pid.
func (e *env) killServer(t *testing.T) {
	t.Helper()
	p := e.server
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the killed server did not exit")
	}
}

// restartServer starts a new qtfs-server on the same address with the
// same exports; it becomes e.server.
func (e *env) restartServer(t *testing.T, exports ...string) {
	t.Helper()
	e.server = nil
	e.startServer(12121, nil, exports...)
}

// clientLog returns what the mount daemons on the DPU have logged.
func (e *env) clientLog(t *testing.T) string {
	t.Helper()
	logs, _ := filepath.Glob(filepath.Join(e.dpu.runtime, "client", "*.log"))
	var b strings.Builder
	for _, l := range logs {
		data, _ := os.ReadFile(l)
		b.Write(data)
	}
	return b.String()
}

// faultTree prepares an export for the workloads: read.dat (faultio's
// pattern) and tree/dNN/fMM (each file holds its own name).
func faultTree(t *testing.T, dirs, files int, readSize int64) string {
	t.Helper()
	host := hostDir(t)
	if out, err := exec.Command(faultio(t), "pattern", filepath.Join(host, "read.dat"), strconv.FormatInt(readSize, 10)).CombinedOutput(); err != nil {
		t.Fatalf("faultio pattern: %v\n%s", err, out)
	}
	for d := range dirs {
		dir := filepath.Join(host, "tree", fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range files {
			name := fmt.Sprintf("f%02d", f)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return host
}

// seqLog reads the seqwrite log: chunk index to sha256.
func seqLog(t *testing.T, path string) map[int]string {
	t.Helper()
	out := map[int]string{}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return out // the writer has not started yet
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var i int
		var sum string
		if _, err := fmt.Sscan(sc.Text(), &i, &sum); err == nil {
			out[i] = sum
		}
	}
	return out
}

// checkFsynced compares every chunk the writer saw fsynced with what the
// host's file holds.
func checkFsynced(t *testing.T, hostFile string, chunkSize int, logged map[int]string) {
	t.Helper()
	data, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range logged {
		end := (i + 1) * chunkSize
		if end > len(data) {
			t.Fatalf("chunk %d was fsynced but the host's file is only %d bytes", i, len(data))
		}
		sum := sha256.Sum256(data[i*chunkSize : end])
		if got := hex.EncodeToString(sum[:]); got != want {
			t.Fatalf("chunk %d was fsynced as %s, the host holds %s", i, want, got)
		}
	}
	t.Logf("%d fsynced chunks intact on the host", len(logged))
}

// waitChunks waits until the seqwrite log holds at least n chunks.
func waitChunks(t *testing.T, log string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for len(seqLog(t, log)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the writer did not get past %d chunks within %v (has %d)", n, timeout, len(seqLog(t, log)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

const (
	faultChunkKiB = 256
	faultDirs     = 30
	faultFiles    = 10
	faultReadSize = 32 << 20
)

// startFaultWorkloads starts the writer, the reader and the walker.
func (e *env) startFaultWorkloads(t *testing.T, mp, stop, log string) []*workload {
	return []*workload{
		e.startWorkload(t, "seqwrite", mp+"/seq.dat", log, strconv.Itoa(faultChunkKiB), "1000000", stop),
		e.startWorkload(t, "randread", mp+"/read.dat", strconv.Itoa(faultReadSize), stop),
		e.startWorkload(t, "walk", mp+"/tree", strconv.Itoa(faultDirs), strconv.Itoa(faultFiles), stop),
	}
}

// TestFaultServerKilled kills the server (SIGKILL) while the DPU writes a
// file sequentially with fsync, reads another at random and walks a tree,
// then starts a new server. The client reconnects, re-opens the files and
// directories its workloads hold open, and they carry on without one
// error; every chunk that was fsynced before or after the kill is on the
// host's disk, byte for byte.
func TestFaultServerKilled(t *testing.T) {
	host := faultTree(t, faultDirs, faultFiles, faultReadSize)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"), "-o", "reconnect_timeout=60s")
	local := t.TempDir()
	stop, log := filepath.Join(local, "stop"), filepath.Join(local, "seq.log")
	ws := e.startFaultWorkloads(t, mp, stop, log)

	waitChunks(t, log, 20, 30*time.Second)
	for round := 1; round <= 2; round++ {
		before := len(seqLog(t, log))
		e.killServer(t)
		killed := time.Now()
		time.Sleep(2 * time.Second)
		// What was fsynced before the kill is on the host's disk now,
		// with no server running.
		checkFsynced(t, filepath.Join(host, "seq.dat"), faultChunkKiB<<10, seqLog(t, log))
		e.restartServer(t, host)
		t.Logf("round %d: server down for %v", round, time.Since(killed).Round(time.Millisecond))
		waitChunks(t, log, before+20, 60*time.Second)
		t.Logf("round %d: writer went on %v after the kill", round, time.Since(killed).Round(time.Millisecond))
	}
	time.Sleep(2 * time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, w := range ws {
		s := w.wait(t, 60*time.Second)
		if s.Errors != 0 || s.Mismatches != 0 {
			t.Errorf("%s: %d errors (%v, first: %s), %d mismatches across the restarts", s.Mode, s.Errors, s.Errnos, s.FirstError, s.Mismatches)
		}
		if s.Done == 0 {
			t.Errorf("%s did no work", s.Mode)
		}
		if s.MaxLatency > 30 {
			t.Errorf("%s: an operation took %.1fs", s.Mode, s.MaxLatency)
		}
	}
	checkFsynced(t, filepath.Join(host, "seq.dat"), faultChunkKiB<<10, seqLog(t, log))
	if l := e.clientLog(t); !strings.Contains(l, "qtfs session re-established") {
		t.Errorf("the client did not log a reconnection:\n%s", l)
	}
}

// TestFaultLinkFlap takes the veth link down for a few seconds, then up:
// the workloads stall for about that long and carry on without an error.
func TestFaultLinkFlap(t *testing.T) {
	host := faultTree(t, faultDirs, faultFiles, faultReadSize)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"), "-o", "reconnect_timeout=60s")
	local := t.TempDir()
	stop, log := filepath.Join(local, "stop"), filepath.Join(local, "seq.log")
	ws := e.startFaultWorkloads(t, mp, stop, log)
	waitChunks(t, log, 20, 30*time.Second)

	const outage = 4 * time.Second
	before := len(seqLog(t, log))
	e.setLink(t, false)
	time.Sleep(outage)
	e.setLink(t, true)
	waitChunks(t, log, before+20, 60*time.Second)
	time.Sleep(time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	stalled := false
	for _, w := range ws {
		s := w.wait(t, 60*time.Second)
		if s.Errors != 0 || s.Mismatches != 0 {
			t.Errorf("%s: %d errors (%v, first: %s), %d mismatches across the link flap", s.Mode, s.Errors, s.Errnos, s.FirstError, s.Mismatches)
		}
		if s.MaxLatency > 40 {
			t.Errorf("%s: an operation took %.1fs", s.Mode, s.MaxLatency)
		}
		stalled = stalled || s.MaxLatency >= (outage/2).Seconds()
	}
	if !stalled {
		t.Error("no operation stalled while the link was down: the fault was not injected")
	}
	checkFsynced(t, filepath.Join(host, "seq.dat"), faultChunkKiB<<10, seqLog(t, log))
}

// TestFaultLinkDownPastTimeout takes the link down for much longer than
// the mount's reconnect timeout (3s): the write in flight fails with EIO
// in bounded time, new operations fail at once with ENOTCONN, nothing
// hangs; once the link is back the mount works again and the writer
// (which retries) goes on, with every fsynced chunk intact.
func TestFaultLinkDownPastTimeout(t *testing.T) {
	host := faultTree(t, 2, 2, 1<<20)
	e := newEnv(t, host)
	mp := e.mount(host, filepath.Join(t.TempDir(), "mnt"), "-o", "reconnect_timeout=3s")
	local := t.TempDir()
	stop, log := filepath.Join(local, "stop"), filepath.Join(local, "seq.log")
	w := e.startWorkload(t, "seqwrite", mp+"/seq.dat", log, strconv.Itoa(faultChunkKiB), "1000000", stop)
	waitChunks(t, log, 10, 30*time.Second)

	down := time.Now()
	e.setLink(t, false)
	// The writer's operation in flight gets EIO within the timeout plus
	// the time to notice the link is dead.
	deadline := down.Add(30 * time.Second)
	for !strings.Contains(w.stderr.String(), "input/output error") {
		if time.Now().After(deadline) {
			t.Fatalf("the writer saw no EIO %v after the link went down:\n%s", time.Since(down), w.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("in-flight write failed with EIO %v after the link went down", time.Since(down).Round(time.Millisecond))
	// A new operation fails at once.
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := e.dpu.cmd("stat", mp+"/read.dat")
	out, err := exec.CommandContext(ctx, cmd.Path, cmd.Args[1:]...).CombinedOutput()
	took := time.Since(t0)
	if err == nil || !strings.Contains(string(out), "Transport endpoint is not connected") {
		t.Fatalf("stat with the link down: %v, %q; want ENOTCONN", err, out)
	}
	if took > 3*time.Second {
		t.Fatalf("stat with the link down took %v to fail", took)
	}
	t.Logf("new operation failed with ENOTCONN in %v", took.Round(time.Millisecond))
	time.Sleep(10*time.Second - time.Since(down))

	e.setLink(t, true)
	up := time.Now()
	for {
		out, err := e.dpu.exec("cat", mp+"/tree/d00/f00")
		if err == nil && out == "f00" {
			break
		}
		if time.Since(up) > 90*time.Second {
			t.Fatalf("the mount did not recover %v after the link came back: %v %s", time.Since(up), err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("mount answered again %v after the link came back", time.Since(up).Round(time.Millisecond))
	before := len(seqLog(t, log))
	waitChunks(t, log, before+10, 60*time.Second)
	if err := os.WriteFile(stop, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := w.wait(t, 60*time.Second)
	if s.Errnos["input/output error"] == 0 {
		t.Errorf("writer errors %v: want EIO for the write in flight", s.Errnos)
	}
	if s.MaxLatency > 30 {
		t.Errorf("an operation took %.1fs: callers must not hang past the timeout", s.MaxLatency)
	}
	checkFsynced(t, filepath.Join(host, "seq.dat"), faultChunkKiB<<10, seqLog(t, log))
}
