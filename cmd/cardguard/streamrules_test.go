package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/streamrules"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/vmtest"
)

const vmagentRulesFile = "testdata/vmagent-streamaggr.yml"

// TestVMAgentStreamAggrConfigLoads: a vmagent -streamAggr.config file, which
// vmagent itself accepts, goes into the aggregate section as it is, globally
// and for a tenant, and passes -check-config; what cardguard keeps is the same
// document.
func TestVMAgentStreamAggrConfigLoads(t *testing.T) {
	t.Parallel()
	file, err := os.ReadFile(vmagentRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	if !testing.Short() {
		out, err := exec.Command(vmtest.Binary(t, "vmagent"), "-dryRun", "-streamAggr.config="+vmagentRulesFile,
			"-remoteWrite.url=http://127.0.0.1:1").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "all the configs are ok") {
			t.Fatalf("vmagent does not accept %s: %v\n%s", vmagentRulesFile, err, out)
		}
	}
	// The file under a key, each line indented and nothing else changed.
	indent := func(prefix string) string {
		var b strings.Builder
		for _, l := range strings.SplitAfter(string(file), "\n") {
			if l != "" {
				b.WriteString(prefix + l)
			}
		}
		return b.String()
	}
	policy := "aggregate:\n  global:\n" + indent("    ") + "  tenants:\n    \"1\":\n" + indent("      ")
	p := filepath.Join(t.TempDir(), "cardguard.yml")
	if err := os.WriteFile(p, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	var want any
	if err := yaml.Unmarshal(file, &want); err != nil {
		t.Fatal(err)
	}
	for name, l := range map[string]streamrules.List{"global": cfg.Aggregate.Global, "tenant 1": cfg.Aggregate.Tenants[tenant.MustParse("1")]} {
		var got any
		if err := yaml.Unmarshal(l, &got); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: kept\n%s\nnot the file's rules", name, l)
		}
		if n, err := streamrules.Check(l); err != nil || n != 3 {
			t.Errorf("%s: %d rules, %v", name, n, err)
		}
	}
	// The same file sent to the API is taken as it is too.
	if _, err := streamrules.Check(file); err != nil {
		t.Errorf("the API would refuse the file: %v", err)
	}
	// A rule vmagent refuses fails the whole policy file, naming the problem.
	bad := strings.Replace(policy, "interval: 1m", "interval: 500ms", 1)
	if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadConfig(p); err == nil || !strings.Contains(err.Error(), "cannot be smaller than 1s") {
		t.Errorf("a 500ms interval: %v", err)
	}
}

// TestReferenceShowsEveryRuleKey: the completeness check of the reference
// counts vmagent's rule keys like cardguard's own, so a key lib/streamaggr
// learns must be shown in configs/cardguard.yml too.
func TestReferenceShowsEveryRuleKey(t *testing.T) {
	t.Parallel()
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte("aggregate:\n  global:\n    - interval: 1m\n      outputs: [total]\n  tenants: {}\n"), &doc); err != nil {
		t.Fatal(err)
	}
	missing := missingKeys(reflect.TypeFor[Config](), &doc)
	for _, k := range []string{"aggregate.global[].dedup_interval", "aggregate.global[].keep_metric_names", "aggregate.global[].match"} {
		if !slices.Contains(missing, k) {
			t.Errorf("%s not reported missing: %q", k, missing)
		}
	}
	for _, k := range missing {
		if strings.HasPrefix(k, "aggregate.global[].input_relabel_configs[].") {
			t.Errorf("vmagent's relabel keys are required: %s", k)
		}
	}
}

