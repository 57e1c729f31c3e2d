package queryaudit

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
	method, path, rawQuery, body, auth, contentType string
}

func fakeVM(t *testing.T) (*httptest.Server, func() seen) {
	var mu sync.Mutex
	var last seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		last = seen{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Get("Authorization"), r.Header.Get("Content-Type")}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Upstream", "yes")
		w.WriteHeader(http.StatusTeapot)
		_, _ = w.Write([]byte(`{"status":"success"}`))
	}))
	t.Cleanup(srv.Close)
	return srv, func() seen { mu.Lock(); defer mu.Unlock(); return last }
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
	return NewProxy(ProxyConfig{MaxFormBytes: 1024}, s, rec, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestProxyForwardsFaithfully(t *testing.T) {
	t.Parallel()
	vm, last := fakeVM(t)
	rec := &recorded{}
	p := newTestProxy(t, upstream.Config{Mode: upstream.ModeCluster, InsertURL: vm.URL, SelectURL: vm.URL}, rec)
	t1 := tenant.MustParse("7:1")

	// GET: path, args, status, headers and body pass through; client tenant args do not.
	req := httptest.NewRequest("GET", "/select/7:1/prometheus/api/v1/query?query=up&extra_label=tenant%3D2&extra_filters[]=%7Ba%3D%22b%22%7D", nil)
	req.Header.Set("Authorization", "Bearer cardguard-token")
	w := httptest.NewRecorder()
	p.ServeTenant(w, req, t1, "api/v1/query")
	got := last()
	if got.path != "/select/7:1/prometheus/api/v1/query" || got.rawQuery != "query=up" {
		t.Errorf("forwarded %s?%s", got.path, got.rawQuery)
	}
	if got.auth != "" {
		t.Errorf("client credentials forwarded upstream: %q", got.auth)
	}
	if w.Code != http.StatusTeapot || w.Header().Get("X-Upstream") != "yes" || w.Body.String() != `{"status":"success"}` {
		t.Errorf("answer changed: %d %v %q", w.Code, w.Header(), w.Body.String())
	}

	// Form POST, as Grafana sends: the body is forwarded without tenant args.
	form := url.Values{"query": {"rate(x[5m])"}, "extra_label": {"tenant=2"}, "step": {"15"}}
	req = httptest.NewRequest("POST", "/select/7:1/prometheus/api/v1/query_range", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	p.ServeTenant(w, req, t1, "api/v1/query_range")
	got = last()
	if got.method != "POST" || got.body != "query=rate%28x%5B5m%5D%29&step=15" || got.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("forwarded POST %+v", got)
	}

	// Non-series endpoints are not usage.
	p.ServeTenant(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil), t1, "api/v1/status/buildinfo")
	p.ServeTenant(httptest.NewRecorder(), httptest.NewRequest("GET", "/x?match[]=up", nil), t1, "api/v1/label/job/values")
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
	p.ServeTenant(httptest.NewRecorder(), req, tenant.MustParse("3"), "api/v1/series")
	if got := last(); got.path != "/prometheus/api/v1/series" || got.rawQuery != "extra_label=vm_account_id%3D3%3A0&match%5B%5D=up" {
		t.Errorf("forwarded %s?%s", got.path, got.rawQuery)
	}
}

func TestProxyErrors(t *testing.T) {
	t.Parallel()
	p := newTestProxy(t, upstream.Config{Mode: upstream.ModeSingle, URL: "http://127.0.0.1:1"}, nil)
	w := httptest.NewRecorder()
	p.ServeTenant(w, httptest.NewRequest("GET", "/api/v1/query?query=up", nil), tenant.ID{}, "api/v1/query")
	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), `"errorType":"unavailable"`) {
		t.Errorf("unreachable upstream: %d %s", w.Code, w.Body.String())
	}
	req := httptest.NewRequest("POST", "/api/v1/query", strings.NewReader("query="+strings.Repeat("a", 2000)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w = httptest.NewRecorder()
	p.ServeTenant(w, req, tenant.ID{}, "api/v1/query")
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
	}
	for _, tt := range tests {
		got, ok := CleanAPIPath(tt.in)
		if ok != tt.ok || got != tt.want {
			t.Errorf("CleanAPIPath(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}
