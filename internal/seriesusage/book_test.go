package seriesusage

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// clock is a test clock with its series bucket: epoch moves only when told.
type clock struct {
	mu    sync.Mutex
	now   time.Time
	epoch atomic.Int64
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestBook(t testing.TB, cfg Config) (*Book, *clock) {
	t.Helper()
	c := &clock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	c.epoch.Store(100)
	cfg.Now, cfg.Epoch, cfg.BucketWidth = c.Now, c.epoch.Load, time.Minute
	return New(cfg), c
}

var tn = tenant.ID{AccountID: 1}

// read records a query as the usage recorder hands it to listeners.
func read(t testing.TB, b *Book, at time.Time, tid tenant.ID, query string) {
	t.Helper()
	ex, err := queryaudit.Extract(query)
	if err != nil {
		t.Fatalf("Extract(%q): %v", query, err)
	}
	b.OnRead(&queryaudit.Read{Tenant: tid, Query: query, At: at, Extraction: ex})
}

// series builds a label set: name, then name/value pairs.
func series(name string, kv ...string) []prompb.Label {
	ls := []prompb.Label{{Name: "__name__", Value: name}}
	for i := 0; i+1 < len(kv); i += 2 {
		ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	return ls
}

// writeEnvs observes n series per env value of metric, each with a unique
// instance and the same job.
func writeEnvs(b *Book, tid tenant.ID, metric string, n int, envs ...string) {
	for _, env := range envs {
		for i := range n {
			b.Observe(tid, metric, series(metric, "env", env, "instance", fmt.Sprintf("%s-%d", env, i), "job", "api"), 0)
		}
	}
}

func TestSelectedAndExplaining(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{})
	read(t, b, c.Now(), tn, `sum(rate(http_requests_total{env="prod"}[5m]))`)
	read(t, b, c.Now(), tn, `http_requests_total{env=~"prod|staging", job=~".+"}`)
	read(t, b, c.Now(), tn, `http_requests_total{env="prod"} / http_requests_total{env="prod"}`)
	writeEnvs(b, tn, "http_requests_total", 150, "prod", "staging", "dev")

	rep, ok := b.Report(tn, "http_requests_total")
	if !ok {
		t.Fatal("no report")
	}
	// Only the current bucket so far.
	if rep.Bucket.Complete || rep.Current != nil {
		t.Errorf("bucket %+v, current %v: want the current, incomplete bucket alone", rep.Bucket, rep.Current)
	}
	c.epoch.Add(1)
	writeEnvs(b, tn, "http_requests_total", 10, "prod") // part of the next bucket
	rep, _ = b.Report(tn, "http_requests_total")
	if !rep.Bucket.Complete || rep.Current == nil || rep.Current.ActiveSeries != 10 {
		t.Fatalf("bucket %+v, current %+v: want the complete bucket and a current one of 10 series", rep.Bucket, rep.Current)
	}
	if rep.ActiveSeries != 450 || rep.Selected != 300 || rep.NeverSelected != 150 || rep.AllSelected {
		t.Errorf("active %d selected %d never %d all %v, want 450 300 150 false", rep.ActiveSeries, rep.Selected, rep.NeverSelected, rep.AllSelected)
	}
	if len(rep.Explaining) != 1 || rep.Explaining[0] != (ValueExplain{Label: "env", Value: "dev", Series: 150}) {
		t.Errorf("explaining %+v, want env=dev 150 alone", rep.Explaining)
	}
	if !slices.Equal(rep.Bucket.OverflowLabels, []string{"instance"}) {
		t.Errorf("overflow labels %q, want instance (450 values, cap 100)", rep.Bucket.OverflowLabels)
	}
	want := []string{`http_requests_total{env="prod"}`, `http_requests_total{env=~"prod|staging",job=~".+"}`}
	if !slices.Equal(rep.Selectors, want) {
		t.Errorf("selectors %q, want %q", rep.Selectors, want)
	}
	if rep.Coverage.Queries != 3 || rep.Coverage.Selectors != 2 || !rep.Coverage.Since.Equal(c.Now()) {
		t.Errorf("coverage %+v, want 3 queries, 2 selectors, since %s", rep.Coverage, c.Now())
	}
	if _, ok := b.Report(tn, "nope"); ok {
		t.Error("report for an unknown metric")
	}
	if _, ok := b.Report(tenant.ID{AccountID: 9}, "http_requests_total"); ok {
		t.Error("report for another tenant")
	}
}

func TestSelectorRecordedMidBucketCountsFromTheNext(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{})
	writeEnvs(b, tn, "m", 5, "prod", "dev")
	read(t, b, c.Now(), tn, `m{env="prod"}`)
	writeEnvs(b, tn, "m", 5, "staging")
	c.epoch.Add(1)
	rep, _ := b.Report(tn, "m")
	if !rep.Bucket.SelectorsChanged || rep.Selected != 0 || rep.NeverSelected != 15 {
		t.Errorf("bucket %+v: want 15 never selected and selectors changed", rep.Bucket)
	}
	writeEnvs(b, tn, "m", 5, "prod", "dev", "staging")
	c.epoch.Add(1)
	rep, _ = b.Report(tn, "m")
	if rep.Bucket.SelectorsChanged || rep.Selected != 5 || rep.NeverSelected != 10 {
		t.Errorf("bucket %+v: want 5 selected, 10 never, no change", rep.Bucket)
	}
	got := map[string]int64{}
	for _, e := range rep.Explaining {
		if e.Label == "env" {
			got[e.Value] = e.Series
		}
	}
	if len(got) != 2 || got["dev"] != 5 || got["staging"] != 5 {
		t.Errorf("env explaining %v, want dev 5 and staging 5", got)
	}
	// Two buckets on without series: nothing to report from.
	c.epoch.Add(2)
	rep, _ = b.Report(tn, "m")
	if rep.ActiveSeries != 0 || rep.Current != nil {
		t.Errorf("stale report %+v", rep)
	}
}

