package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// star is one host network namespace joined to several DPU namespaces,
// each by its own veth pair, in 10.198.N.0/30 subnets.
type star struct {
	host   string
	hostIP []string // the host's address on each link
	dpuIP  []string
	dpuNS  []string
}

var (
	starMu   sync.Mutex
	starNext = 1
)

func newStar(t *testing.T, n int) *star {
	t.Helper()
	id := randHex(3)
	s := &star{host: netnsPrefix + "lh-" + id}
	run(t, "ip", "netns", "add", s.host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", s.host).Run() })
	run(t, "ip", "-n", s.host, "link", "set", "lo", "up")
	for i := range n {
		starMu.Lock()
		sub := starNext
		starNext++
		starMu.Unlock()
		ns := fmt.Sprintf("%sld%d-%s", netnsPrefix, i, id)
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		hIP, dIP := fmt.Sprintf("10.198.%d.1", sub), fmt.Sprintf("10.198.%d.2", sub)
		vh, vd := fmt.Sprintf("lh%d%s", i, id), fmt.Sprintf("ld%d%s", i, id)
		run(t, "ip", "link", "add", vh, "netns", s.host, "type", "veth", "peer", "name", vd, "netns", ns)
		for _, c := range [][]string{
			{"-n", s.host, "addr", "add", hIP + "/30", "dev", vh},
			{"-n", ns, "addr", "add", dIP + "/30", "dev", vd},
			{"-n", s.host, "link", "set", vh, "up"},
			{"-n", ns, "link", "set", vd, "up"},
			{"-n", ns, "link", "set", "lo", "up"},
		} {
			run(t, "ip", c...)
		}
		s.hostIP = append(s.hostIP, hIP)
		s.dpuIP = append(s.dpuIP, dIP)
		s.dpuNS = append(s.dpuNS, ns)
	}
	return s
}

// serverStats reads a process's open fds, RSS and (from its metrics) Go
// goroutines.
type serverStats struct {
	fds        int
	rssKiB     int
	goroutines int
}

func readServerStats(t *testing.T, pid int, hostNS, metricsAddr string) serverStats {
	t.Helper()
	var st serverStats
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	st.fds = len(ents)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(status)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			st.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	out, err := exec.Command("nsenter", "--net=/run/netns/"+hostNS, "--", faultio(t), "get", "http://"+metricsAddr+"/metrics").Output()
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(l, "go_goroutines "); ok {
			st.goroutines, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if st.goroutines == 0 {
		t.Fatalf("no go_goroutines in the server's metrics:\n%s", out)
	}
	return st
}

// TestLoad runs 4 clients, each in its own network and mount namespaces,
// each mounting the export and running 32 workers of mixed metadata and
// data operations for a bounded time. No operation may fail or read back
// wrong data, and afterwards the server holds no more fds and goroutines
// than before the load (its RSS is reported).
func TestLoad(t *testing.T) {
	needMachine(t)
	const clients, workers = 4, 32
	seconds := 20
	if testing.Short() {
		seconds = 5
	}
	s := newStar(t, clients)
	pkiDir := pki(t, s.hostIP...)
	host := hostDir(t)
	const metrics = "127.0.0.1:9131"
	args := []string{"--net=/run/netns/" + s.host, "--", bin("qtfs-server"),
		"--tls-cert", pkiDir + "/server.pem", "--tls-key", pkiDir + "/server-key.pem", "--tls-client-ca", pkiDir + "/ca.pem",
		"--log-format", "console", "--log-level", "warn", "--metrics-listen", metrics, "--export", host}
	for _, ip := range s.hostIP {
		args = append(args, "--listen", "tcp://"+ip+":12121")
	}
	srv := start(t, "nsenter", args...)
	// Warnings only: wait for the listener instead of the ready line.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if exec.Command("nsenter", "--net=/run/netns/"+s.host, "--", faultio(t), "get", "http://"+metrics+"/metrics").Run() == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not up:\n%s", srv.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
	pid := srv.cmd.Process.Pid

	var dpus []*dpu
	var mps []string
	for i := range clients {
		d := newDPU(t, s.dpuNS[i])
		mp := filepath.Join(t.TempDir(), "mnt")
		if err := os.MkdirAll(mp, 0o755); err != nil {
			t.Fatal(err)
		}
		sub := filepath.Join(host, fmt.Sprintf("client%d", i))
		if err := os.MkdirAll(sub, 0o777); err != nil {
			t.Fatal(err)
		}
		out, err := d.exec(bin("qtfs-client"), "mount",
			"--tls-cert", pkiDir+"/client.pem", "--tls-key", pkiDir+"/client-key.pem", "--tls-ca", pkiDir+"/ca.pem",
			"--runtime-dir", d.runtime, "--remote", s.hostIP[i]+":"+host, mp)
		if err != nil {
			t.Fatalf("client %d mount: %v\n%s", i, err, out)
		}
		dpus = append(dpus, d)
		mps = append(mps, mp)
	}
	// Let the sessions settle, then take the baseline.
	time.Sleep(time.Second)
	before := readServerStats(t, pid, s.host, metrics)
	t.Logf("server before the load: %d fds, %d goroutines, RSS %d KiB", before.fds, before.goroutines, before.rssKiB)

	type result struct {
		client int
		s      workloadSummary
		err    error
		stderr string
	}
	results := make(chan result, clients)
	peak := before
	var peakMu sync.Mutex
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(time.Second):
			}
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue
			}
			for _, l := range strings.Split(string(st), "\n") {
				if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
					kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
					peakMu.Lock()
					peak.rssKiB = max(peak.rssKiB, kib)
					peakMu.Unlock()
				}
			}
		}
	}()
	for i, d := range dpus {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Duration(seconds+120)*time.Second)
			defer cancel()
			c := d.cmd(faultio(t), "load", filepath.Join(mps[i], fmt.Sprintf("client%d", i)), strconv.Itoa(workers), strconv.Itoa(seconds))
			cmd := exec.CommandContext(ctx, c.Path, c.Args[1:]...)
			var stderr lockedBuffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			r := result{client: i, err: err, stderr: stderr.String()}
			if err == nil {
				line := strings.TrimSpace(string(out))
				err = jsonLine(line, &r.s)
				r.err = err
			}
			results <- r
		}()
	}
	var total workloadSummary
	for range clients {
		r := <-results
		if r.err != nil {
			t.Errorf("client %d: %v\n%s", r.client, r.err, r.stderr)
			continue
		}
		t.Logf("client %d: %d ops, %d iterations, %d errors, %d mismatches, slowest op %.3fs",
			r.client, r.s.Ops, r.s.Done, r.s.Errors, r.s.Mismatches, r.s.MaxLatency)
		if r.s.Errors != 0 || r.s.Mismatches != 0 {
			t.Errorf("client %d: %d unexpected errors (%v, first: %s), %d mismatches\n%s",
				r.client, r.s.Errors, r.s.Errnos, r.s.FirstError, r.s.Mismatches, r.stderr)
		}
		if r.s.Done == 0 {
			t.Errorf("client %d did no work", r.client)
		}
		total.Ops += r.s.Ops
		total.Done += r.s.Done
	}
	close(stopSampling)
	sampler.Wait()

	// The server returns to its baseline: no fd and no goroutine kept.
	var after serverStats
	settle := time.Now().Add(15 * time.Second)
	for {
		after = readServerStats(t, pid, s.host, metrics)
		if after.fds <= before.fds && after.goroutines <= before.goroutines+2 {
			break
		}
		if time.Now().After(settle) {
			t.Errorf("server grew during the load: fds %d -> %d, goroutines %d -> %d",
				before.fds, after.fds, before.goroutines, after.goroutines)
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("load: %d clients x %d workers for %ds: %d operations (%.0f/s), %d iterations",
		clients, workers, seconds, total.Ops, float64(total.Ops)/float64(seconds), total.Done)
	t.Logf("server after the load: %d fds (before %d), %d goroutines (before %d), RSS %d KiB (before %d, peak %d)",
		after.fds, before.fds, after.goroutines, before.goroutines, after.rssKiB, before.rssKiB, peak.rssKiB)
	fmt.Printf("qtfs-server RSS: before %d KiB, peak %d KiB, after %d KiB\n", before.rssKiB, peak.rssKiB, after.rssKiB)
}

func jsonLine(out string, v any) error {
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[i+1:]
	}
	return json.Unmarshal([]byte(out), v)
}
