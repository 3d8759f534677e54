#!/usr/bin/env bash
# The offload demo: this machine plays both host and DPU. The "host" keeps
# the machine's mount namespace and runs containerd and qtfs-server; the
# "DPU" is a network, mount and pid namespace of its own, joined to the
# host by a veth pair, where qtfs-client run builds the offload chroot and
# Debian's dockerd runs in it, unmodified. A container started from the
# DPU runs on the host; its output comes back to the DPU. Then everything
# is taken down. The configs are deploy/'s, changed only in the
# transport (TCP with mutual TLS on the veth pair), the TLS files and the
# chroot's root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
[ "$(id -u)" -eq 0 ] || { echo "demo-offload: run as root (namespaces, FUSE, containerd)" >&2; exit 1; }
for c in containerd runc /usr/sbin/dockerd /usr/bin/docker /bin/busybox; do
	command -v "$c" >/dev/null || { echo "demo-offload: needs $c (scripts/deps.sh installs it)" >&2; exit 1; }
done
if pgrep -x dockerd >/dev/null; then
	echo "demo-offload: a dockerd runs on this machine; the demo would share /var/lib/docker with it" >&2
	exit 1
fi
if [ -e /etc/qtfs ]; then
	echo "demo-offload: /etc/qtfs exists; the demo installs the DPU's client config there and will not overwrite it" >&2
	exit 1
fi

work=$(mktemp -d /tmp/qtfs-offload-demo.XXXXXX)
id=$$
hostns=qtfs-demo-host-$id dpuns=qtfs-demo-dpu-$id
hostip=10.231.0.1 dpuip=10.231.0.2
root=$work/root
containerd_pid= server_pid= holder_pid=
made_dirs=()
for d in /var/lib/docker /run/docker /var/lib/kubelet /var/log/pods /var/log/containers /etc/docker /etc/cni /opt/cni; do
	[ -e "$d" ] || made_dirs+=("$d")
done

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# dpu runs a command in the DPU's namespaces.
dpu() { nsenter -t "$dpu_init" -m -n -p -- "$@"; }
docker_dpu() { dpu /usr/bin/docker -H "unix://$root/run/docker.sock" "$@"; }

cleanup() {
	set +e
	if [ -n "$holder_pid" ]; then
		# dockerd first (SIGTERM, as systemctl stop), then qtfs-client run,
		# which unmounts the chroot; killing the namespace's holder ends
		# whatever is left of the DPU.
		if [ -n "${dockerd_pid:-}" ]; then kill "$dockerd_pid" 2>/dev/null; for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done; fi
		if [ -n "${run_pid:-}" ]; then kill "$run_pid" 2>/dev/null; for _ in $(seq 150); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.2; done; fi
		# unshare --fork ignores SIGTERM (its child is to handle it).
		kill -KILL "$holder_pid" 2>/dev/null; wait "$holder_pid" 2>/dev/null
	fi
	[ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; }
	[ -n "$containerd_pid" ] && { kill "$containerd_pid" 2>/dev/null; wait "$containerd_pid" 2>/dev/null; }
	ip netns del "$hostns" 2>/dev/null; ip netns del "$dpuns" 2>/dev/null
	rm -rf /etc/qtfs
	for d in "${made_dirs[@]}"; do rm -rf "$d"; done
	rm -rf "$work"
}
trap cleanup EXIT

step "the DPU: namespaces of its own, on a veth pair to the host ($hostip <-> $dpuip)"
ip netns add "$hostns"; ip netns add "$dpuns"
ip link add "qdh$id" netns "$hostns" type veth peer name "qdd$id" netns "$dpuns"
ip -n "$hostns" addr add $hostip/30 dev "qdh$id"; ip -n "$dpuns" addr add $dpuip/30 dev "qdd$id"
for ns in "$hostns" "$dpuns"; do ip -n "$ns" link set lo up; done
ip -n "$hostns" link set "qdh$id" up; ip -n "$dpuns" link set "qdd$id" up
ip netns exec "$dpuns" unshare --mount --propagation private --pid --fork --kill-child --mount-proc -- sleep infinity &
holder_pid=$!
for _ in $(seq 100); do
	dpu_init=$(pgrep -P "$holder_pid" -x sleep || true)
	[ -n "$dpu_init" ] && break; sleep 0.05
done
echo "DPU pid 1 is host pid $dpu_init"

step "host: containerd"
if [ -S /run/containerd/containerd.sock ] && ctr version >/dev/null 2>&1; then
	echo "using the containerd that runs"
else
	containerd --log-level warn 2>"$work/containerd.log" &
	containerd_pid=$!
	for _ in $(seq 100); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
	ctr version | awk '/Version/ && !seen { print; seen = 1 }'
fi

