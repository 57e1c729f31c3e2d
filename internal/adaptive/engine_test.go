package adaptive

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/seriesusage"
	"github.com/cardguard/cardguard/internal/tenant"
)

// series is a fixed set of series standing in for the cardinality tracker:
// exact counts, so that the engine's own logic is what the tests see.
type series map[string][][]prompb.Label

func (s series) MetricNames(tenant.ID) []string {
	var out []string
	for m := range s {
		out = append(out, m)
	}
	return out
}

func (s series) MetricSeries(_ tenant.ID, m string) (int64, bool) {
	return int64(len(s[m])), len(s[m]) > 0
}

func (s series) LabelValues(_ tenant.ID, m string) map[string]int64 {
	vals := map[string]map[string]bool{}
	for _, ls := range s[m] {
		for _, l := range ls {
			if vals[l.Name] == nil {
				vals[l.Name] = map[string]bool{}
			}
			vals[l.Name][l.Value] = true
		}
	}
	out := map[string]int64{}
	for k, v := range vals {
		out[k] = int64(len(v))
	}
	return out
}

type fixedSource struct {
	name string
	ev   map[string]MetricEvidence
	st   SourceStatus
}

func (f fixedSource) Name() string { return f.name }
func (f fixedSource) Evidence(tenant.ID) (map[string]MetricEvidence, SourceStatus) {
	return f.ev, f.st
}

func lbls(kv ...string) []prompb.Label {
	var out []prompb.Label
	for i := 0; i < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return out
}

func hashOf(ls []prompb.Label) uint64 {
	var d xxhash.Digest
	for _, l := range ls {
		_, _ = d.WriteString(l.Name + "\xff" + l.Value + "\xff")
	}
	return d.Sum64()
}

// workload: app_requests{instance,pod,user_id,team}: pod follows instance
// (100 pods, each on its own instance) times 10 users; node_cpu{instance,cpu}
// read by no one; app_hist_bucket{le,pod,user_id} grouped by le.
func workload() series {
	s := series{}
	for p := range 100 {
		for u := range 10 {
			s["app_requests"] = append(s["app_requests"], lbls("__name__", "app_requests", "instance", fmt.Sprintf("i%d", p),
				"pod", fmt.Sprintf("p%d", p), "team", fmt.Sprintf("team-%c", 'a'+p%2), "user_id", fmt.Sprintf("u%d", u)))
		}
	}
	for i := range 5 {
		for c := range 4 {
			s["node_cpu"] = append(s["node_cpu"], lbls("__name__", "node_cpu", "cpu", fmt.Sprint(c), "instance", fmt.Sprintf("i%d", i)))
		}
	}
	for _, le := range []string{"0.1", "1", "+Inf"} {
		for p := range 3 {
			s["app_hist_bucket"] = append(s["app_hist_bucket"], lbls("__name__", "app_hist_bucket", "le", le, "pod", fmt.Sprintf("p%d", p)))
		}
	}
	return s
}

// counter counts exactly what "count without" would, over the workload.
type counter struct {
	s     series
	calls atomic.Int64
}

func (c *counter) Count(_ context.Context, _ tenant.ID, m string, sc Scope, without []string) (int64, error) {
	c.calls.Add(1)
	seen := map[string]bool{}
	for _, ls := range c.s[m] {
		if !sc.whole() && !matches([]*labels.Matcher{sc.matcher()}, ls) {
			continue
		}
		var b strings.Builder
		for _, l := range ls {
			if !contains(without, l.Name) && l.Name != "__name__" {
				b.WriteString(l.Name + "=" + l.Value + ",")
			}
		}
		seen[b.String()] = true
	}
	return int64(len(seen)), nil
}

func (c *counter) LabelValues(context.Context, tenant.ID, string, string) ([]string, error) {
	return nil, nil
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

type memStore struct{ m map[string][]byte }

func (s *memStore) Load() (map[string][]byte, error) {
	out := map[string][]byte{}
	for k, v := range s.m {
		out[k] = v
	}
	return out, nil
}
func (s *memStore) Save(k string, v []byte) error {
	if v == nil {
		delete(s.m, k)
	} else {
		s.m[k] = v
	}
	return nil
}

var tn = tenant.MustParse("1:0")

func queriesUsing() fixedSource {
	return fixedSource{name: "queries", st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"app_requests": {Reads: 10, LabelsKnown: true, Labels: map[string]LabelEvidence{
			"instance": {Uses: []string{"grouping"}, Who: []Ref{{Kind: "dashboard", Name: "API / latency", Query: "sum by (instance) (rate(app_requests[5m]))"}}},
		}},
		"app_hist_bucket": {Reads: 3, LabelsKnown: true, Labels: map[string]LabelEvidence{"le": {Uses: []string{"grouping", "function"}}}},
	}}
}

