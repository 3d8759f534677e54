// Package chroot builds and tears down the offload environment on the
// DPU: a directory (the chroot root, e.g. /var/lib/qtfs/root) in which
// unmodified programs find the DPU's own system directories and the host's
// world at the host's paths.
//
// It works in three steps. Plan is pure: it turns a Config into an
// ordered list of Actions (the root bound onto itself, binds of the DPU's
// directories, tmpfs mounts, a fresh proc of the DPU at /local_proc, the
// DPU's /dev, the host's exports, the rexec shims) and reports every
// configuration error with the config key it comes from. Check looks on
// the DPU for what the plan needs to find there (bind sources, mount
// points inside binds). Both run before anything is touched. Apply carries
// the actions out with mount(2), calling back for the host's exports
// (FUSE mounts the caller serves), and returns a Tree whose Teardown
// undoes them in reverse order.
//
// Invariants:
//   - The root is a mount point of its own, bound onto itself before
//     anything is mounted in it, made private (out of the peer group of
//     the DPU's mount it lies on) and then shared (a peer group of its
//     own). Every mount beneath it is therefore shared (mountinfo shows
//     shared:N), which programs in the chroot rely on: a private mount
//     namespace can make "/" a slave (MS_REC|MS_SLAVE needs a mount
//     point), and dockerd finds its root already shared. No mount made
//     beneath the root propagates into the DPU's own tree. Teardown
//     unmounts the root last.
//   - Parents come before children: the plan is ordered by depth, so a
//     mount never hides one made before it, and teardown (the reverse
//     order) unmounts children first.
//   - No mount point is the target of two actions (Plan refuses a
//     duplicate, naming both keys).
//   - Apply is idempotent and repairs: it reads /proc/self/mountinfo
//     before each action. A root already bound onto itself is kept (made
//     private and shared again when its propagation is wrong), never
//     stacked; under a root that is not, mounts are stale and detached
//     before the bind would hide them. A bind, proc or tmpfs mount that is
//     already in place, alone, shared and of the right kind, is kept; a
//     qtfs mount found at a target is stale (the caller holds the root's
//     lock, so its daemon is gone) and is detached before the new mount is
//     made; a stack of mounts, or a mount of the wrong kind, is detached
//     and made again. Running Apply twice, or after a crash, never stacks
//     mounts.
//   - Mount points are created only where the chroot owns the directory
//     (the root's own directory tree, a tmpfs of the plan). Inside a bind
//     of a DPU directory the mount point must exist on the DPU, and Check
//     says so, with the key, before anything is mounted. Inside a host
//     mount, a host mount's directory is made by the host when it is
//     mounted (Options.Remote, MountRequest.create), and shows through the
//     parent; other mount points there must exist on the host. Apply never
//     writes into the DPU's own directories or the host's.
//   - Binds are made slaves of their source (MS_SLAVE) so that mounts made
//     beneath them inside the chroot never propagate back into the DPU's
//     own tree, and then shared in a peer group of their own, like every
//     mount of the chroot; read-only binds are remounted read-only.
//   - A bind whose source is a symlink (merged-/usr systems: /bin ->
//     usr/bin) becomes the same symlink inside the root.
//   - Teardown unmounts in reverse order; a busy mount is detached
//     (MNT_DETACH) rather than left behind, and what is still mounted under
//     the root afterwards is detached and reported, so that nothing is
//     left mounted.
//   - On an error, Apply undoes what it did before returning.
//
// Lock order: Tree.mu guards the applied list and is a leaf; the remote
// callback is never called with it held.
package chroot
