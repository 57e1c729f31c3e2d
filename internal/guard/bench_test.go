package guard

import (
	"strconv"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/limits"
)

// BenchmarkCheck: one 10-label series whose values are all admitted already,
// the steady state of a scrape that repeats the same series.
func BenchmarkCheck(b *testing.B) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1000}
	in := benchSeries()
	g.Check(t1, p, "http_requests_total", in, nil, false)
	b.ReportAllocs()
	for b.Loop() {
		g.Check(t1, p, "http_requests_total", in, nil, false)
	}
}

// BenchmarkCheckManySeries cycles through 10,000 admitted series of 100 metrics.
func BenchmarkCheckManySeries(b *testing.B) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1000}
	const n = 10_000
	all := make([][]prompb.Label, n)
	for i := range all {
		s := benchSeries()
		s[0].Value = "metric_" + strconv.Itoa(i%100)
		for j := range s {
			if s[j].Name == "pod" {
				s[j].Value = "pod-" + strconv.Itoa(i%500)
			}
		}
		all[i] = s
		g.Check(t1, p, s[0].Value, s, nil, false)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s := all[i%n]
		g.Check(t1, p, s[0].Value, s, nil, false)
		i++
	}
}

// BenchmarkCheckGuarded: every series carries a value beyond the limit and is
// rewritten with overflow_value.
func BenchmarkCheckGuarded(b *testing.B) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 10}
	in := benchSeries()
	for i := range 10 {
		in[len(in)-1].Value = "admitted-" + strconv.Itoa(i)
		g.Check(t1, p, "http_requests_total", in, nil, false)
	}
	in[len(in)-1].Value = "beyond"
	buf := make([]prompb.Label, 0, 16)
	b.ReportAllocs()
	for b.Loop() {
		out, res := g.Check(t1, p, "http_requests_total", in, buf, false)
		if res.Outcome != Rewritten {
			b.Fatal(res.Outcome)
		}
		buf = out[:0]
	}
}

func BenchmarkCheckParallel(b *testing.B) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1000}
	in := benchSeries()
	g.Check(t1, p, "http_requests_total", in, nil, false)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			g.Check(t1, p, "http_requests_total", in, nil, false)
		}
	})
}
