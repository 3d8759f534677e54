package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// BenchmarkProcScan compares a ps(1)-like scan of every host process
// (/proc/<pid>/stat and status) through a qtfs mount of the host's /proc
// on the DPU (unix socket transport, the DPU in its own namespaces) with
// the same scan on the host. Each scan is timed inside a helper process
// (this binary), so process start-up is not counted. It reports the
// median time of one scan each way, the number of processes scanned and
// the ratio qtfs/host (how many times slower the scan through the mount
// is); ns/op is the median scan through the mount.
//
//	go test -run '^$' -bench ProcScan -benchtime 50x ./test/e2e/
func BenchmarkProcScan(b *testing.B) {
	pe := newProcEnv(b)
	hproc := pe.mount(b, "/proc", "proc", "local_proc="+pe.localProc)
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	hostScan := func(n int) scanReport {
		cmd := exec.Command(exe, "scan", "/proc", strconv.Itoa(n))
		cmd.Env = append(os.Environ(), procHelperEnv+"=1")
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("host scan: %v", err)
		}
		var r scanReport
		if err := json.Unmarshal(out, &r); err != nil {
			b.Fatalf("host scan: %v: %s", err, out)
		}
		return r
	}
	dpuScan := func(n int) scanReport {
		var r scanReport
		out := pe.helper(b, "scan", hproc, strconv.Itoa(n))
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			b.Fatalf("DPU scan: %v: %s", err, out)
		}
		return r
	}
	// Both work, and warm up, before anything is measured.
	if r := dpuScan(1); r.Pids == 0 {
		b.Fatalf("the scan through the mount found no process")
	}
	hostScan(1)

	b.Run("ps", func(b *testing.B) {
		// Interleaved chunks, so both see the same machine load.
		const chunk = 10
		var dpu, host []time.Duration
		pids := 0
		for done := 0; done < b.N; done += chunk {
			n := min(chunk, b.N-done)
			d := dpuScan(n)
			h := hostScan(n)
			for _, ns := range d.Nanos {
				dpu = append(dpu, time.Duration(ns))
			}
			for _, ns := range h.Nanos {
				host = append(host, time.Duration(ns))
			}
			pids = d.Pids
		}
		d50, h50 := percentile(dpu, 50), percentile(host, 50)
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		b.ReportMetric(float64(d50), "ns/op")
		b.ReportMetric(ms(d50), "qtfs-ms/scan")
		b.ReportMetric(ms(h50), "host-ms/scan")
		b.ReportMetric(float64(d50)/float64(h50), "qtfs/host")
		b.ReportMetric(float64(pids), "pids")
	})
}