func newTestEngine(t testing.TB, s series, epoch *atomic.Int64, sources ...Source) (*Engine, *counter, *atomic.Int64) {
	t.Helper()
	c := &counter{s: s}
	var changes atomic.Int64
	e, err := New(Options{
		Config:   Config{SegmentLabel: "team"},
		Series:   s,
		Counter:  c,
		Sources:  sources,
		Store:    &memStore{m: map[string][]byte{}},
		Epoch:    epoch.Load,
		OnChange: func() { changes.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, c, &changes
}

func byMetric(l *List) map[string]Recommendation {
	out := map[string]Recommendation{}
	for _, r := range l.Items {
		out[r.Metric] = r
	}
	return out
}

func TestRecommendations(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	l := e.Recommendations(context.Background(), tn, true)
	recs := byMetric(l)
	if r := recs["node_cpu"]; r.Kind != KindDrop || r.SeriesSaved != 20 || r.Rule.Action != "drop" {
		t.Errorf("node_cpu: %+v, want drop saving 20", r)
	}
	r := recs["app_requests"]
	if r.Kind != KindAggregate || strings.Join(r.Labels, ",") != "pod,user_id" {
		t.Fatalf("app_requests: %+v, want aggregate of pod,user_id (team is the segment, instance is used)", r)
	}
	// 100 instances remain: the upstream count says 900, whatever pod does.
	if r.Estimate.Method != MethodUpstream || r.SeriesSaved != 900 {
		t.Errorf("app_requests estimate %+v", r.Estimate)
	}
	if r.RuleText != "- if: '{__name__=\"app_requests\"}'\n  action: labeldrop\n  regex: 'pod|user_id'\n" {
		t.Errorf("rule text %q", r.RuleText)
	}
	if got := strings.Join(r.Segments, ","); got != "" {
		t.Errorf("segments before any series was observed: %q", got)
	}
	if r := recs["app_hist_bucket"]; r.Kind != KindAggregate || strings.Join(r.Labels, ",") != "pod" {
		t.Errorf("app_hist_bucket: %+v, want pod aggregated, le kept", r)
	}
	// Sorted by series saved.
	for i := 1; i < len(l.Items); i++ {
		if l.Items[i].SeriesSaved > l.Items[i-1].SeriesSaved {
			t.Errorf("not sorted: %v", l.Items)
		}
	}
	var instanceRow LabelRow
	for _, row := range r.Evidence.Labels {
		if row.Label == "instance" {
			instanceRow = row
		}
	}
	if !instanceRow.Kept || len(instanceRow.Who) != 1 || instanceRow.Who[0].Name != "API / latency" {
		t.Errorf("instance evidence %+v", instanceRow)
	}
}

// TestEstimateFollowsKeptLabel: dropping pod, which follows instance, saves
// nothing; the independence formula says 900, the upstream count 0, and the
// preview measures 0.
func TestEstimateFollowsKeptLabel(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	src := queriesUsing()
	src.ev["app_requests"].Labels["user_id"] = LabelEvidence{Uses: []string{"matcher"}}
	e, _, _ := newTestEngine(t, s, &epoch, src)
	r := byMetric(e.Recommendations(context.Background(), tn, true))["app_requests"]
	if r.Kind != "" {
		t.Errorf("app_requests: %+v: dropping pod saves nothing and must not be recommended", r)
	}
	sk := sketchEstimate(1000, s.LabelValues(tn, "app_requests"), []string{"pod"}, nil)
	if sk.Saved != 900 {
		t.Errorf("the independence formula now says %d; the test's premise is gone", sk.Saved)
	}
	// Forcing the preview of that rule measures the truth.
	p, err := e.StartPreview(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"pod"}})
	if err != nil {
		t.Fatal(err)
	}
	feed(e, &epoch, s, "app_requests")
	if p, _ = e.PreviewOf(tn, "app_requests", KindAggregate, ""); p.State != PreviewDone || p.SeriesIn != 1000 || p.SeriesOut != 1000 || p.SeriesSaved != 0 {
		t.Errorf("preview %+v, want 1000 in, 1000 out", p)
	}
}

// feed plays the pipeline: a mid-bucket start, then two whole buckets.
func feed(e *Engine, epoch *atomic.Int64, s series, metrics ...string) {
	for range 3 {
		for _, m := range metrics {
			for _, ls := range s[m] {
				e.Observe(tn, m, ls, hashOf(ls))
			}
		}
		epoch.Add(1)
	}
	e.preview.tick()
}

func TestPreviewApplyRevert(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, _, changes := newTestEngine(t, s, &epoch, queriesUsing())
	ctx := context.Background()
	p, err := e.StartPreview(ctx, tn, "app_requests", RuleSpec{})
	if err != nil || p.State != PreviewWaiting {
		t.Fatalf("start: %+v %v", p, err)
	}
	feed(e, &epoch, s, "app_requests", "node_cpu")
	p, _ = e.PreviewOf(tn, "app_requests", KindAggregate, "")
	if p.State != PreviewDone || p.SeriesIn != 1000 || p.SeriesOut != 100 || p.SeriesSaved != 900 || p.Truncated {
		t.Fatalf("preview %+v, want 1000 -> 100", p)
	}
	r := byMetric(e.Recommendations(ctx, tn, false))["app_requests"]
	if r.Preview == nil || r.Preview.SeriesSaved != 900 {
		t.Errorf("recommendation does not show the preview: %+v", r.Preview)
	}
	if got := strings.Join(r.Segments, ","); got != "team-a,team-b" {
		t.Errorf("segments %q", got)
	}
	a, err := e.Apply(ctx, tn, "app_requests", RuleSpec{}, "admin", false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Preview == nil || a.Preview.SeriesSaved != 900 || a.AppliedBy != "admin" || changes.Load() != 1 {
		t.Errorf("applied %+v, changes %d", a, changes.Load())
	}
	if rules := e.Rules()[tn]; len(rules) != 1 || rules[0].Regex != "pod|user_id" {
		t.Errorf("rules %+v", rules)
	}
	if _, ok := byMetric(e.Recommendations(ctx, tn, false))["app_requests"]; ok {
		t.Error("an applied metric is still recommended")
	}
	if _, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"pod"}}, "admin", false); statusOf(err) != http.StatusConflict {
		t.Errorf("second apply: %v", err)
	}
	if _, err := e.Revert(tn, "app_requests", "", ""); err != nil || len(e.Rules()[tn]) != 0 || changes.Load() != 2 {
		t.Errorf("revert: %v, rules %v", err, e.Rules())
	}
	if _, err := e.Revert(tn, "app_requests", "", ""); statusOf(err) != http.StatusNotFound {
		t.Errorf("second revert: %v", err)
	}
}

