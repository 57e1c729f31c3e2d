//go:build tools

// Package tools pins the VictoriaMetrics release that the integration tests and
// benchmarks build and run. Nothing here ships in cardguard.
package tools

import (
	_ "github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics"
	_ "github.com/VictoriaMetrics/VictoriaMetrics/app/vmagent"
	_ "github.com/VictoriaMetrics/VictoriaMetrics/app/vmalert"
)
