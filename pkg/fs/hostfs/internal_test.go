package hostfs

import (
	"context"
	"math"
	"syscall"
	"testing"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	qtfsv1 "github.com/qtfs/qtfs/proto/qtfs/v1"
)

func TestInterceptRecoversPanic(t *testing.T) {
	s, err := New(Options{Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, tc := range []struct {
		name   string
		method string
		want   codes.Code
	}{
		{"filesystem call", qtfsv1.FileSystem_Lookup_FullMethodName, codes.Internal},
		{"filesystem call with a nil map", qtfsv1.FileSystem_Read_FullMethodName, codes.Internal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := s.intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: tc.method},
				func(context.Context, any) (any, error) {
					var m map[string]int
					m["boom"]++ // panics
					return nil, nil
				})
			if status.Code(err) != tc.want || resp != nil {
				t.Fatalf("got %v, %v; want status %v", resp, err, tc.want)
			}
		})
	}
	t.Run("other services pass through", func(t *testing.T) {
		resp, err := s.intercept(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: "/grpc.health.v1.Health/Check"},
			func(context.Context, any) (any, error) { return "ok", nil })
		if resp != "ok" || err != nil {
			t.Fatalf("got %v, %v", resp, err)
		}
	})
}

func TestToFlock(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   *qtfsv1.Lock
		want unix.Flock_t
		errn syscall.Errno
	}{
		{"range", &qtfsv1.Lock{Type: unix.F_WRLCK, Start: 10, End: 19}, unix.Flock_t{Type: unix.F_WRLCK, Start: 10, Len: 10}, 0},
		{"one byte", &qtfsv1.Lock{Type: unix.F_RDLCK, Start: 5, End: 5}, unix.Flock_t{Type: unix.F_RDLCK, Start: 5, Len: 1}, 0},
		{"to end of file", &qtfsv1.Lock{Type: unix.F_RDLCK, Start: 7, End: math.MaxUint64}, unix.Flock_t{Type: unix.F_RDLCK, Start: 7}, 0},
		{"end past int64", &qtfsv1.Lock{Type: unix.F_UNLCK, End: math.MaxInt64 + 10}, unix.Flock_t{Type: unix.F_UNLCK}, 0},
		{"start past int64", &qtfsv1.Lock{Type: unix.F_WRLCK, Start: math.MaxInt64 + 1, End: math.MaxUint64}, unix.Flock_t{}, syscall.EINVAL},
		{"end before start", &qtfsv1.Lock{Type: unix.F_WRLCK, Start: 9, End: 8}, unix.Flock_t{}, syscall.EINVAL},
		{"bad type", &qtfsv1.Lock{Type: 3}, unix.Flock_t{}, syscall.EINVAL},
		{"nil", nil, unix.Flock_t{}, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, e := toFlock(tc.in)
			if e != tc.errn {
				t.Fatalf("errno %v, want %v", e, tc.errn)
			}
			if e != 0 {
				return
			}
			tc.want.Whence = unix.SEEK_SET
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			back := fromFlock(&got)
			if back.GetStart() != tc.in.GetStart() || (tc.in.GetEnd() <= math.MaxInt64 && back.GetEnd() != tc.in.GetEnd()) {
				t.Fatalf("round trip %v -> %v", tc.in, back)
			}
		})
	}
}

func TestOpenFlags(t *testing.T) {
	s := &Server{met: mustMetrics(t), log: zaptest.NewLogger(t)}
	for _, tc := range []struct {
		name   string
		in     int
		create bool
		want   int
		errn   syscall.Errno
	}{
		{"read only", unix.O_RDONLY, false, unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NOCTTY, 0},
		{"append sync", unix.O_WRONLY | unix.O_APPEND | unix.O_SYNC, false,
			unix.O_WRONLY | unix.O_APPEND | unix.O_SYNC | unix.O_NOFOLLOW | unix.O_NOCTTY, 0},
		{"direct and async dropped", unix.O_RDWR | unix.O_DIRECT | unix.O_ASYNC | 0o100000, false,
			unix.O_RDWR | unix.O_NOFOLLOW | unix.O_NOCTTY, 0},
		{"creat refused", unix.O_RDWR | unix.O_CREAT, false, 0, syscall.EINVAL},
		{"creat in create", unix.O_RDWR | unix.O_EXCL, true, unix.O_RDWR | unix.O_EXCL | unix.O_NOFOLLOW | unix.O_NOCTTY, 0},
		{"directory in create", unix.O_RDWR | unix.O_DIRECTORY, true, 0, syscall.EINVAL},
		{"path", unix.O_PATH, false, 0, syscall.EINVAL},
		{"tmpfile", unix.O_TMPFILE | unix.O_RDWR, false, 0, syscall.EINVAL},
		{"access mode 3", unix.O_ACCMODE, false, 0, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, e := s.openFlags("Open", uint32(tc.in), tc.create)
			if e != tc.errn || (e == 0 && got != tc.want) {
				t.Fatalf("openFlags(%#x) = %#x, %v; want %#x, %v", tc.in, got, e, tc.want, tc.errn)
			}
		})
	}
}