func TestNamelessSelectors(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{})
	read(t, b, c.Now(), tn, `count({env="dev"})`)
	read(t, b, c.Now(), tn, `{__name__=~"node_.*", env="staging"}`)
	other := tenant.ID{AccountID: 2}
	for _, m := range []string{"app_a", "app_b", "node_load1"} {
		writeEnvs(b, tn, m, 10, "prod", "staging", "dev")
		writeEnvs(b, other, m, 10, "dev")
	}
	b.Observe(tn, "no_env", series("no_env", "job", "x"), 0)
	c.epoch.Add(1)
	for m, want := range map[string]int64{"app_a": 10, "app_b": 10, "node_load1": 20, "no_env": 0} {
		rep, ok := b.Report(tn, m)
		if !ok || rep.Selected != want {
			t.Errorf("%s: selected %d (ok %v), want %d", m, rep.Selected, ok, want)
		}
	}
	rep, _ := b.Report(tn, "app_a")
	if !slices.Equal(rep.Selectors, []string{`{env="dev"}`}) || rep.Coverage.Queries != 1 {
		t.Errorf("app_a selectors %q queries %d: want the nameless one only, from 1 query", rep.Selectors, rep.Coverage.Queries)
	}
	if len(rep.Explaining) == 0 || rep.Explaining[0].Value == "dev" {
		t.Errorf("app_a explaining %+v: want prod and staging, not dev", rep.Explaining)
	}
	rep, _ = b.Report(tn, "node_load1")
	if len(rep.Selectors) != 2 || len(rep.Explaining) == 0 || rep.Explaining[0] != (ValueExplain{"env", "prod", 10}) {
		t.Errorf("node_load1 selectors %q explaining %+v", rep.Selectors, rep.Explaining)
	}
	// Another tenant's reads select nothing here.
	if rep, _ := b.Report(other, "app_a"); rep.Selected != 0 || rep.NeverSelected != 10 {
		t.Errorf("other tenant: %+v", rep)
	}
}

