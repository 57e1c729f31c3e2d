package seriesusage

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// BenchmarkObserve is the cost the write path pays per series and bucket:
// 100 metrics with 20 selectors each (equality, alternation, a regex the
// matcher cannot reduce to a set of strings, and negative matchers over env,
// job, region and instance), series of 10 labels plus __name__ sorted by name
// as the pipeline hands them over, a third of them selected by none; every
// label value already known, as in steady state. Run with
//
//	go test ./internal/seriesusage/ -run '^$' -bench Observe -benchtime 200000x -count 3
func BenchmarkObserve(b *testing.B) {
	bk, c := newTestBook(b, Config{})
	const metrics, selectors = 100, 20
	for m := range metrics {
		name := fmt.Sprintf("metric_%d", m)
		for s := range selectors {
			var q string
			switch s % 5 {
			case 0:
				q = fmt.Sprintf(`%s{env="prod", job="job-%d"}`, name, s)
			case 1:
				q = fmt.Sprintf(`%s{env=~"prod|staging", region!="eu-%d"}`, name, s)
			case 2:
				q = fmt.Sprintf(`%s{job=~"job-%d|job-%d", env!~"dev|qa"}`, name, s, s+1)
			case 3:
				q = fmt.Sprintf(`%s{region="eu-%d", env="staging"}`, name, s)
			default:
				// Dashboards pick instances by pattern; the regexp runs.
				q = fmt.Sprintf(`%s{instance=~"10\\.0\\.%d\\.[0-9]+:9100", env!="dev"}`, name, s)
			}
			read(b, bk, c.Now(), tn, q)
		}
	}
	// 50,000 series, 500 per metric as in make bench's workload: env in
	// prod, staging, dev; the dev ones no selector takes.
	const nSeries = 50000
	set := make([][]prompb.Label, nSeries)
	names := make([]string, nSeries)
	for i := range set {
		names[i] = fmt.Sprintf("metric_%d", i%metrics)
		set[i] = series(names[i],
			"env", []string{"prod", "staging", "dev"}[i%3],
			"instance", fmt.Sprintf("10.0.%d.%d:9100", i/250%250, i%250),
			"job", fmt.Sprintf("job-%d", i%7),
			"region", fmt.Sprintf("eu-%d", i%4),
			"az", fmt.Sprintf("az-%d", i%3),
			"pod", fmt.Sprintf("pod-%d", i),
			"node", fmt.Sprintf("node-%d", i%40),
			"service", "checkout",
			"version", "v1.2.3",
			"team", "payments",
		)
		// The pipeline sorts labels before observing them: the labels the
		// selectors read are not all first.
		slices.SortFunc(set[i], func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	}
	for i := range set { // warm up: every value known
		bk.Observe(tn, names[i], set[i], 0)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	for i := range b.N {
		j := i % nSeries
		bk.Observe(tn, names[j], set[j], 0)
	}
	b.StopTimer()
	// On a shared machine wall time counts the waits for a CPU too; the
	// process' CPU time per series does not.
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
	rep, _ := bk.Report(tn, "metric_0")
	if rep.ActiveSeries == 0 || rep.NeverSelected == 0 || rep.Selected == 0 {
		b.Fatalf("report %+v: want selected and never-selected series", rep)
	}
}

// processCPU is the user and system CPU time of the process, in ns.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
