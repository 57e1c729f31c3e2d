package adaptive

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestExemptionsBounded: an exemption regex is refused before it is built
// when its program would be large (a few kilobytes of `.{1000}` held
// gigabytes, on every replica, at every start), and so are overlong entries;
// the answer says which limit and nothing is stored.
func TestExemptionsBounded(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch)
	r := chi.NewRouter()
	pass := func(h http.Handler) http.Handler { return h }
	e.Routes(r, pass, pass, func(*http.Request) string { return "admin" })
	many := make([]string, 40)
	for i := range many {
		many[i] = `"x` + strings.Repeat("[a-z]{50}", 12) + `"`
	}
	for _, tc := range []struct {
		body string
		want int
		says string
	}{
		{`{"regex":["` + strings.Repeat(`.{1000}`, 100) + `"]}`, 400, "instructions"},
		{`{"regex":[` + strings.Join(many, ",") + `]}`, 400, "in all"},
		{`{"exact":["` + strings.Repeat("m", 5000) + `"]}`, 400, "at most 1024"},
		{`{"exact":["a"]} {"exact":["b"]}`, 400, "one JSON object"},
		{`{"regex":["tmp_.*|debug_.*"],"prefix":["test_"],"exact":["node_cpu"]}`, 200, "tmp_"},
	} {
		w := httptest.NewRecorder()
		r.ServeHTTP(w, httptest.NewRequest("PUT", "/recommendations/tenants/1:0/exemptions", strings.NewReader(tc.body)))
		if w.Code != tc.want || !strings.Contains(w.Body.String(), tc.says) {
			t.Errorf("PUT %.60s…: %d %.300s, want %d saying %q", tc.body, w.Code, w.Body, tc.want, tc.says)
		}
		if w.Code != 200 {
			if x := e.Exemptions(tn); len(x.Exact)+len(x.Regex) != 0 {
				t.Errorf("PUT %.60s… refused, yet stored: %+v", tc.body, x)
			}
		}
	}
}
