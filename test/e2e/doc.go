// Package e2e holds the end-to-end tests of qtfs: the real binaries, built
// once per run, started as real processes. The host side runs in one
// network namespace and the DPU side in another, joined by a veth pair the
// test creates; the DPU side also has its own mount namespace, so its FUSE
// mounts are invisible to the host side, as on a real DPU.
//
// The tests need root, /dev/fuse and the ip(8), unshare(1) and nsenter(1)
// commands; without them they skip and say which is missing. Every test
// removes what it made (mounts, namespaces, processes) even when it fails:
// daemons are stopped by pid in t.Cleanup. A run marks what it makes (its
// temporary files live under one root, TMPDIR points there; its network
// namespaces share a prefix), and TestMain fails the run when, after the
// tests, a namespace, a mount under that root or a process of the run is
// left.
package e2e
