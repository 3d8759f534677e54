#!/usr/bin/env bash
# Installs what `make bench` needs on a Debian machine, only what is missing:
# fio (sequential and random I/O), sshfs with openssh-server and openssh-client
# (the sshfs peer), fuse3 (fusermount3 for sshfs).
set -euo pipefail

pkgs=(fio sshfs openssh-server openssh-client fuse3 procps)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench-deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
		exit 1
	fi
	echo "bench-deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
	mknod -m 0666 /dev/fuse c 10 229 || true
fi
