#!/usr/bin/env bash
# Loopback demo: this machine plays both host and DPU. qtfs-server exports a
# host directory over TCP loopback with mutual TLS; qtfs-client mounts it;
# files cross both ways; then everything is taken down again.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$PWD/bin
work=$(mktemp -d /tmp/qtfs-demo.XXXXXX)
host=$work/host mnt=$work/mnt pki=$work/pki
mkdir -p "$host/etc" "$mnt"
port=${QTFS_DEMO_PORT:-12121}
server_pid=

cleanup() {
	set +e
	if mountpoint -q "$mnt"; then "$BIN/qtfs-client" umount --lazy "$mnt"; fi
	if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null; fi
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "host: a directory to export ($host)"
echo "hello from the host" > "$host/etc/motd"
dd if=/dev/urandom of="$host/blob" bs=1M count=8 status=none
ls -l "$host"

step "host: certificates for mutual TLS"
"$BIN/qtfs-server" gen-certs --out "$pki" --server-name 127.0.0.1 --client-name dpu-demo

step "host: qtfs-server on tcp://127.0.0.1:$port"
"$BIN/qtfs-server" --listen "tcp://127.0.0.1:$port" --export "$host" \
	--tls-cert "$pki/server.pem" --tls-key "$pki/server-key.pem" --tls-client-ca "$pki/ca.pem" \
	--log-format console 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 100); do grep -q "qtfs-server ready" "$work/server.log" && break; sleep 0.1; done
grep "qtfs-server ready" "$work/server.log"

step "DPU: qtfs-client mount --remote 127.0.0.1:$host $mnt"
"$BIN/qtfs-client" mount --tls-cert "$pki/client.pem" --tls-key "$pki/client-key.pem" --tls-ca "$pki/ca.pem" \
	--runtime-dir "$work/run" --remote "127.0.0.1:$host" "$mnt"
grep " $mnt " /proc/mounts

step "DPU: read what the host wrote"
cat "$mnt/etc/motd"
echo "sha256 host: $(sha256sum < "$host/blob" | cut -c1-16)  mount: $(sha256sum < "$mnt/blob" | cut -c1-16)"

step "DPU: write; the host sees it"
echo "written on the DPU" > "$mnt/from-dpu.txt"
mkdir "$mnt/newdir" && ln -s ../etc/motd "$mnt/newdir/motd-link"
cat "$host/from-dpu.txt"; ls -l "$host/newdir"
cat "$mnt/newdir/motd-link"

step "DPU: qtfs-client status"
"$BIN/qtfs-client" status --runtime-dir "$work/run"
df -h "$mnt" | tail -1

step "DPU: qtfs-client umount"
"$BIN/qtfs-client" umount "$mnt"
mountpoint -q "$mnt" && { echo "still mounted"; exit 1; } || echo "unmounted, nothing left"

step "host: stop the server (SIGTERM)"
kill "$server_pid"; wait "$server_pid" || true; server_pid=
tail -2 "$work/server.log"
echo; echo "demo complete"
