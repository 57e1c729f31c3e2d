package ingest

import (
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/upstream"
)

func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if want, ok := labels[lp.GetName()]; ok && want != lp.GetValue() {
					continue next
				}
			}
			return metricNumber(m)
		}
	}
	return 0
}

func metricNumber(m *dto.Metric) float64 {
	if c := m.GetCounter(); c != nil {
		return c.GetValue()
	}
	return m.GetGauge().GetValue()
}

// TestRelabelInPipeline: rules rewrite and drop series, the request is re-encoded
// with what is left, and every change is counted once per series; in dry run
// nothing changes and the would-be changes are counted apart.
func TestRelabelInPipeline(t *testing.T) {
	t.Parallel()
	cfgs, err := relabel.ParseConfigs([]byte("- action: labeldrop\n  regex: az\n- action: drop\n  source_labels: [__name__]\n  regex: debug_.*\n"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := relabel.Compile(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	for _, dry := range []bool{false, true} {
		up := newFakeUpstream(t)
		scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: up.srv.URL, Timeout: 5 * time.Second})
		reg := prometheus.NewRegistry()
		logger := slog.New(slog.NewTextHandler(io.Discard, nil))
		def := limits.Default()
		if dry {
			def.Mode = limits.ModeDryRun
		}
		registry, _ := limits.NewRegistry(def, nil, nil, logger)
		enf := limits.NewEnforcer(limits.EnforcerOptions{Registerer: reg})
		h := New(Config{}, scheme, Stages{Rules: staticRules{rules}, Limits: registry, Enforcer: enf}, reg, logger)
		series := func(name, az string) prompb.TimeSeries {
			return prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: name}, {Name: "az", Value: az}, {Name: "job", Value: "x"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}
		}
		body := encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{series("up", "a"), series("debug_x", "a"), series("req", "b"), series("debug_y", "b")}})
		if rec := post(h, body, nil); rec.Code != 204 {
			t.Fatalf("dry=%v: status %d %s", dry, rec.Code, rec.Body)
		}
		var wru prompb.WriteRequestUnmarshaler
		wr, err := wru.UnmarshalProtobuf(mustDecode(up.bodies[0]))
		if err != nil {
			t.Fatal(err)
		}
		rewrite := counterValue(t, reg, "cardguard_relabeled_series_total", map[string]string{"action": "rewrite"})
		dryRewrite := counterValue(t, reg, "cardguard_dry_run_relabeled_series_total", map[string]string{"action": "rewrite"})
		drops := counterValue(t, reg, "cardguard_discarded_samples_total", map[string]string{"reason": "relabel_drop"})
		wouldDrop := counterValue(t, reg, "cardguard_dry_run_discarded_samples_total", map[string]string{"reason": "relabel_drop"})
		if !dry {
			if len(wr.Timeseries) != 2 || len(wr.Timeseries[0].Labels) != 2 || string(up.bodies[0]) == string(body) {
				t.Errorf("enforce: forwarded %v", wr.Timeseries)
			}
			if rewrite != 2 || drops != 2 || dryRewrite != 0 {
				t.Errorf("enforce: rewrite=%v drops=%v dryRewrite=%v, want 2, 2, 0", rewrite, drops, dryRewrite)
			}
		} else {
			if string(up.bodies[0]) != string(body) {
				t.Errorf("dry run: the request was changed")
			}
			if rewrite != 0 || dryRewrite != 2 || wouldDrop != 2 || drops != 0 {
				t.Errorf("dry run: rewrite=%v dryRewrite=%v wouldDrop=%v drops=%v, want 0, 2, 2, 0", rewrite, dryRewrite, wouldDrop, drops)
			}
		}
	}
}