func statusOf(err error) int {
	if ae, ok := err.(*Error); ok {
		return ae.Status
	}
	return 0
}

func TestRefusalAndBroken(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	ctx := context.Background()
	_, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"instance"}}, "admin", false)
	ae, ok := err.(*Error)
	if !ok || ae.Status != http.StatusConflict || ae.Refusal == nil || len(ae.Refusal.Readers) == 0 || ae.Refusal.Readers[0].Name != "API / latency" {
		t.Fatalf("want a 409 naming the dashboard: %v %+v", err, ae)
	}
	for _, bad := range []RuleSpec{
		{Kind: KindAggregate, Labels: []string{"le"}},
		{Kind: KindAggregate, Labels: []string{"__name__"}},
		{Kind: KindAggregate, Labels: []string{"team"}},
		{Kind: KindAggregate, Labels: []string{"a-b"}},
		{Kind: "explode"},
		{Kind: KindDropSeries, Match: `{env="dev"}`},
	} {
		if _, err := e.Apply(ctx, tn, "app_requests", bad, "admin", true); statusOf(err) != http.StatusBadRequest {
			t.Errorf("%+v: %v, want 400", bad, err)
		}
	}
	a, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"instance"}}, "admin", true)
	if err != nil || !a.Forced || len(a.Overrode) == 0 {
		t.Fatalf("forced: %+v %v", a, err)
	}
}