func TestSelectorCap(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{MaxSelectorsPerMetric: 3, MaxNamelessPerTenant: 2})
	for _, env := range []string{"a", "b", "c", "d", "e"} {
		read(t, b, c.Now(), tn, `m{env="`+env+`"}`)
	}
	writeEnvs(b, tn, "m", 4, "x", "y")
	c.epoch.Add(1)
	rep, _ := b.Report(tn, "m")
	if !rep.AllSelected || rep.SelectorOverflow != 2 || rep.Selected != 8 || rep.NeverSelected != 0 || len(rep.Selectors) != 3 {
		t.Errorf("over the cap: %+v", rep)
	}
	if sum := b.Summary(tn, 0); len(sum.Metrics) != 1 || !sum.Metrics[0].AllSelected {
		t.Errorf("summary %+v: want m all selected", sum)
	}
	// Over the cap of selectors without a name: every metric counts as selected.
	for _, job := range []string{"a", "b", "c"} {
		read(t, b, c.Now(), tn, `{job="`+job+`"}`)
	}
	writeEnvs(b, tn, "other", 4, "x")
	c.epoch.Add(1)
	if rep, _ := b.Report(tn, "other"); !rep.AllSelected || rep.Selected != 4 || rep.SelectorOverflow != 1 {
		t.Errorf("nameless over the cap: %+v", rep)
	}
	reg := prometheus.NewRegistry()
	if err := b.Register(reg); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "/" + l.GetValue()
			}
			got[key] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["cardguard_series_usage_selectors"] != 5 || got["cardguard_series_usage_overflow_total/selectors"] != 3 ||
		got["cardguard_series_usage_overflow_total/tenants"] != 0 || len(got) != 7 {
		t.Errorf("own metrics %v: want 5 selectors kept (3 of m, 2 without a name), 3 refused", got)
	}
	if got := b.overflow.selectors.Load(); got != 3 {
		t.Errorf("selector overflow %d, want 3 (2 of m, 1 without a name)", got)
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{Retention: time.Hour, MaxSelectorsPerMetric: 1})
	read(t, b, c.Now(), tn, `m{env="prod"}`)
	c.add(30 * time.Minute)
	read(t, b, c.Now(), tn, `m{env="dev"}`) // over the cap: all selected for an hour
	read(t, b, c.Now(), tn, `{env="staging"}`)
	c.add(40 * time.Minute)
	b.Prune(c.Now()) // m{env="prod"} is 70 minutes old
	c.epoch.Add(1)
	writeEnvs(b, tn, "m", 3, "prod", "dev", "staging")
	c.epoch.Add(1)
	rep, _ := b.Report(tn, "m")
	// The overflow of 00:30 still holds; m{env="prod"} of 00:00 is gone.
	if !rep.AllSelected || rep.Selected != 9 || !slices.Equal(rep.Selectors, []string{`{env="staging"}`}) {
		t.Errorf("after the first expiry: %+v", rep)
	}
	c.add(time.Hour)
	b.Prune(c.Now())
	writeEnvs(b, tn, "m", 3, "prod", "dev", "staging")
	c.epoch.Add(1)
	rep, _ = b.Report(tn, "m")
	if rep.Selected != 0 || rep.NeverSelected != 9 || len(rep.Selectors) != 0 || rep.Coverage.Queries != 0 || !rep.Coverage.Since.IsZero() {
		t.Errorf("after all expired: %+v", rep)
	}
	// Without selectors nor series in the last two buckets, the metric goes.
	c.epoch.Add(2)
	b.Prune(c.Now())
	if _, ok := b.Report(tn, "m"); ok {
		t.Error("idle metric kept")
	}
	if sum := b.Summary(tn, 0); len(sum.Metrics) != 0 {
		t.Errorf("summary of a pruned tenant: %+v", sum)
	}
}

