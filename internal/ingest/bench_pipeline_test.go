package ingest

import (
	"bytes"
	"hash/maphash"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/e2e/workload"
	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// benchRequests are the requests `make bench` sends (the load generator's
// defaults): 8 rounds of 100 metrics × 500 series with Kubernetes-shaped labels
// and 5% churn per round, in 200 requests of 2,000 series, 67,500 distinct series.
// Replaying them in turn keeps the series cache and the requests larger than the
// CPU cache, and gives compression what a real scrape gives it: one request
// repeated would let the CPU learn its data and flatter every pass over it.
var benchRequests = sync.OnceValues(func() ([][]byte, error) {
	rg, err := workload.Build(workload.Workload{
		Metrics: 100, SeriesPerMetric: 500, Labels: 10, Churn: 0.05, Rounds: 8, Batch: 2000,
		Seed: 1, Start: 1763700000000, Interval: 15 * time.Second, MaxRingBytes: 1 << 30,
	})
	if err != nil {
		return nil, err
	}
	return rg.Payloads, nil
})

// processCPU is the CPU time the process has used, user and system.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type staticRules struct{ r *relabel.Rules }

func (s staticRules) RulesFor(tenant.ID) *relabel.Rules { return s.r }

// BenchmarkIngestPipeline is BenchmarkIngest with every stage on, as a production
// cardguard runs: a relabel rule, cardinality estimation, the label guard,
// series and label limits (none of them reached) and the collision check of
// folded series (no series collide), over benchRequests, whose series
// repeat from round to round, as scrapes do. It runs with the series cache and
// without it, side by side, and with the rule of `make bench` (labeldrop az),
// which changes every series and so forwards a re-encoded request.
func BenchmarkIngestPipeline(b *testing.B) {
	b.Run("unchanged", func(b *testing.B) { benchPipelineRule(b, "never_present_label", true) })
	b.Run("rewrite", func(b *testing.B) { benchPipelineRule(b, "az", false) })
}

func benchPipelineRule(b *testing.B, drop string, noCache bool) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer up.Close()
	scheme, _ := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: up.URL, Timeout: 10 * time.Second})
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	rules, err := relabel.ParseConfigs([]byte("- action: labeldrop\n  regex: " + drop + "\n"))
	if err != nil {
		b.Fatal(err)
	}
	compiled, err := relabel.Compile(rules)
	if err != nil {
		b.Fatal(err)
	}
	tracker, err := cardinality.New(cardinality.Config{})
	if err != nil {
		b.Fatal(err)
	}
	def := limits.Default()
	def.MaxSeries = 10_000_000
	def.MaxSeriesPerMetric = 1_000_000
	def.LabelGuard.MaxValuesPerLabel = 100_000
	registry, err := limits.NewRegistry(def, nil, nil, logger)
	if err != nil {
		b.Fatal(err)
	}
	aggCfg := aggregate.Config{}
	if err := aggCfg.Validate(); err != nil {
		b.Fatal(err)
	}
	h := New(Config{}, scheme, Stages{
		Rules:    staticRules{compiled},
		Observer: tracker,
		Guard:    guard.New(guard.Options{}),
		Limits:   registry,
		Enforcer: limits.NewEnforcer(limits.EnforcerOptions{}),
		Folder:   aggregate.New(aggCfg, nil, logger),
		Claims:   aggregate.NewClaims(time.Hour, 4<<20),
	}, reg, logger)
	bodies, err := benchRequests()
	if err != nil {
		b.Fatal(err)
	}
	t := tenant.MustParse("1")
	cache := h.cache
	for _, bc := range []struct {
		name  string
		cache *seriesCache
	}{{"series-cache", cache}, {"no-cache", nil}} {
		if bc.cache == nil && !noCache {
			continue
		}
		h.cache = bc.cache
		b.Run(bc.name, func(b *testing.B) { benchPipeline(b, h, bodies, t) })
	}
}

func benchPipeline(b *testing.B, h *Handler, bodies [][]byte, t tenant.ID) {
	serve := func(body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		req.Header.Set("Content-Encoding", "snappy")
		rec := httptest.NewRecorder()
		h.ServeWrite(rec, req, t)
		if rec.Code != http.StatusNoContent {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	size := 0
	for _, body := range bodies {
		serve(body) // first sight of every series happens once, as after a restart
		size += len(body)
	}
	b.SetBytes(int64(size / len(bodies)))
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPU(b)
	for i := 0; i < b.N; i++ {
		serve(bodies[i%len(bodies)])
	}
	cpu := processCPU(b) - cpu0
	series := float64(b.N) * 2000
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/series, "ns/series")
	// The process's CPU time, the upstream's share included: steadier than the
	// wall clock with two goroutines handing requests to each other.
	b.ReportMetric(float64(cpu.Nanoseconds())/series, "cpu-ns/series")
}

// BenchmarkSeriesKey compares the cache key's hash with the unseeded xxhash it
// replaced, side by side, over the label fields of the series of benchRequests.
func BenchmarkSeriesKey(b *testing.B) {
	bodies, err := benchRequests()
	if err != nil {
		b.Fatal(err)
	}
	var labels [][]byte
	for _, body := range bodies[:20] {
		var bt batch
		if _, err := bt.scan(mustDecode(body)); err != nil {
			b.Fatal(err)
		}
		for _, s := range bt.series {
			labels = append(labels, s.raw[s.msg:s.rest])
		}
	}
	seed := maphash.MakeSeed()
	var sink uint64
	b.Run("maphash-seeded", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			sink += maphash.Bytes(seed, labels[i%len(labels)])
		}
	})
	b.Run("xxhash", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			sink += xxhash.Sum64(labels[i%len(labels)])
		}
	})
	_ = sink
}
