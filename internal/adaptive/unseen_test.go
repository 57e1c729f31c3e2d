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
	"github.com/cardguard/cardguard/internal/tenant"
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

// TestReadsThatBreak: for each read, through the recorder and the readers as
// in cardguard, app_requests is either left alone or aggregated without the
// labels the read uses.
func TestReadsThatBreak(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		query string
		keep  []string // labels that must not be aggregated away; nil: no aggregation at all
	}{
		{`count by (pod) (app_requests)`, nil},
		{`topk(5, app_requests)`, nil},
		{`absent(app_requests{pod="p1"})`, nil},
		{`sum by (instance) (rate(app_requests[5m])) / on(instance) group_left sum by (instance) (node_cpu)`, []string{"instance"}},
		{`sum by (pod) (rate(app_requests[5m])) * on(pod) group_left(team) max by (pod, team) (app_hist_bucket)`, []string{"pod"}},
		{`sum by (dst) (label_replace(rate(app_requests[5m]), "dst", "$1", "pod", "(.*)"))`, nil},
		{`sum by (pod) (rate({__name__=~"app_req.*"}[5m]))`, []string{"pod"}},
		{`sum by (user_id) (rate({__name__=~"app_.*"}[5m]))`, []string{"user_id"}},
		{`sum(rate(app_requests[5m])) by (pod) > 10`, []string{"pod"}},
		{`histogram_quantile(0.9, sum by (le, pod) (rate(app_requests[5m])))`, []string{"pod"}},
		{`sum(rate(app_requests{user_id!=""}[5m]))`, []string{"user_id"}},
		{`WITH (f(x) = sum by (pod) (x)) f(rate(app_requests[5m]))`, []string{"pod"}},
		{`sum(rate(app_requests[5m])) without (user_id)`, nil},
		{`quantile_over_time(0.9, app_requests[5m])`, nil},
		{`count_values("v", app_requests)`, nil},
		{`sort_by_label(sum by (pod) (rate(app_requests[5m])), "pod")`, []string{"pod"}},
		{`app_requests{instance="i1"} unless on(pod) app_hist_bucket`, nil},
	} {
		t.Run(tc.query, func(t *testing.T) {
			t.Parallel()
			s := workload()
			rec := queryaudit.NewRecorder(queryaudit.RecorderConfig{}, s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			readers := NewReaders()
			rec.AddListener(readers)
			rec.Record(tn, "query", url.Values{"query": {tc.query}}, nil, time.Now())
			rec.Flush()
			var epoch atomic.Int64
			e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, readers))
			l := e.Recommendations(context.Background(), tn, true)
			r, ok := byMetric(l)["app_requests"]
			if !ok {
				return
			}
			if r.Kind != KindAggregate {
				t.Fatalf("app_requests: %s recommended although read: %s", r.Kind, r.Reason)
			}
			if tc.keep == nil {
				t.Fatalf("app_requests: aggregating away %v recommended; the read's answer changes with any aggregation", r.Labels)
			}
			for _, k := range tc.keep {
				for _, l := range r.Labels {
					if l == k {
						t.Errorf("app_requests: %s aggregated away although the read uses it (%v)", k, r.Labels)
					}
				}
			}
			if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: tc.keep}, "admin", false); err == nil {
				t.Errorf("aggregating away %v, which the read uses, applied without force", tc.keep)
			}
		})
	}
}

