package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// offloadedKubelet is kubelet running in the DPU's chroot, started as
// deploy/systemd/kubelet-offload.service starts it.
type offloadedKubelet struct {
	o *criOffload
	p *proc
}

// installKubeletConfig installs deploy/config/kubelet.yaml as the unit
// reads it, its static pods in the chroot's /tmp/manifests (made), and
// returns that directory as this process names it.
func (o *criOffload) installKubeletConfig(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "deploy/config/kubelet.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, "/etc/qtfs/kubelet.yaml", replaceLines(t, "kubelet.yaml", string(b), [][2]string{
		{"staticPodPath: /etc/kubernetes/manifests", "staticPodPath: /tmp/manifests"},
	}))
	manifests := filepath.Join(o.root, "tmp", "manifests")
	if out, err := o.d.sh("mkdir -p " + manifests); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	return manifests
}

// startKubelet starts kubelet as the unit does, with the kubelet binary
// of the kube tools, and waits for its /healthz.
func startKubelet(t, life testing.TB, o *criOffload) *offloadedKubelet {
	t.Helper()
	argv, env := unitCommand(t, "kubelet-offload.service")
	for i, a := range argv {
		switch a {
		case "/usr/bin/qtfs-client":
			argv[i] = bin("qtfs-client")
		case "/usr/bin/kubelet":
			argv[i] = filepath.Join(o.tools, "kubelet")
		}
	}
	cmd := o.d.cmd(argv[0], argv[1:]...)
	cmd.Env = append([]string{"HOME=/root"}, env...)
	k := &offloadedKubelet{o: o, p: startCmd(life, cmd)}
	life.Cleanup(func() {
		select {
		case <-k.p.done:
		default:
			k.stop(life)
		}
	})
	for i := 0; ; i++ {
		if out, err := k.get("http://127.0.0.1:10248/healthz"); err == nil && out == "ok" {
			return k
		}
		select {
		case <-k.p.done:
			t.Fatalf("kubelet exited:\n%s", k.p.output())
		default:
		}
		if i > 600 {
			t.Fatalf("kubelet's /healthz did not answer ok:\n%s", k.p.output())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// get fetches url in the DPU's network namespace.
func (k *offloadedKubelet) get(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := k.o.d.cmd("curl", "-sS", "--max-time", "5", url)
	out, err := exec.CommandContext(ctx, c.Path, c.Args[1:]...).Output()
	return string(out), err
}

// stop ends kubelet as systemctl stop would.
func (k *offloadedKubelet) stop(t testing.TB) {
	t.Helper()
	stopChild(t, k.p, "kubelet", 30*time.Second)
}

// kubeletPod is what kubelet's /pods says of a pod.
type kubeletPod struct {
	Metadata struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"metadata"`
	Status struct {
		Phase             string `json:"phase"`
		ContainerStatuses []struct {
			Name         string `json:"name"`
			Ready        bool   `json:"ready"`
			RestartCount int    `json:"restartCount"`
			ContainerID  string `json:"containerID"`
		} `json:"containerStatuses"`
	} `json:"status"`
}

// pods returns kubelet's /pods (read-only port).
func (k *offloadedKubelet) pods(t testing.TB) []kubeletPod {
	t.Helper()
	out, err := k.get("http://127.0.0.1:10255/pods")
	if err != nil {
		t.Fatalf("kubelet /pods: %v", err)
	}
	pods, err := decodePods([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	return pods
}

// decodePods decodes kubelet's /pods.
func decodePods(b []byte) ([]kubeletPod, error) {
	var list struct {
		Items []kubeletPod `json:"items"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, fmt.Errorf("kubelet /pods: %v\n%s", err, b)
	}
	return list.Items, nil
}

// waitPod waits until ok says yes of the pod named name in /pods.
func (k *offloadedKubelet) waitPod(t testing.TB, name, what string, ok func(p *kubeletPod) bool) *kubeletPod {
	t.Helper()
	var last []kubeletPod
	for i := 0; i < 600; i++ {
		last = k.pods(t)
		for j := range last {
			if strings.HasPrefix(last[j].Metadata.Name, name) && ok(&last[j]) {
				return &last[j]
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("pod %s: not %s within a minute: %+v\nkubelet:\n%s", name, what, last, tail(k.p.output(), 60))
	return nil
}

func tail(s string, n int) string {
	l := strings.Split(s, "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// kubeletManifest is the static pod of TestOffloadKubelet: one container
// writing into an emptyDir on disk and one of medium Memory.
const kubeletManifest = `apiVersion: v1
kind: Pod
metadata:
  name: e2e-static
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: Always
  terminationGracePeriodSeconds: 1 # sleep as pid 1 ignores SIGTERM
  containers:
  - name: c1
    image: ` + criImage + `
    imagePullPolicy: Never
    command: ["sh", "-c", "echo on disk > /disk/f; echo in memory > /mem/f; echo started; exec sleep 600"]
    volumeMounts:
    - {name: disk, mountPath: /disk}
    - {name: mem, mountPath: /mem}
  volumes:
  - name: disk
    emptyDir: {}
  - name: mem
    emptyDir: {medium: Memory}
`

// TestOffloadKubelet: kubelet, unmodified, standalone in the DPU's chroot,
// runs a static pod on the host through the host's containerd: its
// emptyDir of medium Memory is a tmpfs of the host, a killed container is
// restarted, removing the manifest removes the pod and its cgroup on the
// host, and kubelet restarts cleanly.
func TestOffloadKubelet(t *testing.T) {
	o := newCRIOffload(t)
	manifests := o.installKubeletConfig(t)
	top := t
	k := startKubelet(t, top, o)

	if out, err := o.d.sh(fmt.Sprintf("cat > %s/e2e.yaml <<'EOF'\n%sEOF", manifests, kubeletManifest)); err != nil {
		t.Fatalf("write the manifest: %v %s", err, out)
	}
	pod := k.waitPod(t, "e2e-static", "running", func(p *kubeletPod) bool {
		return p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready
	})
	uid := pod.Metadata.UID
	vols := "/var/lib/kubelet/pods/" + uid + "/volumes/kubernetes.io~empty-dir/"
	t.Logf("pod %s runs", uid)

	t.Run("volumes are the host's", func(t *testing.T) {
		if b, err := os.ReadFile(vols + "disk/f"); err != nil || string(b) != "on disk\n" {
			t.Errorf("host: the emptyDir on disk: %q %v", b, err)
		}
		var st unix.Statfs_t
		if err := unix.Statfs(vols+"mem", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
			t.Errorf("host: the emptyDir of medium Memory is no tmpfs: %#x %v", st.Type, err)
		}
		if b, err := os.ReadFile(vols + "mem/f"); err != nil || string(b) != "in memory\n" {
			t.Errorf("host: the tmpfs's file: %q %v", b, err)
		}
		// kubelet's syncs (every few seconds here) must not mount it
		// again: one tmpfs at the volume, however long the pod runs.
		time.Sleep(3 * time.Second)
		if n := len(hostMountsAt(vols + "mem")); n != 1 {
			t.Errorf("host: %d mounts at the emptyDir of medium Memory, want 1", n)
		}
	})
	t.Run("a killed container is restarted", func(t *testing.T) {
		pid := criContainerPid(t, o, pod.Status.ContainerStatuses[0].ContainerID)
		syscall.Kill(pid, syscall.SIGKILL)
		k.waitPod(t, "e2e-static", "restarted", func(p *kubeletPod) bool {
			return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1 && p.Status.ContainerStatuses[0].Ready
		})
	})
	t.Run("kubelet restarts cleanly", func(t *testing.T) {
		k.stop(t)
		k = startKubelet(t, top, o) // lives past this subtest
		p := k.waitPod(t, "e2e-static", "running again", func(p *kubeletPod) bool {
			return p.Status.Phase == "Running" && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready
		})
		if p.Metadata.UID != uid {
			t.Errorf("the pod's uid changed across the restart: %s, was %s", p.Metadata.UID, uid)
		}
		if n := len(hostMountsAt(vols + "mem")); n != 1 {
			t.Errorf("host: %d mounts at the emptyDir of medium Memory after the restart, want 1", n)
		}
	})
	t.Run("removing the manifest removes the pod", func(t *testing.T) {
		if out, err := o.d.sh("rm " + manifests + "/e2e.yaml"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		for i := 0; ; i++ {
			out, _ := o.crictl("pods", "-q", "--state", "ready") // stopped; kubelet's GC removes it within a minute
			if strings.TrimSpace(out) == "" && len(k.pods(t)) == 0 {
				break
			}
			if i > 600 {
				t.Fatalf("the pod is still there a minute after its manifest went: %s", out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for i := 0; len(hostMountsAt(vols+"mem")) > 0 || dirExists("/var/lib/kubelet/pods/"+uid+"/volumes"); i++ {
			if i > 300 {
				t.Fatalf("the pod's volumes are still on the host: %v", hostMountsAt(vols+"mem"))
			}
			time.Sleep(100 * time.Millisecond)
		}
		if cg := podCgroups(uid); len(cg) > 0 {
			t.Errorf("the pod's cgroups are still on the host: %v", cg)
		}
	})
	t.Run("teardown leaves nothing", func(t *testing.T) {
		k.stop(t)
		o.run.stop(t, syscall.SIGTERM)
		if left := o.d.mountsUnder(o.root); len(left) > 0 {
			t.Fatalf("still mounted: %v", left)
		}
	})
}

// hostMountsAt lists the host's mounts whose mount point is p.
func hostMountsAt(p string) []string {
	var out []string
	for _, m := range hostMountsUnder(p) {
		if m == p {
			out = append(out, m)
		}
	}
	return out
}

func dirExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// podCgroups lists the host's cgroup directories of a pod uid.
func podCgroups(uid string) []string {
	var out []string
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.Contains(d.Name(), "pod"+uid) || strings.Contains(d.Name(), "pod"+strings.ReplaceAll(uid, "-", "_")) {
			out = append(out, p)
			return filepath.SkipDir
		}
		return nil
	})
	return out
}
