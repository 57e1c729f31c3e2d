package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// vmScalar runs an instant query directly against VictoriaMetrics and returns the
// single value, or -1 when the result is empty.
func vmScalar(t *testing.T, e *env, query string) float64 {
	t.Helper()
	var resp struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	body := e.vm.Get("/api/v1/query?query=" + url.QueryEscape(query))
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%s: %v: %s", query, err, body)
	}
	if len(resp.Data.Result) == 0 {
		return -1
	}
	f, _ := strconv.ParseFloat(resp.Data.Result[0].Value[1].(string), 64)
	return f
}

// metricValue reads one sample of cardguard's own /metrics, 0 when absent.
func metricValue(t *testing.T, e *env, name string, labels map[string]string) float64 {
	t.Helper()
	_, body := get(t, e.srv.URL+"/metrics")
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if ok {
			f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			return f
		}
	}
	return 0
}

// multiTenant keeps tenants apart on a single node by the vm_account_id label (a
// cluster keeps them apart itself) and applies limitsYAML.
func multiTenant(limitsYAML string) func(*Config) {
	return func(c *Config) {
		if c.Upstream.Mode == upstream.ModeSingle {
			c.Upstream.TenantLabel = "vm_account_id"
		}
		if limitsYAML != "" {
			if err := decodeStrict([]byte(limitsYAML), &c.Limits); err != nil {
				panic(err)
			}
		}
	}
}

// TestSeriesLimitAgainstVictoriaMetrics: tenant 1 with a 1,000-series limit pushes
// 1,500 series; exactly the first 1,000 land, keep receiving samples later, the
// rest are counted under max_series; tenant 2 in the same run is untouched. It
// runs against a single node and against a cluster.
func TestSeriesLimitAgainstVictoriaMetrics(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testSeriesLimit(t, newEnvOn(t, layout, multiTenant("overrides:\n  \"1\":\n    max_series: 1000\n"), io.Discard))
		})
	}
}

func testSeriesLimit(t *testing.T, e *env) {
	base := time.Now().Add(-2 * time.Minute).Truncate(time.Second)
	for round := 0; round < 2; round++ {
		ts := base.Add(time.Duration(round) * 30 * time.Second).UnixMilli()
		for _, tn := range []string{"1", "2"} {
			// Three requests of 500: the limit is reached in the middle one.
			for part := 0; part < 3; part++ {
				var wr prompb.WriteRequest
				for i := part * 500; i < (part+1)*500; i++ {
					wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
						Labels:  []prompb.Label{{Name: "__name__", Value: "limited_metric"}, {Name: "id", Value: strconv.Itoa(i)}},
						Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}},
					})
				}
				if code, body := e.push("/insert/"+tn+"/prometheus/api/v1/write", &wr); code != 204 {
					t.Fatalf("tenant %s round %d part %d: %d %s", tn, round, part, code, body)
				}
			}
		}
	}
	e.be.flush()
	if got := e.be.scalar("1", `count(limited_metric)`); got != 1000 {
		t.Errorf("tenant 1 has %v series in VictoriaMetrics, want exactly 1000", got)
	}
	if got := e.be.scalar("1", `count(limited_metric{id=~"1[0-9]{3}"})`); got != -1 {
		t.Errorf("series beyond the first 1000 reached VictoriaMetrics: %v", got)
	}
	// The admitted series kept flowing: both rounds' samples are there.
	if got := e.be.scalar("1", `sum(count_over_time(limited_metric[10m]))`); got != 2000 {
		t.Errorf("admitted series got %v samples over two rounds, want 2000", got)
	}
	if got := e.be.scalar("2", `count(limited_metric)`); got != 1500 {
		t.Errorf("tenant 2 has %v series, want 1500 (untouched)", got)
	}
	// Nothing landed outside the two tenants.
	if got := e.be.scalar("", `count(limited_metric)`); got != 2500 {
		t.Errorf("VictoriaMetrics holds %v series of limited_metric across tenants, want 2500", got)
	}
	if got := metricValue(t, e, "cardguard_discarded_samples_total", map[string]string{"tenant": "1:0", "reason": string(limits.ReasonMaxSeries)}); got != 1000 {
		t.Errorf("discarded samples for max_series = %v, want 1000 (500 per round)", got)
	}
	if got := metricValue(t, e, "cardguard_discarded_samples_total", map[string]string{"tenant": "2:0"}); got != 0 {
		t.Errorf("tenant 2 had %v discarded samples", got)
	}
}

// TestRateLimitAndDryRun: over the ingestion rate a write answers 429 with a sane
// Retry-After; a dry-run tenant over its series limit loses nothing and the
// would-be drops are counted.
func TestRateLimitAndDryRun(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testRateLimitAndDryRun(t, newEnvOn(t, layout, multiTenant(`overrides:
  "3":
    ingestion_rate: 100
    ingestion_burst: 200
  "4":
    max_series: 10
    mode: dry_run
  "5":
    max_series: 10
    on_limit: reject
`), io.Discard))
		})
	}
}

