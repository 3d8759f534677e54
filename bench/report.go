package bench

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// summary is the median of a set of runs with its spread.
type summary struct {
	n                      int
	median, lo, hi         float64
	failed                 int // runs that produced no figure
	firstErr               string
	present                bool // at least one run produced a figure
	spreadPct              float64
	anyRun, allNotRun      bool
	notRunReason           string
	clientCPU, serverCPU   float64 // medians, ms
	clientPeak, serverPeak float64 // medians, KiB
	clientRSS              float64 // median, KiB
	hasClient, hasServer   bool
}

// median of xs (not modified); NaN when empty.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// summarize the samples of one peer on one workload.
func summarize(samples []Sample) summary {
	var s summary
	var vals, ccpu, scpu, cpk, spk, crss []float64
	for _, smp := range samples {
		s.anyRun = true
		if smp.Err != "" {
			s.failed++
			if s.firstErr == "" {
				s.firstErr = smp.Err
			}
			continue
		}
		vals = append(vals, smp.Value)
		if smp.Client != nil {
			s.hasClient = true
			ccpu = append(ccpu, smp.Client.CPUms)
			cpk = append(cpk, float64(smp.Client.PeakKiB))
			crss = append(crss, float64(smp.Client.RSSKiB))
		}
		if smp.Server != nil {
			s.hasServer = true
			scpu = append(scpu, smp.Server.CPUms)
			spk = append(spk, float64(smp.Server.PeakKiB))
		}
	}
	s.n = len(vals)
	if s.n == 0 {
		if s.anyRun && strings.HasPrefix(s.firstErr, "not run: ") {
			s.allNotRun, s.notRunReason = true, strings.TrimPrefix(s.firstErr, "not run: ")
		}
		return s
	}
	s.present = true
	s.median = median(vals)
	s.lo, s.hi = slices.Min(vals), slices.Max(vals)
	if s.median != 0 {
		s.spreadPct = math.Max(s.hi-s.median, s.median-s.lo) / math.Abs(s.median) * 100
	}
	s.clientCPU, s.serverCPU = median(ccpu), median(scpu)
	s.clientPeak, s.serverPeak, s.clientRSS = median(cpk), median(spk), median(crss)
	return s
}

// speedRatio is how many times faster a is than b on a workload: a/b for
// figures where higher is better, b/a otherwise. ok=false when either
// figure is missing.
func speedRatio(a, b summary, higher bool) (float64, bool) {
	if !a.present || !b.present || a.median <= 0 || b.median <= 0 {
		return 0, false
	}
	if higher {
		return a.median / b.median, true
	}
	return b.median / a.median, true
}

