package main

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
)

func smallWorkload() workload {
	return workload{
		Metrics: 3, SeriesPerMetric: 50, Labels: 12, Churn: 0.1, Rounds: 4, Batch: 40,
		Seed: 7, Start: 1_700_000_000_000, Interval: 15 * time.Second, MaxRingBytes: 1 << 30,
	}
}

func TestRingIsDeterministic(t *testing.T) {
	t.Parallel()
	a, err := buildRing(smallWorkload())
	if err != nil {
		t.Fatal(err)
	}
	b, err := buildRing(smallWorkload())
	if err != nil {
		t.Fatal(err)
	}
	if a.digest != b.digest {
		t.Errorf("same seed, digests %s and %s differ", a.digest, b.digest)
	}
	w := smallWorkload()
	w.Seed++
	c, err := buildRing(w)
	if err != nil {
		t.Fatal(err)
	}
	if c.digest == a.digest {
		t.Errorf("different seeds, same digest %s", a.digest)
	}
}

// TestRingContent decodes every payload: valid remote-write requests with sorted,
// unique label names, the right number of samples, and as many distinct series as
// churn promises.
func TestRingContent(t *testing.T) {
	t.Parallel()
	w := smallWorkload()
	rg, err := buildRing(w)
	if err != nil {
		t.Fatal(err)
	}
	perRound := w.Metrics * w.SeriesPerMetric
	if want := w.Rounds * ((perRound + w.Batch - 1) / w.Batch); len(rg.payloads) != want {
		t.Fatalf("%d payloads, want %d", len(rg.payloads), want)
	}
	seen := map[string]bool{}
	var samples int
	for i, p := range rg.payloads {
		raw, err := snappy.Decode(nil, p)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(raw)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if len(wr.Timeseries) != rg.samples[i] {
			t.Errorf("payload %d: %d series, recorded %d", i, len(wr.Timeseries), rg.samples[i])
		}
		for _, ts := range wr.Timeseries {
			samples += len(ts.Samples)
			if len(ts.Labels) != w.Labels+1 || ts.Labels[0].Name != "__name__" {
				t.Fatalf("payload %d: labels %v", i, ts.Labels)
			}
			if !slices.IsSortedFunc(ts.Labels, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) }) {
				t.Fatalf("payload %d: labels not sorted: %v", i, ts.Labels)
			}
			for j := 1; j < len(ts.Labels); j++ {
				if ts.Labels[j].Name == ts.Labels[j-1].Name || ts.Labels[j].Value == "" {
					t.Fatalf("payload %d: bad labels %v", i, ts.Labels)
				}
			}
			seen[prompb.LabelsToString(ts.Labels)] = true
		}
	}
	if samples != w.Rounds*perRound {
		t.Errorf("%d samples, want %d", samples, w.Rounds*perRound)
	}
	if len(seen) != rg.uniqueSeries {
		t.Errorf("%d distinct series decoded, ring says %d", len(seen), rg.uniqueSeries)
	}
	churned := int(w.Churn*float64(perRound) + 0.5)
	if want := perRound + (w.Rounds-1)*churned; rg.uniqueSeries != want {
		t.Errorf("unique series %d, want %d", rg.uniqueSeries, want)
	}
}

func TestWorkloadBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*workload)
	}{
		{"no metrics", func(w *workload) { w.Metrics = 0 }},
		{"too many series", func(w *workload) { w.Metrics, w.SeriesPerMetric = 10_000, 10_000 }},
		{"churn over 1", func(w *workload) { w.Churn = 1.5 }},
		{"no labels", func(w *workload) { w.Labels = 0 }},
		{"zero batch", func(w *workload) { w.Batch = 0 }},
		{"ring too big", func(w *workload) { w.MaxRingBytes = 100 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := smallWorkload()
			tc.edit(&w)
			if _, err := buildRing(w); err == nil {
				t.Error("want an error")
			}
		})
	}
}

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8428/api/v1/write", true},
		{"http://127.0.0.2:8428/api/v1/write", true},
		{"http://localhost:8490/api/v1/write", true},
		{"http://[::1]:8490/api/v1/write", true},
		{"http://10.0.0.1:8428/api/v1/write", false},
		{"http://example.com/api/v1/write", false},
		{"https://127.0.0.1/api/v1/write", false},
		{"http://0.0.0.0:8428/", false},
	} {
		if err := checkLoopback(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestParseFlagsNeedsABound(t *testing.T) {
	t.Parallel()
	var sink strings.Builder
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write"}, &sink); err == nil {
		t.Error("no -duration, -requests or -passes: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-duration=20m"}, &sink); err == nil {
		t.Error("-duration over the bound: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-passes=1"}, &sink); err != nil {
		t.Error(err)
	}
}
