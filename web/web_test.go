package web

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// now is the fake clock of every test: golden files must not depend on the day.
var testNow = time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)

// fakeSource serves fixed data for two tenants.
type fakeSource struct {
	tenants []TenantRow
	metrics map[string]MetricList
	detail  map[string]MetricDetail
	limits  map[string]LimitsView
}

func (f *fakeSource) Tenants() []TenantRow { return append([]TenantRow(nil), f.tenants...) }

func (f *fakeSource) TenantMetrics(t tenant.ID) (MetricList, bool) {
	l, ok := f.metrics[t.String()]
	l.Rows = append([]MetricRow(nil), l.Rows...)
	return l, ok
}

func (f *fakeSource) Metric(t tenant.ID, name string) (MetricDetail, bool) {
	d, ok := f.detail[t.String()+"/"+name]
	return d, ok
}

func (f *fakeSource) Limits(t tenant.ID) LimitsView {
	if l, ok := f.limits[t.String()]; ok {
		return l
	}
	return LimitsView{Tenant: t.String()}
}

func newFake() *fakeSource {
	ago := func(d time.Duration) time.Time { return testNow.Add(-d) }
	return &fakeSource{
		tenants: []TenantRow{
			{Tenant: "2:0", ActiveSeries: 1200, MaxSeries: 0, Churn: 1.1, Metrics: 3, IngestionRate: 40},
			{Tenant: "1:0", ActiveSeries: 9500, MaxSeries: 10000, AdmittedSeries: 9000, HasAdmitted: true, Churn: 2.5, Metrics: 4, IngestionRate: 1234.5, IngestionLimit: 1000,
				Discarded: map[string]int64{"max_series": 500, "rate_limited": 20}, Aggregated: Aggregated{InputSeries: 1077, OutputSeries: 12, Collisions: 3}},
			{Tenant: "3:7", ActiveSeries: 50, MaxSeries: 100, DryRun: true, DryRunDiscarded: map[string]int64{"max_series": 7}},
			{Tenant: "overflow", Overflow: true, ActiveSeries: 10},
		},
		metrics: map[string]MetricList{
			"1:0": {
				Tenant:      TenantRow{Tenant: "1:0", ActiveSeries: 9500, Churn: 2.5, Metrics: 4, Aggregated: Aggregated{InputSeries: 1077, OutputSeries: 12, Collisions: 3}},
				WindowLabel: "1 h", QueryWindow: 30, QueryTotals: 42, UnparsedRead: 1,
				Rows: []MetricRow{
					{Name: "http_requests_total", Series: 6000, Churn: 1, HasChurn: true, Queries: 30, LastQueried: ago(5 * time.Minute)},
					{Name: "node_cpu_seconds_total", Series: 2500, Churn: 1.25, HasChurn: true, Queries: 12, LastQueried: ago(3 * time.Hour)},
					{Name: "forgotten_metric", Series: 900, Churn: 6.5, HasChurn: true},
					{Name: "<script>alert(1)</script>", Series: 100},
				},
			},
			"2:0": {Tenant: TenantRow{Tenant: "2:0"}, WindowLabel: "1 h", QueryWindow: 30},
		},
		detail: map[string]MetricDetail{
			"1:0/http_requests_total": {
				Tenant: "1:0", Name: "http_requests_total", Series: 6000, Tracked: true,
				Queries: 30, LastQueried: ago(5 * time.Minute), AllLabelsQueries: 2, QueryWindow: 30,
				Labels: []LabelRow{
					{Name: "job", Values: 3, Share: 0.0005, Uses: []string{"matcher", "by"}, Queries: 30, LastUsed: ago(5 * time.Minute)},
					{Name: "pod", Values: 2000, Share: 0.33},
					{Name: "user_id", Values: 1001, Share: 0.17, Guard: &GuardState{AdmittedValues: 1000, Rejected: 77, Since: ago(time.Hour)}},
				},
				SavedByDroppingUnused: 5997, SavingsNote: "Dropping labels is estimated.",
				Sources: []SourceRow{{Who: "dashboard Checkout / panel Requests", Queries: 28, LastQueried: ago(5 * time.Minute)}},
				Aggregations: []AggregationRow{
					{Series: `http_requests_total{job="api",user_id="__cardguard_overflow__"}`, Kind: "counter", Output: "total", Source: "label_guard", Inputs: 1001},
					{Series: `http_requests_total{job="web"}`, Kind: "counter", Output: "total", Source: "relabel", Inputs: 3},
				},
				AggregationsMore: 10, AggregatedInputs: 1077,
				Rules: []RuleAggregationRow{
					{Rule: "requests-by-job", Interval: "1m", Outputs: "total", InputSeries: 6000, OutputSeries: 3},
					{Rule: "#2", Interval: "30s", Outputs: "sum_samples, max", InputSeries: 40, OutputSeries: 2, DryRun: true, Incomplete: true},
				},
			},
			"1:0/node_cpu_seconds_total": {
				Tenant: "1:0", Name: "node_cpu_seconds_total", Series: 2500, Tracked: true, QueryWindow: 30,
				Labels: []LabelRow{{Name: "cpu", Values: 64, Share: 0.03, Uses: []string{"by"}, Queries: 12, LastUsed: ago(3 * time.Hour)}},
			},
		},
		limits: map[string]LimitsView{
			"1:0": {Tenant: "1:0", Fields: []LimitField{
				{Path: "max_series", Help: "distinct series in the window", Kind: KindInt, Value: "10000", Source: "api",
					HasUsage: true, Usage: 9500, Limit: 10000, Discarded: 500},
				{Path: "ingestion_rate", Kind: KindFloat, Value: "1000", Source: "file", HasUsage: true, Usage: 1234.5, Limit: 1000, UsageUnit: "/s"},
				{Path: "mode", Kind: KindEnum, Value: "enforce", Enum: []string{"enforce", "dry_run"}, Source: "default"},
				{Path: "label_guard.exempt_labels", Kind: KindList, Value: "le, quantile", Source: "default"},
			}},
		},
	}
}