func TestExemptionsAndWithheld(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	stats := fixedSource{name: "metric_names_stats", st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"node_cpu": {Reads: 4, Last: time.Now()},
	}}
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing(), stats)
	l := e.Recommendations(context.Background(), tn, true)
	if _, ok := byMetric(l)["node_cpu"]; ok || len(l.Withheld) != 1 || !strings.Contains(l.Withheld[0].Reason, "cannot see") {
		t.Errorf("node_cpu read by an unseen reader: %+v", l.Withheld)
	}
	if err := e.SetExemptions(tn, Exemptions{Regex: []string{"("}}); statusOf(err) != http.StatusBadRequest {
		t.Errorf("bad regex: %v", err)
	}
	if err := e.SetExemptions(tn, Exemptions{Prefix: []string{"app_"}}); err != nil {
		t.Fatal(err)
	}
	l = e.Recommendations(context.Background(), tn, false)
	if len(l.Items) != 0 || l.Exempted != 2 {
		t.Errorf("after exempting app_: %+v exempted %d", l.Items, l.Exempted)
	}
}

func TestPreviewTruncates(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, _, _ := newTestEngine(t, s, &epoch, queriesUsing())
	e.preview.maxSeries = 10
	if _, err := e.StartPreview(context.Background(), tn, "node_cpu", RuleSpec{}); err != nil {
		t.Fatal(err)
	}
	feed(e, &epoch, s, "node_cpu")
	p, _ := e.PreviewOf(tn, "node_cpu", KindDrop, "")
	if !p.Truncated || p.SeriesIn != 10 || p.SeriesOut != 0 {
		t.Errorf("preview %+v, want truncated at 10", p)
	}
}

func TestAPI(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	admin := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer admin" {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	r := chi.NewRouter()
	e.Routes(r, admin, func(h http.Handler) http.Handler { return h }, func(*http.Request) string { return "admin" })
	srv := httptest.NewServer(r)
	defer srv.Close()
	do := func(method, path, body string, isAdmin bool) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		if isAdmin {
			req.Header.Set("Authorization", "Bearer admin")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	base := "/recommendations/tenants/1:0"
	for _, tc := range []struct {
		method, path, body string
		admin              bool
		want               int
	}{
		{"GET", base + "/", "", false, 200},
		{"GET", base + "/?refresh=maybe", "", false, 400},
		{"GET", base + "/?segment=team-a", "", false, 200},
		{"GET", "/recommendations/tenants/bad:tenant/", "", false, 400},
		{"POST", base + "/metrics/app_requests/preview", "", false, 403},
		{"POST", base + "/metrics/app_requests/preview", `{"kind":"aggregate","labels":["le"]}`, true, 400},
		{"POST", base + "/metrics/app_requests/preview", `{"bogus":1}`, true, 400},
		{"POST", base + "/metrics/nope/preview", "", true, 404},
		{"POST", base + "/metrics/app_requests/preview", "", true, 202},
		{"GET", base + "/metrics/app_requests/preview", "", false, 200},
		{"POST", base + "/metrics/app_requests/apply", "", false, 403},
		{"POST", base + "/metrics/app_requests/apply?force=perhaps", "", true, 400},
		{"POST", base + "/metrics/app_requests/apply", `{"kind":"aggregate","labels":["instance"]}`, true, 409},
		{"POST", base + "/metrics/app_requests/apply", "", true, 200},
		{"GET", base + "/applied", "", false, 200},
		{"GET", base + "/metrics/app_requests", "", false, 200},
		{"POST", base + "/metrics/app_requests/revert", "", false, 403},
		{"POST", base + "/metrics/app_requests/revert", "", true, 200},
		{"POST", base + "/metrics/app_requests/revert", "", true, 404},
		{"GET", base + "/exemptions", "", false, 200},
		{"PUT", base + "/exemptions", `{"exact":["node_cpu"]}`, false, 403},
		{"PUT", base + "/exemptions", `{"exact":`, true, 400},
		{"PUT", base + "/exemptions", `{"regex":["("]}`, true, 400},
		{"PUT", base + "/exemptions", `{"exact":["node_cpu"]}`, true, 200},
	} {
		if got, body := do(tc.method, tc.path, tc.body, tc.admin); got != tc.want {
			t.Errorf("%s %s %s: %d, want %d: %v", tc.method, tc.path, tc.body, got, tc.want, body)
		}
	}
	_, list := do("GET", base+"/", "", false)
	for _, it := range list["recommendations"].([]any) {
		if it.(map[string]any)["metric"] == "node_cpu" {
			t.Error("node_cpu is exempt but recommended")
		}
	}
}

// TestBrokenByDropSeries: a read that may select dropped series counts as
// broken; one whose matchers exclude them does not.
func TestBrokenByDropSeries(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindDropSeries, Match: `{__name__="app_requests",user_id="u3"}`}, "admin", false); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query  string
		broken bool
	}{
		{`sum(rate(app_requests{user_id="u7"}[5m]))`, false},
		{`sum(rate(app_requests{user_id=~"u1|u2"}[5m]))`, false},
		{`sum(rate(app_requests{user_id="u3"}[5m]))`, true},
		{`sum(rate(app_requests{user_id=~"u.*",instance="i1"}[5m]))`, true},
		{`sum by (instance) (rate(app_requests[5m]))`, true},
		{`sum(rate({__name__=~"app_req.*",user_id!="u3"}[5m]))`, false},
	} {
		ex, err := queryaudit.Extract(tc.query)
		if err != nil {
			t.Fatal(err)
		}
		before := e.BrokenBy(tn, "app_requests").Count
		e.OnRead(&queryaudit.Read{Tenant: tn, Query: tc.query, At: time.Now(), Extraction: ex,
			Metrics: map[string]queryaudit.MetricUse{"app_requests": {}}})
		if got := e.BrokenBy(tn, "app_requests").Count > before; got != tc.broken {
			t.Errorf("%s: broken %v, want %v", tc.query, got, tc.broken)
		}
	}
}

