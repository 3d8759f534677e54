#!/usr/bin/env bash
# `make bench`: installs what the benchmark needs (Debian packages, only if
# missing), builds go-fuse's loopback example and the benchmark driver, and
# runs it. The qtfs binaries come from `make build` (the Makefile runs it
# first). BENCH_QUICK=1 is the one-minute check; BENCH_RUNS, BENCH_PEERS and
# BENCH_WORK_DIR override the defaults. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: needs root (FUSE mounts, drop_caches, an sshd of its own)" >&2
	exit 1
fi
./scripts/bench-deps.sh
mkdir -p bin/bench
# go-fuse's own loopback example, at the version go.mod pins, and the same
# loopback without FUSE passthrough (see bench/cmd/loopback-nopt).
go build -trimpath -o bin/bench/gofuse-loopback github.com/hanwen/go-fuse/v2/example/loopback
go build -trimpath -o bin/bench/gofuse-loopback-nopt ./bench/cmd/loopback-nopt
go build -trimpath -o bin/bench/qtfsbench ./bench/cmd/qtfsbench
exec ./bin/bench/qtfsbench --repo "$PWD" "$@"
