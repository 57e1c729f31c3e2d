package limits

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/tenant"
)

const (
	adminToken = "admin-secret"
	tokenA     = "a-secret" // tenant 1:0
	tokenB     = "b-secret" // tenant 2:7
)

type fakeEstimator map[tenant.ID]int64

func (f fakeEstimator) TenantSeries(t tenant.ID) (int64, bool) { n, ok := f[t]; return n, ok }

type apiFixture struct {
	srv *httptest.Server
	reg *Registry
	enf *Enforcer
	dir string
}

func newAPIFixture(t *testing.T, dir string) *apiFixture {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	def := Default()
	def.MaxSeries = 100
	file := def.Clone()
	file.IngestionRate = 50
	reg := mustRegistry(t, def, map[tenant.ID]Limits{tenantB: file}, NewFileStore(dir))
	enf := NewEnforcer(EnforcerOptions{})
	a := auth.New(auth.Config{AdminToken: adminToken, Tenants: []auth.TenantToken{
		{Token: tokenA, Tenant: tenantA}, {Token: tokenB, Tenant: tenantB},
	}})
	router := chi.NewRouter()
	router.Route("/api/cardguard/v1", func(r chi.Router) {
		NewAPI(reg, enf, fakeEstimator{tenantA: 3}).Routes(r, a.RequireAdmin, a.RequireTenant("tenant"))
	})
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return &apiFixture{srv: srv, reg: reg, enf: enf, dir: dir}
}

func (f *apiFixture) do(t *testing.T, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+"/api/cardguard/v1"+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: bad JSON %q: %v", method, path, b, err)
		}
	}
	return resp.StatusCode, out
}

// dig walks a decoded JSON object by keys.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

func TestAPIAuth(t *testing.T) {
	t.Parallel()
	f := newAPIFixture(t, "")
	tests := []struct {
		method, path, token, body string
		want                      int
	}{
		{"GET", "/limits", "", "", 401},
		{"GET", "/limits", "wrong", "", 401},
		{"GET", "/limits", tokenA, "", 403},
		{"GET", "/limits", adminToken, "", 200},
		{"GET", "/limits/1", "", "", 401},
		{"GET", "/limits/1", tokenA, "", 200},
		{"GET", "/limits/1:0", tokenA, "", 200},
		{"GET", "/limits/2:7", tokenA, "", 403},
		{"GET", "/limits/2:7", tokenB, "", 200},
		{"GET", "/limits/2:7", adminToken, "", 200},
		{"GET", "/limits/x", adminToken, "", 400},
		{"PUT", "/limits/1", "", `{"max_series": 1}`, 401},
		{"PUT", "/limits/1", tokenA, `{"max_series": 1}`, 403},
		{"PATCH", "/limits/1", tokenA, `{"max_series": 1}`, 403},
		{"DELETE", "/limits/1", tokenA, "", 403},
		{"PUT", "/limits/x", adminToken, `{"max_series": 1}`, 400},
	}
	for _, tt := range tests {
		if got, body := f.do(t, tt.method, tt.path, tt.token, tt.body); got != tt.want {
			t.Errorf("%s %s with %q: got %d (%v), want %d", tt.method, tt.path, tt.token, got, body, tt.want)
		}
	}
	if f.reg.For(tenantA).MaxSeries != 100 {
		t.Fatal("a refused request changed limits")
	}
}

func TestAPIChangeCycle(t *testing.T) {
	t.Parallel()
	f := newAPIFixture(t, "")

	// PUT replaces and answers the new effective limits.
	code, body := f.do(t, "PUT", "/limits/1", adminToken, `{"max_series": 1000, "on_limit": "reject"}`)
	if code != 200 || dig(body, "limits", "max_series") != 1000.0 || dig(body, "limits", "on_limit") != "reject" ||
		dig(body, "limits", "max_labels_per_series") != 40.0 || dig(body, "tenant") != "1:0" {
		t.Fatalf("PUT: %d %v", code, body)
	}
	// Applied to traffic at once.
	if l := f.reg.For(tenantA); l.MaxSeries != 1000 || l.OnLimit != OnLimitReject {
		t.Fatalf("For after PUT: %+v", l)
	}
	// PATCH merges.
	code, body = f.do(t, "PATCH", "/limits/1", adminToken, `{"ingestion_rate": 25.5, "label_guard": {"action": "drop_label"}}`)
	if code != 200 || dig(body, "limits", "max_series") != 1000.0 || dig(body, "limits", "ingestion_rate") != 25.5 ||
		dig(body, "limits", "label_guard", "action") != "drop_label" {
		t.Fatalf("PATCH: %d %v", code, body)
	}
	if dig(body, "api_override", "on_limit") != "reject" || dig(body, "api_override", "max_labels_per_series") != nil {
		t.Fatalf("api_override should hold exactly what was set: %v", dig(body, "api_override"))
	}
	// PUT again replaces everything the API set.
	if code, body = f.do(t, "PUT", "/limits/1", adminToken, `{"max_series_per_metric": 9}`); code != 200 ||
		dig(body, "limits", "max_series") != 100.0 || dig(body, "limits", "on_limit") != "drop" {
		t.Fatalf("second PUT: %d %v", code, body)
	}

	// The list shows defaults and both tenants with an override.
	code, body = f.do(t, "GET", "/limits", adminToken, "")
	if code != 200 || dig(body, "defaults", "max_series") != 100.0 ||
		dig(body, "tenants", "1:0", "limits", "max_series_per_metric") != 9.0 ||
		dig(body, "tenants", "2:7", "file_override", "ingestion_rate") != 50.0 ||
		dig(body, "tenants", "2:7", "api_override") != nil {
		t.Fatalf("list: %d %v", code, body)
	}

	// DELETE falls back; a second DELETE is 404.
	if code, body = f.do(t, "DELETE", "/limits/1", adminToken, ""); code != 200 || dig(body, "limits", "max_series_per_metric") != 0.0 {
		t.Fatalf("DELETE: %d %v", code, body)
	}
	if code, body = f.do(t, "DELETE", "/limits/1", adminToken, ""); code != 404 || dig(body, "error") == nil {
		t.Fatalf("second DELETE: %d %v", code, body)
	}
	if f.reg.For(tenantA).MaxSeriesPerMetric != 0 {
		t.Fatal("DELETE not applied")
	}
}

