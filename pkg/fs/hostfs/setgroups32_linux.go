//go:build linux && (386 || arm)

package hostfs

import "golang.org/x/sys/unix"

// sysSetgroups is setgroups(2) with 32-bit gids (SYS_SETGROUPS takes 16-bit
// ones on these architectures).
const sysSetgroups = unix.SYS_SETGROUPS32