func newTestUI(t testing.TB, src *fakeSource, h *History) *UI {
	t.Helper()
	u, err := New(Options{Tenants: src, Metrics: src, Limits: src, History: h, PageSize: 2, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func get(t testing.TB, h http.Handler, target string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, rec.Header(), string(b)
}

// golden compares got with testdata/name; UPDATE_GOLDEN=1 rewrites the file.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if os.Getenv("UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (UPDATE_GOLDEN=1 rewrites it); got:\n%s", p, got)
	}
}

func TestFragmentsGolden(t *testing.T) {
	t.Parallel()
	src := newFake()
	h := NewHistory(src, 15*time.Second, 4)
	// Baseline, then 1:0 rejects 30 more max_series and 5 rate_limited samples.
	h.Sample(testNow.Add(-45 * time.Second))
	src.tenants[1].Discarded = map[string]int64{"max_series": 530, "rate_limited": 25}
	h.Sample(testNow.Add(-30 * time.Second))
	h.Sample(testNow.Add(-15 * time.Second))
	u := newTestUI(t, src, h)
	for _, tc := range []struct {
		name, target string
		status       int
	}{
		{"overview.html", "/fragment/overview", 200},
		{"tenant.html", "/fragment/tenant?tenant=1", 200},
		{"tenant_page2_by_name.html", "/fragment/tenant?tenant=1:0&sort=name&order=asc&page=2", 200},
		{"tenant_filter.html", "/fragment/tenant?tenant=1:0&q=TOTAL", 200},
		{"tenant_by_churn.html", "/fragment/tenant?tenant=1:0&sort=churn", 200},
		{"tenant_empty.html", "/fragment/tenant?tenant=2", 200},
		{"tenant_unknown.html", "/fragment/tenant?tenant=9", 404},
		{"tenant_bad.html", "/fragment/tenant?tenant=x:y", 400},
		{"metric.html", "/fragment/metric?tenant=1:0&metric=http_requests_total", 200},
		{"metric_no_aggregations.html", "/fragment/metric?tenant=1:0&metric=node_cpu_seconds_total", 200},
		{"metric_unknown.html", "/fragment/metric?tenant=1:0&metric=nope", 404},
		{"limits.html", "/fragment/limits?tenant=1:0", 200},
		{"limits_pick.html", "/fragment/limits", 200},
		{"shell.html", "/tenant?tenant=1:0", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, hdr, body := get(t, u, tc.target)
			if code != tc.status {
				t.Errorf("status %d, want %d", code, tc.status)
			}
			if ct := hdr.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
			golden(t, tc.name, body)
		})
	}
}

