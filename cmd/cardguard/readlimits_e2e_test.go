package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
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
	// The estimates are refreshed in the background: wait for them to cover
	// what was written.
	waitFor(t, 30*time.Second, "the series estimate", func() bool {
		n, _ := e.app.proxy.Limiter().EstimateSeries(t1, `{__name__=~".+"}`)
		return n >= 90_000
	})

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

// TestReadLimitsIsolateTenantsAgainstVictoriaMetrics: tenant 1 (A) has
// max_concurrent_queries 1 and query_rate 1 and sends heavy queries from 10
// workers at 10 queries/s in total, 10 times both limits; tenant 2 (B) queries
// one at a time. A gets 429 with Retry-After; B's p50 and p99 are measured in
// alternating rounds with A idle and A busy, in one run, and compared by the
// median over rounds. B is also measured straight against VictoriaMetrics in the
// same rounds: what A's admitted queries cost VictoriaMetrics' CPU shows there
// too, and is what the limits' values bound. The timing itself (B's p50 and p99
// within 20%, what its p99 is made of, VictoriaMetrics' per-query parallelism) is
// measured by `make bench-readlimits` and recorded in BENCHMARKS.md; on a shared
// machine this test asserts the answers and a loose p50 bound, and logs the rest.
// B sends one query at a time here, so fewer of its queries meet a stall than an
// independent user's would: its logged p99 understates what A costs B.
func TestReadLimitsIsolateTenantsAgainstVictoriaMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("integration")
	}
	e := newEnv(t, multiTenant("overrides:\n  \"1\":\n    max_concurrent_queries: 1\n    query_rate: 1\n"))
	pushUniform(t, e, "1", "heavy_metric", 2, 10_000)
	pushUniform(t, e, "2", "light_metric", 1, 100)

	bClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	aClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	bURL := e.srv.URL + "/select/2/prometheus/api/v1/query?query=" + url.QueryEscape(`sum(light_metric_0{job="j-1"})`)
	aURL := e.srv.URL + "/select/1/prometheus/api/v1/query?query=" + url.QueryEscape(`count(heavy_metric_0) + count(heavy_metric_1 > 10)`)
	directURL := e.vm.URL + "/api/v1/query?query=" + url.QueryEscape(`sum(light_metric_0{job="j-1",vm_account_id="2:0"})`)
	queryB := func() time.Duration { return timedGet(t, bClient, bURL) }
	queryDirect := func() time.Duration { return timedGet(t, bClient, directURL) }
	for range 50 { // warm up connections, caches and the plan cache
		queryB()
	}

	type aStats struct{ ok, limited, retryAfter, other int }
	loadA := func(stop <-chan struct{}) <-chan aStats {
		out := make(chan aStats, 1)
		results := make(chan aStats, 10)
		for range 10 {
			go func() {
				var s aStats
				tick := time.NewTicker(time.Second) // 10 workers × 1/s = 10/s
				defer tick.Stop()
				for {
					select {
					case <-stop:
						results <- s
						return
					case <-tick.C:
					}
					resp, err := aClient.Get(aURL)
					if err != nil {
						s.other++
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch resp.StatusCode {
					case 200:
						s.ok++
					case 429:
						s.limited++
						if resp.Header.Get("Retry-After") != "" {
							s.retryAfter++
						}
					default:
						s.other++
					}
				}
			}()
		}
		go func() {
			var sum aStats
			for range 10 {
				s := <-results
				sum.ok, sum.limited, sum.retryAfter, sum.other = sum.ok+s.ok, sum.limited+s.limited, sum.retryAfter+s.retryAfter, sum.other+s.other
			}
			out <- sum
		}()
		return out
	}

	const rounds, perRound = 6, 300
	var idleP50, idleP99, busyP50, busyP99, directIdle99, directBusy99 []time.Duration
	var total aStats
	round := func(busy bool) {
		var stop chan struct{}
		var done <-chan aStats
		if busy {
			stop = make(chan struct{})
			done = loadA(stop)
			time.Sleep(500 * time.Millisecond) // A at full pace before B is measured
		}
		lat := make([]time.Duration, perRound)
		direct := make([]time.Duration, perRound)
		for i := range lat {
			lat[i] = queryB()
			direct[i] = queryDirect()
			time.Sleep(2 * time.Millisecond)
		}
		if busy {
			directBusy99 = append(directBusy99, percentile(direct, 0.99))
		} else {
			directIdle99 = append(directIdle99, percentile(direct, 0.99))
		}
		if busy {
			close(stop)
			s := <-done
			total.ok, total.limited, total.retryAfter, total.other = total.ok+s.ok, total.limited+s.limited, total.retryAfter+s.retryAfter, total.other+s.other
		}
		p50, p99 := percentile(lat, 0.50), percentile(lat, 0.99)
		if busy {
			busyP50, busyP99 = append(busyP50, p50), append(busyP99, p99)
		} else {
			idleP50, idleP99 = append(idleP50, p50), append(idleP99, p99)
		}
		t.Logf("round busy=%-5v p50 %7s p99 %7s   direct to VictoriaMetrics: p50 %7s p99 %7s", busy,
			p50.Round(time.Microsecond), p99.Round(time.Microsecond),
			percentile(direct, 0.5).Round(time.Microsecond), percentile(direct, 0.99).Round(time.Microsecond))
	}
	for i := range rounds {
		// Alternate which comes first, so that a machine getting faster or slower
		// favours neither.
		round(i%2 == 1)
		round(i%2 == 0)
	}
	mi50, mi99 := percentile(idleP50, 0.5), percentile(idleP99, 0.5)
	mb50, mb99 := percentile(busyP50, 0.5), percentile(busyP99, 0.5)
	r50, r99 := float64(mb50)/float64(mi50), float64(mb99)/float64(mi99)
	t.Logf("tenant 2 with tenant 1 idle: p50 %s p99 %s; with tenant 1 at 10x its limits: p50 %s p99 %s (x%.2f, x%.2f)",
		mi50.Round(time.Microsecond), mi99.Round(time.Microsecond), mb50.Round(time.Microsecond), mb99.Round(time.Microsecond), r50, r99)
	t.Logf("direct to VictoriaMetrics, p99 median: idle %s, busy %s", percentile(directIdle99, 0.5).Round(time.Microsecond), percentile(directBusy99, 0.5).Round(time.Microsecond))
	t.Logf("tenant 1: %d answered, %d refused with 429 (%d with Retry-After), %d other", total.ok, total.limited, total.retryAfter, total.other)
	if total.limited == 0 || total.retryAfter != total.limited || total.ok == 0 || total.other != 0 {
		t.Errorf("tenant 1 at 10x its limits: %+v, want 429s with Retry-After and some answers", total)
	}
	// A bound well above the 20% target, on the median p50 only: it catches a
	// tenant queueing behind another, not the noise of a shared machine. p99 is
	// logged, never asserted: on 2 shared cores it moves by 100x from round to
	// round, direct to VictoriaMetrics too. That no tenant waits for another's
	// slots is proved exactly in readpath's TestLimiterIsolation.
	if r50 > 1.5 {
		t.Errorf("tenant 2's latency moved with tenant 1's load: p50 x%.2f (p99 x%.2f)", r50, r99)
	}
	e1, _ := e.app.proxy.Limiter().Refusals(tenant.MustParse("1"))
	if e1["query_rate_limited"] == 0 {
		t.Errorf("refusals of tenant 1: %v", e1)
	}
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func timedGet(t *testing.T, c *http.Client, u string) time.Duration {
	start := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %d", u, resp.StatusCode)
	}
	return time.Since(start)
}
