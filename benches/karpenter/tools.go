//go:build tools

// Package karpenterbench only pins sigs.k8s.io/karpenter so that its scheduling benchmark can be run with
// `go test sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling` from this directory. The blank
// import keeps `go mod tidy` from dropping the requirement; the test-only dependencies of that package
// (ginkgo, gomega, controller-runtime's fake client, ...) are recorded in go.sum by
// `go get -t sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling@v1.14.1`.
package karpenterbench

import (
	_ "sigs.k8s.io/karpenter/pkg/controllers/provisioning/scheduling"
)
