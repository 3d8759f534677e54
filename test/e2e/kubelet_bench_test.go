package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// nativeKubelet is the same kubelet run on the host itself, beside the
// offloaded one, with a containerd of its own (two kubelets on one CRI
// would collect each other's sandboxes), its own root, ports, static pod
// directory and cgroup root.
type nativeKubelet struct {
	dir       string
	manifests string
	p         *proc
}

func startNativeKubelet(b *testing.B, o *criOffload) *nativeKubelet {
	b.Helper()
	dir := hostDir(b)
	nk := &nativeKubelet{dir: dir, manifests: filepath.Join(dir, "manifests")}
	os.MkdirAll(nk.manifests, 0o755)
	sock := filepath.Join(dir, "containerd.sock")
	cgroupRoot := "/qtfs-bench-native"
	// Runs last but for containerd: the cgroups the kubelet left, deepest
	// first, once its pods are stopped.
	b.Cleanup(func() {
		for _, top := range hostCgroupDirs(cgroupRoot) {
			var dirs []string
			filepath.WalkDir(top, func(p string, d os.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					dirs = append(dirs, p)
				}
				return nil
			})
			for i := len(dirs) - 1; i >= 0; i-- {
				os.Remove(dirs[i])
			}
		}
	})
	startCRIContainerd(b, o.tools, dir, sock, fmt.Sprintf(`root = "%[1]s/containerd-root"
state = "%[1]s/containerd-state"
[grpc]
  address = %[2]q
[ttrpc]
  address = "%[2]s.ttrpc"`, dir, sock), "", "")
	for _, c := range []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "freezer", "devices", "blkio", "hugetlb", "net_cls", "net_prio", "perf_event", "unified"} {
		if _, err := os.Stat("/sys/fs/cgroup/" + c); err == nil {
			os.Mkdir("/sys/fs/cgroup/"+c+cgroupRoot, 0o755)
		}
	}
	cfg, err := os.ReadFile(filepath.Join(moduleRoot(b), "deploy/config/kubelet.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	writeFile(b, filepath.Join(dir, "kubelet.yaml"), replaceLines(b, "kubelet.yaml", string(cfg), [][2]string{
		{"containerRuntimeEndpoint: unix:///run/containerd/containerd.sock", "containerRuntimeEndpoint: unix://" + sock},
		{"staticPodPath: /etc/kubernetes/manifests", "staticPodPath: " + nk.manifests + "\ncgroupRoot: " + cgroupRoot +
			"\nport: 10260\nhealthzPort: 10258"},
		{"readOnlyPort: 10255", "readOnlyPort: 10265"},
	}))
	nk.p = start(b, filepath.Join(o.tools, "kubelet"), "--config="+filepath.Join(dir, "kubelet.yaml"),
		"--root-dir="+filepath.Join(dir, "kubelet"), "--cert-dir="+filepath.Join(dir, "pki"))
	for i := 0; ; i++ {
		if out, err := exec.Command("curl", "-sS", "--max-time", "2", "http://127.0.0.1:10258/healthz").Output(); err == nil && string(out) == "ok" {
			return nk
		}
		if i > 600 {
			b.Fatalf("the native kubelet did not answer:\n%s", nk.p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podStart writes a static pod's manifest with write, waits until get
// (a /pods URL fetcher) reports it running and ready, and returns how
// long that took; then removes it and waits until its sandbox is no
// longer ready.
func podStart(b *testing.B, name string, write func(name, manifest string) error, remove func(name string) error,
	pods func() ([]kubeletPod, error)) time.Duration {
	b.Helper()
	manifest := strings.Replace(kubeletManifest, "name: e2e-static", "name: "+name, 1)
	t0 := time.Now()
	if err := write(name, manifest); err != nil {
		b.Fatal(err)
	}
	for i := 0; ; i++ {
		ps, err := pods()
		if err != nil {
			b.Fatal(err)
		}
		for _, p := range ps {
			if strings.HasPrefix(p.Metadata.Name, name) && p.Status.Phase == "Running" &&
				len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready {
				d := time.Since(t0)
				if err := remove(name); err != nil {
					b.Fatal(err)
				}
				for j := 0; j < 600; j++ {
					ps, _ := pods()
					gone := true
					for _, p := range ps {
						gone = gone && !strings.HasPrefix(p.Metadata.Name, name)
					}
					if gone {
						return d
					}
					time.Sleep(20 * time.Millisecond)
				}
				b.Fatalf("pod %s did not go", name)
			}
		}
		if i > 3000 {
			b.Fatalf("pod %s did not run within a minute", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// BenchmarkKubeletPodStart starts a static pod (one
// container, an emptyDir on disk and one of medium Memory) through the
// offloaded kubelet (its pod on the host) and through the same kubelet
// run on the host itself, one of each per iteration, alternating which
// goes first, and reports each side's median and p90 from the manifest's
// writing to the container running and ready, and the ratio of the
// medians (the target is at most 1.5).
//
//	go test -run '^$' -bench KubeletPodStart -benchtime 10x ./test/e2e/
func BenchmarkKubeletPodStart(b *testing.B) {
	o := newCRIOffload(b)
	manifests := o.installKubeletConfig(b)
	k := startKubelet(b, b, o)
	nk := startNativeKubelet(b, o)
	offload := func(name string) time.Duration {
		return podStart(b, name,
			func(name, m string) error {
				// Written aside under a hidden name (kubelet skips those)
				// and renamed: kubelet never reads half a manifest.
				out, err := o.d.sh(fmt.Sprintf("cat > %[1]s/.%[2]s.yaml <<'EOF'\n%[3]sEOF\nmv %[1]s/.%[2]s.yaml %[1]s/%[2]s.yaml", manifests, name, m))
				if err != nil {
					return fmt.Errorf("%v %s", err, out)
				}
				return nil
			},
			func(name string) error { _, err := o.d.sh("rm " + manifests + "/" + name + ".yaml"); return err },
			func() ([]kubeletPod, error) { return k.pods(b), nil })
	}
	native := func(name string) time.Duration {
		return podStart(b, name,
			func(name, m string) error {
				tmp := filepath.Join(nk.manifests, "."+name+".yaml")
				if err := os.WriteFile(tmp, []byte(m), 0o644); err != nil {
					return err
				}
				return os.Rename(tmp, filepath.Join(nk.manifests, name+".yaml"))
			},
			func(name string) error { return os.Remove(filepath.Join(nk.manifests, name+".yaml")) },
			func() ([]kubeletPod, error) { return nativePods(b) })
	}
	// One of each first: a kubelet's first pod pays for more.
	offload("bench-warm-off")
	native("bench-warm-nat")
	var off, nat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("bench-%d", i)
		if i%2 == 0 {
			off = append(off, offload(name+"-off"))
			nat = append(nat, native(name+"-nat"))
		} else {
			nat = append(nat, native(name+"-nat"))
			off = append(off, offload(name+"-off"))
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	o50, n50 := percentile(off, 50), percentile(nat, 50)
	b.ReportMetric(ms(o50), "offload-p50-ms")
	b.ReportMetric(ms(percentile(off, 90)), "offload-p90-ms")
	b.ReportMetric(ms(n50), "native-p50-ms")
	b.ReportMetric(ms(percentile(nat, 90)), "native-p90-ms")
	b.ReportMetric(float64(o50)/float64(n50), "offload/native-p50")
	b.ReportMetric(0, "ns/op")
}

// nativePods is the native kubelet's /pods.
func nativePods(b *testing.B) ([]kubeletPod, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", "-sS", "--max-time", "5", "http://127.0.0.1:10265/pods").Output()
	if err != nil {
		return nil, err
	}
	return decodePods(out)
}

// hostCgroupDirs lists the directories named rel in each of the host's
// cgroup hierarchies.
func hostCgroupDirs(rel string) []string {
	ents, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range ents {
		if p := filepath.Join("/sys/fs/cgroup", e.Name(), rel); dirExists(p) {
			out = append(out, p)
		}
	}
	return out
}