// seriesBook is the series usage of app_requests: one recorded selector.
type seriesBook struct{ selectors []string }

func (b seriesBook) Report(_ tenant.ID, metric string) (seriesusage.Report, bool) {
	return seriesusage.Report{Metric: metric, ActiveSeries: 1000, Selectors: b.selectors}, true
}

// TestDropSeriesRefusal: a drop_series that would drop series a recorded
// selector selects is refused, naming the selector.
func TestDropSeriesRefusal(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	e.o.SeriesUsage = seriesBook{selectors: []string{`app_requests{user_id="u3"}`, `app_requests{user_id=~"u[12]"}`}}
	_, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindDropSeries, Match: `{__name__="app_requests",user_id="u3"}`}, "admin", false)
	ae, ok := err.(*Error)
	if !ok || ae.Status != http.StatusConflict || len(ae.Refusal.Readers) != 1 || ae.Refusal.Readers[0].Query != `app_requests{user_id="u3"}` {
		t.Fatalf("want a 409 naming the selector of u3: %v %+v", err, ae)
	}
	if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindDropSeries, Match: `{__name__="app_requests",user_id="u7"}`}, "admin", false); err != nil {
		t.Errorf("u7, which no selector selects: %v", err)
	}
}

// reports is a series usage with a fixed report per metric.
type reports map[string]seriesusage.Report

func (r reports) Report(_ tenant.ID, metric string) (seriesusage.Report, bool) {
	rep, ok := r[metric]
	return rep, ok
}

// TestDropSeriesReadWhole: a metric read with all its labels (a series call,
// rate(m[5m]) without a sum) still gets a drop_series for the series no
// recorded selector selects, since those reads' selectors are recorded too;
// it gets no aggregation.
func TestDropSeriesReadWhole(t *testing.T) {
	t.Parallel()
	s := series{}
	for _, env := range []string{"prod", "dev"} {
		for i := range 10 {
			s["app_logins"] = append(s["app_logins"], lbls("__name__", "app_logins", "env", env, "instance", fmt.Sprint(i)))
		}
	}
	whole := fixedSource{name: "queries", st: SourceStatus{OK: true}, ev: map[string]MetricEvidence{
		"app_logins": {Reads: 2, LabelsKnown: true, AllLabels: true, Labels: map[string]LabelEvidence{"env": {Uses: []string{"matcher"}}}},
	}}
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, s, &epoch, whole)
	e.o.SeriesUsage = reports{"app_logins": {Metric: "app_logins", ActiveSeries: 20, Selected: 10, NeverSelected: 10,
		Explaining: []seriesusage.ValueExplain{{Label: "env", Value: "dev", Series: 10}},
		Selectors:  []string{`app_logins{env="prod"}`},
		Coverage:   seriesusage.Coverage{Queries: 2, Selectors: 1},
		Bucket:     seriesusage.Bucket{Complete: true, ActiveSeries: 20, Selected: 10, NeverSelected: 10}}}
	items := e.Recommendations(context.Background(), tn, true).Items
	if len(items) != 1 || items[0].Kind != KindDropSeries || items[0].Match != `{__name__="app_logins",env="dev"}` || items[0].SeriesSaved != 10 {
		t.Fatalf("recommendations %+v: want the drop_series of env=dev alone", items)
	}
	if _, err := e.Apply(context.Background(), tn, "app_logins", RuleSpec{}, "admin", false); err != nil {
		t.Errorf("apply: %v", err)
	}
}

