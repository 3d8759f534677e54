// Package mountinfo reads and writes the mount tables of Linux's proc:
// the lines of /proc/<pid>/mountinfo and of /proc/<pid>/mounts (proc(5)).
// The host side of qtfs reads its own table with it (hostfs's Mounts), and
// the DPU side reads a process's table and writes the view it shows that
// process (fuseclient's proc mounts), so both agree on one format.
//
// Invariants:
//   - Parse skips malformed lines and never fails; a line it accepts and
//     AppendMountinfo writes back parses to the same Mount.
//   - Root, MountPoint, FSType and Source hold the kernel's bytes, octal
//     escapes undone; the writers escape them again as the kernel does
//     (space, tab, newline and backslash as \ooo). Options, Optional and
//     SuperOptions are kept as the kernel wrote them.
//
// The package has no state and no locks.
package mountinfo