// num formats a figure with three significant digits, no exponent.
func num(v float64) string {
	a := math.Abs(v)
	switch {
	case math.IsNaN(v):
		return "—"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}

// mib formats KiB as MiB.
func mib(kib float64) string { return num(kib / 1024) }

// table indexes a run's samples by workload and peer.
type table struct {
	res   *Results
	peers []string
	sums  map[string]map[string]summary // workload → peer → summary
}

func newTable(res *Results) *table {
	t := &table{res: res, sums: map[string]map[string]summary{}}
	for _, p := range res.Peers {
		t.peers = append(t.peers, p.Name)
	}
	by := map[[2]string][]Sample{}
	for _, s := range res.Samples {
		k := [2]string{s.Workload, s.Peer}
		by[k] = append(by[k], s)
	}
	for _, w := range res.Workloads {
		t.sums[w.ID] = map[string]summary{}
		for _, p := range t.peers {
			t.sums[w.ID][p] = summarize(by[[2]string{w.ID, p}])
		}
	}
	return t
}

func (t *table) has(peer string) bool { return slices.Contains(t.peers, peer) }

// cell renders a peer's figure: "median ±spread%", with the number of runs
// that produced a figure when some failed.
func (t *table) cell(s summary) string {
	switch {
	case s.allNotRun:
		return "n/a²"
	case !s.anyRun:
		return "—"
	case !s.present:
		return "failed¹"
	}
	c := num(s.median)
	if s.n > 1 {
		c += fmt.Sprintf(" ±%.0f%%", s.spreadPct)
	}
	if s.failed > 0 {
		c += fmt.Sprintf(" (%d/%d ok)¹", s.n, s.n+s.failed)
	}
	return c
}

func ratioCell(r float64, ok bool) string {
	if !ok {
		return "—"
	}
	return fmt.Sprintf("%.2fx", r)
}

// Markdown renders the report.
func Markdown(res *Results) string {
	t := newTable(res)
	var b strings.Builder
	m := res.Machine
	mode := fmt.Sprintf("full mode, median of %d runs", res.Runs)
	if res.Quick {
		mode = fmt.Sprintf("QUICK mode (small sizes, %d run): a check that the benchmark works, not a measurement", res.Runs)
	}
	fmt.Fprintf(&b, "# qtfs benchmark: %s on %s\n\n", res.Started.Format("2006-01-02 15:04 MST"), m.ShortHost())
	if res.Interrupted {
		b.WriteString("**Interrupted: partial results.**\n\n")
	}
	fmt.Fprintf(&b, "%s; %s total. Peers, each over the same backing directory: "+
		"`local` (the directory itself: the ceiling), `gofuse-loopback` (go-fuse's loopback example: FUSE without a network; "+
		"on this kernel, as root, it uses FUSE passthrough, so its reads and writes bypass the daemon), "+
		"`gofuse-loopback-nopt` (the same loopback with passthrough off: every read and write is a FUSE request, the ceiling for a FUSE daemon that moves data), "+
		"`sshfs` (to an sshd on 127.0.0.1), `qtfs-tcp-tls` (TCP loopback, mutual TLS), `qtfs-unix` (unix socket). "+
		"Rounds are interleaved: every workload on each peer in turn, then the next round.\n\n",
		mode, res.Finished.Sub(res.Started).Round(1e9))

	b.WriteString("## Machine\n\n| | |\n| --- | --- |\n")
	for _, kv := range [][2]string{
		{"host", m.Host}, {"CPUs (nproc)", fmt.Sprint(m.CPUs)}, {"CPU model", m.CPUModel},
		{"memory", fmt.Sprintf("%d MiB", m.MemoryMiB)}, {"kernel", m.Kernel}, {"OS", m.OS},
		{"backing directory", m.DataFS}, {"Go", m.GoVersion}, {"qtfs commit", m.QtfsCommit}, {"qtfs build", m.QtfsBuild},
		{"fio", m.Fio}, {"sshfs", m.SSHFS}, {"ssh", m.SSH},
	} {
		fmt.Fprintf(&b, "| %s | %s |\n", kv[0], strings.ReplaceAll(kv[1], "|", "/"))
	}

	// Figures.
	b.WriteString("\n## Results\n\nMedian of the runs, ± the largest distance from the median to a run, in % of the median. " +
		"The ratio columns say how many times faster qtfs-tcp-tls is than the other peer " +
		"(its figure / theirs where higher is better (↑), theirs / its where lower is better (↓)): above 1.00x qtfs is faster.\n\n")
	b.WriteString("| workload | unit |")
	for _, p := range t.peers {
		fmt.Fprintf(&b, " %s |", p)
	}
	b.WriteString(" qtfs-tcp-tls vs sshfs | vs gofuse-loopback | vs gofuse-loopback-nopt |\n| --- | --- |")
	for range t.peers {
		b.WriteString(" ---: |")
	}
	b.WriteString(" ---: | ---: | ---: |\n")
	for _, w := range res.Workloads {
		arrow := "↓"
		if w.Higher {
			arrow = "↑"
		}
		fmt.Fprintf(&b, "| **%s**: %s | %s %s |", w.ID, w.Title, w.Unit, arrow)
		for _, p := range t.peers {
			fmt.Fprintf(&b, " %s |", t.cell(t.sums[w.ID][p]))
		}
		q := t.sums[w.ID][PeerQtfsTLS]
		fmt.Fprintf(&b, " %s | %s | %s |\n", ratioCell(speedRatio(q, t.sums[w.ID][PeerSSHFS], w.Higher)),
			ratioCell(speedRatio(q, t.sums[w.ID][PeerLoopback], w.Higher)), ratioCell(speedRatio(q, t.sums[w.ID][PeerNoPT], w.Higher)))
	}
	b.WriteString("\n¹ failed in some or all runs: see Errors. ² the peer has no working view of /proc: see Notes.\n")

	// Secondary figures.
	b.WriteString("\n### Secondary figures (medians)\n\n| workload | figure |")
	for _, p := range t.peers {
		fmt.Fprintf(&b, " %s |", p)
	}
	b.WriteString("\n| --- | --- |")
	for range t.peers {
		b.WriteString(" ---: |")
	}
	b.WriteString("\n")
	for _, w := range res.Workloads {
		keys := extraKeys(res, w.ID)
		for _, k := range keys {
			fmt.Fprintf(&b, "| %s | %s |", w.ID, k)
			for _, p := range t.peers {
				fmt.Fprintf(&b, " %s |", num(extraMedian(res, w.ID, p, k)))
			}
			b.WriteString("\n")
		}
	}

	// Resources.
	procPeers := slices.DeleteFunc(slices.Clone(t.peers), func(p string) bool { return p == PeerLocal })
	resTable := func(title, note string, f func(s summary) string) {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n\n| workload |", title, note)
		for _, p := range procPeers {
			fmt.Fprintf(&b, " %s |", p)
		}
		b.WriteString("\n| --- |")
		for range procPeers {
			b.WriteString(" ---: |")
		}
		b.WriteString("\n")
		for _, w := range res.Workloads {
			fmt.Fprintf(&b, "| %s |", w.ID)
			for _, p := range procPeers {
				s := t.sums[w.ID][p]
				if !s.present {
					b.WriteString(" — |")
					continue
				}
				fmt.Fprintf(&b, " %s |", f(s))
			}
			b.WriteString("\n")
		}
	}
	opt := func(has bool, v float64, f func(float64) string) string {
		if !has {
			return "—"
		}
		return f(v)
	}
	resTable("CPU time per workload", "Milliseconds of CPU (utime+stime, 10 ms resolution), median: client / server. "+
		"Client: the FUSE daemon (for sshfs: sshfs and its ssh). Server: qtfs-server; for sshfs: sshd and its session and sftp-server processes; "+
		"go-fuse loopback has none. The /proc scan counts the processes of the /proc mount.",
		func(s summary) string {
			return opt(s.hasClient, s.clientCPU, func(v float64) string { return fmt.Sprintf("%.0f", v) }) + " / " +
				opt(s.hasServer, s.serverCPU, func(v float64) string { return fmt.Sprintf("%.0f", v) })
		})
	resTable("Peak RSS per workload", "MiB, medians: client peak / server peak [client RSS at the end of the workload]. "+
		"The peak is VmHWM, reset through /proc/PID/clear_refs before the workload, summed over the role's processes.",
		func(s summary) string {
			return opt(s.hasClient, s.clientPeak, mib) + " / " + opt(s.hasServer, s.serverPeak, mib) + " [" + opt(s.hasClient, s.clientRSS, mib) + "]"
		})

	// RPCs.
	var rpcPeers []string
	for _, p := range t.peers {
		for _, smp := range res.Samples {
			if smp.Peer == p && smp.RPCs != nil {
				rpcPeers = append(rpcPeers, p)
				break
			}
		}
	}
	if len(rpcPeers) > 0 {
		b.WriteString("\n## Server RPCs per workload\n\nFileSystem RPCs the qtfs-server served during the workload " +
			"(its qtfs_server_ops_total), median over the runs, with the largest operations.\n\n| workload |")
		for _, p := range rpcPeers {
			fmt.Fprintf(&b, " %s |", p)
		}
		b.WriteString("\n| --- |")
		for range rpcPeers {
			b.WriteString(" ---: |")
		}
		b.WriteString("\n")
		for _, w := range res.Workloads {
			fmt.Fprintf(&b, "| %s |", w.ID)
			for _, p := range rpcPeers {
				var ss []Sample
				for _, smp := range res.Samples {
					if smp.Peer == p && smp.Workload == w.ID {
						ss = append(ss, smp)
					}
				}
				if total, byOp, ok := rpcSummary(ss); ok {
					fmt.Fprintf(&b, " %s |", rpcCell(total, byOp))
				} else {
					b.WriteString(" — |")
				}
			}
			b.WriteString("\n")
		}
	}

	// Idle.
	if len(res.Idle) > 0 {
		fmt.Fprintf(&b, "\n## Idle\n\nAll mounts up, nothing running, %.0f s after the last workload.\n\n"+
			"| peer | client CPU ms | server CPU ms | client RSS MiB | server RSS MiB |\n| --- | ---: | ---: | ---: | ---: |\n", res.Idle[0].Seconds)
		for _, is := range res.Idle {
			c, s := "—", "—"
			cr, sr := "—", "—"
			if is.Client != nil {
				c, cr = fmt.Sprintf("%.0f", is.Client.CPUms), mib(float64(is.Client.RSSKiB))
			}
			if is.Server != nil {
				s, sr = fmt.Sprintf("%.0f", is.Server.CPUms), mib(float64(is.Server.RSSKiB))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", is.Peer, c, s, cr, sr)
		}
	}

	// Targets.
	b.WriteString("\n## Targets (issue 6; measured, not asserted)\n\n| target | measured | met |\n| --- | --- | :---: |\n")
	for _, tg := range targets(res, t) {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", tg.name, tg.measured, tg.verdict)
	}

	// Notes and errors.
	b.WriteString("\n## Notes\n\n")
	b.WriteString("- Caches: 'caches dropped' means `sync; echo 3 > /proc/sys/vm/drop_caches` before the workload (not timed). " +
		"Random reads: the host's page cache holds the file (warmed, not timed); the local peer reads from it (the ceiling), " +
		"the FUSE peers first drop their own page cache of the file (fio invalidate=1), so every read crosses FUSE and the transport. " +
		"fio: psync engine, fadvise random, each 4 KiB block read once (random map).\n")
	b.WriteString("- go-fuse v2.12.1's loopback registers every opened file as a FUSE passthrough backing file when it runs as root " +
		"on a kernel that supports it (6.9+): the kernel then serves reads and writes of open files itself, and the daemon's CPU " +
		"during the fio workloads is ~0. `gofuse-loopback-nopt` (bench/cmd/loopback-nopt) serves the same loopback nodes without " +
		"offering a passthrough fd; its figures are those of a FUSE daemon in the data path, which is what qtfs and sshfs are.\n")
	b.WriteString("- Metadata phases run in one process, one file at a time; user-space caches (sshfs's attribute and directory cache) " +
		"are the peer's own business and are not dropped.\n")
	for _, p := range res.Peers {
		switch {
		case p.Err != "":
			fmt.Fprintf(&b, "- %s: did not start: %s\n", p.Name, oneLine(p.Err))
		case p.ProcNote != "":
			fmt.Fprintf(&b, "- %s /proc: %s\n", p.Name, oneLine(p.ProcNote))
		}
	}
	for _, n := range res.Notes {
		fmt.Fprintf(&b, "- %s\n", oneLine(n))
	}
	var errs []string
	for _, s := range res.Samples {
		if s.Err != "" && !strings.HasPrefix(s.Err, "not run: ") {
			e := fmt.Sprintf("- round %d, %s, %s: %s", s.Round, s.Peer, s.Workload, oneLine(s.Err))
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		b.WriteString("\n## Errors\n\n" + strings.Join(errs, "\n") + "\n")
	}

	// Every run.
	b.WriteString("\n## Every run\n\n| workload | peer |")
	for r := 1; r <= res.Runs; r++ {
		fmt.Fprintf(&b, " run %d |", r)
	}
	b.WriteString("\n| --- | --- |")
	for r := 1; r <= res.Runs; r++ {
		b.WriteString(" ---: |")
	}
	b.WriteString("\n")
	for _, w := range res.Workloads {
		for _, p := range t.peers {
			vals := make([]string, res.Runs)
			for i := range vals {
				vals[i] = "—"
			}
			for _, s := range res.Samples {
				if s.Workload == w.ID && s.Peer == p && s.Round >= 1 && s.Round <= res.Runs {
					if strings.HasPrefix(s.Err, "not run: ") {
						vals[s.Round-1] = "n/a"
					} else if s.Err != "" {
						vals[s.Round-1] = "error"
					} else {
						vals[s.Round-1] = num(s.Value)
					}
				}
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", w.ID, p, strings.Join(vals, " | "))
		}
	}
	return b.String()
}

func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 400 {
		s = s[:400] + "…"
	}
	return strings.ReplaceAll(s, "|", "/")
}

func extraKeys(res *Results, workload string) []string {
	var keys []string
	for _, s := range res.Samples {
		if s.Workload != workload {
			continue
		}
		for k := range s.Extra {
			if !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	sort.Strings(keys)
	return keys
}

func extraMedian(res *Results, workload, peer, key string) float64 {
	var xs []float64
	for _, s := range res.Samples {
		if s.Workload == workload && s.Peer == peer && s.Err == "" {
			if v, ok := s.Extra[key]; ok {
				xs = append(xs, v)
			}
		}
	}
	return median(xs)
}

type target struct{ name, measured, verdict string }

func verdict(ok, known bool) string {
	switch {
	case !known:
		return "?"
	case ok:
		return "yes"
	default:
		return "**no**"
	}
}

// targets evaluates the targets for qtfs-tcp-tls.
func targets(res *Results, t *table) []target {
	var out []target
	q := func(w string) summary { return t.sums[w][PeerQtfsTLS] }
	// Ratio targets over a set of workloads: the worst one decides.
	worst := func(name string, vs string, min float64, pick func(w WorkloadInfo) bool) {
		var parts []string
		all, known := true, false
		for _, w := range res.Workloads {
			if !pick(w) {
				continue
			}
			r, ok := speedRatio(q(w.ID), t.sums[w.ID][vs], w.Higher)
			if !ok {
				continue
			}
			known = true
			mark := ""
			if r < min {
				all, mark = false, " ✗"
			}
			parts = append(parts, fmt.Sprintf("%s %.2fx%s", w.ID, r, mark))
		}
		m := strings.Join(parts, ", ")
		if !known {
			m = "no figures for both peers"
		}
		out = append(out, target{name, m, verdict(all, known)})
	}
	worst("every workload: qtfs over TCP+TLS ≥ 2x sshfs", PeerSSHFS, 2, func(WorkloadInfo) bool { return true })
	worst("metadata ≥ 3x sshfs", PeerSSHFS, 3, metadataTarget)
	for _, lp := range []struct{ peer, name string }{{PeerLoopback, "go-fuse loopback"}, {PeerNoPT, "go-fuse loopback without passthrough"}} {
		if !t.has(lp.peer) {
			continue
		}
		worst("sequential throughput ≥ 60% of "+lp.name, lp.peer, 0.6, func(w WorkloadInfo) bool { return w.Class == classSeq })
		// Latency: within 2x of the loopback's latency.
		qs, ls := q("rand-read-qd1"), t.sums["rand-read-qd1"][lp.peer]
		m, v := "no figures for both peers", "?"
		if qs.present && ls.present && ls.median > 0 {
			r := qs.median / ls.median
			m = fmt.Sprintf("%s µs vs %s µs: %.2fx its latency", num(qs.median), num(ls.median), r)
			v = verdict(r <= 2, true)
		}
		out = append(out, target{"4 KiB random read latency (QD1) within 2x of " + lp.name, m, v})
	}
	{
		m, v := "not measured", "?"
		for _, is := range res.Idle {
			if is.Peer == PeerQtfsTLS && is.Client != nil {
				pct := is.Client.CPUms / (is.Seconds * 1000) * 100
				m = fmt.Sprintf("%.0f ms CPU in %.0f s (%.3f%% of a core)", is.Client.CPUms, is.Seconds, pct)
				v = verdict(pct <= 0.1, true)
			}
		}
		out = append(out, target{"client idle CPU ~0 (≤ 0.1% of a core)", m, v})
	}
	{
		s := q("find-stat")
		m, v := "not measured", "?"
		if s.present && s.hasClient {
			m = fmt.Sprintf("RSS %s MiB after the scan (peak %s MiB)", mib(s.clientRSS), mib(s.clientPeak))
			v = verdict(s.clientRSS < 64*1024, true)
		}
		out = append(out, target{"client RSS < 64 MiB after the find+stat scan of the tree", m, v})
	}
	return out
}

// WriteResults writes the markdown report and the raw results (JSON) to dir
// as DATE-HOST[-quick].md/.json, never over an earlier run's files.
func WriteResults(res *Results, dir string) (md, js string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("bench: results dir: %w", err)
	}
	base := res.Started.Format("2006-01-02") + "-" + res.Machine.ShortHost()
	if res.Quick {
		base += "-quick"
	}
	name := base
	for i := 2; ; i++ {
		_, e1 := os.Stat(filepath.Join(dir, name+".md"))
		_, e2 := os.Stat(filepath.Join(dir, name+".json"))
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			break
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
	md, js = filepath.Join(dir, name+".md"), filepath.Join(dir, name+".json")
	if err := os.WriteFile(md, []byte(Markdown(res)), 0o644); err != nil {
		return "", "", fmt.Errorf("bench: write report: %w", err)
	}
	raw, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return "", "", fmt.Errorf("bench: encode results: %w", err)
	}
	if err := os.WriteFile(js, append(raw, '\n'), 0o644); err != nil {
		return "", "", fmt.Errorf("bench: write results: %w", err)
	}
	return md, js, nil
}