// TestAssetReadsThatBreak is TestReadsThatBreak for the expressions of rule
// files and dashboards that nobody runs through cardguard.
func TestAssetReadsThatBreak(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file, body string
		keep             []string
	}{
		{"recording rule", "r.yml", "groups:\n- name: g\n  rules:\n  - record: pod:app_requests:rate5m\n    expr: sum by (pod) (rate(app_requests[5m]))\n", []string{"pod"}},
		{"vmalert MetricsQL rule", "v.yml", "groups:\n- name: g\n  type: prometheus\n  rules:\n  - alert: busy\n    expr: sum(rate(app_requests) keep_metric_names) by (pod) > 10\n", []string{"pod"}},
		{"vmalert WITH rule", "w.yml", "groups:\n- name: g\n  rules:\n  - alert: busy\n    expr: 'WITH (r = rate(app_requests[5m])) sum(r) by (instance) > 1'\n", []string{"instance"}},
		{"vmalert label_copy", "c.yml", "groups:\n- name: g\n  rules:\n  - record: x\n    expr: 'sum(label_copy(rate(app_requests[5m]), \"user_id\", \"u\")) by (u)'\n", nil},
		{"alert counting series", "a.yml", "groups:\n- name: g\n  rules:\n  - alert: few\n    expr: count(app_requests) < 3\n", nil},
		{"dashboard variable", "d.json", `{"title":"D","panels":[{"title":"P","targets":[{"expr":"sum by ($group) (rate(app_requests[$__rate_interval]))"}]}]}`, nil},
		{"dashboard query variable", "q.json", `{"title":"D","templating":{"list":[{"name":"pod","type":"query","query":"label_values(app_requests, pod)"}]},"panels":[]}`, []string{"pod"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := workload()
			book, err := assets.New(assets.Config{UploadDir: t.TempDir()}, s, prometheus.NewRegistry(), nil)
			if err != nil {
				t.Fatal(err)
			}
			st, err := book.Put(tn, tc.file, []byte(tc.body))
			if err != nil || len(st.Errors) > 0 || st.Expressions == 0 {
				t.Fatalf("put: %+v %v", st, err)
			}
			var epoch atomic.Int64
			e, _, _ := newTestEngine(t, s, &epoch, NewAssetSource(book))
			l := e.Recommendations(context.Background(), tn, true)
			r, ok := byMetric(l)["app_requests"]
			if !ok {
				return
			}
			if r.Kind != KindAggregate || tc.keep == nil {
				t.Fatalf("app_requests: %s %v recommended although %s reads it: %s", r.Kind, r.Labels, tc.name, r.Reason)
			}
			for _, k := range tc.keep {
				if slicesContains(r.Labels, k) {
					t.Errorf("app_requests: %s aggregated away although %s uses it (%v)", k, tc.name, r.Labels)
				}
			}
		})
	}
}

func slicesContains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// TestReadersFullStillWithhold: once the readers hold as many metrics as
// they may (other tenants read thousands of names), a read that counts a
// metric's series still keeps the metric from aggregation.
func TestReadersFullStillWithhold(t *testing.T) {
	t.Parallel()
	s := workload()
	rec := queryaudit.NewRecorder(queryaudit.RecorderConfig{}, s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	readers := NewReaders()
	rec.AddListener(readers)
	for i := range maxReaderKeys {
		other := tenant.ID{AccountID: uint32(2 + i/maxReaderKeysPerTenant)}
		readers.OnRead(&queryaudit.Read{Tenant: other, Query: fmt.Sprintf("junk_%d", i), At: time.Now(),
			Metrics: map[string]queryaudit.MetricUse{fmt.Sprintf("junk_%d", i): {AllLabels: true}}})
	}
	rec.Record(tn, "query", url.Values{"query": {`count by (instance) (app_requests)`}}, nil, time.Now())
	rec.Flush()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, readers))
	l := e.Recommendations(context.Background(), tn, true)
	if r, ok := byMetric(l)["app_requests"]; ok {
		t.Errorf("app_requests: %s %v recommended although a read counts its series: %s", r.Kind, r.Labels, r.Reason)
	}
	if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"user_id"}}, "admin", false); err == nil {
		t.Error("an aggregation under a counting read applied without force")
	}
}

