package auth

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/tenant"
)

func testAuth() *Authenticator {
	return New(Config{
		AdminToken: "admin-secret",
		Tenants: []TenantToken{
			{Token: "a-secret", Tenant: tenant.MustParse("1")},
			{Token: "b-secret", Tenant: tenant.MustParse("2:5")},
		},
	})
}

func TestResolve(t *testing.T) {
	t.Parallel()
	a := testAuth()
	tests := []struct {
		name    string
		set     func(r *http.Request)
		want    Role
		wantErr error
	}{
		{name: "none", set: func(*http.Request) {}, wantErr: ErrNoCredentials},
		{name: "bearer admin", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer admin-secret") }, want: Role{Admin: true}},
		{name: "bearer lower case scheme", set: func(r *http.Request) { r.Header.Set("Authorization", "bearer a-secret") }, want: Role{Tenant: tenant.MustParse("1"), HasTenant: true}},
		{name: "basic password", set: func(r *http.Request) { r.SetBasicAuth("anything", "b-secret") }, want: Role{Tenant: tenant.MustParse("2:5"), HasTenant: true}},
		{name: "wrong", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer nope") }, wantErr: ErrBadCredentials},
		{name: "prefix of a token", set: func(r *http.Request) { r.Header.Set("Authorization", "Bearer a-secre") }, wantErr: ErrBadCredentials},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		tt.set(r)
		got, err := a.Resolve(r)
		if err != tt.wantErr || got != tt.want {
			t.Errorf("%s: got %+v, %v; want %+v, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestDisabledIsAdmin(t *testing.T) {
	t.Parallel()
	role, err := New(Config{}).Resolve(httptest.NewRequest("GET", "/", nil))
	if err != nil || !role.Admin {
		t.Fatalf("auth off: got %+v, %v", role, err)
	}
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	a := testAuth()
	r := chi.NewRouter()
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	r.With(a.RequireAdmin).Get("/admin", ok)
	r.With(a.RequireTenant("tenant")).Get("/t/{tenant}", ok)
	tests := []struct {
		path, token string
		want        int
	}{
		{"/admin", "", 401},
		{"/admin", "a-secret", 403},
		{"/admin", "admin-secret", 204},
		{"/t/1", "a-secret", 204},
		{"/t/1:0", "a-secret", 204},
		{"/t/2:5", "a-secret", 403},
		{"/t/2:5", "admin-secret", 204},
		{"/t/2:5", "", 401},
		{"/t/x", "admin-secret", 400},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("GET", tt.path, nil)
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if rec.Code != tt.want {
			t.Errorf("%s with %q: status %d, want %d", tt.path, tt.token, rec.Code, tt.want)
		}
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	bad := []Config{
		{Tenants: []TenantToken{{Token: "x"}}},
		{AdminToken: "a", Tenants: []TenantToken{{Token: ""}}},
		{AdminToken: "a", Tenants: []TenantToken{{Token: "a"}}},
		{AdminToken: "a", Tenants: []TenantToken{{Token: "x"}, {Token: "x", Tenant: tenant.ID{AccountID: 1}}}},
	}
	for i, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("config %d: want error", i)
		}
	}
	if err := (&Config{AdminToken: "a", Tenants: []TenantToken{{Token: "b"}}}).Validate(); err != nil {
		t.Errorf("good config: %v", err)
	}
}
