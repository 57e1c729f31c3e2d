package readpath

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

type seen struct {
	method, path, rawQuery, body, contentType string
	header                                    http.Header
}

// fakeVM answers every request with status (418 by default) and remembers what it
// was sent; a path ending in /fail answers 400 naming the path, as VictoriaMetrics does.
func fakeVM(t *testing.T) (*httptest.Server, func() (seen, int)) {
	var mu sync.Mutex
	var last seen
	var n int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = seen{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Get("Content-Type"), r.Header.Clone()}
		n++
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/format_query") {
			http.Error(w, `unsupported path requested: "`+r.URL.Path+`"`, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		if r.URL.Query().Get("fail") != "" {
			w.WriteHeader(http.StatusUnprocessableEntity)
			_, _ = w.Write([]byte(`{"status":"error"}`))
			return
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(`{"status":"success"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() (seen, int) { mu.Lock(); defer mu.Unlock(); return last, n }
}

type recorded struct {
	mu     sync.Mutex
	events []string
}

func (r *recorded) Record(t tenant.ID, endpoint string, form url.Values, _ http.Header, _ time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, t.String()+" "+endpoint+" "+form.Get("query")+strings.Join(form["match[]"], ","))
}

func newTestProxy(t *testing.T, cfg upstream.Config, rec UsageRecorder) *Proxy {
	s, err := upstream.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{MaxFormBytes: 1024}, s, rec, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestProxyForwardsFaithfully(t *testing.T) {
	t.Parallel()
	vm, last := fakeVM(t)
	rec := &recorded{}
	p := newTestProxy(t, upstream.Config{Mode: upstream.ModeCluster, InsertURL: vm.URL, SelectURL: vm.URL}, rec)
	t1 := tenant.MustParse("7:1")

	// GET: path, args, status, headers and body pass through; client tenant args and
	// headers do not.
	req := httptest.NewRequest("GET", "/select/7:1/prometheus/api/v1/query?query=up&extra_label=tenant%3D2&extra_filters[]=%7Ba%3D%22b%22%7D", nil)
	for k, v := range map[string]string{
		"Authorization": "Bearer cardguard-token", "Cookie": "session=1", "AccountID": "2", "ProjectID": "3",
		"X-Scope-OrgID": "2", "X-Forwarded-Host": "evil", "X-Forwarded-For": "10.1.1.1", "Accept-Encoding": "gzip",
		"User-Agent": "Grafana/12", "X-Dashboard-Uid": "abc",
	} {
		req.Header.Set(k, v)
	}
	req.Host = "client-chosen.example"
	w := httptest.NewRecorder()
	p.ServeTenant(w, req, t1, false, "api/v1/query")
	got, _ := last()
	if got.path != "/select/7:1/prometheus/api/v1/query" || got.rawQuery != "query=up" {
		t.Errorf("forwarded %s?%s", got.path, got.rawQuery)
	}
	for _, h := range []string{"Authorization", "Cookie", "AccountID", "ProjectID", "X-Scope-OrgID", "X-Forwarded-Host", "X-Dashboard-Uid"} {
		if v := got.header.Get(h); v != "" {
			t.Errorf("client header %s forwarded upstream: %q", h, v)
		}
	}
	if got.header.Get("Accept-Encoding") != "gzip" || got.header.Get("User-Agent") != "Grafana/12" ||
		got.header.Get("X-Forwarded-For") != "10.1.1.1, 192.0.2.1" || got.header.Get("X-Forwarded-Proto") != "http" {
		t.Errorf("forwarded headers %v", got.header)
	}
	if w.Code != http.StatusOK || w.Header().Get("X-Upstream") != "yes" || w.Body.String() != `{"status":"success"}` {
		t.Errorf("answer changed: %d %v %q", w.Code, w.Header(), w.Body.String())
	}

	// Form POST, as Grafana sends: the body is forwarded without tenant args.
	form := url.Values{"query": {"rate(x[5m])"}, "extra_label": {"tenant=2"}, "step": {"15"}}
	req = httptest.NewRequest("POST", "/select/7:1/prometheus/api/v1/query_range", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	p.ServeTenant(w, req, t1, false, "api/v1/query_range")
	got, _ = last()
	if got.method != "POST" || got.body != "query=rate%28x%5B5m%5D%29&step=15" || got.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("forwarded POST %+v", got)
	}

	// Non-series endpoints are not usage; neither is a read VictoriaMetrics refused.
	p.ServeTenant(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil), t1, false, "api/v1/status/buildinfo")
	p.ServeTenant(httptest.NewRecorder(), httptest.NewRequest("GET", "/x?match[]=up", nil), t1, false, "api/v1/label/job/values")
	p.ServeTenant(httptest.NewRecorder(), httptest.NewRequest("GET", "/x?query=refused&fail=1", nil), t1, false, "api/v1/query")
	want := []string{"7:1 query up", "7:1 query_range rate(x[5m])", "7:1 label/job/values up"}
	if strings.Join(rec.events, "|") != strings.Join(want, "|") {
		t.Errorf("recorded %q, want %q", rec.events, want)
	}
}

func TestProxySingleTenantLabel(t *testing.T) {
	t.Parallel()
	vm, last := fakeVM(t)
	p := newTestProxy(t, upstream.Config{Mode: upstream.ModeSingle, URL: vm.URL, TenantLabel: "vm_account_id"}, nil)
	req := httptest.NewRequest("GET", "/api/v1/series?match[]=up&extra_label=vm_account_id%3D9", nil)
	p.ServeTenant(httptest.NewRecorder(), req, tenant.MustParse("3"), false, "api/v1/series")
	if got, _ := last(); got.path != "/prometheus/api/v1/series" || got.rawQuery != "extra_label=vm_account_id%3D3%3A0&match%5B%5D=up" {
		t.Errorf("forwarded %s?%s", got.path, got.rawQuery)
	}
}

// TestProxyRequests: every class of request the proxy answers itself, and what it
// forwards, in each layout.
func TestProxyRequests(t *testing.T) {
	t.Parallel()
	vm, last := fakeVM(t)
	layouts := map[string]upstream.Config{
		"cluster":  {Mode: upstream.ModeCluster, InsertURL: vm.URL, SelectURL: vm.URL},
		"labelled": {Mode: upstream.ModeSingle, URL: vm.URL, TenantLabel: "t"},
		"shared":   {Mode: upstream.ModeSingle, URL: vm.URL},
	}
	form := "application/x-www-form-urlencoded"
	tests := []struct {
		name, layout, method, path, ctype, body string
		admin                                   bool
		want                                    int
		wantBody                                string // forwarded body ("-" for not forwarded)
		wantErr                                 string // in the answer
	}{
		{"query GET", "cluster", "GET", "api/v1/query?query=up", "", "", false, 200, "", ""},
		{"query form", "labelled", "POST", "api/v1/query", form, "query=up", false, 200, "query=up", ""},
		{"malformed pair skipped like VictoriaMetrics", "labelled", "POST", "api/v1/query", form, "query=up&foo=%zz", false, 200, "query=up", ""},
		{"semicolon pair skipped like VictoriaMetrics", "cluster", "POST", "api/v1/query", form, "query=up&a=1;b=2", false, 200, "query=up", ""},
		{"POST without body", "cluster", "POST", "api/v1/query?query=up", "", "", false, 200, "", ""},
		{"PUT", "cluster", "PUT", "api/v1/query", form, "query=up", false, 405, "-", "not allowed"},
		{"PATCH", "cluster", "PATCH", "api/v1/query", form, "query=up", false, 405, "-", "not allowed"},
		{"DELETE", "shared", "DELETE", "api/v1/series", "", "", true, 405, "-", "not allowed"},
		{"multipart", "cluster", "POST", "api/v1/query", "multipart/form-data; boundary=x", "--x\r\n", false, 415, "-", "multipart"},
		{"JSON body", "cluster", "POST", "api/v1/query", "application/json", "{}", false, 415, "-", "Content-Type"},
		{"text body", "shared", "POST", "api/v1/export", "text/plain", "m 1", true, 415, "-", "Content-Type"},
		{"remote write", "cluster", "POST", "api/v1/write", "application/x-protobuf", "x", true, 404, "-", "/insert/"},
		{"import as form", "labelled", "POST", "api/v1/import/prometheus", form, `m{a="b"} 9`, true, 404, "-", "/insert/"},
		{"import native", "shared", "POST", "api/v1/import/native", "", "x", true, 404, "-", "not supported by this proxy yet"},
		{"pushgateway import", "shared", "POST", "api/v1/import/prometheus/metrics/job/x", "", "m 1", true, 404, "-", "writes"},
		{"graphite tag registration", "shared", "POST", "tags/tagSeries", "", "", true, 404, "-", "writes"},
		{"unknown", "shared", "GET", "vmui/", "", "", true, 404, "-", "unsupported path"},
		{"graphite in cluster", "cluster", "GET", "metrics/find?query=*", "", "", true, 404, "-", "/graphite/"},
		{"graphite, tenant", "labelled", "GET", "metrics/find?query=*", "", "", false, 403, "-", "admin token"},
		{"graphite, admin", "labelled", "GET", "metrics/find?query=*", "", "", true, 200, "", ""},
		{"graphite, shared", "shared", "GET", "tags/owner", "", "", false, 200, "", ""},
		{"series count per URL", "cluster", "GET", "api/v1/series/count", "", "", false, 200, "", ""},
		{"series count by label", "labelled", "GET", "api/v1/series/count", "", "", false, 403, "-", "ignores the tenant filter"},
		{"top queries", "cluster", "GET", "api/v1/status/top_queries", "", "", false, 403, "-", "admin token"},
		{"cache reset", "shared", "GET", "internal/resetRollupResultCache", "", "", false, 403, "-", "admin token"},
		{"reload, admin", "labelled", "POST", "-/reload", "", "", true, 200, "", ""},
		{"format_query error names the client's path", "labelled", "GET", "api/v1/format_query?query=up", "", "", false, 400, "", `"/api/v1/format_query"`},
	}
	for _, tt := range tests {
		p := newTestProxy(t, layouts[tt.layout], nil)
		_, before := last()
		var body io.Reader
		if tt.body != "" {
			body = strings.NewReader(tt.body)
		}
		req := httptest.NewRequest(tt.method, "/"+tt.path, body)
		if tt.ctype != "" {
			req.Header.Set("Content-Type", tt.ctype)
		}
		w := httptest.NewRecorder()
		path, _, _ := strings.Cut(tt.path, "?")
		p.ServeTenant(w, req, tenant.MustParse("1"), tt.admin, path)
		got, after := last()
		if w.Code != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, w.Code, w.Body.String(), tt.want)
		}
		if tt.wantErr != "" && !strings.Contains(w.Body.String(), tt.wantErr) {
			t.Errorf("%s: answer %q does not say %q", tt.name, w.Body.String(), tt.wantErr)
		}
		if tt.wantBody != "-" && strings.Contains(w.Body.String(), `prometheus/`+path) {
			t.Errorf("%s: answer names the rewritten path: %q", tt.name, w.Body.String())
		}
		switch {
		case tt.wantBody == "-" && after != before:
			t.Errorf("%s: forwarded %s %s", tt.name, got.method, got.path)
		case tt.wantBody != "-" && after == before:
			t.Errorf("%s: not forwarded", tt.name)
		case tt.wantBody != "-" && got.body != tt.wantBody:
			t.Errorf("%s: forwarded body %q, want %q", tt.name, got.body, tt.wantBody)
		}
	}
}

func TestProxyErrors(t *testing.T) {
	t.Parallel()
	p := newTestProxy(t, upstream.Config{Mode: upstream.ModeSingle, URL: "http://127.0.0.1:1"}, nil)
	w := httptest.NewRecorder()
	p.ServeTenant(w, httptest.NewRequest("GET", "/api/v1/query?query=up", nil), tenant.ID{}, false, "api/v1/query")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"errorType":"unavailable"`) {
		t.Errorf("unreachable upstream: %d %s", w.Code, w.Body.String())
	}
	req := httptest.NewRequest("POST", "/api/v1/query", strings.NewReader("query="+strings.Repeat("a", 2000)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	p.ServeTenant(w, req, tenant.ID{}, false, "api/v1/query")
	if w.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized form: %d", w.Code)
	}
}

func TestCleanAPIPath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{"api/v1/query", "api/v1/query", true},
		{"api/v1/label/job/values", "api/v1/label/job/values", true},
		{"api/v1/label/%C3%A9/values", "api/v1/label/é/values", true},
		{"federate", "federate", true},
		{"", "", false},
		{"/api/v1/query", "", false},
		{"api//v1/query", "", false},
		{"../../2/prometheus/api/v1/query", "", false},
		{"api/v1/./query", "", false},
		{"api/v1/%2e%2e/query", "", false},
		{"api%2Fv1%2Fquery", "", false},
		{"api%5cv1", "", false},
		{`api\v1`, "", false},
		{"api/v1/query%00", "", false},
		{"api/v1/query\x00", "", false}, // what the router hands over for %00
		{"api/v1/query\n", "", false},
	}
	for _, tt := range tests {
		got, ok := CleanAPIPath(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("CleanAPIPath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