func mustMetrics(t *testing.T) *metrics {
	m, err := newMetrics(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFindExport(t *testing.T) {
	mk := func(paths ...string) *Server {
		s := &Server{}
		for _, p := range paths {
			s.exports = append(s.exports, &export{path: p})
		}
		return s
	}
	for _, tc := range []struct {
		name    string
		exports []string // longest first, as New sorts them
		path    string
		export  string
		rel     string
		ok      bool
	}{
		{"exact", []string{"/var/lib"}, "/var/lib", "/var/lib", "", true},
		{"beneath", []string{"/var/lib"}, "/var/lib/docker/x", "/var/lib", "docker/x", true},
		{"shared prefix is not beneath", []string{"/var/lib"}, "/var/library", "", "", false},
		{"parent", []string{"/var/lib"}, "/var", "", "", false},
		{"longest wins", []string{"/sys/fs/cgroup", "/sys"}, "/sys/fs/cgroup/cpu", "/sys/fs/cgroup", "cpu", true},
		{"shorter still serves the rest", []string{"/sys/fs/cgroup", "/sys"}, "/sys/class", "/sys", "class", true},
		{"root export", []string{"/"}, "/etc", "/", "etc", true},
		{"root export itself", []string{"/"}, "/", "/", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex, rel, ok := mk(tc.exports...).findExport(tc.path)
			if ok != tc.ok || (ok && (ex.path != tc.export || rel != tc.rel)) {
				t.Fatalf("findExport(%q) = %v %q %v", tc.path, ex, rel, ok)
			}
		})
	}
}

func TestErrnoName(t *testing.T) {
	for _, tc := range []struct {
		in   int32
		want string
	}{
		{int32(syscall.ENOENT), "ENOENT"},
		{int32(syscall.EROFS), "EROFS"},
		{4000, "E4000"},
		{-1, "EUNKNOWN"},
		{1 << 20, "EUNKNOWN"},
	} {
		if got := errnoName(tc.in); got != tc.want {
			t.Errorf("errnoName(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestOnlyCgroupsBeneath(t *testing.T) {
	const v1 = `25 1 0:23 / /sys rw - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 30 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/net_cls,net_prio rw shared:9 - cgroup cgroup rw,net_cls,net_prio
`
	const mixed = v1 + `40 30 0:40 / /sys/fs/cgroup/with\040space/x rw - tmpfs tmpfs rw
`
	for _, tc := range []struct {
		name      string
		mountinfo string
		dir       string
		want      bool
	}{
		{"v1 layout", v1, "/sys/fs/cgroup", true},
		{"trailing slash", v1, "/sys/fs/cgroup/", true},
		{"sysfs above holds more", v1 + "50 25 0:50 / /sys/kernel/debug rw - debugfs debugfs rw\n", "/sys", false},
		{"nothing beneath", v1, "/sys/fs/cgroup/memory", false},
		{"another filesystem beneath", mixed, "/sys/fs/cgroup", false},
		{"shared prefix is not beneath", v1, "/sys/fs/cg", false},
		{"a malformed line is no mount", "31 30 0:27 / /a/b rw cgroup\n", "/a", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := onlyCgroupsBeneath([]byte(tc.mountinfo), tc.dir); got != tc.want {
				t.Errorf("onlyCgroupsBeneath(%q) = %v, want %v", tc.dir, got, tc.want)
			}
		})
	}
}

func FuzzOnlyCgroupsBeneath(f *testing.F) {
	f.Add([]byte("31 30 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"), "/sys/fs/cgroup")
	f.Add([]byte("1 2 3 4 /a\\040b - x"), "/a")
	f.Fuzz(func(t *testing.T, mi []byte, dir string) {
		_ = onlyCgroupsBeneath(mi, dir)
	})
}