step "host: certificates, and the example configs with this transport"
"$BIN/qtfs-server" gen-certs --out "$work/pki" --server-name $hostip --client-name dpu-demo >/dev/null
sed -e "s|^  - vsock://any:12121|  - tcp://$hostip:12121|" \
	-e "s|^# tls_cert: /etc/qtfs/server.pem|tls_cert: $work/pki/server.pem|" \
	-e "s|^# tls_key: /etc/qtfs/server-key.pem|tls_key: $work/pki/server-key.pem|" \
	-e "s|^# tls_client_ca: /etc/qtfs/ca.pem|tls_client_ca: $work/pki/ca.pem|" \
	deploy/config/server.yaml >"$work/server.yaml"
mkdir -p /etc/qtfs
cp "$work/pki/ca.pem" "$work/pki/client.pem" "$work/pki/client-key.pem" /etc/qtfs/
sed -e "s|^server: vsock://host:12121|server: tcp://$hostip:12121|" \
	-e "s#^\# tls_\(cert\|key\|ca\): #tls_\1: #" \
	-e "s|^root: /var/lib/qtfs/root|root: $root|" \
	-e "s|^rexec: /usr/bin/rexec|rexec: $BIN/rexec|" \
	deploy/config/client.yaml >/etc/qtfs/client.yaml
diff deploy/config/client.yaml /etc/qtfs/client.yaml || true

step "host: qtfs-server --config server.yaml (in the host's network namespace)"
nsenter --net=/run/netns/"$hostns" -- "$BIN/qtfs-server" --config "$work/server.yaml" --log-format console 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "qtfs-server ready" "$work/server.log" && break; sleep 0.1; done
grep "qtfs-server ready" "$work/server.log"

step "DPU: qtfs-client run --config /etc/qtfs/client.yaml"
dpu "$BIN/qtfs-client" run --config /etc/qtfs/client.yaml --log-format console 2>"$work/run.log" &
for _ in $(seq 300); do grep -q "qtfs-client run ready" "$work/run.log" && break; sleep 0.1; done
grep "qtfs-client run ready" "$work/run.log"
run_pid=$(pgrep -f "^$BIN/qtfs-client run --config /etc/qtfs/client.yaml" | head -1)
dpu "$BIN/qtfs-client" status --config /etc/qtfs/client.yaml | sed -n '1,4p;/^PROXY/,$p'

step "DPU: dockerd in the chroot, as docker-offload.service starts it"
execstart=$(sed -n "s|^ExecStart=/usr/bin/qtfs-client|$BIN/qtfs-client|p" deploy/systemd/docker-offload.service)
path=$(sed -n 's/^Environment=PATH=//p' deploy/systemd/docker-offload.service)
# shellcheck disable=SC2086
dpu env -i PATH="$path" HOME=/root $execstart 2>"$work/dockerd.log" &
for _ in $(seq 300); do docker_dpu version >/dev/null 2>&1 && break; sleep 0.2; done
dockerd_pid=$(pgrep -x dockerd | head -1)
docker_dpu info --format 'dockerd {{.ServerVersion}}, storage {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}'

step "DPU: docker import (a busybox image made here from busybox-static)"
mkdir -p "$work/img/bin"
cp /bin/busybox "$work/img/bin/"
for a in sh echo cat sleep hostname; do ln -s busybox "$work/img/bin/$a"; done
tar -C "$work/img" -c . | docker_dpu import - qtfs-demo/busybox
docker_dpu images qtfs-demo/busybox

step "DPU: docker run --rm qtfs-demo/busybox echo ..."
docker_dpu run --rm --network none qtfs-demo/busybox echo "hello from a container on the host, printed on the DPU"

step "DPU: docker run -d; the container's process is the host's"
cid=$(docker_dpu run -d --network none qtfs-demo/busybox sh -c 'echo started; exec sleep 600')
pid=$(docker_dpu inspect -f '{{.State.Pid}}' "$cid")
echo "containerd reports pid $pid; on the host: $(tr '\0' ' ' </proc/"$pid"/cmdline)(cgroup $(grep -m1 memory /proc/"$pid"/cgroup | cut -d: -f3))"
if dpu test -e "/proc/$pid/cmdline" && [ "$(dpu cat /proc/"$pid"/cmdline | tr '\0' ' ')" = "sleep 600 " ]; then
	echo "and the DPU runs it too?"; exit 1
fi
echo "the DPU's own processes: $(dpu ps -e -o comm= | sort | uniq -c | tr -s ' \n' ' ')"
echo "its root on the host: $(stat -f -c %T /proc/"$pid"/root), mounted by dockerd's overlay2 on the DPU at $(grep -o "/var/lib/docker/overlay2/[0-9a-f]*/merged" /proc/self/mountinfo | head -1)"
docker_dpu logs "$cid"
docker_dpu rm -f "$cid" >/dev/null

step "tear down: dockerd, the chroot, the server"
docker_dpu rmi qtfs-demo/busybox >/dev/null
kill "$dockerd_pid"; for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done; dockerd_pid=
kill "$run_pid"; for _ in $(seq 150); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.2; done; run_pid=
tail -1 "$work/run.log"
left=$(dpu findmnt -rn -o TARGET | grep -c "^$root" || true)
echo "mounts left under the chroot: $left"
echo; echo "demo complete"
