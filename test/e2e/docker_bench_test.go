package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// nativeDocker is Debian's dockerd run on the host itself, with a data
// root, exec root, socket and containerd namespace of its own, beside the
// offloaded one, against the same containerd.
type nativeDocker struct {
	sock string
	p    *proc
}

func startNativeDocker(tb testing.TB) *nativeDocker {
	tb.Helper()
	dir, err := os.MkdirTemp("/tmp", "qtfs-native-docker-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	nd := &nativeDocker{sock: filepath.Join(dir, "docker.sock")}
	nd.p = start(tb, "/usr/sbin/dockerd", "--data-root", dir+"/data", "--exec-root", dir+"/exec", "--pidfile", dir+"/docker.pid",
		"-H", "unix://"+nd.sock, "--containerd", "/run/containerd/containerd.sock",
		"--containerd-namespace", "qtfs-bench-native", "--containerd-plugins-namespace", "qtfs-bench-native-plugins",
		"--storage-driver", "vfs", "--iptables=false", "--bridge", "none")
	for i := 0; ; i++ {
		if _, err := nd.docker("version"); err == nil {
			return nd
		}
		if i > 600 {
			tb.Fatalf("the native dockerd did not answer:\n%s", nd.p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (nd *nativeDocker) docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/docker", append([]string{"-H", "unix://" + nd.sock}, args...)...).CombinedOutput()
	return string(out), err
}

// serverOps is the number of FileSystem calls the server has answered,
// and of FIFO bridges it has ended, from its metrics.
func serverOps(tb testing.TB, hostNS string) (ops, bridges float64) {
	tb.Helper()
	byOp, bridges := serverOpsByName(tb, hostNS)
	for _, v := range byOp {
		ops += v
	}
	return ops, bridges
}

// serverOpsByName is serverOps by FileSystem call.
func serverOpsByName(tb testing.TB, hostNS string) (map[string]float64, float64) {
	tb.Helper()
	byOp := map[string]float64{}
	var bridges float64
	out, err := exec.Command("nsenter", "--net=/run/netns/"+hostNS, "--", "curl", "-sS", "--max-time", "10", "http://127.0.0.1:9121/metrics").Output()
	if err != nil {
		tb.Fatalf("the server's metrics: %v", err)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(f[0], "qtfs_server_ops_total{"):
			_, op, _ := strings.Cut(f[0], `op="`)
			op, _, _ = strings.Cut(op, `"`)
			if _, errno, ok := strings.Cut(f[0], `errno="`); ok {
				if errno, _, _ = strings.Cut(errno, `"`); errno != "0" && errno != "" {
					op += "/" + errno
				}
			}
			byOp[op] += v
		case strings.HasPrefix(f[0], "qtfs_fifo_bridges_total{"):
			bridges += v
		}
	}
	return byOp, bridges
}

// BenchmarkDockerRunOffloadVsNative runs `docker run --rm` of a trivial
// command through the offload (dockerd on the DPU, the container on the
// host) and through a dockerd on the host itself, one of each per
// iteration, alternating which goes first, against the same containerd.
// It reports each side's median and p90 in milliseconds, the
// offloaded/native ratio of the medians (the target is at most 1.5), and
// the server's FileSystem calls and FIFO bridges per offloaded run.
//
//	go test -run '^$' -bench DockerRunOffloadVsNative -benchtime 20x ./test/e2e/
func BenchmarkDockerRunOffloadVsNative(b *testing.B) {
	o := newDockerOffload(b)
	nd := startNativeDocker(b)
	const img = "qtfs-bench/busybox:latest"
	if out, err := o.od.docker("import", o.image, img); err != nil {
		b.Fatalf("offloaded docker import: %v\n%s", err, out)
	}
	if out, err := nd.docker("import", o.image, img); err != nil {
		b.Fatalf("native docker import: %v\n%s", err, out)
	}
	runArgs := []string{"run", "--rm", "--network", "none", img, "true"}
	timed := func(f func(...string) (string, error)) (time.Duration, error) {
		t0 := time.Now()
		out, err := f(runArgs...)
		if err != nil {
			return 0, fmt.Errorf("%v: %s", err, out)
		}
		return time.Since(t0), nil
	}
	// One of each before measuring: the first run of a dockerd pays for
	// things the others do not.
	for _, f := range []func(...string) (string, error){o.od.docker, nd.docker} {
		if _, err := timed(f); err != nil {
			b.Fatal(err)
		}
	}
	var off, nat []time.Duration
	var ops, bridges float64
	before, _ := serverOpsByName(b, o.net.Host)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var first, second func(...string) (string, error)
		var firstOff bool
		if i%2 == 0 {
			first, second, firstOff = o.od.docker, nd.docker, true
		} else {
			first, second = nd.docker, o.od.docker
		}
		for j, f := range []func(...string) (string, error){first, second} {
			isOff := (j == 0) == firstOff
			var ops0, br0 float64
			if isOff {
				b.StopTimer()
				ops0, br0 = serverOps(b, o.net.Host)
				b.StartTimer()
			}
			d, err := timed(f)
			if err != nil {
				b.Fatal(err)
			}
			if isOff {
				b.StopTimer()
				ops1, br1 := serverOps(b, o.net.Host)
				b.StartTimer()
				ops += ops1 - ops0
				bridges += br1 - br0
				off = append(off, d)
			} else {
				nat = append(nat, d)
			}
		}
	}
	b.StopTimer()
	after, _ := serverOpsByName(b, o.net.Host)
	var calls []string
	for op, v := range after {
		if n := (v - before[op]) / float64(b.N); n >= 1 {
			calls = append(calls, fmt.Sprintf("%s %.0f", op, n))
		}
	}
	sort.Strings(calls)
	b.Logf("FileSystem calls per offloaded run, by call: %s", strings.Join(calls, ", "))
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	o50, n50 := percentile(off, 50), percentile(nat, 50)
	b.ReportMetric(ms(o50), "offload-p50-ms")
	b.ReportMetric(ms(percentile(off, 90)), "offload-p90-ms")
	b.ReportMetric(ms(n50), "native-p50-ms")
	b.ReportMetric(ms(percentile(nat, 90)), "native-p90-ms")
	b.ReportMetric(float64(o50)/float64(n50), "offload/native-p50")
	b.ReportMetric(ops/float64(b.N), "fs-calls/run")
	b.ReportMetric(bridges/float64(b.N), "fifo-bridges/run")
	b.ReportMetric(0, "ns/op")
	nd.docker("rmi", img)
	o.od.docker("rmi", img)
}
