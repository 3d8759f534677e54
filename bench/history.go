package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// HistoryFile is the index WriteHistory keeps in a results directory.
const HistoryFile = "README.md"

// historyRun is one saved run as the index shows it.
type historyRun struct {
	file string // the report's file name (.md)
	res  *Results
}

// WriteHistory rewrites dir/README.md: one row per full run saved in dir
// (quick and interrupted runs are left out), oldest first, with the
// ratio of qtfs-tcp-tls to sshfs on every workload and the targets the
// run met. File names do not sort in time order (DATE-HOST-10 sorts
// before DATE-HOST-2), so the rows go by each run's start time.
func WriteHistory(dir string) (string, error) {
	runs, err := loadHistory(dir)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, HistoryFile)
	if err := os.WriteFile(path, []byte(historyMarkdown(runs)), 0o644); err != nil {
		return "", fmt.Errorf("bench: write history: %w", err)
	}
	return path, nil
}

// loadHistory reads the full, complete runs saved in dir, oldest first.
func loadHistory(dir string) ([]historyRun, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, fmt.Errorf("bench: history: %w", err)
	}
	var runs []historyRun
	var bad []string
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("bench: history: %w", err)
		}
		var res Results
		if err := json.Unmarshal(raw, &res); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", filepath.Base(f), err))
			continue
		}
		if res.Quick || res.Interrupted {
			continue
		}
		runs = append(runs, historyRun{file: strings.TrimSuffix(filepath.Base(f), ".json") + ".md", res: &res})
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("bench: history: results that do not decode: %s", strings.Join(bad, "; "))
	}
	slices.SortStableFunc(runs, func(a, b historyRun) int { return a.res.Started.Compare(b.res.Started) })
	return runs, nil
}

// historyMarkdown renders the index of runs.
func historyMarkdown(runs []historyRun) string {
	var b strings.Builder
	b.WriteString("# Benchmark history\n\n")
	b.WriteString("Written by `make bench` after each run (`bench.WriteHistory`): one row per full run kept here, oldest first. ")
	b.WriteString("Each cell is how many times faster qtfs-tcp-tls was than sshfs in that run (medians; see the run's report for the figures, spreads and CPU). ")
	b.WriteString("Targets: 2x on every workload, 3x on metadata (marked ᵐ); a ratio that meets its target is in bold. ")
	b.WriteString("The last column counts the run's targets met, as its report lists them. ")
	b.WriteString("Rows of different machines or commits are not comparable as such: the spread of one workload across runs of the same code is often 10–30%.\n\n")
	if len(runs) == 0 {
		b.WriteString("No full run saved yet.\n")
		return b.String()
	}
	// Columns: the workloads of the newest run, in its order, then any
	// that only older runs had.
	var cols []WorkloadInfo
	seen := map[string]bool{}
	for i := len(runs) - 1; i >= 0; i-- {
		for _, w := range runs[i].res.Workloads {
			if !seen[w.ID] {
				seen[w.ID] = true
				cols = append(cols, w)
			}
		}
	}
	b.WriteString("| run | host | commit | ")
	for _, w := range cols {
		b.WriteString(w.ID)
		if metadataTarget(w) {
			b.WriteString(" ᵐ")
		}
		b.WriteString(" | ")
	}
	b.WriteString("targets met |\n|")
	for range len(cols) + 4 {
		b.WriteString(" --- |")
	}
	b.WriteString("\n")
	for _, r := range runs {
		t := newTable(r.res)
		fmt.Fprintf(&b, "| [%s](%s) | %s | %s | ", r.res.Started.UTC().Format("2006-01-02 15:04"), r.file,
			r.res.Machine.ShortHost(), shortCommit(r.res.Machine.QtfsCommit))
		for _, w := range cols {
			b.WriteString(historyCell(t, w))
			b.WriteString(" | ")
		}
		met, known := 0, 0
		for _, tg := range targets(r.res, t) {
			if tg.verdict != "?" {
				known++
			}
			if tg.verdict == "yes" {
				met++
			}
		}
		fmt.Fprintf(&b, "%d of %d |\n", met, known)
	}
	return b.String()
}

// metadataTarget tells whether a workload is held to the metadata target.
func metadataTarget(w WorkloadInfo) bool { return w.Class == classMeta || w.Class == classTree }

// historyCell is qtfs-tcp-tls's ratio to sshfs on w, bold when it meets
// its target, "—" when the run lacks either figure.
func historyCell(t *table, w WorkloadInfo) string {
	sums, ok := t.sums[w.ID]
	if !ok {
		return "—"
	}
	r, ok := speedRatio(sums[PeerQtfsTLS], sums[PeerSSHFS], w.Higher)
	if !ok {
		return "—"
	}
	want := 2.0
	if metadataTarget(w) {
		want = 3
	}
	c := fmt.Sprintf("%.2fx", r)
	if r >= want {
		c = "**" + c + "**"
	}
	return c
}

// shortCommit is the first 7 digits of a commit, with a * when the tree
// had uncommitted changes.
func shortCommit(c string) string {
	id, rest, _ := strings.Cut(c, " ")
	if len(id) > 7 {
		id = id[:7]
	}
	if id == "" {
		return "?"
	}
	if rest != "" {
		id += "*"
	}
	return id
}
