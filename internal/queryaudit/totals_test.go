package queryaudit

import (
	"fmt"
	"log/slog"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

func totalsFixture(tb testing.TB, metrics int) (*Recorder, tenant.ID) {
	tb.Helper()
	t1 := tenant.MustParse("1:0")
	r := NewRecorder(RecorderConfig{}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	now := time.Now()
	for i := range metrics {
		r.Record(t1, "query", url.Values{"query": {fmt.Sprintf("sum by (job) (rate(m_%d[5m]))", i)}}, nil, now)
		if i%1000 == 999 {
			r.Flush()
		}
	}
	r.Record(t1, "query", url.Values{"query": {"sum(("}}, nil, now)
	r.Flush()
	return r, t1
}

// TestTotals: the totals alone are those of the metrics report.
func TestTotals(t *testing.T) {
	t.Parallel()
	r, t1 := totalsFixture(t, 10)
	want := r.MetricsReport(t1, nil, "all", "name", "asc", 0, 0, 0).Totals
	if got := r.Totals(t1); got != want || got.UnparsedQueries != 1 || got.Queries != 11 {
		t.Errorf("Totals %+v, report's %+v", got, want)
	}
	if got := r.Totals(tenant.MustParse("9")); got != (TenantTotals{}) {
		t.Errorf("unknown tenant: %+v", got)
	}
}

// BenchmarkTotals is what the series usage pays per report of one metric, for
// a tenant with 20000 metrics read: the totals, against the whole report it
// asked for before.
func BenchmarkTotals(b *testing.B) {
	r, t1 := totalsFixture(b, 20000)
	b.Run("totals", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r.Totals(t1)
		}
	})
	b.Run("metrics_report", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = r.MetricsReport(t1, nil, "all", "name", "asc", 0, 0, 0).Totals
		}
	})
}
