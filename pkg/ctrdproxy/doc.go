// Package ctrdproxy is the DPU end of the host containerd's socket for
// an offloaded dockerd (or ctr): a gRPC server on the chroot's
// /run/containerd/containerd.sock that forwards every call, byte for
// byte, to the host's containerd through the socket proxy, and acts on
// the few calls whose meaning depends on the machine they are made on.
//
// Why a proxy that speaks the API, not one that moves bytes: containerd's
// requests name paths and namespaces of the machine of the caller, and
// the caller (dockerd) is on the DPU while containerd, the shim and runc
// are on the host. The API says what each one is, so the proxy can carry
// each across where the filesystem cannot:
//
//   - Task stdio. CreateTaskRequest and ExecProcessRequest name the stdin,
//     stdout and stderr FIFOs that dockerd made and opened on the DPU.
//     Before forwarding the request, the proxy bridges each FIFO with a
//     host FIFO at the same path (pkg/fifo; stdin from the DPU, stdout
//     and stderr to it), made by the server beneath an export, so the
//     shim finds a FIFO when it opens the path. The paths are resolved in
//     the chroot first (/var/run/docker -> /run/docker) and the request
//     names the resolved ones. A failed create ends its bridges and
//     removes the host FIFOs; Tasks.Delete and DeleteProcess do the same
//     for the process. Tasks.Get of a live process whose FIFO has no
//     bridge (dockerd restarted and attaches again, or this daemon did)
//     starts one, so restored containers keep their stdio.
//   - The OCI spec (Containers.Create and Update). dockerd adds a
//     prestart hook that runs its own binary by its DPU pid
//     (/proc/<pid>/exe libnetwork-setkey), which runc would run on the
//     host: it is removed, and runc sets up the loopback of the new
//     network namespace itself. A network namespace path that names the
//     DPU's own namespace (--network host: dockerd's
//     /run/docker/netns/default) means the host's: the namespace entry is
//     removed, so the container shares the network of the host's runtime.
//     Bridge networking is the DPU's and does not cross: such a container
//     gets its own namespace with loopback only, and the proxy says so in
//     a warning. A bind mount whose source is not on a qtfs mount of the
//     chroot is a path of the DPU that runc resolves on the host: the
//     proxy warns, naming it (dockerd made and checked it on the DPU).
//
// Every other call, and every stream (events, CRI), is forwarded as it is,
// with its metadata, deadline, headers, trailers and status.
//
// Invariants:
//   - The proxy never changes a call it does not name above, and never
//     changes a field of those beyond the ones it names.
//   - No bridge outlives its process: bridges end with the process's
//     delete, a failed create, or Close; the host FIFOs a bridge made are
//     removed then.
//
// Lock order: Proxy.mu guards the table of processes' bridges and is a
// leaf; no RPC is made with it held.
package ctrdproxy
