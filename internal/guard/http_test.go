package guard

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/limits"
)

func TestRoutes(t *testing.T) {
	t.Parallel()
	clk := newClock()
	g := New(Options{Now: clk.Now})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1}
	g.Check(t1, p, "req", series("req", "user", "a"), nil, false)
	g.Check(t1, p, "req", series("req", "user", "b"), nil, false)

	r := chi.NewRouter()
	denied := 0
	requireTenant := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "ok" {
				denied++
				http.Error(w, "forbidden", http.StatusForbidden)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	g.Routes(r, requireTenant)

	tests := []struct {
		name, path, auth string
		wantStatus       int
		wantBody         string
	}{
		{"guarded pairs", "/guard/tenants/1", "ok", 200,
			`{"tenant":"1:0","guarded_count":1,"tracked_pairs":1,"guarded":[{"metric":"req","label":"user","admitted_values":1,"rejected_series":1,"since":"2025-01-01T00:00:00Z"}],"now":"2025-01-01T00:00:00Z"}`},
		{"unknown tenant", "/guard/tenants/7:3", "ok", 200,
			`{"tenant":"7:3","guarded_count":0,"tracked_pairs":0,"guarded":[],"now":"2025-01-01T00:00:00Z"}`},
		{"bad tenant", "/guard/tenants/x", "ok", 400, `invalid accountID`},
		{"middleware applies", "/guard/tenants/1", "", 403, `forbidden`},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(http.MethodGet, tt.path, nil)
		req.Header.Set("Authorization", tt.auth)
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		if rec.Code != tt.wantStatus {
			t.Fatalf("%s: status %d, want %d: %s", tt.name, rec.Code, tt.wantStatus, rec.Body)
		}
		body := strings.TrimSpace(rec.Body.String())
		if tt.wantStatus == 200 {
			if body != tt.wantBody {
				t.Fatalf("%s:\n got %s\nwant %s", tt.name, body, tt.wantBody)
			}
			var v any
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatal(err)
			}
		} else if !strings.Contains(body, tt.wantBody) {
			t.Fatalf("%s: body %q, want containing %q", tt.name, body, tt.wantBody)
		}
	}
	if denied != 1 {
		t.Fatalf("middleware denied %d requests, want 1", denied)
	}
}
