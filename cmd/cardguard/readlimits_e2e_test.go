package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// pushUniform writes metrics metric_0..metric_<metrics-1> of perMetric series each
// for tenant tn: label id unique per series, instance one of 100 values and job one
// of 10, evenly spread, so that an equality matcher selects an exact share.
func pushUniform(t *testing.T, e *env, tn, prefix string, metrics, perMetric int) {
	t.Helper()
	ts := time.Now().Add(-time.Minute).UnixMilli()
	const batch = 10_000
	var wr prompb.WriteRequest
	flush := func() {
		if len(wr.Timeseries) == 0 {
			return
		}
		if code, body := e.push("/insert/"+tn+"/prometheus/api/v1/write", &wr); code != 204 {
			t.Fatalf("push: %d %s", code, body)
		}
		wr.Timeseries = wr.Timeseries[:0]
	}
	for m := 0; m < metrics; m++ {
		name := fmt.Sprintf("%s_%d", prefix, m)
		for i := 0; i < perMetric; i++ {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels: []prompb.Label{
					{Name: "__name__", Value: name}, {Name: "id", Value: strconv.Itoa(i)},
					{Name: "instance", Value: "i-" + strconv.Itoa(i%100)}, {Name: "job", Value: "j-" + strconv.Itoa(i%10)},
				},
				Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}},
			})
			if len(wr.Timeseries) == batch {
				flush()
			}
		}
	}
	flush()
	e.vm.Flush()
	e.app.tracker.Refresh()
}

type promAnswer struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
	Data      struct {
		Result []json.RawMessage `json:"result"`
	} `json:"data"`
	Stats struct {
		SeriesFetched     json.Number `json:"seriesFetched"`
		ExecutionTimeMsec int64       `json:"executionTimeMsec"`
	} `json:"stats"`
}

func promQuery(t *testing.T, e *env, tn, query string, hdr ...string) (int, http.Header, promAnswer) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/select/"+tn+"/prometheus/api/v1/query?query="+url.QueryEscape(query), nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a promAnswer
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatalf("%s: %d %v: %.300s", query, resp.StatusCode, err, b)
	}
	return resp.StatusCode, resp.Header, a
}

// TestMaxSeriesPerQueryAgainstVictoriaMetrics: a tenant with 100k series and
// max_series_per_query 50,000. {__name__=~".+"} is refused before it runs, with the
// estimate and the limit in a Prometheus-style error; selective queries pass, and
// the estimate the check makes for them is within 10% of what VictoriaMetrics
// reports in stats.seriesFetched for the same query.
func TestMaxSeriesPerQueryAgainstVictoriaMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	e := newEnv(t, multiTenant("overrides:\n  \"1\":\n    max_series_per_query: 50000\n"))
	pushUniform(t, e, "1", "app_metric", 10, 10_000)
	t1 := tenant.MustParse("1")

	code, hdr, a := promQuery(t, e, "1", `{__name__=~".+"}`)
	if code != 422 || a.Status != "error" || a.ErrorType != "execution" || !strings.Contains(a.Error, "max_series_per_query") ||
		!strings.Contains(a.Error, "50000") || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("{__name__=~\".+\"}: %d %+v", code, a)
	}
	t.Logf("refused: %s", a.Error)
	if n, _ := e.app.proxy.Limiter().EstimateSeries(t1, `{__name__=~".+"}`); n < 90_000 || n > 110_000 {
		t.Errorf(`estimate of {__name__=~".+"} = %d, want about 100,000`, n)
	}

	for _, q := range []string{
		`app_metric_3{instance="i-7"}`,
		`app_metric_1{job="j-3"}`,
		`sum(app_metric_2{job=~"j-1|j-2"})`,
		`app_metric_4`,
		`{__name__=~"app_metric_[5-7]", instance="i-1"}`,
		`{instance="i-42"}`,
		`rate(app_metric_5{job="j-9"}[5m]) / on(id) app_metric_6{job="j-9"}`,
	} {
		code, _, a := promQuery(t, e, "1", q)
		if code != 200 {
			t.Errorf("%s: %d %s", q, code, a.Error)
			continue
		}
		fetched, err := a.Stats.SeriesFetched.Int64()
		if err != nil || fetched == 0 {
			t.Errorf("%s: no stats.seriesFetched in VictoriaMetrics' answer: %q", q, a.Stats.SeriesFetched)
			continue
		}
		est, ok := e.app.proxy.Limiter().EstimateSeries(t1, q)
		diff := float64(est-fetched) / float64(fetched)
		t.Logf("%-70s estimate %6d  seriesFetched %6d  (%+.1f%%)", q, est, fetched, diff*100)
		if !ok || diff > 0.10 || diff < -0.10 {
			t.Errorf("%s: estimate %d is not within 10%% of seriesFetched %d", q, est, fetched)
		}
	}
	// The same query for a tenant without the limit passes.
	if code, _, a := promQuery(t, e, "2", `{__name__=~".+"}`); code != 200 {
		t.Errorf("tenant 2 without a limit: %d %s", code, a.Error)
	}
	if got := metricValue(t, e, "cardguard_refused_queries_total", map[string]string{"tenant": "1:0", "reason": "max_series_per_query"}); got != 1 {
		t.Errorf("cardguard_refused_queries_total = %v, want 1", got)
	}
}

