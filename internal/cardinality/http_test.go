package cardinality

import (
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// httpTracker is a small, exact fixture: sparse sketches count these sizes exactly.
func httpTracker(t *testing.T) *Tracker {
	t.Helper()
	tr, _ := newTracker(t, Config{MaxMetricsPerTenant: 3})
	t1 := tenant.ID{AccountID: 1}
	for i := range 40 {
		observe(tr, t1, series("http_requests_total", "code", strconv.Itoa(200+i%4), "instance", "host-"+strconv.Itoa(i%10), "path", "/p/"+strconv.Itoa(i)))
	}
	for i := range 10 {
		observe(tr, t1, series("up", "instance", "host-"+strconv.Itoa(i), "job", "node"))
	}
	observe(tr, t1, series("process_start_time_seconds", "instance", "host-0", "job", "node"))
	observe(tr, t1, series("go_goroutines", "instance", "host-0", "job", "node")) // over the cap
	observe(tr, t1, series("go_threads", "instance", "host-0", "job", "node"))
	observe(tr, tenant.ID{AccountID: 2, ProjectID: 7}, series("up", "instance", "a", "job", "x"))
	tr.Refresh()
	return tr
}

func TestHTTP(t *testing.T) {
	t.Parallel()
	tr := httpTracker(t)
	// A stand-in for the lead's auth middleware: tenant 3 is forbidden.
	requireTenant := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if chi.URLParam(r, "tenant") == "3" {
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	r := chi.NewRouter()
	r.Route("/api/cardguard/v1", func(r chi.Router) { tr.Routes(r, requireTenant) })

	tests := []struct {
		name   string
		path   string
		status int
		golden string // file under testdata/, compared in full
		substr string // else, a part of the body
	}{
		{"tenants", "/cardinality/tenants", 200, "tenants.json", ""},
		{"metrics", "/cardinality/tenants/1/metrics?limit=3&labels=2", 200, "metrics.json", ""},
		{"metrics defaults", "/cardinality/tenants/1:0/metrics", 200, "metrics_default.json", ""},
		{"metric", "/cardinality/tenants/1/metrics/http_requests_total", 200, "metric.json", ""},
		{"overflow metric", "/cardinality/tenants/1/metrics/__overflow__", 200, "metric_overflow.json", ""},
		{"labels", "/cardinality/tenants/1/labels?limit=3", 200, "labels.json", ""},
		{"tsdb", "/cardinality/tenants/1/status/tsdb?topN=2", 200, "tsdb.json", ""},
		{"tsdb default topN", "/cardinality/tenants/2:7/status/tsdb", 200, "tsdb_default.json", ""},
		{"unknown tenant", "/cardinality/tenants/99/metrics", 200, "metrics_unknown_tenant.json", ""},
		{"unknown tenant tsdb", "/cardinality/tenants/99/status/tsdb", 200, "tsdb_unknown_tenant.json", ""},
		{"unknown metric", "/cardinality/tenants/1/metrics/nope", 404, "", `"error":"metric \"nope\" is not tracked for tenant 1:0"`},
		{"unknown metric of unknown tenant", "/cardinality/tenants/99/metrics/up", 404, "", `not tracked`},
		{"bad tenant", "/cardinality/tenants/x/metrics", 400, "", `invalid accountID`},
		{"bad tenant tsdb", "/cardinality/tenants/1:2:3/status/tsdb", 400, "", `invalid projectID`},
		{"bad limit", "/cardinality/tenants/1/metrics?limit=abc", 400, "", `limit=\"abc\": want an integer in [1, 10000]`},
		{"zero limit", "/cardinality/tenants/1/labels?limit=0", 400, "", `want an integer`},
		{"negative labels", "/cardinality/tenants/1/metrics?labels=-1", 400, "", `labels=`},
		{"topN too big", "/cardinality/tenants/1/status/tsdb?topN=1001", 400, "", `topN=\"1001\"`},
		{"forbidden tenant", "/cardinality/tenants/3/metrics", 403, "", "forbidden"},
		{"forbidden tenant tsdb", "/cardinality/tenants/3/status/tsdb", 403, "", "forbidden"},
		{"post", "/cardinality/tenants", 405, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			method := http.MethodGet
			if tt.name == "post" {
				method = http.MethodPost
			}
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(method, "/api/cardguard/v1"+tt.path, nil))
			if rec.Code != tt.status {
				t.Fatalf("status = %d, want %d; body %s", rec.Code, tt.status, rec.Body)
			}
			body := rec.Body.String()
			if tt.status < 300 || tt.status == 400 || tt.status == 404 {
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type = %q", ct)
				}
			}
			if tt.golden != "" {
				path := filepath.Join("testdata", tt.golden)
				if *update {
					if err := os.WriteFile(path, rec.Body.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if body != string(want) {
					t.Errorf("body differs from %s:\n%s\nwant:\n%s", path, body, want)
				}
			}
			if !strings.Contains(body, tt.substr) {
				t.Errorf("body %q does not contain %q", body, tt.substr)
			}
		})
	}
}