func TestTenantPageState(t *testing.T) {
	t.Parallel()
	u := newTestUI(t, newFake(), nil)
	for _, tc := range []struct {
		name, query string
		want        []string // in this order
		notWant     []string
	}{
		{"default sort is series descending", "tenant=1:0", []string{`data-metric="http_requests_total"`, `data-metric="node_cpu_seconds_total"`}, []string{"forgotten_metric"}},
		{"page 2", "tenant=1:0&page=2", []string{`data-metric="forgotten_metric"`, `data-metric="&lt;script&gt;`}, []string{"http_requests_total\""}},
		{"page past the end shows the last", "tenant=1:0&page=99", []string{`data-metric="forgotten_metric"`}, nil},
		{"by queries ascending", "tenant=1:0&sort=queries&order=asc", []string{`data-metric="&lt;script&gt;`, `data-metric="forgotten_metric"`}, nil},
		{"by last queried", "tenant=1:0&sort=last", []string{`data-metric="http_requests_total"`, `data-metric="node_cpu_seconds_total"`}, nil},
		{"filter is a case-insensitive substring", "tenant=1:0&q=CPU", []string{"1–1 of 1", `data-metric="node_cpu_seconds_total"`}, []string{"http_requests_total\""}},
		{"unknown sort falls back to series", "tenant=1:0&sort=bogus&order=sideways", []string{`sort=series&amp;order=asc`, `data-metric="http_requests_total"`}, nil},
		{"never queried is marked", "tenant=1:0&page=2", []string{`class="never"`, "never queried"}, nil},
		{"links keep the state", "tenant=1:0&q=_&sort=name", []string{`/ui/tenant?tenant=1:0&amp;q=_&amp;sort=name&amp;order=asc&amp;page=2`}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := get(t, u, "/fragment/tenant?"+tc.query)
			if code != 200 {
				t.Fatalf("status %d: %s", code, body)
			}
			at := 0
			for _, w := range tc.want {
				i := strings.Index(body[at:], w)
				if i < 0 {
					t.Fatalf("%q not found (in order) in:\n%s", w, body)
				}
				at += i
			}
			for _, w := range tc.notWant {
				if strings.Contains(body, w) {
					t.Errorf("%q should not be on the page", w)
				}
			}
		})
	}
}

