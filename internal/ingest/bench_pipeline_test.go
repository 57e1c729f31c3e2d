package ingest

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

type staticRules struct{ r *relabel.Rules }

func (s staticRules) RulesFor(tenant.ID) *relabel.Rules { return s.r }

// BenchmarkIngestPipeline is BenchmarkIngest with every stage on, as a production
// cardguard runs: a relabel rule, cardinality estimation, the label guard and
// series and label limits (none of them reached). The series repeat from request
// to request, as scrapes do. It runs with the series cache and without it, side by
// side, and with a rule that changes every series (labeldrop of a label each
// series has, as in `make bench`), which forwards a re-encoded request.
func BenchmarkIngestPipeline(b *testing.B) {
	b.Run("unchanged", func(b *testing.B) { benchPipelineRule(b, "never_present_label", true) })
	b.Run("rewrite", func(b *testing.B) { benchPipelineRule(b, "label_05", false) })
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
	h := New(Config{}, scheme, Stages{
		Rules:    staticRules{compiled},
		Observer: tracker,
		Guard:    guard.New(guard.Options{}),
		Limits:   registry,
		Enforcer: limits.NewEnforcer(limits.EnforcerOptions{}),
	}, reg, logger)
	// 34 requests of 2,000 series, 68,000 series in all (about what `make bench`
	// sends), taken in turn: the series cache and the requests are larger than
	// the CPU cache, as in a real process.
	var bodies [][]byte
	for i := 0; i < 34; i++ {
		bodies = append(bodies, makeRequestFrom(i*2000, 2000, 10))
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
	for i := 0; i < b.N; i++ {
		serve(bodies[i%len(bodies)])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/2000, "ns/series")
}
