package main

import (
	"slices"
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
