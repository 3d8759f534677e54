package fs

import "testing"

func TestInRoot(t *testing.T) {
	for _, tc := range []struct {
		p, root, want string
		ok            bool
	}{
		{"/var/lib/qtfs/root/run/x", "/var/lib/qtfs/root", "/run/x", true},
		{"/var/lib/qtfs/root", "/var/lib/qtfs/root", "/", true},
		{"/var/lib/qtfs/rootless/x", "/var/lib/qtfs/root", "", false},
		{"/etc", "/var/lib/qtfs/root", "", false},
		{"/etc/x", "/", "/etc/x", true},
		{"/", "/", "/", true},
	} {
		if got, ok := InRoot(tc.p, tc.root); got != tc.want || ok != tc.ok {
			t.Errorf("InRoot(%q, %q) = %q, %v; want %q, %v", tc.p, tc.root, got, ok, tc.want, tc.ok)
		}
	}
}
