package main

import (
	"slices"
	"strings"
	"testing"
)

// TestCombine: a target's passes add up to one result whose rate and CPU per
// sample are over all of them, in the order the targets first ran.
func TestCombine(t *testing.T) {
	pass := func(name string, n int, samples int64, secs, cpu float64, p50 float64, notes ...string) scenarioResult {
		return scenarioResult{
			Name: name, Pass: n, ProxyCPUSeconds: cpu, VMCPUSeconds: 2 * cpu, Notes: notes,
			Measured: lgResult{
				SamplesOK: samples, SamplesSent: samples, ElapsedSeconds: secs, SamplesPerSecond: float64(samples) / secs,
				LatencyMS: map[string]float64{"p50": p50}, Status: map[string]int64{"204": samples / 1000},
			},
		}
	}
	got := combine([]scenarioResult{
		pass("direct", 1, 60e6, 60, 90, 2, "same"),
		pass("cardguard", 1, 40e6, 60, 24, 6),
		pass("cardguard", 2, 50e6, 60, 26, 8, "only once"),
		pass("direct", 2, 54e6, 60, 80, 4, "same"),
	})
	if len(got) != 2 || got[0].Name != "direct" || got[1].Name != "cardguard" {
		t.Fatalf("combined %+v", got)
	}
	cg := got[1]
	if cg.Measured.SamplesOK != 90e6 || cg.Measured.SamplesPerSecond != 90e6/120 || cg.ProxyCPUSeconds != 50 || cg.VMCPUSeconds != 100 {
		t.Errorf("cardguard: %d samples, %.0f/s, CPU %.0f s, VM %.0f s", cg.Measured.SamplesOK, cg.Measured.SamplesPerSecond, cg.ProxyCPUSeconds, cg.VMCPUSeconds)
	}
	if cg.Measured.LatencyMS["p50"] != 7 || cg.Measured.Status["204"] != 90e3 {
		t.Errorf("cardguard: p50 %v, statuses %v", cg.Measured.LatencyMS, cg.Measured.Status)
	}
	if !slices.Equal(cg.Notes, []string{"pass 2: only once"}) || !slices.Equal(got[0].Notes, []string{"same"}) {
		t.Errorf("notes %q and %q", got[0].Notes, cg.Notes)
	}
	if x := ratiosOf(got); !x.hasThroughput || x.throughput != (90e6/120)/(114e6/120) {
		t.Errorf("throughput ratio %+v", x)
	}
}

// TestAggregate: the aggregation scenario's passes combine with their fold
// counts, and cardguard is compared with vmagent, not with direct.
func TestAggregate(t *testing.T) {
	pass := func(name string, n int, samples int64, cpu, received, folded float64) scenarioResult {
		return scenarioResult{
			Name: name, Pass: n, ProxyCPUSeconds: cpu, proxy: true,
			Measured: lgResult{SamplesOK: samples, SamplesSent: samples, ElapsedSeconds: 45, SamplesPerSecond: float64(samples) / 45},
			Fold:     &foldStats{Received: received, Folded: folded, Written: 10},
		}
	}
	all := []scenarioResult{
		pass("vmagent", 1, 30e6, 60, 40e6, 4e6),
		pass("cardguard", 1, 45e6, 36, 50e6, 4.8e6),
		pass("cardguard", 2, 45e6, 36, 50e6, 4.8e6),
		pass("vmagent", 2, 30e6, 60, 40e6, 4e6),
	}
	rs := combine(all)
	if len(rs) != 2 || rs[1].Fold.Share() != 0.096 || rs[1].Fold.Written != 20 || all[1].Fold.Received != 50e6 {
		t.Fatalf("combined %+v, cardguard fold %+v", rs, rs[1].Fold)
	}
	x := aggregateRatios(rs)
	if !x.hasCPU || x.cpu != 0.4 || !x.hasThroughput || x.throughput != 1.5 {
		t.Errorf("ratios %+v, want CPU 0.4 and throughput 1.5", x)
	}
	var b strings.Builder
	renderAggregate(&b, all, config{passes: 2, concurrency: 4, wl: workloadFlags{metrics: 100}, agg: aggregateFlags{userMetrics: 10, users: 250}})
	for _, want := range []string{"| cardguard CPU per sample ÷ vmagent CPU per sample, both aggregating | 0.40 | ≤ 0.5 | yes |", "| 9.6% |", "| 10.0% |"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWantRows: VictoriaMetrics is to get what a proxy accepted, less what it
// took in to aggregate, plus what it wrote of the aggregates.
func TestWantRows(t *testing.T) {
	fold := func() (float64, float64, error) { return 150, 12, nil }
	if got, _ := wantRows(1000, 500, nil, 0, 0); got != 1500 {
		t.Errorf("no fold: %v", got)
	}
	if got, _ := wantRows(1000, 500, fold, 100, 10); got != 1000+500-50+2 {
		t.Errorf("fold: %v", got)
	}
}

// TestRenderCluster: the cluster table compares cardguard's throughput with
// the direct target's, and its CPU per sample with what the cluster spent on
// the samples written directly.
func TestRenderCluster(t *testing.T) {
	res := func(name string, samples int64, cpu, vm float64, proxy bool) scenarioResult {
		return scenarioResult{Name: name, Pass: 1, ProxyCPUSeconds: cpu, VMCPUSeconds: vm, proxy: proxy,
			Measured: lgResult{SamplesOK: samples, SamplesSent: samples, ElapsedSeconds: 10, SamplesPerSecond: float64(samples) / 10}}
	}
	var b strings.Builder
	renderCluster(&b, []scenarioResult{
		res("cluster direct", 8e6, 16, 16, false),
		res("cluster cardguard", 6e6, 3, 12, true),
	}, config{vmClusterDir: "/x"})
	out := b.String()
	for _, want := range []string{
		"| cluster direct | 800,000 |",
		"| cardguard throughput ÷ direct throughput | 0.75 |",
		"| cardguard CPU per sample ÷ the cluster's, written directly | 0.25 |",
		"`/x`",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}