// apiDo sends method to url with token (none when empty) and body.
func apiDo(t *testing.T, method, url, token, body string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestStreamRulesAgainstVictoriaMetrics: a vmagent rule set through the API
// aggregates req_total over user_id into req_total:1s_without_user_id_total,
// whose sum(increase()) in VictoriaMetrics is the inputs' true increase
// (within 2%), counter reset included, while no input series is stored;
// deleting the rule lets the series through again.
func TestStreamRulesAgainstVictoriaMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	api := e.srv.URL + "/api/cardguard/v1/aggregate/tenants/" + e.app.cfg.DefaultTenant.String()
	// staleness_interval: inputs are written once a second, so the default (the
	// interval) would forget an input whose sample came a moment late, and count
	// its next value whole, as vmagent does.
	rule := "- match: 'req_total'\n  interval: 1s\n  staleness_interval: 1m\n  without: [user_id]\n  outputs: [total]\n"
	if code, body, _ := apiDo(t, http.MethodPut, api, "", rule); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, body, hdr := apiDo(t, http.MethodGet, api, "", ""); code != http.StatusOK || body != rule || hdr.Get("X-Cardguard-Rules-Source") != "api" {
		t.Fatalf("GET: %d %q %v", code, body, hdr)
	}
	if b, err := os.ReadFile(filepath.Join(e.app.opts.dataDir, streamrules.RulesFile)); err != nil || !strings.Contains(string(b), "without: [user_id]") {
		t.Fatalf("not persisted in -dataDir: %v %s", err, b)
	}

	const users, steps, resetUser, resetStep = 50, 12, 7, 6
	counter := func(u, step int) float64 {
		from := 0
		if u == resetUser && step >= resetStep {
			from = resetStep
		}
		return float64((step - from) * (1 + u%3))
	}
	request := func(step int) *prompb.WriteRequest {
		ts := time.Now().UnixMilli()
		wr := &prompb.WriteRequest{}
		for u := range users {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "job", Value: "app"}, {Name: "user_id", Value: fmt.Sprintf("u%03d", u)}},
				Samples: []prompb.Sample{{Value: counter(u, step), Timestamp: ts}},
			})
		}
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "up"}, {Name: "job", Value: "app"}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
		})
		return wr
	}
	// The first samples only set the inputs' baselines (ignore_first_sample_interval);
	// the next come a second boundary later, after a flush of a zero total, and
	// then one per flush interval.
	pushTo(t, e.srv.URL+"/api/v1/write", request(0))
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1300 * time.Millisecond)))
	truth := 0.0
	for step := 1; step <= steps; step++ {
		pushTo(t, e.srv.URL+"/api/v1/write", request(step))
		for u := range users {
			if c, p := counter(u, step), counter(u, step-1); c >= p {
				truth += c - p
			} else {
				truth += c
			}
		}
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(1300 * time.Millisecond)))
	}
	const q = "sum(increase(req_total:1s_without_user_id_total[5m]))"
	var got float64
	waitFor(t, 30*time.Second, q+" in VictoriaMetrics", func() bool {
		e.vm.Flush()
		got = vmScalar(t, e, q)
		return math.Abs(got-truth) <= 0.02*truth
	})
	t.Logf("%s = %v, truth %v", q, got, truth)
	if n := vmScalar(t, e, "count(req_total:1s_without_user_id_total)"); n != 1 {
		t.Errorf("%v output series, want 1 (user_id aggregated away)", n)
	}
	if n := vmScalar(t, e, "count(req_total)"); n != -1 {
		t.Errorf("%v input series stored: the rule must take them", n)
	}
	if n := vmScalar(t, e, "count(up)"); n != 1 {
		t.Errorf("up, which no rule matches, not forwarded: %v", n)
	}
	if n := metricValue(t, e, "cardguard_aggregate_rules_input_samples_total", nil); n != users*(steps+1) {
		t.Errorf("cardguard_aggregate_rules_input_samples_total %v, want %d", n, users*(steps+1))
	}
	// The API shows the rule in force on the metric: its inputs and outputs.
	if u := ruleUsage(t, api+"/usage?metric=req_total"); len(u) != 1 || u[0].InputSeries != users || u[0].OutputSeries != 1 || u[0].DryRun {
		t.Errorf("usage: %+v, want one rule taking %d series into 1", u, users)
	}
	// And so does the dashboard's metric page.
	_, page := get(t, e.srv.URL+"/ui/fragment/metric?tenant="+e.app.cfg.DefaultTenant.String()+"&metric=req_total")
	if !strings.Contains(string(page), `id="rule-aggregations"`) || !strings.Contains(string(page), `<tr data-rule="#1">`) ||
		!strings.Contains(string(page), fmt.Sprintf(`<td class="num">%d</td>`, users)) {
		t.Errorf("the metric page does not show the rule taking %d series: %.2000s", users, page)
	}

	if code, body, _ := apiDo(t, http.MethodDelete, api, "", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _, _ := apiDo(t, http.MethodGet, api, "", ""); code != http.StatusNotFound {
		t.Errorf("GET after DELETE: %d", code)
	}
	pushTo(t, e.srv.URL+"/api/v1/write", request(steps+1))
	waitFor(t, 30*time.Second, "the input series in VictoriaMetrics after the rule was deleted", func() bool {
		e.vm.Flush()
		return vmScalar(t, e, "count(req_total)") == users
	})
}

