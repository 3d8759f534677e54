#!/bin/sh
# Builds the Kubernetes tools the kubelet offload tests use and prints the
# directory that holds them: kubelet (test/kubetools pins the release) and
# crictl. Builds are kept in Go's cache directory, per version: the first
# run takes a few minutes (kubelet is large), later ones nothing.
set -e
crictl_version=v1.37.0
root="$(cd "$(dirname "$0")/.." && pwd)"
kube_version="$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\)$/\1/p' "$root/test/kubetools/go.mod")"
dir="$(go env GOCACHE)/qtfs-tools/kube-$kube_version-crictl-$crictl_version"
mkdir -p "$dir"
if [ ! -x "$dir/kubelet" ]; then
	echo "kube-tools: building kubelet $kube_version (a few minutes, once)" >&2
	(cd "$root/test/kubetools" && go build -o "$dir/kubelet.tmp" k8s.io/kubernetes/cmd/kubelet)
	mv "$dir/kubelet.tmp" "$dir/kubelet"
fi
if [ ! -x "$dir/crictl" ]; then
	echo "kube-tools: building crictl $crictl_version" >&2
	GOBIN="$dir/bin.tmp" go install "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version"
	mv "$dir/bin.tmp/crictl" "$dir/crictl"
	rmdir "$dir/bin.tmp"
fi
echo "$dir"
