package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDeps keeps the shim small: rexec is exec'd for every runc call, so
// it must not link the FUSE client, the daemons or the server, nor
// Prometheus (whose init alone is close to a millisecond).
func TestDeps(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool on PATH to list the dependencies (%v): put GOROOT/bin on PATH", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/hanwen/go-fuse/",
		"github.com/qtfs/qtfs/pkg/fs/fuseclient",
		"github.com/qtfs/qtfs/pkg/chroot",
		"github.com/qtfs/qtfs/pkg/sockproxy",
		"github.com/qtfs/qtfs/pkg/client",
		"github.com/qtfs/qtfs/pkg/server",
		"github.com/qtfs/qtfs/pkg/fs/hostfs",
		"github.com/qtfs/qtfs/pkg/hostexec",
		"github.com/prometheus/",
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing")
	}
	for _, dep := range deps {
		for _, bad := range forbidden {
			if dep == bad || strings.HasPrefix(dep, strings.TrimSuffix(bad, "/")+"/") {
				t.Errorf("rexec depends on %s", dep)
			}
		}
	}
}
