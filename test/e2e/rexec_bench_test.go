package e2e

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkRexecVsSSH runs `true` on "the host" with rexec (qtfs-server,
// mutual TLS over TCP) and with ssh (a private sshd, public-key login),
// both on 127.0.0.1, one of each per iteration, interleaved so that both
// see the same machine load. Each run is a fresh process that connects,
// authenticates and runs `true`, as a management plane calling runc does.
// It reports the p50 and p99 of each, in milliseconds, and ssh/rexec
// ratios (above 1: rexec is faster). For stable percentiles give it a
// count: go test -run '^$' -bench RexecVsSSH -benchtime 200x ./test/e2e/
func BenchmarkRexecVsSSH(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	for _, c := range []string{"sshd", "ssh", "ssh-keygen"} {
		if _, err := exec.LookPath(c); err != nil {
			if _, err := os.Stat("/usr/sbin/" + c); err != nil {
				b.Skipf("needs %s: run scripts/deps.sh as root (apt-get install openssh-server openssh-client)", c)
			}
		}
	}
	trueBin, err := exec.LookPath("true")
	if err != nil {
		b.Skip("needs true(1)")
	}
	dir, err := os.MkdirTemp("", "qtfs-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })

	rexecCmd := startRexecServer(b, dir, trueBin)
	sshCmd := startSSHD(b, dir)

	// Both work before anything is measured.
	for _, argv := range [][]string{rexecCmd, sshCmd} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	timeRun := func(argv []string) time.Duration {
		t0 := time.Now()
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", argv[0], err, out)
		}
		return time.Since(t0)
	}
	var rx, ss []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			rx = append(rx, timeRun(rexecCmd))
			ss = append(ss, timeRun(sshCmd))
		} else {
			ss = append(ss, timeRun(sshCmd))
			rx = append(rx, timeRun(rexecCmd))
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	r50, r99 := percentile(rx, 50), percentile(rx, 99)
	s50, s99 := percentile(ss, 50), percentile(ss, 99)
	b.ReportMetric(ms(r50), "rexec-p50-ms")
	b.ReportMetric(ms(r99), "rexec-p99-ms")
	b.ReportMetric(ms(s50), "ssh-p50-ms")
	b.ReportMetric(ms(s99), "ssh-p99-ms")
	b.ReportMetric(float64(s50)/float64(r50), "ssh/rexec-p50")
	b.ReportMetric(float64(s99)/float64(r99), "ssh/rexec-p99")
}

// percentile is the nearest-rank percentile of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return s[i-1]
}

// freePort returns a TCP port free on 127.0.0.1 now.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startProc starts a daemon and stops it by pid when the benchmark ends.
func startProc(b *testing.B, logName string, argv ...string) {
	b.Helper()
	logf, err := os.Create(logName)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v", argv[0], err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	b.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if b.Failed() {
			out, _ := os.ReadFile(logName)
			b.Logf("%s:\n%s", filepath.Base(logName), out)
		}
	})
}

// waitListening waits until something accepts on 127.0.0.1:port.
func waitListening(b *testing.B, port int, logName string) {
	b.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logName)
			b.Fatalf("nothing listens on port %d:\n%s", port, out)
		}
	}
}

// startRexecServer starts qtfs-server on loopback with mutual TLS and
// returns the rexec command line that runs `true` through it.
func startRexecServer(b *testing.B, dir, trueBin string) []string {
	pkiDir := filepath.Join(dir, "pki")
	if out, err := exec.Command(bin("qtfs-server"), "gen-certs", "--out", pkiDir, "--server-name", "127.0.0.1", "--client-name", "bench").CombinedOutput(); err != nil {
		b.Fatalf("gen-certs: %v\n%s", err, out)
	}
	export := filepath.Join(dir, "export")
	os.Mkdir(export, 0o755)
	port := freePort(b)
	uri := fmt.Sprintf("tcp://127.0.0.1:%d", port)
	logName := filepath.Join(dir, "qtfs-server.log")
	startProc(b, logName, bin("qtfs-server"), "--config", "/dev/null", "--listen", uri,
		"--tls-cert", pkiDir+"/server.pem", "--tls-key", pkiDir+"/server-key.pem", "--tls-client-ca", pkiDir+"/ca.pem",
		"--export", export, "--exec-allow", trueBin, "--log-level", "warn")
	waitListening(b, port, logName)
	return []string{bin("rexec"), "--config", "/dev/null", "--server", uri,
		"--tls-cert", pkiDir + "/client.pem", "--tls-key", pkiDir + "/client-key.pem", "--tls-ca", pkiDir + "/ca.pem", "true"}
}

// startSSHD starts a private sshd on loopback (its own host key, one
// authorized key) and returns the ssh command line that runs `true`.
func startSSHD(b *testing.B, dir string) []string {
	sshd := "/usr/sbin/sshd"
	if p, err := exec.LookPath("sshd"); err == nil {
		sshd = p
	}
	for _, k := range []string{"host_key", "user_key"} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			b.Fatalf("ssh-keygen: %v\n%s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user_key.pub"))
	if err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		b.Fatal(err)
	}
	// sshd refuses to start without its privilege separation directory,
	// which the Debian service unit would create.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		b.Fatal(err)
	}
	port := freePort(b)
	conf := fmt.Sprintf(`Port %d
ListenAddress 127.0.0.1
HostKey %s/host_key
AuthorizedKeysFile %s/authorized_keys
PidFile %s/sshd.pid
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
LogLevel ERROR
`, port, dir, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	logName := filepath.Join(dir, "sshd.log")
	startProc(b, logName, sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
	waitListening(b, port, logName)
	return []string{"ssh", "-F", "/dev/null", "-i", filepath.Join(dir, "user_key"), "-p", fmt.Sprint(port),
		"-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "LogLevel=ERROR", "root@127.0.0.1", "true"}
}
