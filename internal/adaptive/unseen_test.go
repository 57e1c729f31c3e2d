package adaptive

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/assets"
	"github.com/cardguard/cardguard/internal/queryaudit"
)

// TestUncreditedReadsWithholdDrops: a read the recorder parsed but could not
// credit to metrics may read any metric, like one it could not parse: a
// selector without a name matching more metrics than it credits, or a
// metric past the tenant's cap of recorded metrics.
func TestUncreditedReadsWithholdDrops(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		cfg   queryaudit.RecorderConfig
		query string
	}{
		{"selector too wide", queryaudit.RecorderConfig{MaxResolvedNames: 2}, `sum(rate({__name__=~".+"}[5m]))`},
		{"metrics over the cap", queryaudit.RecorderConfig{MaxMetricsPerTenant: 1}, `sum by (instance) (rate(app_requests[5m])) + sum(node_cpu) + sum(app_hist_bucket)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := workload()
			rec := queryaudit.NewRecorder(tc.cfg, s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			rec.Record(tn, "query", url.Values{"query": {tc.query}}, nil, time.Now())
			rec.Flush()
			var epoch atomic.Int64
			e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, nil))
			l := e.Recommendations(context.Background(), tn, true)
			for _, r := range l.Items {
				if r.Kind == KindDrop {
					t.Errorf("%s recommended for drop although %q may read it: %s", r.Metric, tc.query, r.Reason)
				}
			}
			if len(l.Withheld) == 0 || !strings.Contains(l.Withheld[0].Reason, "could not answer") {
				t.Errorf("withheld %+v, want the drops withheld for the uncredited read", l.Withheld)
			}
		})
	}
}

// TestAssetExpressionsPastTheCap: a dashboard expression that counts a
// metric's series keeps the metric from aggregation even when the metric
// has more expressions than an AssetUse keeps.
func TestAssetExpressionsPastTheCap(t *testing.T) {
	t.Parallel()
	up := t.TempDir()
	s := workload()
	book, err := assets.New(assets.Config{UploadDir: up, MaxRefsPerMetric: 3}, s, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var panels []string
	for i := range 3 {
		panels = append(panels, fmt.Sprintf(`{"title":"sum %d","targets":[{"expr":"sum by (instance) (rate(app_requests{team=\"team-%d\"}[5m]))"}]}`, i, i))
	}
	panels = append(panels, `{"title":"pods per instance","targets":[{"expr":"count by (instance) (app_requests)"}]}`)
	if _, err := book.Put(tn, "d.json", []byte(`{"title":"D","panels":[`+strings.Join(panels, ",")+`]}`)); err != nil {
		t.Fatal(err)
	}
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, NewAssetSource(book))
	l := e.Recommendations(context.Background(), tn, true)
	if r, ok := byMetric(l)["app_requests"]; ok {
		t.Errorf("app_requests recommended (%s %v) although a panel counts its series: %s", r.Kind, r.Labels, r.Reason)
	}
}
