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

// TestOverflowReadsSurviveASnapshot: the reads of metrics past the cap are
// in the snapshot, and so are those of the metrics a snapshot too large
// leaves out.
func TestOverflowReadsSurviveASnapshot(t *testing.T) {
	t.Parallel()
	t1 := tenant.MustParse("1:0")
	r := NewRecorder(RecorderConfig{MaxMetricsPerTenant: 1}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	r.Record(t1, "query", url.Values{"query": {"a + b"}}, nil, time.Now())
	r.Flush()
	if got := r.Totals(t1).OverflowReads; got != 1 {
		t.Fatalf("overflow reads %d, want 1", got)
	}
	r2 := NewRecorder(RecorderConfig{MaxMetricsPerTenant: 1}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err := r2.Merge(r.Export()); err != nil {
		t.Fatal(err)
	}
	if got := r2.Totals(t1).OverflowReads; got != 1 {
		t.Errorf("overflow reads after a merge %d, want 1", got)
	}
	snap := r.Export()
	if snap.dropOldest() != 1 {
		t.Fatal("dropOldest dropped no metric")
	}
	r3 := NewRecorder(RecorderConfig{}, nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err := r3.Merge(snap); err != nil {
		t.Fatal(err)
	}
	if got := r3.Totals(t1).OverflowReads; got != 2 {
		t.Errorf("overflow reads after a snapshot left a metric out %d, want 2", got)
	}
}
