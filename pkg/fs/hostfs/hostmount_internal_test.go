package hostfs

import (
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestClassifyMount(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint64
		op    hostMountOp
		bad   uint64
	}{
		{"new", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_RDONLY, opNewMount, 0},
		{"new with the magic number", 0xc0ed0000 | unix.MS_NOEXEC, opNewMount, 0},
		{"new with MS_ACTIVE and MS_NOUSER", 0xc0000000, opNewMount, 0xc0000000},
		{"new with MS_REC", unix.MS_REC, opNewMount, unix.MS_REC},
		{"new with MS_POSIXACL", unix.MS_POSIXACL, opNewMount, unix.MS_POSIXACL},
		{"new with a bit above 32", 1 << 40, opNewMount, 1 << 40},
		{"bind", unix.MS_BIND, opBind, 0},
		{"recursive bind", unix.MS_BIND | unix.MS_REC | unix.MS_SILENT, opBind, 0},
		{"bind with MS_RDONLY (ignored by the kernel, dropped)", unix.MS_BIND | unix.MS_RDONLY, opBind, 0},
		{"bind with a propagation type", unix.MS_BIND | unix.MS_SHARED, opBind, unix.MS_SHARED},
		{"remount", unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NOSUID, opRemount, 0},
		{"bind remount", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY, opRemountBind, 0},
		{"remount with MS_REC", unix.MS_REMOUNT | unix.MS_REC, opRemount, unix.MS_REC},
		{"private", unix.MS_PRIVATE, opPropagation, 0},
		{"rshared", unix.MS_SHARED | unix.MS_REC, opPropagation, 0},
		{"two types", unix.MS_SHARED | unix.MS_SLAVE, opPropagation, unix.MS_SHARED | unix.MS_SLAVE},
		{"private with MS_NOSUID", unix.MS_PRIVATE | unix.MS_NOSUID, opPropagation, unix.MS_NOSUID},
		{"move", unix.MS_MOVE, opMove, unix.MS_MOVE},
		{"move with a bind", unix.MS_MOVE | unix.MS_BIND, opMove, unix.MS_MOVE},
	} {
		t.Run(tc.name, func(t *testing.T) {
			op, _, bad := classifyMount(tc.flags)
			if op != tc.op || bad != tc.bad {
				t.Fatalf("classifyMount(%s) = %v, bad %s; want %v, bad %s", mountFlagNames(tc.flags), op, mountFlagNames(bad), tc.op, mountFlagNames(tc.bad))
			}
		})
	}
}

func TestCheckMountOptions(t *testing.T) {
	for _, tc := range []struct {
		fsType, opts, data string
		ok                 bool
	}{
		{"tmpfs", "", "", true},
		{"tmpfs", "size=64m,mode=1777,nr_inodes=1k,uid=0,gid=0,huge=within_size,inode64,noswap", "size=64m,mode=1777,nr_inodes=1k,uid=0,gid=0,huge=within_size,inode64,noswap", true},
		{"tmpfs", ",size=50%,,", "size=50%", true},
		{"tmpfs", "size", "", false},
		{"tmpfs", "size=", "", false},
		{"tmpfs", "inode64=1", "", false},
		{"tmpfs", "context=system_u:object_r:tmp_t:s0", "", false},
		{"tmpfs", "mpol=bind:0", "", false},
		{"tmpfs", "size=1m/2", "", false},
		{"tmpfs", "size=" + strings.Repeat("1", 65), "", false},
		{"tmpfs", "index=off", "", false},
		{"overlay", "index=off,redirect_dir=nofollow,metacopy=on,xino=auto,userxattr,volatile,nfs_export=off,uuid=null", "index=off,redirect_dir=nofollow,metacopy=on,xino=auto,userxattr,volatile,nfs_export=off,uuid=null", true},
		{"overlay", "lowerdir=/a", "", false},
		{"overlay", "upperdir=/a", "", false},
		{"overlay", "workdir=/a", "", false},
		{"overlay", "datadir+=/a", "", false},
		{"overlay", "lowerdir+=/a", "", false},
		{"overlay", "size=1m", "", false},
		{"overlay", strings.Repeat("userxattr,", 200), "", false},
	} {
		data, _, ok := checkMountOptions(tc.fsType, tc.opts)
		if ok != tc.ok || data != tc.data {
			t.Errorf("checkMountOptions(%s, %q) = %q, %v; want %q, %v", tc.fsType, tc.opts, data, ok, tc.data, tc.ok)
		}
	}
}

// FuzzCheckMountOptions: what passes is made only of allowed options
// with word values, and within bounds.
func FuzzCheckMountOptions(f *testing.F) {
	for _, s := range []string{"size=64m,mode=1777", "index=off,userxattr", "lowerdir=/x", "a=b=c,,", "uid=0\x00,gid=0"} {
		f.Add(false, s)
		f.Add(true, s)
	}
	f.Fuzz(func(t *testing.T, overlay bool, opts string) {
		fsType := mountKindTmpfs
		if overlay {
			fsType = mountKindOverlay
		}
		data, _, ok := checkMountOptions(fsType, opts)
		if !ok {
			return
		}
		if len(data) > maxMountOptions {
			t.Fatalf("%q: %d bytes", data, len(data))
		}
		if data == "" {
			return
		}
		for _, o := range strings.Split(data, ",") {
			name, value, hasValue := strings.Cut(o, "=")
			valued, known := hostMountOptions[fsType][name]
			if !known || valued != hasValue || (hasValue && !validMountWord(value, maxMountOptionValue)) {
				t.Fatalf("%q passed with %q", opts, o)
			}
		}
	})
}
