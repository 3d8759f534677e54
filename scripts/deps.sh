#!/usr/bin/env bash
# Installs what qtfs's build, tests and demo need on a Debian machine:
# system packages through apt-get (only those missing) and the Go modules.
set -euo pipefail

pkgs=(fuse3 protobuf-compiler iproute2 attr acl runc openssh-server openssh-client containerd docker.io busybox-static curl)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing Debian packages: ${missing[*]} (run as root, or apt-get install them)" >&2
		exit 1
	fi
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# /dev/fuse exists on a normal machine; in a bare container create it.
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
	mknod -m 0666 /dev/fuse c 10 229 || true
fi
go mod download
