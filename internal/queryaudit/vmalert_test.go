package queryaudit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// vmalertRequest sends a rule evaluation the way vmalert v1.150 builds it
// (app/vmalert/datasource: newRequest, setPrometheusInstantReqParams and
// setReqParams) through Go's real http.Client, and returns what a server gets:
// the header and the form the read path hands to Record.
func vmalertRequest(t *testing.T, path, query string, groupHeaders map[string]string, extra map[string]string) (http.Header, map[string][]string) {
	t.Helper()
	type got struct {
		h    http.Header
		form map[string][]string
	}
	ch := make(chan got, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("ParseForm: %v", err)
		}
		ch <- got{r.Header.Clone(), r.Form}
	}))
	defer srv.Close()
	req, err := http.NewRequest(http.MethodPost, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range groupHeaders {
		req.Header.Set(k, v)
	}
	q := req.URL.Query()
	q.Set("time", time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339))
	q.Set("step", fmt.Sprintf("%ds", 60))
	for k, v := range extra {
		q.Set(k, v)
	}
	q.Set("query", query)
	req.URL.RawQuery = q.Encode()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	g := <-ch
	return g.h, g.form
}

func TestSourceVMAlert(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		headers map[string]string
		want    Source
	}{
		{
			name: "no group headers",
			want: Source{Kind: "vmalert"},
		},
		{
			name:    "group and rule from the group's headers",
			headers: map[string]string{"X-Rule-Group": "node", "X-Rule-Name": "NodeDown"},
			want:    Source{Kind: "vmalert", RuleGroup: "node", RuleName: "NodeDown"},
		},
		{
			name:    "user agent set by the group",
			headers: map[string]string{"User-Agent": "vmalert/team-a"},
			want:    Source{Kind: "vmalert", UserAgent: "vmalert/team-a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h, _ := vmalertRequest(t, "/api/v1/query", "up == 0", tc.headers, nil)
			if got := sourceFromHeader(h).keep(); got != tc.want {
				t.Errorf("sourceFromHeader(%v) = %+v, want %+v", h, got, tc.want)
			}
		})
	}
}

// Other Go programs that post forms, and Grafana, stay what they were.
func TestSourceNotVMAlert(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		h    http.Header
		want string
	}{
		{hdr("User-Agent", "Go-http-client/1.1", "Content-Type", "application/x-www-form-urlencoded"), "client"},
		{hdr("User-Agent", "Grafana/11.0.0", "Content-Type", "application/x-www-form-urlencoded", "X-Dashboard-Uid", "d"), "grafana"},
		{hdr("User-Agent", "Grafana/11.0.0", "X-Rule-Uid", "r"), "alert"},
		{hdr("User-Agent", "Prometheus/3.0"), "client"},
	} {
		if got := sourceFromHeader(tc.h).Kind; got != tc.want {
			t.Errorf("sourceFromHeader(%v).Kind = %q, want %q", tc.h, got, tc.want)
		}
	}
}

// A vmalert evaluation, recorded as the read path records it, credits the
// metric to the vmalert source with its group.
func TestRecordVMAlert(t *testing.T) {
	t.Parallel()
	r, clock, _ := newTestRecorder(t, RecorderConfig{}, namesFunc(func(tenant.ID) []string { return nil }))
	clock.Set(epoch)
	h, form := vmalertRequest(t, "/select/1/prometheus/api/v1/query",
		`sum(rate(http_requests_total{code=~"5.."}[5m])) by (job) > 0`,
		map[string]string{"X-Rule-Group": "api"}, map[string]string{"nocache": "1"})
	r.Record(t1, "query", form, h, epoch)
	r.Flush()
	m := findMetric(findTenant(r.Export(), t1), "http_requests_total")
	if m == nil {
		t.Fatal("http_requests_total not recorded")
	}
	if len(m.Sources) != 1 || m.Sources[0].Source != (Source{Kind: "vmalert", RuleGroup: "api"}) {
		t.Errorf("sources %+v, want one vmalert source of group api", m.Sources)
	}
}
