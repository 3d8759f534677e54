package chroot

import (
	"reflect"
	"testing"

	"github.com/qtfs/qtfs/pkg/fs/mountinfo"
)

func TestBeneath(t *testing.T) {
	ms := mountinfo.Parse([]byte(`27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
50 27 0:46 / /r/with\040space rw,nosuid - fuse.qtfs tcp://h:1:/srv rw,user_id=0
51 50 0:47 /sub /r/with\040space/x ro master:3 - tmpfs tmpfs ro
52 27 0:48 / /r/both rw shared:9 master:3 - tmpfs tmpfs rw
53 52 0:49 / /r/both rw - tmpfs tmpfs rw
54 27 0:50 / /r/withx rw - tmpfs tmpfs rw
`))
	for _, tc := range []struct {
		name, dir string
		want      []string
	}{
		{"a mount with what is beneath it", "/r/with space", []string{"/r/with space/x", "/r/with space"}},
		{"stacked mounts, the top first", "/r/both", []string{"/r/both", "/r/both"}},
		{"deepest first", "/r", []string{"/r/with space/x", "/r/withx", "/r/both", "/r/both", "/r/with space"}},
		{"a name that only begins with dir's", "/r/with", nil},
		{"nothing mounted", "/srv", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := beneath(ms, tc.dir); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("beneath(%q) = %q, want %q", tc.dir, got, tc.want)
			}
		})
	}
}