func TestProtectGuardsOnlyData(t *testing.T) {
	t.Parallel()
	src := newFake()
	u, err := New(Options{Tenants: src, Metrics: src, Limits: src, Protect: func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer admin" {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		target string
		auth   string
		status int
	}{
		{"/", "", 200},
		{"/tenant?tenant=1", "", 200},
		{"/static/app.js", "", 200},
		{"/static/app.css", "", 200},
		{"/fragment/overview", "", 401},
		{"/fragment/tenant?tenant=1", "", 401},
		{"/fragment/metric?tenant=1&metric=http_requests_total", "", 401},
		{"/fragment/limits?tenant=1", "", 401},
		{"/fragment/overview", "Bearer admin", 200},
		{"/fragment/tenant?tenant=1", "Bearer admin", 200},
		{"/nope", "", 404},
	} {
		code, hdr, body := get(t, u, tc.target, "Authorization", tc.auth)
		if code != tc.status {
			t.Errorf("%s with %q: %d, want %d", tc.target, tc.auth, code, tc.status)
		}
		if code == 401 && strings.Contains(body, "1:0") {
			t.Errorf("%s leaks data without a token: %s", tc.target, body)
		}
		if hdr.Get("Content-Security-Policy") == "" {
			t.Errorf("%s: no Content-Security-Policy", tc.target)
		}
	}
}

func TestStaticFilesHaveNoOutsideReferences(t *testing.T) {
	t.Parallel()
	u := newTestUI(t, newFake(), nil)
	for _, p := range []string{"/", "/static/app.js", "/static/app.css", "/static/favicon.svg"} {
		_, _, body := get(t, u, p)
		for _, bad := range []string{"http://", "https://", "//cdn", "@import", "fonts.g"} {
			if strings.Contains(strings.ReplaceAll(body, "http://www.w3.org/2000/svg", ""), bad) {
				t.Errorf("%s refers to %q: the dashboard must work offline", p, bad)
			}
		}
	}
}

func TestHistory(t *testing.T) {
	t.Parallel()
	src := &fakeSource{tenants: []TenantRow{{Tenant: "1:0", Discarded: map[string]int64{"max_series": 100}}}}
	h := NewHistory(src, 10*time.Second, 3)
	at := testNow
	step := func(discards map[string]int64) {
		src.tenants[0].Discarded = discards
		at = at.Add(10 * time.Second)
		h.Sample(at)
	}
	step(map[string]int64{"max_series": 100})                    // baseline: nothing drawn
	step(map[string]int64{"max_series": 130, "rate_limited": 4}) // +30, +4
	step(map[string]int64{"max_series": 130, "rate_limited": 4}) // nothing
	step(map[string]int64{"max_series": 5})                      // restart: +5
	src.tenants = append(src.tenants, TenantRow{Tenant: "2:0", Discarded: map[string]int64{"label_guard": 1000}})
	step(map[string]int64{"max_series": 5}) // new tenant: baseline only
	pts := h.Points()
	if len(pts) != 3 {
		t.Fatalf("%d points, want the last 3", len(pts))
	}
	want := []map[string]int64{{}, {"max_series": 5}, {}}
	for i, p := range pts {
		if fmt.Sprint(p.ByReason) != fmt.Sprint(want[i]) {
			t.Errorf("point %d: %v, want %v", i, p.ByReason, want[i])
		}
	}
	if got := pts[2].At; !got.Equal(at) {
		t.Errorf("last point at %v, want %v", got, at)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	h.Run(ctx) // returns at once when ctx is done, after one sample
	if n := len(h.Points()); n != 3 {
		t.Errorf("%d points after Run, want 3 (bounded)", n)
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		got, want string
	}{
		{fmtInt(0), "0"}, {fmtInt(999), "999"}, {fmtInt(1000), "1,000"}, {fmtInt(-1234567), "-1,234,567"},
		{fmtCompact(5), "5"}, {fmtCompact(2.5), "2.5"}, {fmtCompact(1234), "1.2k"}, {fmtCompact(1000), "1k"},
		{fmtCompact(12345), "12k"}, {fmtCompact(2_500_000), "2.5M"}, {fmtCompact(3e9), "3G"},
		{fmtAgo(testNow, time.Time{}), "never"}, {fmtAgo(testNow, testNow.Add(-30*time.Second)), "30 s ago"},
		{fmtAgo(testNow, testNow.Add(-90*time.Minute)), "1 h ago"}, {fmtAgo(testNow, testNow.Add(-72*time.Hour)), "3 days ago"},
		{fmtDuration(time.Hour), "1 h"}, {fmtDuration(15 * time.Minute), "15 min"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// BenchmarkTenantPage renders the tenant page of a tenant with 10,000 metrics,
// sorted and filtered as a user would, server-side.
func BenchmarkTenantPage(b *testing.B) {
	for _, q := range []string{"", "&sort=name&order=asc&page=37", "&q=_00&sort=last"} {
		b.Run("query="+q, func(b *testing.B) {
			src := newFake()
			rows := make([]MetricRow, 10000)
			for i := range rows {
				rows[i] = MetricRow{Name: fmt.Sprintf("app_metric_%05d_seconds_total", i), Series: int64(100000 - i*7), Queries: uint64(i % 13)}
				if rows[i].Queries > 0 {
					rows[i].LastQueried = testNow.Add(-time.Duration(i) * time.Second)
				}
			}
			src.metrics["1:0"] = MetricList{Tenant: TenantRow{Tenant: "1:0", Metrics: len(rows)}, WindowLabel: "1 h", QueryWindow: 30, Rows: rows}
			u, err := New(Options{Tenants: src, Metrics: src, Limits: src, Now: func() time.Time { return testNow }})
			if err != nil {
				b.Fatal(err)
			}
			target := "/fragment/tenant?tenant=1:0" + q
			b.ReportAllocs()
			var size int
			for b.Loop() {
				req := httptest.NewRequest(http.MethodGet, target, nil)
				rec := httptest.NewRecorder()
				u.ServeHTTP(rec, req)
				if rec.Code != 200 {
					b.Fatalf("status %d", rec.Code)
				}
				size = rec.Body.Len()
			}
			b.ReportMetric(float64(size), "bytes/page")
		})
	}
}
