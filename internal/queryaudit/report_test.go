package queryaudit

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

// fakeEstimator is a fixed cardinality estimate for tenant 1.
type fakeEstimator struct{}

func (fakeEstimator) MetricSeries(t tenant.ID) map[string]int64 {
	if t != t1 {
		return nil
	}
	return map[string]int64{"http_requests_total": 12000, "node_load1": 50, "unused_big": 90000, "up": 10}
}

func (fakeEstimator) LabelValueCounts(t tenant.ID, metric string) map[string]int64 {
	if t != t1 {
		return nil
	}
	return map[string]map[string]int64{
		"http_requests_total": {"__name__": 1, "job": 3, "instance": 50, "code": 8, "path": 40, "pod": 100},
		"unused_big":          {"job": 2, "pod": 3000, "instance": 30},
		"node_load1":          {"instance": 50, "job": 1},
		"up":                  {"job": 5, "instance": 10},
	}[metric]
}

func TestSeriesSavedByDroppingLabels(t *testing.T) {
	t.Parallel()
	distinct := map[string]int64{"__name__": 1, "job": 3, "instance": 50, "code": 8, "path": 40, "pod": 100}
	tests := []struct {
		name   string
		series int64
		drop   []string
		want   int64
	}{
		{name: "nothing dropped", series: 12000, want: 0},
		{name: "kept label bounds the rest", series: 12000, drop: []string{"instance", "pod"}, want: 12000 - 40},
		{name: "division bounds the rest", series: 12000, drop: []string{"pod"}, want: 12000 - 120},
		{name: "everything dropped leaves one", series: 12000, drop: []string{"job", "instance", "code", "path", "pod"}, want: 11999},
		{name: "unknown distinct counts as one", series: 100, drop: []string{"nope"}, want: 0},
		{name: "no series", series: 0, drop: []string{"pod"}, want: 0},
		{name: "huge product does not overflow", series: 5, drop: []string{"a", "b", "c"}, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := distinct
			if tc.name == "huge product does not overflow" {
				d = map[string]int64{"a": 1 << 40, "b": 1 << 40, "c": 1 << 40, "k": 5}
			}
			if got := SeriesSavedByDroppingLabels(tc.series, d, tc.drop); got != tc.want {
				t.Errorf("saved = %d, want %d", got, tc.want)
			}
		})
	}
}

// reportFixture is a recorder with a few days of reads for tenant 1, served by a
// chi router the way the lead mounts it.
func reportFixture(t *testing.T) (*Recorder, http.Handler, *int) {
	t.Helper()
	r, clock, _ := newTestRecorder(t, RecorderConfig{RarelyQueriedBelow: 3}, namesFunc(func(tenant.ID) []string {
		return []string{"http_requests_total", "node_load1", "unused_big", "up"}
	}))
	grafana := hdr("X-Dashboard-Uid", "svc", "X-Dashboard-Title", "Service", "X-Panel-Id", "2", "X-Panel-Title", "Errors")
	for i := range 3 {
		r.Record(t1, "query_range", query(`sum by (job, code) (rate(http_requests_total{path!="/health"}[5m]))`), grafana, epoch.Add(-time.Duration(i)*24*time.Hour))
	}
	r.Record(t1, "query", query(`up == 0`), hdr("X-Rule-Uid", "u1", "X-Rule-Name", "TargetDown"), epoch.Add(-time.Hour))
	r.Record(t1, "query", query(`node_load1{instance="a"}`), hdr("User-Agent", "curl/8.5"), epoch.Add(-2*time.Hour))
	r.Record(t1, "query", query(`WITH (x = up`), nil, epoch)
	r.Flush()
	clock.Set(epoch.Add(time.Hour))
	r.SetCheckers(assetsChecker{"http_requests_total": "dashboard Service / Errors"})

	guarded := new(int)
	router := chi.NewRouter()
	r.Routes(router, fakeEstimator{}, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			*guarded++
			if req.Header.Get("Authorization") == "deny" {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, req)
		})
	})
	return r, router, guarded
}

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
	return w
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if os.Getenv("CARDGUARD_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with CARDGUARD_UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file:\n%s", name, got)
	}
}

