package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func scaleRunOf(n int, heapMiB, cpu float64, failures ...string) scaleResult {
	r := scaleResult{Replicas: n, Series: 1000, VMSeries: 1000, VMCPU: 0.01, RedisUsed: 100_000, RedisBase: 60_000, RedisMembers: 25_000, Failures: failures}
	r.Load.SamplesSent, r.Load.SamplesOK = 3000, 3000
	for i := range n {
		r.Members = append(r.Members, member{Name: "r" + string(rune('1'+i)), HeapLive: heapMiB * (1 << 20), Sketches: 2 << 20, RSSKiB: 40 << 10, CPU: cpu / float64(n)})
	}
	r.Gauges = []gauge{{Name: "cardguard_ingest_series_cache_entries", Values: make([]float64, n)}}
	return r
}

// TestRenderScale: a clean run gives one row per replica count and the two
// ratios; a run that lost writes is announced above everything and in its row.
func TestRenderScale(t *testing.T) {
	t.Parallel()
	c := config{sc: scaleFlags{series: 1000, metrics: 10, rounds: 3, tenantLimits: "{max_series: 1}"}, wl: workloadFlags{labels: 10, batch: 100}}
	clean := renderScale(runInfo{}, "redis", []scaleResult{scaleRunOf(1, 10, 0.03), scaleRunOf(3, 5, 0.06)}, c)
	for _, want := range []string{
		"| 1 | 3,000 | 0 | 1,000 / 1,000 | 10 | 2 | 8 | 40 | 0.1 | 40.0 | 25.0 | 10.00 | 3.33 | 3.00 |",
		"| 3 | 3,000 | 0 | 1,000 / 1,000 | 5 | 2 | 3 | 40 |",
		"3-replica heap less the sketches ÷ 1-replica: ×0.38 per replica (the largest)",
		"3-replica heap ÷ 1-replica heap: ×0.50 per replica (the largest), ×1.50 all replicas together",
		"3-replica cardguard CPU/sample ÷ 1-replica: ×2.00",
		"| `cardguard_ingest_series_cache_entries` | 0 | 0 / 0 / 0 |",
	} {
		if !strings.Contains(clean, want) {
			t.Errorf("report lacks %q:\n%s", want, clean)
		}
	}
	if strings.Contains(clean, "FAILED") || strings.Contains(clean, "LOST") {
		t.Errorf("clean run reported as failed:\n%s", clean)
	}
	bad := scaleRunOf(2, 10, 0.03, "VictoriaMetrics holds 900 series, want 1000")
	bad.Load.SamplesOK = 2700
	out := renderScale(runInfo{}, "redis", []scaleResult{scaleRunOf(1, 10, 0.03), bad}, c)
	for _, want := range []string{"**WRITES WERE LOST OR REFUSED in 1 of 2 runs", "**300 samples not accepted; 1 failure, below**", "- **2 replicas: FAILED: VictoriaMetrics holds 900 series, want 1000**"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// TestScrapeFamilies: samples of one name are summed over labels and keep the
// type of their family; the gauges and counters the report picks by name.
func TestScrapeFamilies(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`# HELP cardguard_limits_tracked_series Series.
# TYPE cardguard_limits_tracked_series gauge
cardguard_limits_tracked_series{tenant="0:0"} 10
cardguard_limits_tracked_series{tenant="1:0"} 5
# TYPE cardguard_discarded_samples_total counter
cardguard_discarded_samples_total{reason="series"} 2
# TYPE go_memstats_heap_alloc_bytes gauge
go_memstats_heap_alloc_bytes 1.5e+06
`))
	}))
	defer srv.Close()
	fam, err := scrapeFamilies(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if f := fam["cardguard_limits_tracked_series"]; f.typ != "gauge" || f.value != 15 {
		t.Errorf("tracked series %+v", f)
	}
	if f := fam["go_memstats_heap_alloc_bytes"]; f.value != 1.5e6 {
		t.Errorf("heap %+v", f)
	}
	if !sizeGauge("cardguard_limits_tracked_series") || !sizeGauge("cardguard_ingest_series_cache_entries") || sizeGauge("go_memstats_heap_alloc_bytes") {
		t.Error("sizeGauge")
	}
	if !troubleCounter("cardguard_discarded_samples_total") || !lostSamples("cardguard_discarded_samples_total") ||
		troubleCounter("cardguard_refused_queries_total") || lostSamples("cardguard_state_sync_errors_total") {
		t.Error("troubleCounter / lostSamples")
	}
}