func testRateLimitAndDryRun(t *testing.T, e *env) {
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := &prompb.WriteRequest{Timeseries: genSeries("rated", 150, ts)}
	if code, body := e.push("/insert/3/prometheus/api/v1/write", wr); code != 204 {
		t.Fatalf("first request within the burst: %d %s", code, body)
	}
	req := &prompb.WriteRequest{Timeseries: genSeries("rated", 150, ts+1000)}
	code, retryAfter := pushRaw(t, e, "/insert/3/prometheus/api/v1/write", req)
	if code != http.StatusTooManyRequests {
		t.Fatalf("over the rate: status %d, want 429", code)
	}
	if n, err := strconv.Atoi(retryAfter); err != nil || n < 1 || n > 60 {
		t.Errorf("Retry-After %q, want whole seconds in [1, 60]", retryAfter)
	}

	if code, body := e.push("/insert/4/prometheus/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("dry", 50, ts)}); code != 204 {
		t.Fatalf("dry run tenant: %d %s", code, body)
	}
	code, body := e.push("/insert/5/prometheus/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("strict", 50, ts)})
	if code != 400 || !strings.Contains(body, "max_series") {
		t.Errorf("reject tenant over its limit: %d %q, want 400 naming max_series", code, body)
	}
	e.be.flush()
	if got := e.be.scalar("4", `count(dry)`); got != 50 {
		t.Errorf("dry-run tenant: %v series landed, want all 50", got)
	}
	if got := metricValue(t, e, "cardguard_dry_run_discarded_samples_total", map[string]string{"tenant": "4:0", "reason": "max_series"}); got != 40 {
		t.Errorf("would-drop count = %v, want 40", got)
	}
	if got := e.be.scalar("5", `count(strict)`); got != 10 {
		t.Errorf("reject tenant: %v series landed, want the 10 within the limit", got)
	}
}

func pushRaw(t *testing.T, e *env, path string, wr *prompb.WriteRequest) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(string(encodeWR(wr))))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestLabelGuardAgainstVictoriaMetrics: a metric whose user_id takes 100,000 values
// leaves at most max_values_per_label+1 distinct user_id values in
// VictoriaMetrics; a well-behaved metric in the same requests is untouched.
func TestLabelGuardAgainstVictoriaMetrics(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testLabelGuard(t, newEnvOn(t, layout, func(c *Config) {
				c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = guardMaxValues
				c.Limits.Defaults.LabelGuard.Action = limits.GuardOverflowValue
			}, io.Discard))
		})
	}
}

const guardMaxValues = 100

func testLabelGuard(t *testing.T, e *env) {
	const maxValues = guardMaxValues
	ts := time.Now().Add(-time.Minute).UnixMilli()
	for batch := 0; batch < 10; batch++ {
		var wr prompb.WriteRequest
		for i := batch * 10000; i < (batch+1)*10000; i++ {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "user_requests_total"}, {Name: "path", Value: "/api"}, {Name: "user_id", Value: strconv.Itoa(i)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
			})
		}
		wr.Timeseries = append(wr.Timeseries, genSeries("well_behaved", 50, ts, prompb.Label{Name: "zone", Value: "a"})...)
		if code, body := e.push("/api/v1/write", &wr); code != 204 {
			t.Fatalf("batch %d: %d %s", batch, code, body)
		}
	}
	e.be.flush()
	if got := e.be.scalar("0", `count(count by (user_id) (user_requests_total))`); got < 1 || got > maxValues+1 {
		t.Errorf("user_id has %v distinct values in VictoriaMetrics, want at most %d", got, maxValues+1)
	}
	if got := e.be.scalar("0", `count(user_requests_total{user_id="__cardguard_overflow__"})`); got != 1 {
		t.Errorf("overflow series count = %v, want 1", got)
	}
	if got := e.be.scalar("0", `count(well_behaved{zone="a"})`); got != 50 {
		t.Errorf("well_behaved has %v series, want 50 untouched", got)
	}
	_, body := get(t, e.srv.URL+"/api/cardguard/v1/guard/tenants/0")
	if !strings.Contains(string(body), `"user_id"`) || strings.Contains(string(body), "well_behaved") {
		t.Errorf("guard API does not list exactly the guarded pair: %s", body)
	}
}

