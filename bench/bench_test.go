package bench

import (
	"context"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    statFields
		wantErr bool
	}{
		{"plain", "42 (sshd) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 200", statFields{ppid: 1, utime: 7, stime: 3}, false},
		{"spaces and parens in comm", "7 (a) b (c)) R 99 7 7 0 -1 0 0 0 0 0 1234 5678 0 0", statFields{ppid: 99, utime: 1234, stime: 5678}, false},
		{"no paren", "7 comm R 1 2 3", statFields{}, true},
		{"truncated", "7 (x) R 1 2 3", statFields{}, true},
		{"bad number", "7 (x) R 1 7 7 0 -1 0 0 0 0 0 zz 1 0 0", statFields{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseStat([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseStatusKiB(t *testing.T) {
	status := "Name:\tx\nVmPeak:\t  1000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n"
	tests := []struct {
		key     string
		want    uint64
		wantErr bool
	}{
		{"VmHWM", 2048, false},
		{"VmRSS", 1024, false},
		{"VmSwap", 0, true},
		{"Name", 0, true}, // not a number
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			got, err := parseStatusKiB([]byte(status), tc.key)
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %d, %v; want %d, err %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestParseFio(t *testing.T) {
	const read = `{"jobs":[{"jobname":"r","error":0,
		"read":{"io_bytes":4194304,"bw_bytes":104857600,"iops":25600.5,"lat_ns":{"mean":39000},"clat_ns":{"mean":38000,"percentile":{"99.000000":120000}}},
		"write":{"io_bytes":0,"bw_bytes":0,"iops":0,"lat_ns":{"mean":0},"clat_ns":{"mean":0}}}]}`
	tests := []struct {
		name    string
		in      string
		write   bool
		want    fioResult
		wantErr string
	}{
		{"read", read, false, fioResult{BWBytes: 104857600, IOPS: 25600.5, LatMeanNs: 39000, LatP99Ns: 120000, IOBytes: 4194304}, ""},
		{"warning before the JSON", "fio: some warning\n" + read, false, fioResult{BWBytes: 104857600, IOPS: 25600.5, LatMeanNs: 39000, LatP99Ns: 120000, IOBytes: 4194304}, ""},
		{"asked for the direction that moved nothing", read, true, fioResult{}, "moved no data"},
		{"job error", `{"jobs":[{"jobname":"w","error":5}]}`, true, fioResult{}, "error 5"},
		{"no jobs", `{"jobs":[]}`, false, fioResult{}, "no jobs"},
		{"not JSON", "fio: command not understood", false, fioResult{}, "no JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFio([]byte(tc.in), tc.write)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	ok := func(v float64) Sample {
		return Sample{Value: v, Client: &ProcUse{CPUms: v * 10, PeakKiB: 1024, RSSKiB: 512}}
	}
	tests := []struct {
		name                string
		in                  []Sample
		present             bool
		median, spread, cpu float64
		cell                string
	}{
		{"odd", []Sample{ok(10), ok(12), ok(11)}, true, 11, 100.0 / 11, 110, "11.0 ±9%"},
		{"even", []Sample{ok(10), ok(20)}, true, 15, 100.0 / 3, 150, "15.0 ±33%"},
		{"one run", []Sample{ok(3)}, true, 3, 0, 30, "3.00"},
		{"a failure", []Sample{ok(10), {Err: "boom"}, ok(10)}, true, 10, 0, 100, "10.0 ±0% (2/3 ok)¹"},
		{"all failed", []Sample{{Err: "boom"}}, false, 0, 0, 0, "failed¹"},
		{"not run", []Sample{{Err: "not run: no /proc"}}, false, 0, 0, 0, "n/a²"},
		{"nothing", nil, false, 0, 0, 0, "—"},
	}
	tb := &table{}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := summarize(tc.in)
			if s.present != tc.present {
				t.Fatalf("present = %v, want %v", s.present, tc.present)
			}
			if tc.present && (math.Abs(s.median-tc.median) > 1e-9 || math.Abs(s.spreadPct-tc.spread) > 1e-9 || s.clientCPU != tc.cpu) {
				t.Fatalf("median %v spread %v cpu %v; want %v %v %v", s.median, s.spreadPct, s.clientCPU, tc.median, tc.spread, tc.cpu)
			}
			if got := tb.cell(s); got != tc.cell {
				t.Fatalf("cell = %q, want %q", got, tc.cell)
			}
		})
	}
}

func TestSpeedRatio(t *testing.T) {
	s := func(v float64) summary { return summary{present: true, median: v} }
	tests := []struct {
		name   string
		a, b   summary
		higher bool
		want   float64
		ok     bool
	}{
		{"throughput: twice as fast", s(200), s(100), true, 2, true},
		{"latency: half the latency is twice as fast", s(50), s(100), false, 2, true},
		{"latency: slower", s(300), s(100), false, 1.0 / 3, true},
		{"missing", summary{}, s(1), true, 0, false},
		{"zero", s(0), s(1), true, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := speedRatio(tc.a, tc.b, tc.higher)
			if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("got %v, %v; want %v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// fakeResults is a small run: two workloads, the peers the targets need.
func fakeResults() *Results {
	res := &Results{Started: time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC), Runs: 2, Machine: Machine{Host: "box.example.org", CPUs: 2}}
	res.Finished = res.Started.Add(time.Minute)
	for _, p := range []string{PeerLocal, PeerLoopback, PeerNoPT, PeerSSHFS, PeerQtfsTLS} {
		res.Peers = append(res.Peers, PeerInfo{Name: p})
	}
	res.Workloads = []WorkloadInfo{
		{ID: "seq-read", Title: "sequential read", Unit: "MiB/s", Higher: true, Class: classSeq},
		{ID: "rand-read-qd1", Title: "random read", Unit: "µs", Higher: false, Class: classRand},
		{ID: "stat", Title: "stat", Unit: "files/s", Higher: true, Class: classMeta},
		{ID: "find-stat", Title: "find", Unit: "s", Higher: false, Class: classTree},
	}
	fig := map[string]map[string]float64{
		"seq-read":      {PeerLocal: 1000, PeerLoopback: 1000, PeerNoPT: 500, PeerSSHFS: 100, PeerQtfsTLS: 400},
		"rand-read-qd1": {PeerLocal: 2, PeerLoopback: 4, PeerNoPT: 40, PeerSSHFS: 400, PeerQtfsTLS: 60},
		"stat":          {PeerLocal: 50000, PeerLoopback: 10000, PeerNoPT: 10000, PeerSSHFS: 2000, PeerQtfsTLS: 8000},
		"find-stat":     {PeerLocal: 0.1, PeerLoopback: 0.5, PeerNoPT: 0.5, PeerSSHFS: 1.0, PeerQtfsTLS: 0.4},
	}
	for r := 1; r <= 2; r++ {
		for _, w := range res.Workloads {
			for _, p := range res.Peers {
				s := Sample{Round: r, Peer: p.Name, Workload: w.ID, Value: fig[w.ID][p.Name]}
				if p.Name != PeerLocal {
					s.Client = &ProcUse{CPUms: 100, PeakKiB: 30 << 10, RSSKiB: 20 << 10}
				}
				if p.Name == PeerQtfsTLS && w.ID == "stat" {
					s.RPCs = map[string]float64{"Lookup": 10000, "Readdir": float64(9 + r)}
				}
				res.Samples = append(res.Samples, s)
			}
		}
	}
	res.Idle = []IdleSample{{Peer: PeerQtfsTLS, Seconds: 20, Client: &ProcUse{CPUms: 0, RSSKiB: 20 << 10}}}
	return res
}

func TestMarkdown(t *testing.T) {
	md := Markdown(fakeResults())
	for _, want := range []string{
		"# qtfs benchmark: 2026-01-02 03:04 UTC on box",
		// seq-read: 400 vs sshfs 100, vs loopback 1000, vs nopt 500.
		"| **seq-read**: sequential read | MiB/s ↑ | 1000 ±0% | 1000 ±0% | 500 ±0% | 100 ±0% | 400 ±0% | 4.00x | 0.40x | 0.80x |",
		// latency: 60 vs 400 is 6.67x faster; vs 4: 0.07x.
		"| 6.67x | 0.07x | 0.67x |",
		"| metadata ≥ 3x sshfs | stat 4.00x, find-stat 2.50x ✗ | **no** |",
		"| sequential throughput ≥ 60% of go-fuse loopback | seq-read 0.40x ✗ | **no** |",
		"| sequential throughput ≥ 60% of go-fuse loopback without passthrough | seq-read 0.80x | yes |",
		"| 4 KiB random read latency (QD1) within 2x of go-fuse loopback without passthrough | 60.0 µs vs 40.0 µs: 1.50x its latency | yes |",
		"| client idle CPU ~0 (≤ 0.1% of a core) | 0 ms CPU in 20 s (0.000% of a core) | yes |",
		"| client RSS < 64 MiB after the find+stat scan of the tree | RSS 20.0 MiB after the scan (peak 30.0 MiB) | yes |",
		"| seq-read | qtfs-tcp-tls | 400 | 400 |",
		"## Server RPCs per workload",
		"| stat | 10,011 (Lookup 10,000) |",
		"| seq-read | — |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md)
	}
}

func TestWriteResultsKeepsEarlierRuns(t *testing.T) {
	dir := t.TempDir()
	res := fakeResults()
	var mds []string
	for range 2 {
		md, js, err := WriteResults(res, dir)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(js); err != nil {
			t.Fatal(err)
		}
		mds = append(mds, filepath.Base(md))
	}
	if mds[0] != "2026-01-02-box.md" || mds[1] != "2026-01-02-box-2.md" {
		t.Fatalf("names %v", mds)
	}
}

func TestMetadataPhases(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "meta")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const n, size = 57, 100
	if err := createFiles(ctx, dir, n, size); err != nil {
		t.Fatal(err)
	}
	if err := createFiles(ctx, dir, 1, size); err == nil {
		t.Fatal("create over an existing file succeeded: O_EXCL missing")
	}
	if err := statFiles(ctx, dir, n, size); err != nil {
		t.Fatal(err)
	}
	if err := statFiles(ctx, dir, n, size+1); err == nil {
		t.Fatal("stat accepted a wrong size")
	}
	if err := listDir(dir, n); err != nil {
		t.Fatal(err)
	}
	if err := listDir(dir, n+1); err == nil {
		t.Fatal("readdir accepted a wrong count")
	}
	if err := unlinkFiles(ctx, dir, n); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("directory still there after unlink phase: %v", err)
	}
}

func TestBuildTreeHasExactlyTheEntries(t *testing.T) {
	for _, entries := range []int{220, 221, 1000} {
		t.Run(count(entries), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "tree")
			if err := buildTree(dir, entries); err != nil {
				t.Fatal(err)
			}
			got, err := countTree(dir)
			if err != nil || got != entries {
				t.Fatalf("countTree = %d, %v; want %d", got, err, entries)
			}
			if _, err := exec.LookPath("find"); err != nil {
				t.Skip("find is not installed")
			}
			lines, err := findStat(context.Background(), dir)
			if err != nil || lines != entries+1 {
				t.Fatalf("findStat = %d, %v; want %d", lines, err, entries+1)
			}
		})
	}
	if err := buildTree(t.TempDir(), 10); err == nil {
		t.Fatal("a tree smaller than its directories was accepted")
	}
}

func TestProcScan(t *testing.T) {
	r, err := procScan("/proc")
	if err != nil {
		t.Fatal(err)
	}
	if r.pids == 0 || r.files < r.pids || r.bytes == 0 {
		t.Fatalf("scan of /proc: %+v", r)
	}
	// A view of /proc whose files read empty (as a page-cached FUSE mount
	// of /proc shows them) is an error, not a fast scan.
	fake := t.TempDir()
	for _, p := range []string{"1", "22"} {
		if err := os.MkdirAll(filepath.Join(fake, p), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"stat", "status"} {
			if err := os.WriteFile(filepath.Join(fake, p, f), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := procScan(fake); err == nil || !strings.Contains(err.Error(), "read 0 bytes") {
		t.Fatalf("empty files: err = %v", err)
	}
}

func TestReadUsageOfSelf(t *testing.T) {
	self := []int{os.Getpid()}
	u0 := readUsage(self)
	if u0.procs != 1 || u0.rssKiB == 0 || u0.hwmKiB < u0.rssKiB {
		t.Fatalf("usage of self: %+v", u0)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	u1 := readUsage(self)
	if u1.cpuTicks <= u0.cpuTicks {
		t.Fatalf("100 ms of busy loop (%d turns) left CPU ticks at %d -> %d", x, u0.cpuTicks, u1.cpuTicks)
	}
	if err := resetPeak(self); err != nil {
		t.Fatal(err)
	}
	if got := readUsage([]int{1 << 30}); got.procs != 0 {
		t.Fatalf("a pid that does not exist was read: %+v", got)
	}
}

func TestDescendants(t *testing.T) {
	table := []procInfo{{pid: 10, ppid: 1}, {pid: 11, ppid: 10}, {pid: 12, ppid: 11}, {pid: 13, ppid: 1}, {pid: 14, ppid: 10}}
	got := descendants(table, 10)
	want := map[int]bool{10: true, 11: true, 12: true, 14: true}
	if len(got) != len(want) {
		t.Fatalf("got %v", got)
	}
	for _, p := range got {
		if !want[p] {
			t.Fatalf("got %v", got)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/plain", "/plain"},
		{`/with\040space`, "/with space"},
		{`/tab\011x`, "/tab\tx"},
		{`/trailing\`, `/trailing\`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := unescapeMount(tc.in); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	base := DefaultConfig(true, "/repo")
	tests := []struct {
		name   string
		change func(c *Config)
		ok     bool
	}{
		{"quick defaults", func(*Config) {}, true},
		{"full defaults", func(c *Config) { *c = DefaultConfig(false, "/repo") }, true},
		{"no runs", func(c *Config) { c.Runs = 0 }, false},
		{"seq not MiB-aligned", func(c *Config) { c.SeqSize = 5<<20 + 1 }, false},
		{"random reads beyond the file", func(c *Config) { c.RandQD1IO = c.SeqSize + 1 }, false},
		{"job region too small", func(c *Config) { c.RandJobIO = c.SeqSize }, false},
		{"relative work dir", func(c *Config) { c.WorkDir = "work" }, false},
		{"root work dir", func(c *Config) { c.WorkDir = "/" }, false},
		{"unknown peer", func(c *Config) { c.Peers = []string{"nfs"} }, false},
		{"tiny tree", func(c *Config) { c.TreeEntries = 10 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base
			tc.change(&c)
			if err := c.Validate(); (err == nil) != tc.ok {
				t.Fatalf("Validate() = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

// TestRunLocal runs the whole runner on the local peer with tiny sizes:
// work directory, data set, every workload, the report.
func TestRunLocal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (drop_caches, clear_refs): run the tests as root")
	}
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("fio is not installed: run scripts/bench-deps.sh (or apt-get install fio)")
	}
	src := t.TempDir()
	for i := range 5 {
		if err := os.WriteFile(filepath.Join(src, count(i)+".go"), []byte("package x\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := DefaultConfig(true, t.TempDir())
	cfg.WorkDir = filepath.Join(t.TempDir(), "work")
	cfg.Peers = []string{PeerLocal}
	cfg.SeqSize, cfg.RandQD1IO, cfg.RandJobIO = 4<<20, 1<<20, 256<<10
	cfg.MetaFiles, cfg.TreeEntries, cfg.ProcScans = 20, 300, 1
	cfg.CopySource = src
	cfg.IdleWindow = 0
	res, err := Run(context.Background(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Samples) != len(res.Workloads) {
		t.Fatalf("%d samples for %d workloads", len(res.Samples), len(res.Workloads))
	}
	for _, s := range res.Samples {
		if s.Err != "" || s.Value <= 0 || math.IsInf(s.Value, 0) {
			t.Errorf("%s: value %v, error %q", s.Workload, s.Value, s.Err)
		}
	}
	md := Markdown(res)
	if !strings.Contains(md, "| **find-stat**") {
		t.Fatalf("report:\n%s", md)
	}
	// The work directory is the benchmark's: a second run clears it.
	if _, err := Run(context.Background(), cfg, zaptest.NewLogger(t)); err != nil {
		t.Fatalf("second run over the same work dir: %v", err)
	}
	// A directory that is not the benchmark's is never cleared.
	cfg.WorkDir = t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg.WorkDir, "precious"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(context.Background(), cfg, zaptest.NewLogger(t)); err == nil || !strings.Contains(err.Error(), "refusing") {
		t.Fatalf("run over a foreign directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.WorkDir, "precious")); err != nil {
		t.Fatalf("foreign file gone: %v", err)
	}
}

func TestWriteHistory(t *testing.T) {
	dir := t.TempDir()
	// Three full runs saved on one day, the third as DATE-HOST-3, and a
	// quick one; the second is older than the first by its start time.
	first := fakeResults()
	first.Machine.QtfsCommit = "0123456789abcdef (with uncommitted changes)"
	second := fakeResults()
	second.Started = first.Started.Add(-time.Hour)
	second.Machine.QtfsCommit = "fedcba9876543210"
	for i := range second.Samples {
		if s := &second.Samples[i]; s.Peer == PeerQtfsTLS && s.Workload == "stat" {
			s.Value = 4000 // 2.00x sshfs: short of the metadata target
		}
	}
	third := fakeResults()
	third.Started = first.Started.Add(time.Hour)
	third.Workloads = third.Workloads[:1] // an older layout: one workload
	quick := fakeResults()
	quick.Quick = true
	for _, r := range []*Results{first, second, third, quick} {
		if _, _, err := WriteResults(r, dir); err != nil {
			t.Fatal(err)
		}
	}
	path, err := WriteHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	md := string(raw)
	rows := []string{
		"| [2026-01-02 02:04](2026-01-02-box-2.md) | box | fedcba9 | **4.00x** | **6.67x** | 2.00x | 2.50x | 5 of 8 |",
		"| [2026-01-02 03:04](2026-01-02-box.md) | box | 0123456* | **4.00x** | **6.67x** | **4.00x** | 2.50x | 5 of 8 |",
		"| [2026-01-02 04:04](2026-01-02-box-3.md) | box | ? | **4.00x** | — | — | — | ",
	}
	at := -1
	for _, row := range rows {
		i := strings.Index(md, row)
		if i < 0 {
			t.Errorf("history lacks the row %q", row)
			continue
		}
		if i < at {
			t.Errorf("row %q is out of time order", row)
		}
		at = i
	}
	if !strings.Contains(md, "| run | host | commit | seq-read | rand-read-qd1 | stat ᵐ | find-stat ᵐ | targets met |") {
		t.Error("history lacks its header, with the workloads of the newest run and the older ones")
	}
	if strings.Contains(md, "quick") {
		t.Error("history lists a quick run")
	}
	if t.Failed() {
		t.Log(md)
	}

	// A results file that does not decode is named, not skipped.
	if err := os.WriteFile(filepath.Join(dir, "broken.json"), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteHistory(dir); err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Fatalf("history over a broken file: %v", err)
	}
}
