package bench

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// userHZ is the unit of utime and stime in /proc/PID/stat: USER_HZ, which the
// Linux ABI fixes at 100 on every architecture we run on.
const userHZ = 100

// statFields are the fields of /proc/PID/stat this package reads.
type statFields struct {
	ppid         int
	utime, stime uint64 // clock ticks (1/userHZ s)
}

// parseStat parses the content of /proc/PID/stat. The command name (field 2)
// is in parentheses and may itself hold spaces and parentheses, so fields are
// counted from the last ')'.
func parseStat(b []byte) (statFields, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statFields{}, errors.New("bench: /proc stat: no ')' after the command name")
	}
	// After ") ": field 3 (state) is rest[0], ppid (field 4) rest[1],
	// utime (field 14) rest[11], stime (field 15) rest[12].
	rest := strings.Fields(string(b[i+1:]))
	if len(rest) < 13 {
		return statFields{}, fmt.Errorf("bench: /proc stat: %d fields after the command name, want at least 13", len(rest))
	}
	ppid, err := strconv.Atoi(rest[1])
	if err != nil {
		return statFields{}, fmt.Errorf("bench: /proc stat: ppid: %w", err)
	}
	ut, err := strconv.ParseUint(rest[11], 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("bench: /proc stat: utime: %w", err)
	}
	st, err := strconv.ParseUint(rest[12], 10, 64)
	if err != nil {
		return statFields{}, fmt.Errorf("bench: /proc stat: stime: %w", err)
	}
	return statFields{ppid: ppid, utime: ut, stime: st}, nil
}

// parseStatusKiB returns the value of a "Key:   123 kB" line of
// /proc/PID/status, in KiB.
func parseStatusKiB(b []byte, key string) (uint64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		name, val, ok := strings.Cut(line, ":")
		if !ok || name != key {
			continue
		}
		f := strings.Fields(val)
		if len(f) == 0 {
			return 0, fmt.Errorf("bench: /proc status: %s: empty", key)
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: /proc status: %s: %w", key, err)
		}
		return n, nil
	}
	return 0, fmt.Errorf("bench: /proc status: no %s line", key)
}

// usage is the resource use of a set of processes at one moment.
type usage struct {
	cpuTicks uint64 // utime+stime, summed
	hwmKiB   uint64 // VmHWM (peak RSS since start or the last reset), summed
	rssKiB   uint64 // VmRSS, summed
	procs    int    // how many processes were read
}

// readUsage reads utime+stime, VmHWM and VmRSS of pids. A process that is gone
// is left out (it is counted in procs only when read).
func readUsage(pids []int) usage {
	var u usage
	for _, pid := range pids {
		sb, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		st, err := parseStat(sb)
		if err != nil {
			continue
		}
		sv, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		hwm, _ := parseStatusKiB(sv, "VmHWM")
		rss, _ := parseStatusKiB(sv, "VmRSS")
		u.cpuTicks += st.utime + st.stime
		u.hwmKiB += hwm
		u.rssKiB += rss
		u.procs++
	}
	return u
}

// resetPeak resets the peak RSS (VmHWM) of pids to their current RSS, so the
// next reading gives the peak of what happened in between.
func resetPeak(pids []int) error {
	var errs []error
	for _, pid := range pids {
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("bench: reset peak RSS of pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// procInfo is one process of the system table.
type procInfo struct {
	pid, ppid int
	argv      []string
}

// processTable lists the processes of the system with their parent and argv.
func processTable() []procInfo {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sb, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		st, err := parseStat(sb)
		if err != nil {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		argv := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		out = append(out, procInfo{pid: pid, ppid: st.ppid, argv: argv})
	}
	return out
}

// descendants returns root and every process below it in table.
func descendants(table []procInfo, root int) []int {
	kids := map[int][]int{}
	for _, p := range table {
		kids[p.ppid] = append(kids[p.ppid], p.pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, kids[out[i]]...)
	}
	return out
}

// group names the processes of one role (a mount's client side, a server)
// at the moment it is called. A nil group means the role has no process.
type group func() []int

// treeGroup is the process pid and its descendants.
func treeGroup(pid int) group {
	return func() []int { return descendants(processTable(), pid) }
}