// TestTopQueriesPerTenantAgainstVictoriaMetrics: two Grafana dashboards of tenant 1,
// one cheap and one expensive, and a query of tenant 2. Tenant 1's top queries
// rank the expensive dashboard first, and neither tenant's list ever shows the
// other's query text.
func TestTopQueriesPerTenantAgainstVictoriaMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	e := newEnv(t, multiTenant(""))
	pushUniform(t, e, "1", "shop_metric", 2, 5_000)
	pushUniform(t, e, "2", "secret_metric", 1, 100)
	cheap := []string{"X-Dashboard-Uid", "cheap", "X-Dashboard-Title", "Cheap board", "X-Panel-Id", "1"}
	costly := []string{"X-Dashboard-Uid", "costly", "X-Dashboard-Title", "Costly board", "X-Panel-Id", "2"}
	for i := 0; i < 5; i++ {
		for _, q := range []struct {
			tn, query string
			hdr       []string
		}{
			{"1", `shop_metric_0{instance="i-3"}`, cheap},
			{"1", `shop_metric_0{instance="i-4"}`, cheap},
			{"1", `count(shop_metric_1) + count(shop_metric_0)`, costly},
			{"2", `secret_metric_0{job="j-1"}`, nil},
		} {
			if code, _, a := promQuery(t, e, q.tn, q.query, q.hdr...); code != 200 {
				t.Fatalf("%s: %d %s", q.query, code, a.Error)
			}
		}
	}
	var top queryaudit.TopQueries
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1/top_queries?topN=10")
		if code != 200 {
			t.Fatalf("top_queries: %d %s", code, body)
		}
		if err := json.Unmarshal(body, &top); err != nil {
			t.Fatal(err)
		}
		if n := len(top.TopByCount); n == 3 && top.TopByCount[0].Count+top.TopByCount[1].Count+top.TopByCount[2].Count == 15 {
			if strings.Contains(string(body), "secret_metric") {
				t.Errorf("tenant 1's top queries show tenant 2's query: %s", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("top queries incomplete: %s", body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	first := top.TopBySumSeriesFetched[0]
	if first.Source == nil || first.Source.DashboardUID != "costly" || first.SumSeriesFetched != 5*10_000 {
		t.Errorf("first by series fetched: %+v %+v, want the costly dashboard with 50,000 series", first, first.Source)
	}
	if src := top.TopSourcesBySumDuration[0].Source; src == nil || src.DashboardUID != "costly" {
		t.Errorf("first source by summed duration: %+v, want the costly dashboard", top.TopSourcesBySumDuration)
	}
	if m := top.TopMetricsBySumDuration; len(m) != 2 {
		t.Errorf("metrics: %+v, want shop_metric_0 and shop_metric_1", m)
	}
	_, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/2/top_queries")
	if strings.Contains(string(body), "shop_metric") || !strings.Contains(string(body), "secret_metric_0") {
		t.Errorf("tenant 2's top queries: %s", body)
	}
}
