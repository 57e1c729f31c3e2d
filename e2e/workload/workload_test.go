package workload

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/promutil"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/opentelemetry/pb"
	"github.com/golang/snappy"
)

func smallWorkload() Workload {
	return Workload{
		Metrics: 3, SeriesPerMetric: 50, Labels: 12, Churn: 0.1, Rounds: 4, Batch: 40,
		Seed: 7, Start: 1_700_000_000_000, Interval: 15 * time.Second, MaxRingBytes: 1 << 30,
	}
}

func TestRingIsDeterministic(t *testing.T) {
	t.Parallel()
	a, err := Build(smallWorkload())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(smallWorkload())
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != b.Digest {
		t.Errorf("same seed, digests %s and %s differ", a.Digest, b.Digest)
	}
	w := smallWorkload()
	w.Seed++
	c, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	if c.Digest == a.Digest {
		t.Errorf("different seeds, same digest %s", a.Digest)
	}
}

// TestRingContent decodes every payload: valid remote-write requests with sorted,
// unique label names, the right number of samples, and as many distinct series as
// churn promises.
func TestRingContent(t *testing.T) {
	t.Parallel()
	w := smallWorkload()
	rg, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	perRound := w.Metrics * w.SeriesPerMetric
	if want := w.Rounds * ((perRound + w.Batch - 1) / w.Batch); len(rg.Payloads) != want {
		t.Fatalf("%d payloads, want %d", len(rg.Payloads), want)
	}
	seen := map[string]bool{}
	var samples int
	for i, p := range rg.Payloads {
		raw, err := snappy.Decode(nil, p)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(raw)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if len(wr.Timeseries) != rg.Samples[i] {
			t.Errorf("payload %d: %d series, recorded %d", i, len(wr.Timeseries), rg.Samples[i])
		}
		for _, ts := range wr.Timeseries {
			samples += len(ts.Samples)
			if len(ts.Labels) != w.Labels+1+userLabel(ts.Labels) || ts.Labels[0].Name != "__name__" {
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
	if len(seen) != rg.UniqueSeries {
		t.Errorf("%d distinct series decoded, ring says %d", len(seen), rg.UniqueSeries)
	}
	churned := int(w.Churn*float64(perRound) + 0.5)
	if want := perRound + (w.Rounds-1)*churned; rg.UniqueSeries != want {
		t.Errorf("unique series %d, want %d", rg.UniqueSeries, want)
	}
}

// userLabel is 1 when ls has a user_id label.
func userLabel(ls []prompb.Label) int {
	for _, l := range ls {
		if l.Name == "user_id" {
			return 1
		}
	}
	return 0
}

// TestUserMetrics: the series of the first UserMetrics metrics differ from the
// others of their group only in user_id, so that taking it away leaves one
// series per group (and per churned pod); the other metrics have no user_id.
func TestUserMetrics(t *testing.T) {
	t.Parallel()
	w := smallWorkload()
	w.UserMetrics, w.Users = 1, 10
	rg, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	withUser, folded := 0, map[string]bool{}
	for _, p := range rg.Payloads {
		raw, err := snappy.Decode(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range wr.Timeseries {
			if userLabel(ts.Labels) == 0 {
				if ts.Labels[0].Value == "loadgen_m0000_total" {
					t.Fatalf("user metric without user_id: %v", ts.Labels)
				}
				continue
			}
			if ts.Labels[0].Value != "loadgen_m0000_total" {
				t.Fatalf("user_id on another metric: %v", ts.Labels)
			}
			withUser++
			rest := slices.DeleteFunc(slices.Clone(ts.Labels), func(l prompb.Label) bool { return l.Name == "user_id" })
			folded[prompb.LabelsToString(rest)] = true
		}
	}
	if want := w.Rounds * w.SeriesPerMetric; withUser != want {
		t.Errorf("%d samples with user_id, want %d", withUser, want)
	}
	// 5 groups in round 0; each churned series makes a pod of its own.
	churned := int(w.Churn*float64(w.Metrics*w.SeriesPerMetric) + 0.5)
	groups := w.SeriesPerMetric / w.Users
	if len(folded) < groups || len(folded) > groups+(w.Rounds-1)*churned {
		t.Errorf("%d series without user_id, want %d plus at most the churned ones", len(folded), groups)
	}
}

func TestWorkloadBounds(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func(*Workload)
	}{
		{"no metrics", func(w *Workload) { w.Metrics = 0 }},
		{"too many series", func(w *Workload) { w.Metrics, w.SeriesPerMetric = 10_000, 10_000 }},
		{"churn over 1", func(w *Workload) { w.Churn = 1.5 }},
		{"no labels", func(w *Workload) { w.Labels = 0 }},
		{"zero batch", func(w *Workload) { w.Batch = 0 }},
		{"ring too big", func(w *Workload) { w.MaxRingBytes = 100 }},
		{"more user metrics than metrics", func(w *Workload) { w.UserMetrics, w.Users = 4, 10 }},
		{"no users", func(w *Workload) { w.UserMetrics, w.Users = 1, 0 }},
		{"unknown protocol", func(w *Workload) { w.Protocol = "influx" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w := smallWorkload()
			tc.edit(&w)
			if _, err := Build(w); err == nil {
				t.Error("want an error")
			}
		})
	}
}

// TestOTLPMatchesRemoteWrite decodes the OTLP ring as VictoriaMetrics does
// (lib/protoparser/opentelemetry/pb) and finds the samples of the remote-write
// ring, gauges renamed: same labels, timestamps and values, one sample per
// point, and the same digest for the same settings.
func TestOTLPMatchesRemoteWrite(t *testing.T) {
	t.Parallel()
	w := smallWorkload()
	w.UserMetrics, w.Users = 1, 10
	rw, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int{}
	for _, p := range rw.Payloads {
		raw, err := snappy.Decode(nil, p)
		if err != nil {
			t.Fatal(err)
		}
		var u prompb.WriteRequestUnmarshaler
		wr, err := u.UnmarshalProtobuf(raw)
		if err != nil {
			t.Fatal(err)
		}
		for _, ts := range wr.Timeseries {
			ls := slices.Clone(ts.Labels)
			var m int
			if _, err := fmt.Sscanf(ls[0].Value, "loadgen_m%04d_total", &m); err != nil {
				t.Fatal(err)
			}
			ls[0].Value = OTLPName(m)
			want[fmt.Sprintf("%s %d %g", prompb.LabelsToString(ls), ts.Samples[0].Timestamp, ts.Samples[0].Value)]++
		}
	}

	w.Protocol = OTLP
	ot, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Build(w)
	if err != nil {
		t.Fatal(err)
	}
	if ot.Digest != again.Digest || ot.Digest == rw.Digest {
		t.Errorf("digests: OTLP %s and %s, remote write %s", ot.Digest, again.Digest, rw.Digest)
	}
	if ot.UniqueSeries != rw.UniqueSeries || len(ot.Payloads) != len(rw.Payloads) {
		t.Errorf("OTLP ring: %d series in %d requests, remote write %d in %d", ot.UniqueSeries, len(ot.Payloads), rw.UniqueSeries, len(rw.Payloads))
	}
	got := map[string]int{}
	for i, p := range ot.Payloads {
		zr, err := gzip.NewReader(bytes.NewReader(p))
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		raw, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		c := &otlpCollector{got: got}
		if err := pb.DecodeMetricsData(raw, c, pb.DecodeMetricsOptions{}); err != nil {
			t.Fatalf("payload %d: %v", i, err)
		}
		if c.samples != rw.Samples[i] || c.samples != ot.Samples[i] {
			t.Errorf("payload %d: %d points, ring says %d, remote write has %d", i, c.samples, ot.Samples[i], rw.Samples[i])
		}
		if c.kinds["gauge"] == 0 || c.kinds["counter"] == 0 {
			t.Errorf("payload %d: metric kinds %v, want gauges and counters", i, c.kinds)
		}
	}
	if !maps.Equal(got, want) {
		t.Errorf("OTLP decodes to %d distinct samples, remote write has %d; e.g. %v", len(got), len(want), firstDiff(got, want))
	}
}

// otlpCollector keeps what VictoriaMetrics' OTLP decoder makes of a request.
type otlpCollector struct {
	got     map[string]int
	samples int
	kinds   map[string]int
}

func (c *otlpCollector) PushSample(mm *pb.MetricMetadata, suffix string, ls *promutil.Labels, tsNano uint64, v float64, _ uint32) {
	lbs := []prompb.Label{{Name: "__name__", Value: mm.Name + suffix}}
	for _, l := range ls.Labels {
		lbs = append(lbs, prompb.Label{Name: l.Name, Value: l.Value})
	}
	slices.SortFunc(lbs, func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	c.got[fmt.Sprintf("%s %d %g", prompb.LabelsToString(lbs), int64(tsNano/1e6), v)]++
	c.samples++
	if c.kinds == nil {
		c.kinds = map[string]int{}
	}
	c.kinds[mm.Type.String()]++
}

func (c *otlpCollector) PushMetricMetadata(*pb.MetricMetadata) {}

func firstDiff(a, b map[string]int) string {
	for k, n := range a {
		if b[k] != n {
			return fmt.Sprintf("%q: %d against %d", k, n, b[k])
		}
	}
	for k, n := range b {
		if a[k] != n {
			return fmt.Sprintf("%q: %d against %d", k, a[k], n)
		}
	}
	return "none"
}
