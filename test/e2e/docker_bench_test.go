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

// nativeDocker is Debian's dockerd run on the host itself (overlay2), with a data
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
		"--storage-driver", "overlay2", "--iptables=false", "--bridge", "none")
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

// serverOpsByName is the number of FileSystem calls the server has
// answered, by call (with the errno when it is not 0), and of FIFO bridges
// it has ended, from its metrics.
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

// startVfsDockerd starts a second offloaded dockerd beside od's, the
// unit's but with the vfs driver (the fallback that needs no mount on the
// host), with a data root, exec root, socket and containerd namespace of
// its own.
func startVfsDockerd(b *testing.B, o *dockerOffload) *offloadedDocker {
	b.Helper()
	const sock = "/run/docker-vfs.sock"
	return startDockerdArgv(b, b, o.d, o.root, sock, func(argv []string) []string {
		var out []string
		for _, a := range argv {
			switch {
			case strings.HasPrefix(a, "--storage-driver="):
				a = "--storage-driver=vfs"
			case a == "unix:///run/docker.sock":
				a = "unix://" + sock
			}
			out = append(out, a)
		}
		return append(out, "--data-root=/var/lib/docker/qtfs-bench-vfs", "--exec-root=/run/docker/qtfs-bench-vfs",
			"--pidfile=/run/docker/qtfs-bench-vfs.pid", "--containerd-namespace=qtfs-bench-vfs",
			"--containerd-plugins-namespace=qtfs-bench-vfs-plugins")
	})
}

// BenchmarkDockerRunOffloadVsNative runs `docker run --rm` of a trivial
// command through the offload with the unit's overlay2 driver (dockerd on
// the DPU, its overlays made on the host, the container on the host),
// through the offload with the vfs driver, and through a dockerd with
// overlay2 on the host itself, one of each per iteration, rotating which
// goes first, against the same containerd. It reports each side's median
// and p90 in milliseconds, the offloaded/native ratios of the medians
// (the target is at most 1.5), and the server's FileSystem calls and FIFO
// bridges per offloaded run of each driver.
//
//	go test -run '^$' -bench DockerRunOffloadVsNative -benchtime 20x ./test/e2e/
func BenchmarkDockerRunOffloadVsNative(b *testing.B) {
	o := newDockerOffload(b)
	vfs := startVfsDockerd(b, o)
	nd := startNativeDocker(b)
	const img = "qtfs-bench/busybox:latest"
	type side struct {
		name    string
		docker  func(...string) (string, error)
		offload bool
		runs    []time.Duration
		ops     map[string]float64 // FileSystem calls by name, summed over the runs
		bridges float64
	}
	sides := []*side{
		{name: "offload-overlay2", docker: o.od.docker, offload: true, ops: map[string]float64{}},
		{name: "offload-vfs", docker: vfs.docker, offload: true, ops: map[string]float64{}},
		{name: "native", docker: nd.docker},
	}
	for _, sd := range sides {
		if out, err := sd.docker("import", o.image, img); err != nil {
			b.Fatalf("%s: docker import: %v\n%s", sd.name, err, out)
		}
	}
	runArgs := []string{"run", "--rm", "--network", "none", img, "true"}
	timed := func(sd *side) time.Duration {
		t0 := time.Now()
		out, err := sd.docker(runArgs...)
		if err != nil {
			b.Fatalf("%s: %v: %s", sd.name, err, out)
		}
		return time.Since(t0)
	}
	// One of each before measuring: the first run of a dockerd pays for
	// things the others do not.
	for _, sd := range sides {
		timed(sd)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range sides {
			sd := sides[(i+j)%len(sides)]
			var before map[string]float64
			var br0 float64
			if sd.offload {
				b.StopTimer()
				before, br0 = serverOpsByName(b, o.net.Host)
				b.StartTimer()
			}
			d := timed(sd)
			sd.runs = append(sd.runs, d)
			if sd.offload {
				b.StopTimer()
				after, br1 := serverOpsByName(b, o.net.Host)
				b.StartTimer()
				for op, v := range after {
					sd.ops[op] += v - before[op]
				}
				sd.bridges += br1 - br0
			}
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	native := percentile(sides[2].runs, 50)
	for _, sd := range sides {
		p50 := percentile(sd.runs, 50)
		b.ReportMetric(ms(p50), sd.name+"-p50-ms")
		b.ReportMetric(ms(percentile(sd.runs, 90)), sd.name+"-p90-ms")
		if !sd.offload {
			continue
		}
		b.ReportMetric(float64(p50)/float64(native), sd.name+"/native-p50")
		var total float64
		var calls []string
		for op, v := range sd.ops {
			total += v
			if n := v / float64(b.N); n >= 1 {
				calls = append(calls, fmt.Sprintf("%s %.0f", op, n))
			}
		}
		sort.Strings(calls)
		b.Logf("%s: FileSystem calls per run, by call: %s", sd.name, strings.Join(calls, ", "))
		b.ReportMetric(total/float64(b.N), sd.name+"-fs-calls/run")
		b.ReportMetric(sd.bridges/float64(b.N), sd.name+"-fifo-bridges/run")
	}
	b.ReportMetric(0, "ns/op")
	for _, sd := range sides {
		sd.docker("rmi", img)
	}
	vfs.stop(b)
}