type downCounter struct{}

func (downCounter) Count(context.Context, tenant.ID, string, Scope, []string) (int64, error) {
	return 0, fmt.Errorf("connection refused")
}
func (downCounter) LabelValues(context.Context, tenant.ID, string, string) ([]string, error) {
	return nil, fmt.Errorf("connection refused")
}

// TestEstimateFallsBackToSketches: with the upstream down, the estimate is
// the sketches', marked as such with the reason.
func TestEstimateFallsBackToSketches(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	e.o.Counter = downCounter{}
	r := byMetric(e.Recommendations(context.Background(), tn, true))["app_requests"]
	if r.Estimate.Method != MethodSketch || r.SeriesSaved != 900 || !strings.Contains(r.Estimate.Detail, "connection refused") {
		t.Errorf("estimate %+v", r.Estimate)
	}
}

// TestNotSummedWithheld: a metric some read counts or averages keeps all its
// series, whatever labels the read names; the refusal names the read.
func TestNotSummedWithheld(t *testing.T) {
	t.Parallel()
	readers := NewReaders()
	for _, q := range []string{`sum by (instance) (rate(app_requests[5m]))`, `count by (instance) (app_requests)`} {
		ex, err := queryaudit.Extract(q)
		if err != nil {
			t.Fatal(err)
		}
		readers.OnRead(&queryaudit.Read{Tenant: tn, Query: q, At: time.Now(), Extraction: ex,
			Metrics: map[string]queryaudit.MetricUse{"app_requests": {Labels: map[string]queryaudit.LabelUse{"instance": queryaudit.UseGrouping}}}})
	}
	src := queriesUsing()
	ev := src.ev["app_requests"]
	ev.NotSummed = readers.notSummed(tn, "app_requests")
	src.ev["app_requests"] = ev
	if len(ev.NotSummed) != 1 || ev.NotSummed[0].Query != `count by (instance) (app_requests)` {
		t.Fatalf("not summed: %+v", ev.NotSummed)
	}
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, src)
	l := e.Recommendations(context.Background(), tn, true)
	if _, ok := byMetric(l)["app_requests"]; ok {
		t.Error("app_requests is counted by a read, yet recommended for aggregation")
	}
	found := false
	for _, w := range l.Withheld {
		found = found || (w.Metric == "app_requests" && strings.Contains(w.Reason, "count"))
	}
	if !found {
		t.Errorf("withheld: %+v", l.Withheld)
	}
	_, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"user_id"}}, "admin", false)
	if statusOf(err) != http.StatusConflict {
		t.Errorf("apply over a counting read: %v", err)
	}
}