// TestUncreditedReadsWithholdAggregation: a selector without a metric name
// that could not be credited to the metrics it selects uses labels of
// metrics unknown: no label of a read metric may go while it is in the
// retention.
func TestUncreditedReadsWithholdAggregation(t *testing.T) {
	t.Parallel()
	s := workload()
	rec := queryaudit.NewRecorder(queryaudit.RecorderConfig{MaxResolvedNames: 1}, s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	readers := NewReaders()
	rec.AddListener(readers)
	for _, q := range []string{`sum by (instance) (rate(app_requests[5m]))`, `sum by (pod) (rate({__name__=~"app_.*"}[5m]))`} {
		rec.Record(tn, "query", url.Values{"query": {q}}, nil, time.Now())
	}
	rec.Flush()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, readers))
	l := e.Recommendations(context.Background(), tn, true)
	if r, ok := byMetric(l)["app_requests"]; ok {
		t.Errorf("app_requests: %s %v recommended although an uncredited read groups by pod: %s", r.Kind, r.Labels, r.Reason)
	}
	if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"pod"}}, "admin", false); err == nil {
		t.Error("aggregating pod away applied without force under an uncredited read by pod")
	}
}

// TestOverflowLeavesWithTheRetention: reads of metrics past the cap withhold
// drops while they are in the usage retention, not for ever.
func TestOverflowLeavesWithTheRetention(t *testing.T) {
	t.Parallel()
	s := workload()
	var now atomic.Int64
	now.Store(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	rec := queryaudit.NewRecorder(queryaudit.RecorderConfig{MaxMetricsPerTenant: 1, Retention: 24 * time.Hour, Now: clock},
		s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	rec.Record(tn, "query", url.Values{"query": {`sum(app_hist_bucket) + sum(app_requests)`}}, nil, clock())
	rec.Flush()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, nil))
	if _, ok := byMetric(e.Recommendations(context.Background(), tn, true))["node_cpu"]; ok {
		t.Fatal("node_cpu recommended for drop while a read of a metric not recorded is in the retention")
	}
	now.Add(int64(72 * time.Hour))
	if _, ok := byMetric(e.Recommendations(context.Background(), tn, true))["node_cpu"]; !ok {
		t.Errorf("node_cpu withheld after the overflowing read left the retention: %+v", e.Recommendations(context.Background(), tn, false).Withheld)
	}
}

// TestOneTenantCannotFillTheReaders: a tenant reading made-up names fills its
// own share of the readers only. Another tenant's counting read is still kept
// (and keeps its metric from aggregation), and its summing reads leave its
// recommendations alone; the flooding tenant's own counting read, no longer
// kept, withholds the flooding tenant's metrics.
func TestOneTenantCannotFillTheReaders(t *testing.T) {
	t.Parallel()
	s := workload()
	rec := queryaudit.NewRecorder(queryaudit.RecorderConfig{}, s, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	readers := NewReaders()
	rec.AddListener(readers)
	flood := tenant.MustParse("2:0")
	for i := range maxReaderKeys {
		readers.OnRead(&queryaudit.Read{Tenant: flood, Query: fmt.Sprintf("junk_%d", i), At: time.Now(),
			Metrics: map[string]queryaudit.MetricUse{fmt.Sprintf("junk_%d", i): {AllLabels: true}}})
	}
	for _, q := range []string{`sum by (instance) (rate(app_requests[5m]))`, `count by (le) (app_hist_bucket)`} {
		rec.Record(tn, "query", url.Values{"query": {q}}, nil, time.Now())
	}
	rec.Record(flood, "query", url.Values{"query": {`count by (instance) (app_requests)`}}, nil, time.Now())
	rec.Flush()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, NewQuerySource(rec, readers))
	recs := byMetric(e.Recommendations(context.Background(), tn, true))
	if r := recs["app_requests"]; r.Kind != KindAggregate {
		t.Errorf("tenant %s: app_requests %+v, want an aggregation: another tenant's flood withheld it", tn, r)
	}
	if r, ok := recs["app_hist_bucket"]; ok {
		t.Errorf("tenant %s: app_hist_bucket %s recommended although its counting read should have been kept", tn, r.Kind)
	}
	if r, ok := byMetric(e.Recommendations(context.Background(), flood, true))["app_requests"]; ok {
		t.Errorf("flooding tenant: app_requests %s recommended although its counting read was not kept", r.Kind)
	}
}
