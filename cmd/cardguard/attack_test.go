package main

import (
	"bytes"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// spy sits between cardguard and a real VictoriaMetrics read port and remembers the
// headers of every request it passes on.
type spy struct {
	mu      sync.Mutex
	headers []http.Header
}

func newSpy(t *testing.T, target string) (*spy, string) {
	u, _ := url.Parse(target)
	s := &spy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.headers = append(s.headers, r.Header.Clone())
		s.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

func (s *spy) last() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.headers) == 0 {
		return nil
	}
	return s.headers[len(s.headers)-1]
}

// attackEnv is cardguard, with auth on and /metrics behind the admin token, in
// front of a real VictoriaMetrics: a single node with tenant_label, or a cluster.
type attackEnv struct {
	layout string
	app    *app
	srv    *httptest.Server
	spy    *spy
	flush  func()
	// upstreamQuery runs a query straight against VictoriaMetrics, across every
	// tenant, and returns the body.
	upstreamQuery func(q string) []byte
}

func newAttackEnv(t *testing.T, layout string) *attackEnv {
	t.Helper()
	e := &attackEnv{layout: layout}
	cfg := defaultConfig()
	switch layout {
	case "single":
		vm := vmtest.StartVM(t)
		var readURL string
		e.spy, readURL = newSpy(t, vm.URL)
		// Writes pass the spy too: a single node has one URL.
		cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: readURL, TenantLabel: "vm_account_id", Timeout: 5 * time.Second}
		e.flush = vm.Flush
		e.upstreamQuery = func(q string) []byte { return vm.Get("/api/v1/query?query=" + url.QueryEscape(q)) }
	case "cluster":
		c := vmtest.StartCluster(t)
		var selectURL string
		e.spy, selectURL = newSpy(t, c.SelectURL)
		cfg.Upstream = upstream.Config{Mode: upstream.ModeCluster, InsertURL: c.InsertURL, SelectURL: selectURL, Timeout: 5 * time.Second}
		e.flush = c.Flush
		e.upstreamQuery = func(q string) []byte {
			_, b := get(t, c.SelectURL+"/select/multitenant/prometheus/api/v1/query?query="+url.QueryEscape(q))
			return b
		}
	}
	cfg.Auth = auth.Config{AdminToken: adminTok, Tenants: []auth.TenantToken{
		{Token: tokA, Tenant: tenant.MustParse("1")},
		{Token: tokB, Tenant: tenant.MustParse("2")},
	}}
	o, err := parseFlags([]string{"-dataDir=" + t.TempDir(), "-metrics.requireAdmin"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(cfg, o, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	e.app = a
	e.srv = httptest.NewServer(a.routes())
	t.Cleanup(e.srv.Close)
	a.ready.Store(true)
	return e
}

// do sends one request through cardguard.
func (e *attackEnv) do(t *testing.T, method, path, token, ctype string, body []byte, hdr ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if body == nil {
		req.Body, req.ContentLength = http.NoBody, 0
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// attackRow is one attempt and what must come of it.
type attackRow struct {
	item   string // the issue item it covers
	method string
	path   string
	token  string
	ctype  string
	body   []byte
	hdr    []string
	// want is the status per layout ("single", "cluster"); a missing layout means
	// the row does not apply there.
	want map[string]int
	// has must appear in the answer; leaks must not.
	has string
	// pipeline: a write path the ingest pipeline serves (its limits, guard and
	// estimation apply), not the read path.
	pipeline bool
}

// leaks are what tenant 1 must never see: tenant 2's label values and metric name.
var leaks = []string{"tenant-two", "pw-two", "atk_only_two"}

func both(code int) map[string]int { return map[string]int{"single": code, "cluster": code} }

// TestAttackMatrix replays issue 18's hostile tenant against real VictoriaMetrics,
// a single node with tenant_label and a cluster, through cardguard with tenant 1's
// token: every row is a path that once leaked, wrote past the limits, lost data
// silently or reached the whole server.
func TestAttackMatrix(t *testing.T) {
	for _, layout := range []string{"single", "cluster"} {
		t.Run(layout, func(t *testing.T) {
			testAttackMatrix(t, newAttackEnv(t, layout))
		})
	}
}

func testAttackMatrix(t *testing.T, e *attackEnv) {
	now := time.Now().Add(-30 * time.Second)
	series := func(owner, pw string, names ...string) *prompb.WriteRequest {
		wr := &prompb.WriteRequest{}
		for _, n := range names {
			wr.Timeseries = append(wr.Timeseries, genSeries(n, 1, now.UnixMilli(),
				prompb.Label{Name: "owner", Value: owner}, prompb.Label{Name: "password", Value: pw})...)
		}
		return wr
	}
	push := func(path, tok string, wr *prompb.WriteRequest) {
		code, body := e.do(t, "POST", path, tok, "application/x-protobuf", encodeWR(wr),
			"Content-Encoding", "snappy", "X-Prometheus-Remote-Write-Version", "0.1.0")
		if code != 204 {
			t.Fatalf("write %s: %d %s", path, code, body)
		}
	}
	push("/insert/1/prometheus/api/v1/write", tokA, series("tenant-one", "pw-one", "atk_secret"))
	push("/insert/2/prometheus/api/v1/write", tokB, series("tenant-two", "pw-two", "atk_secret", "atk_only_two"))
	e.flush()
	// Tenant 2 queries, so that query statistics hold its metric names and text.
	for range 3 {
		e.do(t, "GET", "/select/2/prometheus/api/v1/query?query=atk_only_two", tokB, "", nil)
	}

	rw1 := encodeWR(series("bypass", "bypass", "atk_bypass"))
	ts := strconv.FormatInt(now.UnixMilli(), 10)
	jsonLine := []byte(`{"metric":{"__name__":"atk_bypass","via":"json"},"values":[1],"timestamps":[` + ts + `]}`)
	text := []byte(`atk_bypass{via="text"} 9`)
	csv := []byte("atk,1")
	sel := "/select/1/prometheus/"
	rec := "/api/cardguard/v1/recommendations/tenants/"
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	_ = mw.WriteField("query", "atk_secret")
	_ = mw.WriteField("extra_label", "vm_account_id=2:0")
	mw.Close()

	rows := []attackRow{
		// 1. Metadata of other tenants: handlers that ignore extra_label.
		{item: "1 graphite find", method: "GET", path: sel + "metrics/find?label=password&query=*", token: tokA, want: map[string]int{"single": 403, "cluster": 404}},
		{item: "1 graphite find tenants", method: "GET", path: sel + "metrics/find?label=vm_account_id&query=*", token: tokA, want: map[string]int{"single": 403, "cluster": 404}},
		{item: "1 graphite index", method: "GET", path: sel + "metrics/index.json", token: tokA, want: map[string]int{"single": 403, "cluster": 404}},
		{item: "1 graphite expand", method: "GET", path: sel + "metrics/expand?query=*", token: tokA, want: map[string]int{"single": 403, "cluster": 404}},
		{item: "1 graphite tags", method: "GET", path: sel + "tags/autoComplete/values?tag=owner", token: tokA, want: map[string]int{"single": 403, "cluster": 404}},
		{item: "1 graphite, admin", method: "GET", path: sel + "metrics/index.json", token: adminTok, want: map[string]int{"single": 200}, has: "atk_only_two"},
		{item: "1 top queries", method: "GET", path: sel + "api/v1/status/top_queries", token: tokA, want: both(403)},
		{item: "1 active queries", method: "GET", path: sel + "api/v1/status/active_queries", token: tokA, want: both(403)},
		{item: "1 metric names stats", method: "GET", path: sel + "api/v1/status/metric_names_stats", token: tokA, want: map[string]int{"single": 403, "cluster": 200}},
		{item: "1 metric names stats, admin", method: "GET", path: sel + "api/v1/status/metric_names_stats", token: adminTok, want: map[string]int{"single": 200}, has: "atk_only_two"},
		{item: "1 series count", method: "GET", path: sel + "api/v1/series/count", token: tokA, want: map[string]int{"single": 403, "cluster": 200}},
		{item: "1 tsdb status", method: "GET", path: sel + "api/v1/status/tsdb?topN=50&focusLabel=owner", token: tokA, want: both(200), has: "tenant-one"},
		{item: "1 label values", method: "GET", path: sel + "api/v1/label/password/values", token: tokA, want: both(200), has: "pw-one"},
		{item: "1 unknown path", method: "GET", path: sel + "vmui/", token: tokA, want: both(404)},
		{item: "1 single-tenant status", method: "GET", path: "/api/v1/status/top_queries", token: tokA, want: both(403)},

		// 2 and 3. Writes through the read path, as remote write, import formats and
		// curl's form content type, for any token: never forwarded, never 2xx.
		{item: "2 write", method: "POST", path: sel + "api/v1/write", token: tokA, ctype: "application/x-protobuf", body: rw1, hdr: []string{"Content-Encoding", "snappy"}, want: both(404), has: "/insert/"},
		{item: "2 push", method: "POST", path: sel + "api/v1/push", token: adminTok, ctype: "application/x-protobuf", body: rw1, hdr: []string{"Content-Encoding", "snappy"}, want: both(404)},
		{item: "3 write 2.0", method: "POST", path: sel + "api/v1/write", token: tokA, ctype: "application/x-protobuf;proto=io.prometheus.write.v2.Request", body: rw1, hdr: []string{"Content-Encoding", "snappy", "X-Prometheus-Remote-Write-Version", "2.0.0"}, want: both(404)},
		{item: "2 import", method: "POST", path: sel + "api/v1/import", token: tokA, body: jsonLine, want: both(404)},
		{item: "3 import as form", method: "POST", path: sel + "api/v1/import", token: tokA, ctype: "application/x-www-form-urlencoded", body: jsonLine, want: both(404)},
		{item: "3 import/prometheus as form", method: "POST", path: sel + "api/v1/import/prometheus", token: tokA, ctype: "application/x-www-form-urlencoded", body: text, want: both(404)},
		{item: "2 import/csv", method: "POST", path: sel + "api/v1/import/csv?format=2:metric:atk_bypass_csv", token: adminTok, body: csv, want: both(404)},
		{item: "2 import/native", method: "POST", path: sel + "api/v1/import/native", token: tokA, body: []byte("x"), want: both(404)},
		// The single-tenant import paths are write paths of the pipeline, for the
		// token's tenant: stored, counted, limited.
		{item: "2 import, single-tenant path", method: "POST", path: "/api/v1/import", token: tokA, body: []byte(`{"metric":{"__name__":"atk_piped","via":"json"},"values":[1],"timestamps":[` + ts + `]}`), want: both(204), pipeline: true},
		{item: "2 import/prometheus, single-tenant path", method: "POST", path: "/prometheus/api/v1/import/prometheus", token: tokA, ctype: "application/x-www-form-urlencoded", body: []byte(`atk_piped{via="text"} 9`), want: both(204), pipeline: true},
		{item: "2 pushgateway import", method: "POST", path: "/api/v1/import/prometheus/metrics/job/atk", token: tokA, body: text, want: both(404)},

		// 4. Whole-server actions.
		{item: "4 cache reset", method: "GET", path: sel + "internal/resetRollupResultCache", token: tokA, want: both(403)},
		{item: "4 metric names stats reset", method: "POST", path: sel + "api/v1/admin/status/metric_names_stats/reset", token: tokA, want: both(403)},
		{item: "4 reload", method: "POST", path: sel + "-/reload", token: tokA, want: both(403)},
		{item: "4 delete series", method: "POST", path: sel + "api/v1/admin/tsdb/delete_series?match[]=atk_secret", token: tokA, want: both(403)},
		{item: "4 cache reset, single-tenant path", method: "GET", path: "/prometheus/internal/resetRollupResultCache", token: tokA, want: both(404)},

		// 8. Methods and bodies that were passed unstripped and unaudited.
		{item: "8 PUT", method: "PUT", path: sel + "api/v1/query", token: tokA, ctype: "application/x-www-form-urlencoded", body: []byte("query=atk_secret&extra_label=vm_account_id%3D2%3A0"), want: both(405)},
		{item: "8 PATCH", method: "PATCH", path: sel + "api/v1/query", token: tokA, ctype: "application/x-www-form-urlencoded", body: []byte("query=atk_secret"), want: both(405)},
		{item: "8 multipart", method: "POST", path: sel + "api/v1/query", token: tokA, ctype: mw.FormDataContentType(), body: mp.Bytes(), want: both(415)},
		{item: "8 tenancy headers", method: "GET", path: sel + "api/v1/query?query=atk_secret", token: tokA,
			hdr: []string{"AccountID", "2", "ProjectID", "0", "X-Scope-OrgID", "2", "Cookie", "s=1"}, want: both(200), has: "tenant-one"},
		{item: "8 metrics, tenant", method: "GET", path: "/metrics", token: tokA, want: both(403)},
		{item: "8 metrics, anonymous", method: "GET", path: "/metrics", want: both(401)},
		{item: "8 metrics, admin", method: "GET", path: "/metrics", token: adminTok, want: both(200), has: "cardguard_query_requests_total"},

		// The write paths of the other protocols and the aggregation APIs keep a
		// tenant token on its own tenant, like remote write.
		{item: "P otlp for another tenant", method: "POST", path: "/insert/2/opentelemetry/v1/metrics", token: tokA, ctype: "application/x-protobuf", body: []byte("x"), want: both(403)},
		{item: "P import for another tenant", method: "POST", path: "/insert/2/prometheus/api/v1/import", token: tokA, body: jsonLine, want: both(403)},
		{item: "P influx for another tenant", method: "POST", path: "/insert/2/influx/write", token: tokA, body: []byte("atk_bypass,via=influx v=1"), want: both(403)},
		{item: "P datadog validate for another tenant", method: "POST", path: "/insert/2/datadog/api/v1/validate", token: tokA, body: []byte("{}"), want: both(403)},
		{item: "P otlp anonymous", method: "POST", path: "/opentelemetry/v1/metrics", ctype: "application/x-protobuf", body: []byte("x"), want: both(401)},
		{item: "P aggregations of another tenant", method: "GET", path: "/api/cardguard/v1/aggregations/tenants/2", token: tokA, want: both(403)},
		{item: "P aggregation rules of another tenant", method: "GET", path: "/api/cardguard/v1/aggregate/tenants/2/usage", token: tokA, want: both(403)},
		{item: "P aggregation rules set by a tenant", method: "PUT", path: "/api/cardguard/v1/aggregate/tenants/1", token: tokA, body: []byte("- interval: 1m\n  outputs: [total]\n"), want: both(403)},
		{item: "P top queries of another tenant", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/top_queries", token: tokA, want: both(403)},
		{item: "P series usage of another tenant", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/series", token: tokA, want: both(403)},
		{item: "P series usage of another tenant's metric", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/metrics/atk_secret/series", token: tokA, want: both(403)},
		{item: "P series usage of its own metric", method: "GET", path: "/api/cardguard/v1/usage/tenants/1/metrics/atk_secret/series", token: tokA, want: both(200), has: "atk_secret"},

		// Recommendations: a tenant reads its own; every change, and a preview
		// (it holds memory), is the admin's.
		{item: "R recommendations of another tenant", method: "GET", path: rec + "2/", token: tokA, want: both(403)},
		{item: "R recommendations of another tenant, refreshed", method: "GET", path: rec + "2/?refresh=true", token: tokA, want: both(403)},
		{item: "R applied rules of another tenant", method: "GET", path: rec + "2/applied", token: tokA, want: both(403)},
		{item: "R exemptions of another tenant", method: "GET", path: rec + "2/exemptions", token: tokA, want: both(403)},
		{item: "R metric rules of another tenant", method: "GET", path: rec + "2/metrics/atk_only_two", token: tokA, want: both(403)},
		{item: "R preview of another tenant", method: "GET", path: rec + "2/metrics/atk_only_two/preview", token: tokA, want: both(403)},
		{item: "R preview started for another tenant", method: "POST", path: rec + "2/metrics/atk_only_two/preview", token: tokA, want: both(403)},
		{item: "R apply for another tenant", method: "POST", path: rec + "2/metrics/atk_only_two/apply?force=true", token: tokA, body: []byte(`{"kind":"drop"}`), want: both(403)},
		{item: "R revert for another tenant", method: "POST", path: rec + "2/metrics/atk_only_two/revert", token: tokA, want: both(403)},
		{item: "R exemptions set for another tenant", method: "PUT", path: rec + "2/exemptions", token: tokA, body: []byte(`{"exact":["atk_only_two"]}`), want: both(403)},
		{item: "R preview started by a tenant", method: "POST", path: rec + "1/metrics/atk_secret/preview", token: tokA, body: []byte(`{"kind":"drop"}`), want: both(403)},
		{item: "R apply by a tenant", method: "POST", path: rec + "1/metrics/atk_secret/apply?force=true", token: tokA, body: []byte(`{"kind":"drop"}`), want: both(403)},
		{item: "R revert by a tenant", method: "POST", path: rec + "1/metrics/atk_secret/revert", token: tokA, want: both(403)},
		{item: "R exemptions set by a tenant", method: "PUT", path: rec + "1/exemptions", token: tokA, body: []byte(`{"prefix":["atk_"]}`), want: both(403)},
		{item: "R own recommendations", method: "GET", path: rec + "1/", token: tokA, want: both(200)},
		{item: "R wrong method", method: "DELETE", path: rec + "1/exemptions", token: adminTok, want: both(405)},
		{item: "R bad tenant", method: "GET", path: rec + "1:x/", token: adminTok, want: both(400)},
		{item: "R anonymous", method: "GET", path: rec + "1/", want: both(401)},
		{item: "R dashboard page, tenant", method: "GET", path: "/ui/fragment/recommendations?tenant=1", token: tokA, want: both(403)},
		{item: "R dashboard tenant savings, tenant", method: "GET", path: "/ui/fragment/adaptive-tenant?tenant=2", token: tokA, want: both(403)},
		{item: "R dashboard metric rules, tenant", method: "GET", path: "/ui/fragment/adaptive-metric?tenant=2&metric=atk_only_two", token: tokA, want: both(403)},
		{item: "R dashboard page, admin", method: "GET", path: "/ui/fragment/recommendations?tenant=1", token: adminTok, want: both(200)},

		// Assets: uploads and deletes are the admin's; names cannot leave the
		// tenant's upload directory.
		{item: "A assets of another tenant", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/assets", token: tokA, want: both(403)},
		{item: "A asset uses of another tenant", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/assets/uses", token: tokA, want: both(403)},
		{item: "A sources of another tenant", method: "GET", path: "/api/cardguard/v1/usage/tenants/2/sources", token: tokA, want: both(403)},
		{item: "A asset uploaded for another tenant", method: "PUT", path: "/api/cardguard/v1/usage/tenants/2/assets/d.json", token: tokA, body: []byte(`{"panels":[]}`), want: both(403)},
		{item: "A asset uploaded by a tenant", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/d.json", token: tokA, body: []byte(`{"panels":[]}`), want: both(403)},
		{item: "A asset deleted by a tenant", method: "DELETE", path: "/api/cardguard/v1/usage/tenants/1/assets/d.json", token: tokA, want: both(403)},
		{item: "A asset name with dot segments", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/..%2F2%2Fd.json", token: adminTok, body: []byte(`{"panels":[]}`), want: both(400)},
		{item: "A asset name with NUL", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/d%00.json", token: adminTok, body: []byte(`{"panels":[]}`), want: both(400)},
		{item: "A asset name of dots", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/...json", token: adminTok, body: []byte(`{"panels":[]}`), want: both(400)},
		{item: "A asset not JSON", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/d.json", token: adminTok, body: []byte(`{"panels":[`), want: both(400)},
		{item: "A asset too large", method: "PUT", path: "/api/cardguard/v1/usage/tenants/1/assets/d.json", token: adminTok, body: bytes.Repeat([]byte(" "), 5<<20), want: both(413)},
		{item: "A asset wrong method", method: "POST", path: "/api/cardguard/v1/usage/tenants/1/assets/d.json", token: adminTok, body: []byte(`{"panels":[]}`), want: both(405)},

		// Transparency: malformed form pairs are skipped as VictoriaMetrics does.
		{item: "T malformed pair", method: "POST", path: sel + "api/v1/query", token: tokA, ctype: "application/x-www-form-urlencoded", body: []byte("query=atk_secret&foo=%zz"), want: both(200), has: "tenant-one"},
		{item: "T semicolon", method: "POST", path: "/api/v1/query", token: tokA, ctype: "application/x-www-form-urlencoded", body: []byte("query=atk_secret&a=1;b=2&extra_label=vm_account_id%3D2%3A0"), want: both(200), has: "tenant-one"},
	}
	for _, r := range rows {
		want, ok := r.want[e.layout]
		if !ok {
			continue
		}
		code, body := e.do(t, r.method, r.path, r.token, r.ctype, r.body, r.hdr...)
		if code != want {
			t.Errorf("%s: %s %s: %d %.300s, want %d", r.item, r.method, r.path, code, body, want)
		}
		if r.has != "" && !bytes.Contains(body, []byte(r.has)) {
			t.Errorf("%s: answer does not contain %q: %.300s", r.item, r.has, body)
		}
		if r.token != adminTok && r.path != "/metrics" {
			for _, l := range leaks {
				if bytes.Contains(body, []byte(l)) {
					t.Errorf("%s: tenant 1 saw %q: %.300s", r.item, l, body)
				}
			}
		}
		if code/100 == 2 && r.body != nil && r.method == "POST" && strings.Contains(r.path, "/import") && !r.pipeline {
			t.Errorf("%s: a write on the read path was answered %d", r.item, code)
		}
	}

	// 2, 3: nothing the read path was sent was stored, in any tenant.
	e.flush()
	if b := e.upstreamQuery(`{__name__=~"atk_bypass.*"}`); bytes.Contains(b, []byte("atk_bypass")) {
		t.Errorf("a write through the read path reached VictoriaMetrics: %s", b)
	}
	// What the single-tenant import paths took went through the pipeline, for
	// tenant 1: counted per protocol.
	if _, b := e.do(t, "GET", "/metrics", adminTok, "", nil); !bytes.Contains(b, []byte(`cardguard_ingested_samples_total{protocol="vmimport",tenant="1:0"} 1`)) ||
		!bytes.Contains(b, []byte(`cardguard_ingested_samples_total{protocol="prometheus_import",tenant="1:0"} 1`)) {
		t.Errorf("the import paths' samples are not counted by the pipeline for tenant 1: %s", grepLines(b, "cardguard_ingested_samples_total"))
	}
	// 4: tenant 1's reset attempt did not reset the statistics.
	if e.layout == "single" {
		if _, b := e.do(t, "GET", sel+"api/v1/status/metric_names_stats", adminTok, "", nil); !bytes.Contains(b, []byte("atk_only_two")) {
			t.Errorf("metric name statistics were reset by a tenant: %s", b)
		}
	}

	// 8: what reached VictoriaMetrics on the last read: no credentials, no tenancy
	// headers, no client-chosen forwarding host.
	e.do(t, "GET", sel+"api/v1/query?query=atk_secret", tokA, "", nil,
		"AccountID", "2", "ProjectID", "7", "X-Scope-OrgID", "2", "Cookie", "s=1", "Host", "evil.example", "X-Forwarded-Host", "evil.example")
	h := e.spy.last()
	for _, k := range []string{"Authorization", "Accountid", "Projectid", "X-Scope-Orgid", "Cookie", "X-Forwarded-Host"} {
		if v := h.Get(k); v != "" {
			t.Errorf("header %s reached VictoriaMetrics: %q", k, v)
		}
	}
	if h.Get("X-Forwarded-For") == "" || h.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("X-Forwarded-For/Proto not set: %v", h)
	}

	// 8: a NUL in the path is refused, through the real router.
	for _, p := range []string{sel + "api/v1/query%00?query=atk_secret", "/api/v1/query%00?query=atk_secret", "/prometheus/api/v1/query%0a?query=atk_secret"} {
		if code, body := rawGet(t, e.srv.Listener.Addr().String(), p, tokA); code != 400 {
			t.Errorf("raw %s: %d %s, want 400", p, code, body)
		}
	}

	// Transparency: an upstream error names the path the client asked for.
	for _, p := range []string{"/api/v1/format_query?query=up", sel + "api/v1/format_query?query=up"} {
		code, body := e.do(t, "GET", p, tokA, "", nil)
		asked, _, _ := strings.Cut(p, "?")
		if code != 400 || !bytes.Contains(body, []byte(strconv.Quote(asked))) {
			t.Errorf("%s: %d %s, want VictoriaMetrics' 400 naming %q", p, code, body, asked)
		}
	}

	// 7: usage is recorded only for what VictoriaMetrics answered, and long names
	// are not kept.
	long := "atk_long_" + strings.Repeat("x", 300)
	for _, q := range []string{
		"query=atk_refused&time=not-a-time",                // VictoriaMetrics: 400/422
		"query=atk_toolong_" + strings.Repeat("y", 20<<10), // over -search.maxQueryLen
		"query=" + long,    // answered, but a name over the cap
		"query=atk_secret", // answered and recorded
	} {
		e.do(t, "POST", sel+"api/v1/query", tokA, "application/x-www-form-urlencoded", []byte(q))
	}
	deadline := time.Now().Add(10 * time.Second)
	var names []string
	for time.Now().Before(deadline) {
		names = usageNames(e, tenant.MustParse("1"))
		if strings.Contains(strings.Join(names, ","), "atk_secret") {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	joined := strings.Join(names, ",")
	if !strings.Contains(joined, "atk_secret") {
		t.Errorf("an answered query was not recorded: %v", names)
	}
	for _, bad := range []string{"atk_refused", "atk_toolong_", "atk_long_"} {
		if strings.Contains(joined, bad) {
			t.Errorf("usage recorded %s…: %.200s", bad, joined)
		}
	}
}

// usageNames lists the metric names recorded for t.
func usageNames(e *attackEnv, t tenant.ID) []string {
	var out []string
	for _, ts := range e.app.usage.Export().Tenants {
		if ts.Tenant != t {
			continue
		}
		for _, m := range ts.Metrics {
			out = append(out, m.Name)
		}
	}
	return out
}

// grepLines returns the lines of b that contain s.
func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
