#!/bin/sh
# Builds a Go tool pinned in go.mod (the `tool` directives) and prints its path.
set -e
dir="$(go env GOCACHE)/qtfs-tools"
mkdir -p "$dir"
go build -o "$dir/$1" "$(go list -f '{{.ImportPath}}' tool | grep "/$1\$")"
echo "$dir/$1"
