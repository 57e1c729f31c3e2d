package ingest

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

type pipelineUnderTest struct {
	h       *Handler
	up      *fakeUpstream
	reg     *prometheus.Registry
	tracker *cardinality.Tracker
	enf     *limits.Enforcer
}

// switchRules lets a test change the rules between requests, as SIGHUP does.
type switchRules struct{ r *relabel.Rules }

func (s *switchRules) RulesFor(tenant.ID) *relabel.Rules { return s.r }

func newPipelineUnderTest(t *testing.T, clock func() time.Time, def limits.Limits, rules *switchRules, cached bool) *pipelineUnderTest {
	t.Helper()
	up := newFakeUpstream(t)
	scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: up.srv.URL, Timeout: 5 * time.Second})
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	tracker, err := cardinality.New(cardinality.Config{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	registry, err := limits.NewRegistry(def, nil, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	enf := limits.NewEnforcer(limits.EnforcerOptions{Registerer: reg, Now: clock})
	h := New(Config{}, scheme, Stages{
		Rules:    rules,
		Observer: tracker,
		Guard:    guard.New(guard.Options{Now: clock}),
		Limits:   registry,
		Enforcer: enf,
	}, reg, logger)
	h.now = clock
	// A cache window much longer than the stages' windows, so that the test shows
	// the per-stage period checks at work and not the cache's own reset.
	h.cache = newSeriesCache(24 * time.Hour)
	if !cached {
		h.cache = nil
	}
	return &pipelineUnderTest{h: h, up: up, reg: reg, tracker: tracker, enf: enf}
}

// TestSeriesCacheMatchesUncached is a differential test: the same stream of
// requests, across guard and limiter windows and estimation buckets, through a
// handler with the series cache and one without, must forward the same bytes,
// answer the same statuses and count the same discards and estimates.
func TestSeriesCacheMatchesUncached(t *testing.T) {
	t.Parallel()
	for _, mode := range []limits.Mode{limits.ModeEnforce, limits.ModeDryRun} {
		t.Run(string(mode), func(t *testing.T) {
			t.Parallel()
			cacheDifferential(t, mode)
		})
	}
}

func cacheDifferential(t *testing.T, mode limits.Mode) {
	now := time.Date(2026, 11, 21, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	cfgs, err := relabel.ParseConfigs([]byte(`
- action: labeldrop
  regex: az
- action: drop
  source_labels: [__name__]
  regex: debug_.*
- action: replace
  source_labels: [user]
  regex: "1(.*)"
  target_label: user
  replacement: one$1
`))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := relabel.Compile(cfgs)
	if err != nil {
		t.Fatal(err)
	}
	def := limits.Default()
	def.MaxSeries = 300
	def.MaxSeriesPerMetric = 120
	def.LabelGuard.MaxValuesPerLabel = 40
	def.LabelGuard.Action = limits.GuardOverflowValue
	def.Mode = mode
	cfgs2, err := relabel.ParseConfigs([]byte("- action: drop_metrics\n  regex: queue_depth\n"))
	if err != nil {
		t.Fatal(err)
	}
	rules2, err := relabel.Compile(cfgs2)
	if err != nil {
		t.Fatal(err)
	}
	rulesA, rulesB := &switchRules{rules}, &switchRules{rules}
	cached := newPipelineUnderTest(t, clock, def, rulesA, true)
	plain := newPipelineUnderTest(t, clock, def, rulesB, false)

	rng := rand.New(rand.NewPCG(1, 2))
	tn := tenant.MustParse("1")
	for req := 0; req < 300; req++ {
		if req == 150 {
			rulesA.r, rulesB.r = rules2, rules2
		}
		if req%25 == 24 {
			// 25 minutes: crosses estimation buckets, and every 60 minutes the
			// guard's and the limiter's windows.
			now = now.Add(25 * time.Minute)
			cached.tracker.Rotate(now)
			plain.tracker.Rotate(now)
		}
		var wr prompb.WriteRequest
		for s := 0; s < 50; s++ {
			metric := []string{"http_requests_total", "debug_events", "queue_depth", "user_logins"}[rng.IntN(4)]
			ls := []prompb.Label{{Name: "__name__", Value: metric}, {Name: "az", Value: fmt.Sprint("z", rng.IntN(3))}}
			ls = append(ls, prompb.Label{Name: "user", Value: fmt.Sprint(rng.IntN(60 + req))})
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: 1, Timestamp: now.UnixMilli()}}})
		}
		body := encode(&wr)
		for _, p := range []*pipelineUnderTest{cached, plain} {
			hr := httptest.NewRequest("POST", "/api/v1/write", bytes.NewReader(body))
			rec := httptest.NewRecorder()
			p.h.ServeWrite(rec, hr, tn)
			if rec.Code != 204 {
				t.Fatalf("request %d: %d %s", req, rec.Code, rec.Body)
			}
		}
		a, b := cached.up.last(), plain.up.last()
		if !bytes.Equal(a, b) {
			t.Fatalf("request %d: forwarded bodies differ with the cache", req)
		}
		if mode == limits.ModeEnforce && req < 150 && a != nil {
			// What the rules do shows in what VictoriaMetrics gets.
			var wru prompb.WriteRequestUnmarshaler
			fw, err := wru.UnmarshalProtobuf(mustDecode(a))
			if err != nil {
				t.Fatalf("request %d: forwarded body: %v", req, err)
			}
			for _, ts := range fw.Timeseries {
				for _, l := range ts.Labels {
					if l.Name == "az" || (l.Name == "user" && strings.HasPrefix(l.Value, "1")) || strings.HasPrefix(l.Value, "debug_") {
						t.Fatalf("request %d: forwarded %v", req, ts.Labels)
					}
				}
			}
		}
	}
	discards, relabeled := "cardguard_discarded_samples_total", "cardguard_relabeled_series_total"
	if mode == limits.ModeDryRun {
		discards, relabeled = "cardguard_dry_run_discarded_samples_total", "cardguard_dry_run_relabeled_series_total"
	}
	for _, reason := range []string{"max_series", "max_series_per_metric", "relabel_drop", "label_guard"} {
		a := counterValue(t, cached.reg, discards, map[string]string{"reason": reason})
		b := counterValue(t, plain.reg, discards, map[string]string{"reason": reason})
		if a != b {
			t.Errorf("%s discards: %v with the cache, %v without", reason, a, b)
		}
	}
	for _, action := range []string{"rewrite", "drop", "overflow_value"} {
		a := counterValue(t, cached.reg, relabeled, map[string]string{"action": action})
		b := counterValue(t, plain.reg, relabeled, map[string]string{"action": action})
		if a != b || a == 0 {
			t.Errorf("%s: %v with the cache, %v without (and it must happen)", action, a, b)
		}
	}
	if a, b := cached.enf.SeriesCount(tn), plain.enf.SeriesCount(tn); a != b || a == 0 {
		t.Errorf("series count %d with the cache, %d without", a, b)
	}
	cached.tracker.Refresh()
	plain.tracker.Refresh()
	ta, _ := cached.tracker.Tenant(tn)
	tb, _ := plain.tracker.Tenant(tn)
	if ta.ActiveSeries != tb.ActiveSeries || ta.DailySeries != tb.DailySeries {
		t.Errorf("estimates %+v with the cache, %+v without", ta, tb)
	}
}

