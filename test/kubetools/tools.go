//go:build tools

// Package kubetools pins the kubelet the e2e tests of the kubelet offload
// build (scripts/kube-tools.sh): Kubernetes' own module at a release,
// with its staging modules at that release's published versions.
package kubetools

import _ "k8s.io/kubernetes/cmd/kubelet"
