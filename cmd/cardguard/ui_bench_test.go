package main

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// BenchmarkDashboardTenantPage renders the tenant page through the whole app (the
// adapters over the real tracker and query usage, then the template) for a tenant
// with 10,000 metrics, a tenth of them queried.
func BenchmarkDashboardTenantPage(b *testing.B) {
	cfg := defaultConfig()
	cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: "http://127.0.0.1:1"}
	o, err := parseFlags([]string{"-dataDir=" + b.TempDir()}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	a, err := newApp(cfg, o, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	const metrics = 10000
	tn := tenant.ID{}
	labels := make([]prompb.Label, 3)
	for m := range metrics {
		name := fmt.Sprintf("app_metric_%05d_total", m)
		for s := range 1 + m%7 {
			labels[0] = prompb.Label{Name: "__name__", Value: name}
			labels[1] = prompb.Label{Name: "instance", Value: fmt.Sprintf("host-%d", s)}
			labels[2] = prompb.Label{Name: "job", Value: "app"}
			a.tracker.Observe(tn, name, labels, uint64(m)<<8|uint64(s))
		}
	}
	a.tracker.Refresh()
	for m := 0; m < metrics; m += 10 {
		a.usage.Record(tn, "query", url.Values{"query": {fmt.Sprintf("sum by (job) (app_metric_%05d_total)", m)}}, http.Header{}, time.Now())
		if m%1000 == 0 {
			a.usage.Flush()
		}
	}
	a.usage.Flush()
	h := a.routes()
	for _, q := range []string{"", "&sort=last&page=20", "&q=_00"} {
		b.Run("query="+q, func(b *testing.B) {
			target := "/ui/fragment/tenant?tenant=0" + q
			b.ReportAllocs()
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d: %s", rec.Code, rec.Body)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}
