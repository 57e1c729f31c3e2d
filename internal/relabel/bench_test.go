package relabel

import (
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// BenchmarkApply: ten typical rules over a ten-label series.
func BenchmarkApply(b *testing.B) {
	rules := mustRules(b, typicalRules)
	b.Run("unchanged", func(b *testing.B) {
		in := typicalSeries()
		buf := make([]prompb.Label, 0, 32)
		b.ReportAllocs()
		for b.Loop() {
			if _, keep, changed := rules.Apply(in, buf); !keep || changed {
				b.Fatal("series changed")
			}
		}
	})
	b.Run("changed", func(b *testing.B) {
		// instance loses its port, env is set, team lowercased, workload derived
		// from pod: four rules change the series.
		in := lbls(
			"__name__", "http_requests_total", "code", "200", "instance", "10.1.2.3:9100",
			"job", "checkout", "method", "GET", "namespace", "shop", "path", "/cart",
			"pod", "checkout-7f9c4", "team", "Payments", "zone", "eu-1a",
		)
		buf := make([]prompb.Label, 0, 32)
		b.ReportAllocs()
		for b.Loop() {
			out, keep, changed := rules.Apply(in, buf)
			if !keep || !changed {
				b.Fatal("series not changed")
			}
			buf = out[:0]
		}
	})
}