func TestReportGolden(t *testing.T) {
	t.Parallel()
	_, h, guarded := reportFixture(t)
	tests := []struct{ path, golden string }{
		{"/usage/tenants/1/metrics?filter=unused", "metrics_unused.json"},
		{"/usage/tenants/1:0/metrics", "metrics_all.json"},
		{"/usage/tenants/1/metrics?filter=rarely&sort=queries&order=asc", "metrics_rarely.json"},
		{"/usage/tenants/1/metrics?sort=name&order=asc&limit=2&offset=1", "metrics_page.json"},
		{"/usage/tenants/1/metrics/http_requests_total", "metric_http_requests_total.json"},
		{"/usage/tenants/1/metrics/unused_big", "metric_unused_big.json"},
		{"/usage/tenants/1/metric_names_stats", "metric_names_stats.json"},
		{"/usage/tenants/1/metric_names_stats?le=0", "metric_names_stats_le0.json"},
		{"/usage/tenants/1/metric_names_stats?match_pattern=_total%7Cload&limit=1", "metric_names_stats_match.json"},
	}
	for _, tc := range tests {
		w := get(h, tc.path)
		if w.Code != http.StatusOK {
			t.Errorf("GET %s = %d %s", tc.path, w.Code, w.Body)
			continue
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s Content-Type %q", tc.path, ct)
		}
		checkGolden(t, tc.golden, w.Body.Bytes())
	}
	if *guarded != len(tests) {
		t.Errorf("requireTenant ran %d times for %d requests", *guarded, len(tests))
	}
}

func TestReportErrors(t *testing.T) {
	t.Parallel()
	_, h, _ := reportFixture(t)
	tests := []struct {
		path string
		want int
	}{
		{"/usage/tenants/x/metrics", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?filter=bogus", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?sort=bogus", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?order=up", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?limit=0", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?limit=abc", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?limit=100000", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?offset=-1", http.StatusBadRequest},
		{"/usage/tenants/1/metrics?rarely_below=x", http.StatusBadRequest},
		{"/usage/tenants/-1/metrics/up", http.StatusBadRequest},
		{"/usage/tenants/1/metrics/nope", http.StatusNotFound},
		{"/usage/tenants/2/metrics/up", http.StatusNotFound},
		{"/usage/tenants/1/metric_names_stats?limit=abc", http.StatusBadRequest},
		{"/usage/tenants/1/metric_names_stats?le=x", http.StatusBadRequest},
		{"/usage/tenants/1/metric_names_stats?match_pattern=(", http.StatusBadRequest},
		{"/usage/tenants/1:x/metric_names_stats", http.StatusBadRequest},
	}
	for _, tc := range tests {
		w := get(h, tc.path)
		if w.Code != tc.want {
			t.Errorf("GET %s = %d, want %d: %s", tc.path, w.Code, tc.want, w.Body)
			continue
		}
		var e usageError
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Status != "error" || e.Error == "" {
			t.Errorf("GET %s error body %q", tc.path, w.Body)
		}
	}

	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "/usage/tenants/1/metrics", nil)
	req.Header.Set("Authorization", "deny")
	h.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden {
		t.Errorf("requireTenant was bypassed: %d", w.Code)
	}
}

func TestReportWithoutEstimator(t *testing.T) {
	t.Parallel()
	r, _, _ := newTestRecorder(t, RecorderConfig{}, nil)
	r.Record(t1, "query", query(`sum by (job) (up)`), nil, epoch)
	r.Flush()
	rep := r.MetricsReport(t1, nil, "all", "series", "desc", 0, 10, 0)
	if rep.Total != 1 || rep.Metrics[0].Metric != "up" || rep.Metrics[0].Queries != 1 || len(rep.Metrics[0].UnusedLabels) != 0 {
		t.Errorf("report without estimator: %+v", rep)
	}
	if _, ok := r.MetricDetail(t1, nil, "up"); !ok {
		t.Error("detail of a queried metric without estimator not found")
	}
}

// assetsChecker is a source of usage that knows some metrics by name.
type assetsChecker map[string]string

func (c assetsChecker) CheckMetric(_ tenant.ID, metric string) SourceCheck {
	if ref, ok := c[metric]; ok {
		return SourceCheck{Source: "assets", Available: true, Verdict: VerdictUsed, Detail: []string{ref}}
	}
	return SourceCheck{Source: "assets", Available: true, Verdict: VerdictUnused}
}
