package relabel

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDebugHandler(t *testing.T) {
	t.Parallel()
	h := DebugHandler()
	tests := []struct {
		name, method, body string
		wantStatus         int
		wantBody           string
	}{
		{"ok", http.MethodPost, `{"rules": "- {target_label: env, replacement: prod}\n- {regex: job, action: labeldrop}", "series": "up{job=\"a\",instance=\"h:1\"}"}`,
			200, `"output":{"rule":-1,"action":"","series":"{__name__=\"up\", env=\"prod\", instance=\"h:1\"}"`},
		{"dropped", http.MethodPost, `{"rules": "- {action: drop_metrics, regex: up}", "series": "up"}`,
			200, `"steps":[{"rule":0,"action":"drop_metrics","changed":true,"dropped":true}],"output":null,"kept":false`},
		{"no rules", http.MethodPost, `{"rules": "", "series": "up"}`, 200, `"steps":[]`},
		{"bad yaml", http.MethodPost, `{"rules": "- {action: explode}", "series": "up"}`, 400, `bad rules: line 1: unknown relabel action "explode"`},
		{"unknown field in rule", http.MethodPost, `{"rules": "- {regexp: x}", "series": "up"}`, 400, `unknown field "regexp"`},
		{"bad series", http.MethodPost, `{"rules": "", "series": "up{"}`, 400, `bad series "up{"`},
		{"selector is not a series", http.MethodPost, `{"rules": "", "series": "up{a=~\"b\"}"}`, 400, `bad series`},
		{"empty series", http.MethodPost, `{"rules": ""}`, 400, `bad series: empty`},
		{"bad json", http.MethodPost, `{"rules": 1}`, 400, `bad request body`},
		{"unknown json field", http.MethodPost, `{"rule": ""}`, 400, `unknown field "rule"`},
		{"too large", http.MethodPost, `{"rules": "` + strings.Repeat("x", maxDebugBody) + `"}`, 413, `larger than`},
		{"get", http.MethodGet, ``, 405, `use POST`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, "/api/cardguard/v1/relabel/debug", strings.NewReader(tt.body)))
			if rec.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d: %s", rec.Code, tt.wantStatus, rec.Body)
			}
			if !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("body %s\nwant containing %s", rec.Body, tt.wantBody)
			}
			if rec.Code == 200 {
				var v map[string]any
				if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
					t.Fatalf("answer is not JSON: %v", err)
				}
			}
		})
	}
}
