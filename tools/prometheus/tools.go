//go:build tools

// Package tools pins the Prometheus release that the end-to-end tests build and run
// (the same version the main module requires for promql/parser and model/relabel).
// Nothing here ships in cardguard.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