func TestAPIUsage(t *testing.T) {
	t.Parallel()
	f := newAPIFixture(t, "")
	l := f.reg.For(tenantA) // max_series 100
	for i := range 5 {
		f.enf.AdmitSeries(tenantA, l, "m", uint64(i))
	}
	f.enf.RecordDiscard(tenantA, ReasonMaxSeries, 4, false)
	f.enf.RecordDiscard(tenantA, ReasonMaxLabelsPerSeries, 2, true)
	code, body := f.do(t, "GET", "/limits/1", tokenA, "")
	if code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	checks := []struct {
		path []string
		want any
	}{
		{[]string{"usage", "series", "active"}, 5.0},
		{[]string{"usage", "series", "tracked"}, true},
		{[]string{"usage", "series", "estimate"}, 3.0},
		{[]string{"usage", "series", "limit"}, 100.0},
		{[]string{"usage", "discarded_samples", "max_series"}, 4.0},
		{[]string{"usage", "dry_run_discarded_samples", "max_labels_per_series"}, 2.0},
		{[]string{"usage", "ingestion_rate", "limit"}, 0.0},
		{[]string{"limits", "max_series"}, 100.0},
	}
	for _, c := range checks {
		if got := dig(body, c.path...); got != c.want {
			t.Errorf("%v = %v, want %v", c.path, got, c.want)
		}
	}
	// Tenant B: file override shown, no estimate.
	_, body = f.do(t, "GET", "/limits/2:7", tokenB, "")
	if dig(body, "file_override", "ingestion_rate") != 50.0 || dig(body, "usage", "series", "estimate") != nil ||
		dig(body, "usage", "ingestion_rate", "burst") != 50.0 {
		t.Fatalf("tenant B: %v", body)
	}
}

func TestAPIInvalidBodies(t *testing.T) {
	t.Parallel()
	f := newAPIFixture(t, "")
	tests := []struct {
		name, method, body string
		want               int
		field              string
	}{
		{"unknown field", "PUT", `{"max_seriez": 1}`, 400, "max_seriez"},
		{"unknown nested field", "PATCH", `{"label_guard": {"bogus": true}}`, 400, "bogus"},
		{"unknown null field", "PATCH", `{"bogus": null}`, 400, "bogus"},
		{"negative", "PUT", `{"max_series": -1}`, 400, "max_series"},
		{"wrong type", "PATCH", `{"max_series": "1000"}`, 400, "max_series"},
		{"bad action", "PATCH", `{"label_guard": {"action": "explode"}}`, 400, "label_guard.action"},
		{"bad mode", "PUT", `{"mode": "observe"}`, 400, "mode"},
		{"not an object", "PUT", `[1,2]`, 400, ""},
		{"empty", "PUT", ``, 400, ""},
		{"broken", "PATCH", `{"max_series":`, 400, ""},
		{"trailing", "PUT", `{} {}`, 400, ""},
		{"too large", "PUT", `{"label_guard": {"exempt_labels": ["` + strings.Repeat("a", MaxBodyBytes) + `"]}}`, 413, ""},
	}
	for _, tt := range tests {
		code, body := f.do(t, tt.method, "/limits/1", adminToken, tt.body)
		if code != tt.want {
			t.Errorf("%s: got %d %v, want %d", tt.name, code, body, tt.want)
			continue
		}
		if body["error"] == nil || body["reason"] == nil {
			t.Errorf("%s: error body %v lacks error or reason", tt.name, body)
		}
		if tt.field != "" && body["field"] != tt.field {
			t.Errorf("%s: field %v, want %q", tt.name, body["field"], tt.field)
		}
	}
	if _, ok := f.reg.Override(tenantA); ok {
		t.Fatal("an invalid body left an override")
	}
}

func TestAPIPersistence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := newAPIFixture(t, dir)
	if code, body := f.do(t, "PATCH", "/limits/1", adminToken, `{"max_series": 321, "mode": "dry_run"}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	f.srv.Close()
	// A new registry over the same directory, as after a restart.
	g := newAPIFixture(t, dir)
	if l := g.reg.For(tenantA); l.MaxSeries != 321 || l.Mode != ModeDryRun {
		t.Fatalf("after restart: %+v", l)
	}
	code, body := g.do(t, "GET", "/limits/1", adminToken, "")
	if code != 200 || dig(body, "api_override", "max_series") != 321.0 {
		t.Fatalf("after restart: %d %v", code, body)
	}
}