// TestSlotSize: two slots to a cache line, as the table's design assumes.
func TestSlotSize(t *testing.T) {
	if n := unsafe.Sizeof(slot{}); n != 32 {
		t.Fatalf("slot is %d bytes, want 32", n)
	}
}

// TestTable checks the open-addressing table against a Go map, including key 0,
// growth, the entry cap and reset.
func TestTable(t *testing.T) {
	t.Parallel()
	var tb table
	want := map[uint64]cacheEntry{}
	rng := rand.New(rand.NewPCG(3, 4))
	const max = 5000
	for i := 0; i < 20000; i++ {
		k := rng.Uint64() % 8000
		if i%997 == 0 {
			k = 0
		}
		e := cacheEntry{mask: uint32(i), observed: uint16(i)}
		tb.put(k, e, max)
		if _, ok := want[slotKey(k)]; ok || len(want) < max {
			want[slotKey(k)] = e
		}
		if tb.n != len(want) {
			t.Fatalf("step %d: %d entries, want %d", i, tb.n, len(want))
		}
	}
	for k, e := range want {
		if got, ok := tb.get(k); !ok || got != e {
			t.Fatalf("key %d: %+v %v, want %+v", k, got, ok, e)
		}
	}
	if _, ok := tb.get(123456789); ok {
		t.Fatal("found a key never put")
	}
	tb.reset()
	if _, ok := tb.get(1); ok || tb.n != 0 {
		t.Fatal("reset kept entries")
	}
}

// BenchmarkCacheLookup compares the table with a Go map on 67,500 random keys
// (the benchmark workload's distinct series), looked up in random order.
func BenchmarkCacheLookup(b *testing.B) {
	const n = 67500
	rng := rand.New(rand.NewPCG(5, 6))
	keys := make([]uint64, n)
	var tb table
	m := make(map[uint64]cacheEntry)
	for i := range keys {
		keys[i] = rng.Uint64()
		tb.put(keys[i], cacheEntry{observed: 1}, 1<<30)
		m[keys[i]] = cacheEntry{observed: 1}
	}
	order := rng.Perm(n)
	b.Run("table", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, ok := tb.get(keys[order[i%n]]); !ok {
				b.Fatal("missing")
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, ok := m[keys[order[i%n]]]; !ok {
				b.Fatal("missing")
			}
		}
	})
}

// TestCacheSpreadsKeys: with random keys, the entries of every shard's table sit
// next to their home slot, so that a lookup reads one or two slots. Shards and
// slots once took the same low bits of the key, and each shard's keys crowded
// into 1/64 of its slots: a lookup read 17.5 slots on average.
func TestCacheSpreadsKeys(t *testing.T) {
	c := newSeriesCache(time.Hour)
	now := time.Now()
	rng := rand.New(rand.NewPCG(7, 8))
	const n = 67500
	for range n {
		c.put(cacheKey{tenant.MustParse("0"), rng.Uint64()}, cacheEntry{observed: 1}, now)
	}
	if got := c.len(); got != n {
		t.Fatalf("%d entries, want %d", got, n)
	}
	var probes, entries int
	for i := range c.shards {
		tb := &c.shards[i].t
		mask := uint64(len(tb.slots) - 1)
		for j, s := range tb.slots {
			if s.key != 0 {
				probes += int((uint64(j)-s.key)&mask) + 1
				entries++
			}
		}
	}
	// Linear probing at the table's load factor (at most 3/4) averages under 2.5.
	if mean := float64(probes) / float64(entries); mean > 2.5 {
		t.Errorf("a lookup of a present key reads %.1f slots on average, want at most 2.5", mean)
	}
}
