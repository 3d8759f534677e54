package bench

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// Machine describes where a run happened, for the report.
type Machine struct {
	Host       string `json:"host"`
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	MemoryMiB  uint64 `json:"memory_mib"`
	Kernel     string `json:"kernel"`
	OS         string `json:"os"`
	GoVersion  string `json:"go_version"`
	QtfsCommit string `json:"qtfs_commit"`
	QtfsBuild  string `json:"qtfs_build"`
	DataFS     string `json:"data_fs"`
	Fio        string `json:"fio"`
	SSHFS      string `json:"sshfs"`
	SSH        string `json:"ssh"`
}

// ShortHost is the host name up to its first dot.
func (m Machine) ShortHost() string {
	h, _, _ := strings.Cut(m.Host, ".")
	if h == "" {
		return "unknown"
	}
	return h
}

func describeMachine(ctx context.Context, cfg Config, data string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	m.Host, _ = os.Hostname()
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
	}
	m.CPUModel = firstValue("/proc/cpuinfo", "model name")
	if kb := firstValue("/proc/meminfo", "MemTotal"); kb != "" {
		var n uint64
		fmt.Sscanf(kb, "%d", &n)
		m.MemoryMiB = n / 1024
	}
	m.OS = osRelease()
	run := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = cfg.RepoDir
		cmd.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
		out, _ := cmd.CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	m.QtfsCommit = run("git", "rev-parse", "HEAD")
	if s := run("git", "status", "--porcelain", "--untracked-files=no"); s != "" {
		m.QtfsCommit += " (with uncommitted changes)"
	}
	m.QtfsBuild = run(cfg.QtfsServer, "--version")
	m.Fio = run("fio", "--version")
	m.SSHFS = sshfsVersion(ctx)
	m.SSH = run("ssh", "-V")
	m.DataFS = dataFS(data)
	return m
}

// firstValue is the value of the first "key : value" line of a /proc file.
func firstValue(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func osRelease() string {
	b, err := os.ReadFile("/etc/os-release")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// dataFS names the filesystem and device the backing directory is on,
// from the longest mount point that holds it.
func dataFS(dir string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	best, desc := "", ""
	for line := range strings.SplitSeq(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := unescapeMount(f[4])
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= len(best) {
			best, desc = mp, fmt.Sprintf("%s on %s (mounted at %s)", g[0], g[1], mp)
		}
	}
	return desc
}

// sshfsVersion is the "SSHFS version" line of sshfs --version (which
// starts with fusermount's).
func sshfsVersion(ctx context.Context) string {
	out, _ := exec.CommandContext(ctx, "sshfs", "--version").CombinedOutput()
	for line := range strings.SplitSeq(string(out), "\n") {
		if strings.HasPrefix(line, "SSHFS version") {
			return strings.TrimSpace(line)
		}
	}
	return ""
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}
