package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// TestUsageSources runs cardguard against a real VictoriaMetrics with an
// assets directory: a metric read only by a dashboard, one read only directly
// at VictoriaMetrics (bypassing cardguard) and one nobody reads; the usage
// report of each says which source saw it read.
func TestUsageSources(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "1:0"), 0o755); err != nil {
		t.Fatal(err)
	}
	dash := `{"title": "Service", "templating": {"list": [{"name": "job", "type": "query", "query": "label_values(dash_read_total, job)"}]},
	  "panels": [{"title": "Rate", "targets": [{"expr": "sum by (job) (rate(dash_read_total{job=~\"$job\"}[$__rate_interval]))"}]}]}`
	if err := os.WriteFile(filepath.Join(dir, "1:0", "service.json"), []byte(dash), 0o644); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) {
		c.Upstream.TenantLabel = "vm_account_id"
		c.Auth = auth.Config{AdminToken: adminTok, Tenants: []auth.TenantToken{{Token: tokA, Tenant: tenant.MustParse("1")}}}
		c.Usage.AssetsDir = dir
		c.Usage.MetricNamesStats.Interval = 200 * time.Millisecond
	})
	now := time.Now().UnixMilli()
	var ts []prompb.TimeSeries
	for _, m := range []string{"dash_read_total", "direct_read_total", "nobody_reads_total"} {
		ts = append(ts, genSeries(m, 2, now, prompb.Label{Name: "job", Value: "api"})...)
	}
	if code, body := e.push("/api/v1/write", &prompb.WriteRequest{Timeseries: ts}, "Authorization", "Bearer "+tokA); code != 204 {
		t.Fatalf("write: %d %s", code, body)
	}
	e.vm.Flush()
	// A client pointed at VictoriaMetrics itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, e.vm.URL+"/api/v1/query?query=direct_read_total")
		if code == 200 && strings.Contains(string(body), `"__name__":"direct_read_total"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("direct_read_total not readable at VictoriaMetrics: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	verdictsOr404 := func(metric string) map[string]queryaudit.SourceCheck {
		t.Helper()
		code, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1:0/metrics/"+metric, "Authorization", "Bearer "+tokA)
		if code == 404 {
			return nil // the tracker's view is refreshed every few seconds
		}
		if code != 200 {
			t.Fatalf("usage of %s: %d %s", metric, code, body)
		}
		var d struct {
			Queries uint64                   `json:"queries"`
			Checked []queryaudit.SourceCheck `json:"checked"`
		}
		if err := json.Unmarshal(body, &d); err != nil {
			t.Fatal(err)
		}
		out := map[string]queryaudit.SourceCheck{}
		for _, c := range d.Checked {
			out[c.Source] = c
		}
		return out
	}
	verdicts := func(metric string) map[string]queryaudit.SourceCheck {
		t.Helper()
		v := verdictsOr404(metric)
		if v == nil {
			t.Fatalf("usage of %s: 404", metric)
		}
		return v
	}
	// Wait for a poll after the write made tenant 1:0 known.
	for {
		c := verdictsOr404("direct_read_total")["victoriametrics"]
		if c.Verdict == queryaudit.VerdictUsed {
			break
		}
		if time.Now().After(deadline.Add(20 * time.Second)) {
			t.Fatalf("VictoriaMetrics' count of direct_read_total never showed: %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	want := map[string]map[string]string{
		"direct_read_total":  {"queries": "unused", "assets": "unused", "victoriametrics": "used"},
		"dash_read_total":    {"queries": "unused", "assets": "used", "victoriametrics": "unused"},
		"nobody_reads_total": {"queries": "unused", "assets": "unused", "victoriametrics": "unused"}, // until vmalert reads it below
	}
	for metric, w := range want {
		got := verdicts(metric)
		for src, v := range w {
			if got[src].Verdict != v || !got[src].Available {
				t.Errorf("%s: %s says %+v, want available and %s", metric, src, got[src], v)
			}
		}
	}
	refs, _ := json.Marshal(verdicts("dash_read_total")["assets"].Detail)
	if !strings.Contains(string(refs), `"file":"1:0/service.json"`) || !strings.Contains(string(refs), `"job":["matcher","grouping","values"]`) {
		t.Errorf("assets detail of dash_read_total: %s", refs)
	}

	// vmalert evaluates a rule through cardguard: its request as vmalert sends
	// it (app/vmalert/datasource), with the group named by the group's headers.
	q := url.Values{"query": {"sum(rate(nobody_reads_total[5m])) > 0"}, "time": {time.Now().UTC().Format(time.RFC3339)}, "step": {"60s"}}
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/api/v1/query?"+q.Encode(), nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tokA)
	req.Header.Set("X-Rule-Group", "node-alerts")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	vmBody, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("vmalert's query through cardguard: %d %s", resp.StatusCode, vmBody)
	}
	for {
		_, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1:0/metrics/nobody_reads_total", "Authorization", "Bearer "+tokA)
		var d struct{ Sources []queryaudit.SourceDetail }
		_ = json.Unmarshal(body, &d)
		if len(d.Sources) == 1 && d.Sources[0].Source == (queryaudit.Source{Kind: "vmalert", RuleGroup: "node-alerts"}) {
			break
		}
		if time.Now().After(deadline.Add(30 * time.Second)) {
			t.Fatalf("vmalert's read not attributed: %s", body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := verdicts("nobody_reads_total")["queries"].Verdict; got != queryaudit.VerdictUsed {
		t.Errorf("after vmalert's read, queries say %s", got)
	}

	code, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1:0/sources", "Authorization", "Bearer "+tokA)
	var st sourcesStatus
	if err := json.Unmarshal(body, &st); code != 200 || err != nil || st.Assets.Files != 1 || st.Assets.Problems != 0 ||
		st.MetricNamesStats == nil || !st.MetricNamesStats.Available || !st.MetricNamesStats.Shared {
		t.Errorf("sources: %d %s", code, body)
	}

	// Uploads: the admin only; the tenant lists its own.
	put := func(tok, name, body string) int {
		req, _ := http.NewRequest(http.MethodPut, e.srv.URL+"/api/cardguard/v1/usage/tenants/1:0/assets/"+url.PathEscape(name), strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	rules := "groups:\n- name: g\n  rules:\n  - alert: Nobody\n    expr: nobody_reads_total > 0\n"
	if code := put(tokA, "rules.yaml", rules); code != http.StatusForbidden {
		t.Errorf("tenant upload: %d, want 403", code)
	}
	if code := put(adminTok, "rules.yaml", rules); code != http.StatusOK {
		t.Errorf("admin upload: %d, want 200", code)
	}
	if got := verdicts("nobody_reads_total")["assets"].Verdict; got != queryaudit.VerdictUsed {
		t.Errorf("after the upload, assets say %s of nobody_reads_total", got)
	}
	for _, p := range []string{"assets", "assets/uses", "metrics/dash_read_total", "sources"} {
		if code, _ := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/2:0/"+p, "Authorization", "Bearer "+tokA); code != http.StatusForbidden {
			t.Errorf("tenant 1 reads tenant 2's %s: %d, want 403", p, code)
		}
	}
	code, body = get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1:0/assets", "Authorization", "Bearer "+tokA)
	if code != 200 || !strings.Contains(string(body), `"file":"uploaded/rules.yaml"`) || !strings.Contains(string(body), `"file":"1:0/service.json"`) {
		t.Errorf("asset list: %d %s", code, body)
	}
}