// TestRelabelScratchDoesNotAliasRequest: when the rules leave a series
// unchanged, relabel.Apply returns the series' own labels, which live in the
// request's buffers; keeping that as the next call's scratch let a later
// request's relabeling write over its own series' labels. A request whose
// series the rule leaves alone, then real Prometheus requests (1.0 and 2.0) it
// rewrites: what is forwarded must be exactly the input without the label.
func TestRelabelScratchDoesNotAliasRequest(t *testing.T) {
	up := newLastBody(t)
	h := newTestHandler(t, up.srv.URL, Config{}, 5*time.Second)
	cfgs, err := relabel.ParseConfigs([]byte("- action: labeldrop\n  regex: job\n"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := relabel.Compile(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	h.stages.Rules = staticRules{rules}
	v1 := realPayloads(t, "prometheus-rw1-*.snappy")
	v2 := realPayloads(t, "prometheus-rw2-*.snappy")
	if len(v1) == 0 || len(v2) == 0 {
		t.Fatal("no captured payloads")
	}
	type payload struct {
		body []byte
		v2   bool
	}
	var reqs []payload
	for _, p := range v1 {
		reqs = append(reqs, payload{makeRequest(3, 4), false}, payload{p, false})
	}
	for _, p := range v2 {
		reqs = append(reqs, payload{makeRequest(3, 4), false}, payload{p, true})
	}
	var d v2Decoder
	forwarded := 0
	for round := 0; round < 2; round++ {
		for _, r := range reqs {
			body, isV2 := r.body, r.v2
			hdr := map[string]string(nil)
			if isV2 {
				hdr = map[string]string{"Content-Type": contentTypeV2, "X-Prometheus-Remote-Write-Version": "2.0.0"}
			}
			if rec := post(h, body, hdr); rec.Code != http.StatusNoContent {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			fw := up.take()
			if fw == nil {
				continue
			}
			forwarded++
			var w1, w2 prompb.WriteRequestUnmarshaler
			got, err := w1.UnmarshalProtobuf(mustDecode(fw))
			if err != nil {
				t.Fatal(err)
			}
			want, err := w2.UnmarshalProtobuf(mustDecode(body))
			if isV2 {
				want, err = d.decode(mustDecode(body))
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Timeseries) != len(want.Timeseries) {
				t.Fatalf("forwarded %d series of %d", len(got.Timeseries), len(want.Timeseries))
			}
			for i := range want.Timeseries {
				var ls []prompb.Label
				for _, l := range want.Timeseries[i].Labels {
					if l.Name != "job" {
						ls = append(ls, l)
					}
				}
				if g := got.Timeseries[i].Labels; !sameLabels(g, ls) {
					t.Fatalf("round %d, series %d: forwarded %v, want %v", round, i, g, ls)
				}
			}
		}
	}
	if forwarded != 2*len(reqs) {
		t.Fatalf("%d of %d requests forwarded", forwarded, 2*len(reqs))
	}
}

// TestSeriesKeyIsSeeded: the cache key depends on the process's seed, so that
// nobody can compute keys ahead of time, and within one seed it is a function of
// the labels alone, whether they are read from the wire or were decoded.
func TestSeriesKeyIsSeeded(t *testing.T) {
	var b batch
	if _, err := b.scan(mustDecode(makeRequest(3, 5))); err != nil {
		t.Fatal(err)
	}
	s := &b.series[1]
	if s.rest == 0 {
		t.Fatal("labels do not come first in the test request")
	}
	var buf []byte
	s1, s2 := maphash.MakeSeed(), maphash.MakeSeed()
	key := seriesKey(s, &buf, s1)
	if again := seriesKey(s, &buf, s1); again != key {
		t.Error("the same series and seed gave two keys")
	}
	if seriesKey(s, &buf, s2) == key {
		t.Error("two seeds gave the same key")
	}
	if seriesKey(&b.series[2], &buf, s1) == key {
		t.Error("two series gave the same key")
	}
	decoded := series{Labels: []prompb.Label{{Name: "__name__", Value: "m"}}}
	other := series{Labels: []prompb.Label{{Name: "__name__", Value: "n"}}}
	dkey := seriesKey(&decoded, &buf, s1)
	if again := seriesKey(&decoded, &buf, s1); again != dkey || seriesKey(&other, &buf, s1) == dkey {
		t.Error("decoded labels: keys do not follow the labels")
	}
}