func TestValueCaps(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{MaxLabelsPerMetric: 2, MaxValues: 5})
	read(t, b, c.Now(), tn, `m{env="prod"}`)
	writeEnvs(b, tn, "m", 1, "prod", "dev", "staging", "qa")
	c.epoch.Add(1)
	rep, _ := b.Report(tn, "m")
	// env (4 values) fits the budget of 5; instance (4 more) does not; job
	// is past the 2 labels.
	if !rep.Bucket.LabelsOverflow || !slices.Equal(rep.Bucket.OverflowLabels, []string{"instance"}) {
		t.Errorf("bucket %+v: want labels overflow and instance incomplete", rep.Bucket)
	}
	if len(rep.Explaining) != 3 {
		t.Errorf("explaining %+v: want dev, qa and staging", rep.Explaining)
	}
	if got := b.values.Load(); got > 5 {
		t.Errorf("%d values kept, cap 5", got)
	}
	// Turning the buckets over gives the budget back.
	c.epoch.Add(1)
	writeEnvs(b, tn, "m", 1, "x")
	c.epoch.Add(1)
	writeEnvs(b, tn, "m", 1, "x")
	// The first bucket left; the second kept env=x only (its instance came
	// when the first still held 4 of the 5); the third keeps both.
	if got := b.values.Load(); got != 3 {
		t.Errorf("%d values kept after turnover, want 3", got)
	}
	if s := b.Summary(tn, 0); s.Overflow["label_values"] == 0 {
		t.Errorf("overflow %v: want label_values counted", s.Overflow)
	}
}

func TestTenantAndMetricCaps(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{MaxTenants: 1, MaxMetricsPerTenant: 2, MaxNameBytes: 10})
	for i := range 5 {
		b.Observe(tn, fmt.Sprintf("m%d", i), series(fmt.Sprintf("m%d", i)), 0)
	}
	b.Observe(tn, strings.Repeat("x", 11), series(strings.Repeat("x", 11)), 0)
	b.Observe(tenant.ID{AccountID: 5}, "m0", series("m0"), 0)
	read(t, b, c.Now(), tenant.ID{AccountID: 6}, `m0{a="b"}`)
	s := b.Summary(tn, 0)
	if len(s.Metrics) != 2 || s.Overflow["metrics"] != 3 || s.Overflow["tenants"] != 2 || s.Overflow["long_names"] != 1 {
		t.Errorf("summary %+v", s)
	}
}

func TestObserveDoesNotAllocate(t *testing.T) {
	b, c := newTestBook(t, Config{})
	read(t, b, c.Now(), tn, `m{env=~"prod|staging", job="api"}`)
	read(t, b, c.Now(), tn, `{env="dev", __name__=~"m|n"}`)
	ls := series("m", "env", "qa", "instance", "i-1", "job", "api")
	b.Observe(tn, "m", ls, 0)
	if n := testing.AllocsPerRun(100, func() { b.Observe(tn, "m", ls, 0) }); n != 0 {
		t.Errorf("Observe allocates %.1f times per series", n)
	}
}

func TestConcurrent(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{MaxSelectorsPerMetric: 8, Retention: time.Minute})
	var wg sync.WaitGroup
	const writers, perWriter = 4, 500
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				m := fmt.Sprintf("m%d", i%5)
				b.Observe(tn, m, series(m, "env", fmt.Sprint(i%7), "w", fmt.Sprint(w)), 0)
			}
		}()
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 300 {
			read(t, b, c.Now(), tn, fmt.Sprintf(`m%d{env="%d"} or {env="%d"}`, i%5, i%9, i%3))
			if i%50 == 0 {
				c.add(time.Minute)
				c.epoch.Add(1)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range 200 {
			b.Report(tn, fmt.Sprintf("m%d", i%5))
			b.Summary(tn, 3)
			b.Prune(c.Now())
		}
	}()
	wg.Wait()
	for _, m := range b.Summary(tn, 0).Metrics {
		if m.Selected+m.NeverSelected != m.ActiveSeries || m.Selected < 0 || m.NeverSelected < 0 {
			t.Errorf("inconsistent %+v", m)
		}
	}
	if v := b.values.Load(); v < 0 {
		t.Errorf("values %d", v)
	}
}

