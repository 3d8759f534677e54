// Package server assembles the qtfs-server daemon: it turns Settings
// (flags, QTFS_* environment, /etc/qtfs/server.yaml) into listeners, one
// gRPC server carrying every service, a health service, a metrics
// listener (which also serves the Go runtime's profiles under
// /debug/pprof/ when it is bound to a loopback address), and an orderly
// shutdown.
//
// Export roots that do not exist yet (a host where the management plane
// never ran has no /var/lib/docker) are made at start, as mkdir -p would,
// mode 0755, each logged at warn; a read-only export that is missing is
// an error, and then nothing is made.
//
// Run owns everything it starts: when its context ends (SIGTERM) it stops
// accepting, lets in-flight calls finish for a grace period, then closes
// every session, which releases their handles.
//
// The limits (--max-sessions, --max-handles-per-session,
// --max-inflight-per-session, --max-inflight-bytes-per-session) and the
// per-export operation allow-lists (--export PATH:ops=read+lock) are
// hostfs.Limits and hostfs.Export.Ops; 0 or no ops= takes hostfs's
// default (everything allowed).
//
// --mount-allow (mount_allow:) names the kinds of host mount (overlay,
// tmpfs, bind) the DPU's supervised programs may make beneath read-write
// exports, carried out by hostfs's MountOnHost; none by default, and an
// unknown kind is a config error.
package server
