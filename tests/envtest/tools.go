//go:build tools

// Package envtest pins the commands build.sh compiles, so `go mod tidy` keeps their modules.
package envtest

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