// TestStreamRulesAPIAuth: changes need the admin token; a tenant token reads
// its own tenant's rules and nothing else; bad rules get 400 with
// lib/streamaggr's reason.
func TestStreamRulesAPIAuth(t *testing.T) {
	t.Parallel()
	e := authEnv(t, &lockedBuffer{})
	base := e.srv.URL + "/api/cardguard/v1/aggregate"
	rule := "- match: req_total\n  interval: 1m\n  without: [user_id]\n  outputs: [total]\n"
	jsonRule := `[{"match": "rpc_total", "interval": "30s", "by": ["job"], "outputs": ["total"]}]`
	tests := []struct {
		method, path, token, body string
		want                      int
	}{
		{"PUT", "/tenants/1", tokA, rule, 403},
		{"PUT", "/tenants/1", "", rule, 401},
		{"PUT", "/tenants/1", "wrong-token", rule, 401},
		{"PUT", "/tenants/1", adminTok, rule, 200},
		{"PUT", "/tenants/2", adminTok, jsonRule, 200},
		{"PUT", "/tenants/2", adminTok, "- interval: 1m\n  outputs: [totals]\n", 400},
		{"PUT", "/tenants/x", adminTok, rule, 400},
		{"PUT", "/global", tokA, rule, 403},
		{"GET", "/tenants/1", tokA, "", 200},
		{"GET", "/tenants/2", tokB, "", 200},
		{"GET", "/tenants/2", tokA, "", 403},
		{"GET", "/tenants/1", tokB, "", 403},
		{"GET", "/global", tokA, "", 403},
		{"GET", "/global", adminTok, "", 404},
		{"GET", "", tokA, "", 403},
		{"GET", "", adminTok, "", 200},
		{"DELETE", "/tenants/1", tokA, "", 403},
		{"DELETE", "/tenants/1", tokB, "", 403},
		{"DELETE", "/global", tokA, "", 403},
		{"DELETE", "/global", adminTok, "", 404},
	}
	for _, tt := range tests {
		code, body, _ := apiDo(t, tt.method, base+tt.path, tt.token, tt.body)
		if code != tt.want {
			t.Errorf("%s %s with token %q: %d %s, want %d", tt.method, tt.path, tt.token, code, body, tt.want)
		}
		if tt.want == 400 && tt.path == "/tenants/2" && !strings.Contains(body, "unsupported output") {
			t.Errorf("a bad rule's answer does not say why: %s", body)
		}
	}
	// What each reads is what was sent, as it was sent; the refused change
	// left tenant 2's rules alone.
	if _, body, _ := apiDo(t, "GET", base+"/tenants/1", tokA, ""); body != rule {
		t.Errorf("tenant 1 reads %q", body)
	}
	if _, body, _ := apiDo(t, "GET", base+"/tenants/2", tokB, ""); body != jsonRule {
		t.Errorf("tenant 2 reads %q", body)
	}
	if code, body, _ := apiDo(t, "DELETE", base+"/tenants/1", adminTok, ""); code != 204 {
		t.Errorf("admin DELETE: %d %s", code, body)
	}
	if code, _, _ := apiDo(t, "GET", base+"/tenants/1", tokA, ""); code != 404 {
		t.Errorf("GET after DELETE: %d", code)
	}
}

type ruleUsageRow struct {
	Rule         string `json:"rule"`
	Metric       string `json:"metric"`
	InputSeries  int    `json:"input_series"`
	OutputSeries int    `json:"output_series"`
	DryRun       bool   `json:"dry_run"`
}

func ruleUsage(t *testing.T, url string) []ruleUsageRow {
	t.Helper()
	code, body, _ := apiDo(t, http.MethodGet, url, "", "")
	var resp struct {
		Usage []ruleUsageRow `json:"usage"`
	}
	if err := json.Unmarshal([]byte(body), &resp); code != http.StatusOK || err != nil {
		t.Fatalf("GET %s: %d %v %s", url, code, err, body)
	}
	return resp.Usage
}

// TestStreamRulesDryRun: a tenant in dry run gets its series as they came, and
// the API counts what its rules would take and make of them.
func TestStreamRulesDryRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *Config) { c.Limits.Defaults.Mode = "dry_run" })
	api := e.srv.URL + "/api/cardguard/v1/aggregate/tenants/" + e.app.cfg.DefaultTenant.String()
	rule := "- match: '{__name__=~\"jobs_total|errors_total\"}'\n  interval: 1m\n  by: [job]\n  outputs: [total]\n"
	if code, body, _ := apiDo(t, http.MethodPut, api, "", rule); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	wr := &prompb.WriteRequest{}
	ts := time.Now().UnixMilli()
	for u := range 12 {
		for _, m := range []string{"jobs_total", "other_total"} {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: m}, {Name: "job", Value: fmt.Sprintf("j%d", u%3)}, {Name: "user_id", Value: fmt.Sprintf("u%d", u)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
			})
		}
	}
	pushTo(t, e.srv.URL+"/api/v1/write", wr)
	waitFor(t, 30*time.Second, "every series in VictoriaMetrics", func() bool {
		e.vm.Flush()
		return vmScalar(t, e, `count({__name__=~"jobs_total|other_total"})`) == 24
	})
	// 12 jobs_total series by job: 3 outputs; other_total is not matched.
	if u := ruleUsage(t, api+"/usage"); len(u) != 1 || u[0].Metric != "jobs_total" || u[0].InputSeries != 12 || u[0].OutputSeries != 3 || !u[0].DryRun {
		t.Fatalf("usage in dry run: %+v, want jobs_total: 12 series into 3", u)
	}
}