// TestReadersBounded: however many distinct reads come, the readers hold at
// most maxRefs references.
func TestReadersBounded(t *testing.T) {
	t.Parallel()
	rs := NewReaders()
	for i := range 3 * maxRefs / maxRefsPerKey {
		q := fmt.Sprintf("sum by (l%d) (rate(m%d_total[5m]))", i%7, i%(maxRefs/2))
		rs.OnRead(&queryaudit.Read{Tenant: tn, Query: q, At: time.Now(), Metrics: map[string]queryaudit.MetricUse{
			fmt.Sprintf("m%d_total", i%(maxRefs/2)): {Labels: map[string]queryaudit.LabelUse{fmt.Sprintf("l%d", i%7): queryaudit.UseGrouping, "job": queryaudit.UseMatcher}},
		}})
	}
	n := 0
	for _, e := range rs.keys {
		n += len(e.whole) + len(e.notSummed)
		for _, refs := range e.labels {
			n += len(refs)
		}
	}
	if n != rs.refs || n > maxRefs {
		t.Errorf("%d refs held, counted %d, cap %d", n, rs.refs, maxRefs)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	reg := prometheus.NewRegistry()
	if err := e.Register(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(context.Background(), tn, "node_cpu", RuleSpec{}, "admin", false); err != nil {
		t.Fatal(err)
	}
	e.OnRead(&queryaudit.Read{Tenant: tn, Query: "node_cpu", At: time.Now(), Metrics: map[string]queryaudit.MetricUse{"node_cpu": {AllLabels: true}}})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += " " + lp.GetName() + "=" + lp.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"cardguard_adaptive_applied_rules kind=drop tenant=1:0": 1,
		"cardguard_adaptive_broken_reads_total tenant=1:0":      1,
		"cardguard_adaptive_previews_running":                   0,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
}

type usageOf map[string]queryaudit.MetricUsage

func (u usageOf) Usage(tenant.ID) (queryaudit.Window, queryaudit.TenantTotals, map[string]queryaudit.MetricUsage) {
	return queryaudit.Window{From: time.Now().Add(-24 * time.Hour)}, queryaudit.TenantTotals{}, u
}

// TestSharedNotSummed: a read that counts a metric's series, proxied by one
// replica, keeps another replica from aggregating the metric.
func TestSharedNotSummed(t *testing.T) {
	t.Parallel()
	store := &syncStore{m: map[string][]byte{}}
	one, two := NewReaders(), NewReaders()
	one.Share(store, nil)
	two.Share(store, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go one.Run(ctx)
	q := `count by (instance) (app_requests)`
	ex, _ := queryaudit.Extract(q)
	one.OnRead(&queryaudit.Read{Tenant: tn, Query: q, At: time.Now(), Extraction: ex,
		Metrics: map[string]queryaudit.MetricUse{"app_requests": {Labels: map[string]queryaudit.LabelUse{"instance": queryaudit.UseGrouping}}}})
	uses := usageOf{"app_requests": {Queries: 1, Labels: []queryaudit.LabelDetail{{Label: "instance", Uses: []string{"grouping"}}}}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, _ := NewQuerySource(uses, two).Evidence(tn)
		if n := ev["app_requests"].NotSummed; len(n) == 1 && n[0].Query == q {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the other replica does not see the counting read: %+v", ev["app_requests"])
		}
		time.Sleep(20 * time.Millisecond)
		two.shared.mu.Lock()
		two.shared.cache = nil // as if sharedCacheTime had passed
		two.shared.mu.Unlock()
	}
}

// syncStore is memStore safe for concurrent use.
type syncStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *syncStore) Load() (map[string][]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range s.m {
		out[k] = v
	}
	return out, nil
}

func (s *syncStore) Save(k string, v []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
	return nil
}

type unparsedUsage struct{ usageOf }

func (u unparsedUsage) Usage(t tenant.ID) (queryaudit.Window, queryaudit.TenantTotals, map[string]queryaudit.MetricUsage) {
	w, _, m := u.usageOf.Usage(t)
	return w, queryaudit.TenantTotals{UnparsedQueries: 2}, m
}

// TestUnparsedReadsWithholdDrops: a read nobody parsed may read any metric,
// so no metric is called unused while the tenant has one in the retention.
func TestUnparsedReadsWithholdDrops(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	uses := usageOf{"app_requests": {Queries: 1, Labels: []queryaudit.LabelDetail{{Label: "instance", Uses: []string{"grouping"}}}}}
	for _, tc := range []struct {
		rec     UsageRecorder
		dropped bool
	}{{uses, true}, {unparsedUsage{uses}, false}} {
		e, _, _ := newTestEngine(t, workload(), &epoch, NewQuerySource(tc.rec, nil))
		l := e.Recommendations(context.Background(), tn, true)
		if _, ok := byMetric(l)["node_cpu"]; ok != tc.dropped {
			t.Errorf("%T: node_cpu recommended for drop %v, want %v; withheld %+v", tc.rec, ok, tc.dropped, l.Withheld)
		}
	}
}