func TestAPI(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{Unseen: func(t tenant.ID) (uint64, uint64) {
		if t == tn {
			return 2, 1
		}
		return 0, 0
	}})
	read(t, b, c.Now(), tn, `m{env="prod"}`)
	writeEnvs(b, tn, "m", 3, "prod", "dev")
	r := chi.NewRouter()
	b.Routes(r, nil)
	get := func(path string) (int, map[string]any) {
		t.Helper()
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var v map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body)
		}
		return rec.Code, v
	}
	for _, tc := range []struct {
		path string
		code int
		has  string
	}{
		{"/usage/tenants/1/metrics/m/series", 200, "never_selected"},
		{"/usage/tenants/1:0/metrics/m/series", 200, "explaining"},
		{"/usage/tenants/x/metrics/m/series", 400, "error"},
		{"/usage/tenants/1/metrics/nope/series", 404, "error"},
		{"/usage/tenants/2/metrics/m/series", 404, "error"},
		{"/usage/tenants/1/metrics/%25ZZ/series", 400, "error"},
		{"/usage/tenants/1/series", 200, "metrics"},
		{"/usage/tenants/1/series?limit=1", 200, "metrics"},
		{"/usage/tenants/1/series?limit=0", 400, "error"},
		{"/usage/tenants/1/series?limit=x", 400, "error"},
		{"/usage/tenants/-1/series", 400, "error"},
	} {
		code, v := get(tc.path)
		if code != tc.code || v[tc.has] == nil {
			t.Errorf("%s: %d %v, want %d with %q", tc.path, code, v, tc.code, tc.has)
		}
	}
	_, v := get("/usage/tenants/1/metrics/m/series")
	if v["active_series"].(float64) != 6 || v["never_selected"].(float64) != 3 {
		t.Errorf("report %v", v)
	}
	if cov := v["coverage"].(map[string]any); cov["unparsed_reads"].(float64) != 2 || cov["dropped_reads"].(float64) != 1 {
		t.Errorf("coverage %v: want 2 unparsed and 1 dropped read", cov)
	}
	ex := v["explaining"].([]any)
	if len(ex) == 0 || ex[0].(map[string]any)["value"] != "dev" {
		t.Errorf("explaining %v", ex)
	}
}

func TestEpochsThatSkip(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)}
	c.epoch.Store(10)
	// Buckets of 2s in a 4s window, with a tracker that rotates every 5s.
	b := New(Config{Now: c.Now, Epoch: c.epoch.Load, BucketWidth: 2 * time.Second, Window: 4 * time.Second})
	read(t, b, c.Now(), tn, `m{env="prod"}`)
	writeEnvs(b, tn, "m", 4, "prod", "dev")
	c.epoch.Add(1) // 11: m seen in 10, which is complete
	if rep, _ := b.Report(tn, "m"); !rep.Bucket.Complete || rep.ActiveSeries != 8 || rep.Selected != 4 {
		t.Errorf("after one epoch: %+v", rep.Bucket)
	}
	writeEnvs(b, tn, "m", 4, "prod", "dev")
	c.epoch.Add(3) // 14: 11 is complete, 10 is out of the window
	writeEnvs(b, tn, "m", 1, "prod")
	rep, _ := b.Report(tn, "m")
	if !rep.Bucket.Complete || rep.ActiveSeries != 8 || rep.Current == nil || rep.Current.ActiveSeries != 1 {
		t.Errorf("after a skip: bucket %+v current %+v", rep.Bucket, rep.Current)
	}
	if want := time.Unix(0, 11*int64(2*time.Second)).UTC(); !rep.Bucket.Start.Equal(want) || !rep.Bucket.End.Equal(want.Add(6*time.Second)) {
		t.Errorf("bucket %s to %s, want from %s for 6s", rep.Bucket.Start, rep.Bucket.End, want)
	}
	c.epoch.Add(2) // 16: 14 is still in the window
	if rep, _ := b.Report(tn, "m"); rep.ActiveSeries != 1 || !rep.Bucket.Complete {
		t.Errorf("last bucket: %+v", rep.Bucket)
	}
	c.epoch.Add(1) // 17: nothing left in the window
	if rep, _ := b.Report(tn, "m"); rep.ActiveSeries != 0 {
		t.Errorf("stale: %+v", rep.Bucket)
	}
}