// TestTopMetricsMatchVictoriaMetrics: cardguard's top 10 metrics by series equal
// VictoriaMetrics' own /api/v1/status/tsdb ranking.
func TestTopMetricsMatchVictoriaMetrics(t *testing.T) {
	e := newEnv(t, nil)
	ts := time.Now().Add(-time.Minute).UnixMilli()
	var wr prompb.WriteRequest
	// 15 metrics whose series counts are at least 10% apart, so a ranking by
	// estimates (0.81% error) cannot swap two of them.
	n := 40
	for i := 0; i < 15; i++ {
		wr.Timeseries = append(wr.Timeseries, genSeries(fmt.Sprintf("ranked_metric_%02d", i), n, ts, prompb.Label{Name: "job", Value: "x"})...)
		n = n * 12 / 10
	}
	if code, body := e.push("/api/v1/write", &wr); code != 204 {
		t.Fatalf("push: %d %s", code, body)
	}
	e.vm.Flush()
	e.app.tracker.Refresh()

	type entry struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	var ours, theirs struct {
		Data struct {
			TotalSeries             int64   `json:"totalSeries"`
			SeriesCountByMetricName []entry `json:"seriesCountByMetricName"`
		} `json:"data"`
	}
	_, body := get(t, e.srv.URL+"/api/cardguard/v1/cardinality/tenants/0/status/tsdb?topN=10")
	if err := json.Unmarshal(body, &ours); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if err := json.Unmarshal(e.vm.Get("/api/v1/status/tsdb?topN=10&date="+time.Now().UTC().Format("2006-01-02")), &theirs); err != nil {
		t.Fatal(err)
	}
	if len(theirs.Data.SeriesCountByMetricName) != 10 || len(ours.Data.SeriesCountByMetricName) != 10 {
		t.Fatalf("top lists: ours %d, VictoriaMetrics %d entries", len(ours.Data.SeriesCountByMetricName), len(theirs.Data.SeriesCountByMetricName))
	}
	for i := range theirs.Data.SeriesCountByMetricName {
		o, v := ours.Data.SeriesCountByMetricName[i], theirs.Data.SeriesCountByMetricName[i]
		if o.Name != v.Name {
			t.Errorf("rank %d: cardguard %s (%d), VictoriaMetrics %s (%d)", i, o.Name, o.Value, v.Name, v.Value)
		}
		if diff := float64(o.Value-v.Value) / float64(v.Value); diff > 0.02 || diff < -0.02 {
			t.Errorf("%s: estimate %d vs %d stored (%.1f%%)", v.Name, o.Value, v.Value, diff*100)
		}
	}
}

// TestQueryUsageReport: queries sent through cardguard with Grafana's headers show
// up in the usage report with their dashboard and panel; a metric pushed but never
// queried is reported as unused; the query results are VictoriaMetrics' own.
func TestQueryUsageReport(t *testing.T) {
	e := newEnv(t, nil)
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := &prompb.WriteRequest{}
	wr.Timeseries = append(wr.Timeseries, genSeries("queried_metric", 5, ts, prompb.Label{Name: "job", Value: "api"}, prompb.Label{Name: "pod", Value: "p1"})...)
	wr.Timeseries = append(wr.Timeseries, genSeries("forgotten_metric", 7, ts)...)
	if code, body := e.push("/api/v1/write", wr); code != 204 {
		t.Fatalf("push: %d %s", code, body)
	}
	e.vm.Flush()
	e.app.tracker.Refresh()

	q := url.Values{"query": {`sum by (job) (queried_metric{id!="x"})`}}
	hdr := []string{"X-Dashboard-Uid", "dash-123", "X-Dashboard-Title", "Checkout", "X-Panel-Id", "7", "X-Panel-Title", "Requests", "X-Grafana-User", "alice"}
	code, viaCG := postForm(t, e.srv.URL+"/api/v1/query", q, hdr...)
	dcode, direct := get(t, e.vm.URL+"/api/v1/query?"+q.Encode())
	if code != dcode || !sameJSON(t, viaCG, direct) {
		t.Errorf("query result changed: %d %s vs %d %s", code, viaCG, dcode, direct)
	}
	e.app.usage.Flush()

	_, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/0/metrics/queried_metric")
	for _, want := range []string{"dash-123", "Checkout", `"job"`, `"id"`, "alice"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("usage detail lacks %s: %s", want, body)
		}
	}
	if !regexp.MustCompile(`"queries":\s*1`).Match(body) {
		t.Errorf("usage detail does not count one query: %s", body)
	}
	_, body = get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/0/metrics?filter=unused")
	var rep struct {
		Metrics []struct {
			Metric         string `json:"metric"`
			SeriesEstimate int64  `json:"seriesEstimate"`
			Queries        uint64 `json:"queries"`
		} `json:"metrics"`
	}
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if len(rep.Metrics) != 1 || rep.Metrics[0].Metric != "forgotten_metric" || rep.Metrics[0].SeriesEstimate != 7 {
		t.Errorf("unused metrics: %+v, want only forgotten_metric with 7 series", rep.Metrics)
	}
}

var _ = tenant.ID{}
