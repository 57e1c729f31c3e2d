package main

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"html"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/adaptive"
)

// adaptiveWorkload is node-exporter-like series and an application's
// histogram and counter, written every second at real time:
//
//   - node_cpu_seconds_total{instance (5), cpu (4), mode (2)}: 40 counters
//   - node_memory_bytes{instance}: 5 gauges nobody reads
//   - node_load1{instance}: 5 gauges read whole
//   - http_request_duration_seconds_bucket{le (4), pod (20), instance, user_id (10)}:
//     each pod on its own instance, 800 series
//   - app_requests_total{pod (100), instance, team, user_id (10)}: each pod on
//     its own instance, 1000 series; the queries use instance and user_id, so
//     dropping pod, the one unused label, saves nothing. team, the segment
//     label, is team-a for the first 50 pods and team-b for the others.
//   - app_queue_depth{instance (5), worker (4)}: 20 gauges read with max by
//     (instance): worker is unused, but folding workers would change the max.
//   - app_logins_total{env (prod, dev), instance (10)}: 20 counters; the
//     queries select env="prod" only, so the dev series are never selected.
//
// Every counter rises at a constant rate of its own, so rate() answers the
// same at any time and before/after comparisons are exact.
type adaptiveWorkload struct{ start time.Time }

func rateOf(ls []prompb.Label) float64 {
	h := fnv.New32a()
	for _, l := range ls {
		h.Write([]byte(l.Name + "=" + l.Value + ","))
	}
	return float64(1 + h.Sum32()%5)
}

func (w adaptiveWorkload) request(at time.Time) *prompb.WriteRequest {
	wr := &prompb.WriteRequest{}
	secs := at.Sub(w.start).Seconds()
	add := func(counter bool, kv ...string) {
		var ls []prompb.Label
		for i := 0; i < len(kv); i += 2 {
			ls = append(ls, prompb.Label{Name: kv[i], Value: kv[i+1]})
		}
		v := rateOf(ls)
		if counter {
			v *= secs
		}
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: v, Timestamp: at.UnixMilli()}}})
	}
	for i := range 5 {
		inst := fmt.Sprintf("node-%d:9100", i)
		for c := range 4 {
			for _, mode := range []string{"system", "user"} {
				add(true, "__name__", "node_cpu_seconds_total", "cpu", strconv.Itoa(c), "instance", inst, "mode", mode)
			}
		}
		add(false, "__name__", "node_memory_bytes", "instance", inst)
		add(false, "__name__", "node_load1", "instance", inst)
		for wk := range 4 {
			add(false, "__name__", "app_queue_depth", "instance", inst, "worker", strconv.Itoa(wk))
		}
	}
	les := []string{"0.1", "0.5", "1", "+Inf"}
	for p := range 20 {
		for u := range 10 {
			for b, le := range les {
				// Cumulative buckets: each bound adds to the one below.
				ls := []string{"__name__", "http_request_duration_seconds_bucket", "instance", fmt.Sprintf("10.0.0.%d:8080", p),
					"le", le, "pod", fmt.Sprintf("api-%d", p), "user_id", fmt.Sprintf("u%d", u)}
				v := float64((b+1)*(1+(p+u)%3)) * secs
				var lbls []prompb.Label
				for i := 0; i < len(ls); i += 2 {
					lbls = append(lbls, prompb.Label{Name: ls[i], Value: ls[i+1]})
				}
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{Labels: lbls, Samples: []prompb.Sample{{Value: v, Timestamp: at.UnixMilli()}}})
			}
		}
	}
	for i := range 10 {
		for _, env := range []string{"dev", "prod"} {
			add(true, "__name__", "app_logins_total", "env", env, "instance", fmt.Sprintf("10.2.0.%d:8080", i))
		}
	}
	for p := range 100 {
		for u := range 10 {
			add(true, "__name__", "app_requests_total", "instance", fmt.Sprintf("10.1.%d.1:8080", p), "pod", fmt.Sprintf("web-%d", p),
				"team", teamOf(p), "user_id", fmt.Sprintf("u%d", u))
		}
	}
	return wr
}

func teamOf(pod int) string {
	if pod < 50 {
		return "team-a"
	}
	return "team-b"
}

// requestsIncrease is what sum by (team) (increase(app_requests_total[w]))
// answers, per team: each series rises at its own constant rate.
func requestsIncrease(w time.Duration) map[string]float64 {
	out := map[string]float64{}
	for p := range 100 {
		for u := range 10 {
			ls := []prompb.Label{{Name: "__name__", Value: "app_requests_total"}, {Name: "instance", Value: fmt.Sprintf("10.1.%d.1:8080", p)},
				{Name: "pod", Value: fmt.Sprintf("web-%d", p)}, {Name: "team", Value: teamOf(p)}, {Name: "user_id", Value: fmt.Sprintf("u%d", u)}}
			out["team="+teamOf(p)] += rateOf(ls) * w.Seconds()
		}
	}
	return out
}

// vector runs an instant query at ts against a Prometheus API root and returns
// its result by label set.
func vector(t *testing.T, base, query string, ts time.Time) map[string]float64 {
	t.Helper()
	q := url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(ts.UnixMilli())/1000, 'f', 3, 64)}}
	_, body := get(t, base+"/api/v1/query?"+q.Encode())
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%s: %v: %s", query, err, body)
	}
	out := map[string]float64{}
	for _, r := range resp.Data.Result {
		var keys []string
		for k, v := range r.Metric {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		f, _ := strconv.ParseFloat(r.Value[1].(string), 64)
		out[strings.Join(keys, ",")] = f
	}
	return out
}

func apiJSON(t *testing.T, method, rawURL string, dst any) int {
	t.Helper()
	req, _ := http.NewRequest(method, rawURL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if dst != nil {
		_ = json.NewDecoder(resp.Body).Decode(dst)
	}
	return resp.StatusCode
}

// TestAdaptiveEndToEnd: queries through cardguard use some labels; every
// recommendation is previewed and applied; the series stored drop by what the
// previews measured, every query answers as before, the estimate of a label
// that follows a kept one is right, and a forced rule shows the queries it
// breaks. A rule scoped to one team folds that team's series only.
func TestAdaptiveEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Cardinality.Window = 4 * time.Second
		c.Cardinality.Buckets = 2
		c.Aggregation.Interval = time.Second
		c.Usage.MetricNamesStats.Interval = time.Second
		c.Adaptive.SegmentLabel = "team"
	})
	w := adaptiveWorkload{start: time.Now().Add(-time.Minute)}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	// Stamped on a schedule, every second at half past, as a scraper stamps
	// them, whatever the push's delay on a loaded machine: the aggregated
	// outputs carry their flush time, at the whole seconds, so a push stamped
	// with its own time and delayed across a second would shift a rate over
	// 20 s by up to 5% (TestAdaptiveWorkload says more).
	wg.Go(func() {
		next := time.Now().Truncate(time.Second).Add(500 * time.Millisecond)
		for {
			if code, body := e.push("/api/v1/write", w.request(next)); code != http.StatusNoContent {
				t.Errorf("push: %d %s", code, body)
				return
			}
			for next = next.Add(time.Second); time.Until(next) < 0; next = next.Add(time.Second) {
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Until(next)):
			}
		}
	})
	defer wg.Wait()
	defer stop()

	queries := []string{
		`sum by (mode) (rate(node_cpu_seconds_total[20s]))`,
		`histogram_quantile(0.9, sum by (le) (rate(http_request_duration_seconds_bucket[20s])))`,
		`sum by (instance) (rate(http_request_duration_seconds_bucket{le="+Inf"}[20s]))`,
		`sum by (instance, user_id) (rate(app_requests_total[20s]))`,
		`node_load1`,
		`sum by (instance) (rate(app_logins_total{env="prod"}[20s]))`,
		`max by (instance) (app_queue_depth)`,
	}
	time.Sleep(6 * time.Second) // a whole cardinality window of series
	for _, q := range queries {
		if code, body := get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {q}}.Encode(),
			"X-Dashboard-Uid", "abc", "X-Dashboard-Title", "Service overview", "X-Panel-Title", q); code != 200 {
			t.Fatalf("%s: %d %s", q, code, body)
		}
	}
	e.app.usage.Flush()
	e.app.tracker.Refresh()

	base := e.srv.URL + "/api/cardguard/v1/recommendations/tenants/" + e.app.cfg.DefaultTenant.String()
	want := map[string]string{
		"node_memory_bytes":                    "drop",
		"node_cpu_seconds_total":               "aggregate cpu,instance",
		"http_request_duration_seconds_bucket": "aggregate pod,user_id",
		"app_logins_total":                     `drop_series {__name__="app_logins_total",env="dev"}`,
	}
	var (
		list adaptive.List
		recs map[string]adaptive.Recommendation
	)
	// VictoriaMetrics' name stats are polled, and the series usage needs a
	// whole bucket after the queries: until both have answered, the drop and
	// the drop_series are withheld.
	waitFor(t, 20*time.Second, "every recommendation", func() bool {
		// The tracker refreshes every 5 s, slower than this test's 2 s
		// buckets: refresh it so that its view holds the last buckets.
		e.app.tracker.Refresh()
		list = adaptive.List{}
		if code := apiJSON(t, "GET", base+"/?refresh=1", &list); code != 200 {
			t.Fatalf("list: %d", code)
		}
		recs = map[string]adaptive.Recommendation{}
		for _, r := range list.Items {
			recs[r.Metric] = r
		}
		for m, k := range want {
			if r := recs[m]; strings.TrimSpace(r.Kind+" "+strings.Join(r.Labels, ",")+r.Match) != k {
				return false
			}
		}
		return true
	})
	for _, r := range list.Items {
		t.Logf("recommend %-40s %-11s %v%s saves %d (%s; formula %d) %s", r.Metric, r.Kind, r.Labels, r.Match, r.SeriesSaved, r.Estimate.Method, r.Estimate.Formula, r.Estimate.Detail)
	}
	for m, k := range want {
		r := recs[m]
		if got := strings.TrimSpace(r.Kind + " " + strings.Join(r.Labels, ",") + r.Match); got != k {
			t.Errorf("%s: recommended %q, want %q", m, got, k)
		}
	}
	if len(recs) != len(want) {
		t.Errorf("%d recommendations, want %d: node_load1 is read whole, app_requests_total's pod saves nothing", len(recs), len(want))
	}
	// pod follows instance: the upstream counts no saving where the
	// independence formula sees 900.
	var podCase *adaptive.Withheld
	for i, wh := range list.Withheld {
		t.Logf("withheld %s: %s", wh.Metric, wh.Reason)
		if wh.Metric == "app_requests_total" {
			podCase = &list.Withheld[i]
		}
	}
	queue := false
	for _, wh := range list.Withheld {
		queue = queue || (wh.Metric == "app_queue_depth" && strings.Contains(wh.Reason, "max combines the series"))
	}
	if !queue {
		t.Errorf("app_queue_depth, read with max by (instance), is not withheld: %+v", list.Withheld)
	}
	if podCase == nil || podCase.Estimate == nil || podCase.Estimate.Method != adaptive.MethodUpstream || podCase.Estimate.Saved != 0 || podCase.Estimate.Formula < 800 {
		t.Fatalf("app_requests_total: want an upstream estimate of 0 saved where the formula says about 900: %+v", podCase)
	}

	// Preview every recommendation, and the pod rule, side by side.
	previewOf := map[string]string{}
	for m := range recs {
		if code := apiJSON(t, "POST", base+"/metrics/"+m+"/preview?kind="+recs[m].Kind, nil); code != http.StatusAccepted {
			t.Fatalf("preview %s: %d", m, code)
		}
		previewOf[m] = recs[m].Kind
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/preview?kind=aggregate&labels=pod", nil); code != http.StatusAccepted {
		t.Fatalf("preview of the pod rule: %d", code)
	}
	previewOf["app_requests_total"] = "aggregate"
	// The same rule for team-a only, beside it.
	const teamA = "/metrics/app_requests_total/%s?kind=aggregate&labels=pod&segment=team-a"
	if code := apiJSON(t, "POST", base+fmt.Sprintf(teamA, "preview"), nil); code != http.StatusAccepted {
		t.Fatalf("preview of team-a's pod rule: %d", code)
	}
	previews := map[string]adaptive.Preview{}
	var teamPreview adaptive.Preview
	waitFor(t, 30*time.Second, "every preview done", func() bool {
		for m, kind := range previewOf {
			var p adaptive.Preview
			apiJSON(t, "GET", base+"/metrics/"+m+"/preview?kind="+kind, &p)
			previews[m] = p
			if p.State != adaptive.PreviewDone {
				return false
			}
		}
		teamPreview = adaptive.Preview{}
		apiJSON(t, "GET", base+"/metrics/app_requests_total/preview?kind=aggregate&segment=team-a", &teamPreview)
		return teamPreview.State == adaptive.PreviewDone
	})
	// team-a's preview counts team-a's 500 series, exactly.
	t.Logf("preview team-a's pod rule: in %d out %d; the whole metric's: in %d", teamPreview.SeriesIn, teamPreview.SeriesOut, previews["app_requests_total"].SeriesIn)
	if teamPreview.Segment != "team-a" || teamPreview.Truncated || teamPreview.SeriesIn != 500 || teamPreview.SeriesOut != 500 || previews["app_requests_total"].SeriesIn != 1000 {
		t.Errorf("team-a's preview %+v, want 500 series in and out; the whole metric's %+v", teamPreview, previews["app_requests_total"])
	}
	within := func(est, measured int64, frac float64, slack int64) bool {
		return math.Abs(float64(est-measured)) <= frac*float64(measured)+float64(slack)
	}
	for m, p := range previews {
		est := recs[m].Estimate.Saved
		if m == "app_requests_total" {
			est = podCase.Estimate.Saved
		}
		t.Logf("preview %-40s in %5d out %5d saved %5d; estimate %5d", m, p.SeriesIn, p.SeriesOut, p.SeriesSaved, est)
		if p.Truncated || !within(est, p.SeriesSaved, 0.10, 1) {
			t.Errorf("%s: estimate %d, preview measured %d: more than 10%% apart", m, est, p.SeriesSaved)
		}
	}

	// Before: the stored series and the queries' answers.
	vm := e.vm.URL + "/prometheus"
	stored := func(m string, at time.Time) int64 {
		v := vector(t, vm, `count(last_over_time({__name__="`+m+`"}[4s]))`, at)
		for _, f := range v {
			return int64(f)
		}
		return 0
	}
	e.vm.Flush()
	t0 := time.Now().Add(-time.Second)
	before := map[string]int64{}
	answers := map[string]map[string]float64{}
	for m := range recs {
		before[m] = stored(m, t0)
	}
	for _, q := range queries {
		answers[q] = vector(t, vm, q, t0)
	}
	for m := range recs {
		var a adaptive.Applied
		if code := apiJSON(t, "POST", base+"/metrics/"+m+"/apply?kind="+recs[m].Kind, &a); code != 200 {
			var l adaptive.List
			apiJSON(t, "GET", base+"/", &l)
			t.Fatalf("apply %s: %d; list %+v", m, code, l)
		}
		if a.Preview == nil || a.AppliedBy == "" {
			t.Errorf("applied %s without its preview or author: %+v", m, a)
		}
	}
	var teamRule adaptive.Applied
	if code := apiJSON(t, "POST", base+fmt.Sprintf(teamA, "apply"), &teamRule); code != 200 ||
		teamRule.Segment != "team-a" || teamRule.Preview == nil || len(teamRule.Rule.If) != 1 || teamRule.Rule.If[0] != `{__name__="app_requests_total",team="team-a"}` {
		t.Fatalf("apply team-a's pod rule: %d %+v", code, teamRule)
	}
	applyAt := time.Now()
	// After the rate window has left the inputs behind.
	time.Sleep(time.Until(applyAt.Add(24 * time.Second)))
	e.vm.Flush()
	t1 := time.Now().Add(-time.Second)
	for m := range recs {
		after := stored(m, t1)
		saved := before[m] - after
		t.Logf("stored %-40s before %5d after %5d: saved %5d, preview %5d", m, before[m], after, saved, previews[m].SeriesSaved)
		if !within(saved, previews[m].SeriesSaved, 0.02, 0) {
			t.Errorf("%s: stored series fell by %d, the preview measured %d", m, saved, previews[m].SeriesSaved)
		}
	}
	// Counters stay true: the increase of the aggregated buckets is the sum
	// of the inputs' increases, which the workload knows.
	truth := 0.0
	for p := range 20 {
		for u := range 10 {
			truth += float64(4*(1+(p+u)%3)) * 20
		}
	}
	// (After the rule only: before it, the window holds less than 20 s of
	// this test's samples.)
	for _, at := range []time.Time{t1} {
		for _, root := range []string{vm, e.srv.URL} {
			got := vector(t, root, `sum(increase(http_request_duration_seconds_bucket{le="+Inf"}[20s]))`, at)
			t.Logf("sum(increase()) at %s through %s: %v, truth %v", at.Format(time.TimeOnly), root, got, truth)
			if v, ok := got[""]; !ok || math.Abs(v-truth) > 0.02*truth {
				t.Errorf("sum(increase()) at %s through %s: %v, truth %v", at.Format(time.TimeOnly), root, got, truth)
			}
		}
	}
	// team-a's series are folded (pod gone), team-b's are as they were, and
	// the counters of both teams stay true.
	for sel, want := range map[string]float64{`team="team-a",pod!=""`: 0, `team="team-a",pod=""`: 500, `team="team-b",pod!=""`: 500} {
		got := vector(t, vm, `count(last_over_time(app_requests_total{`+sel+`}[4s]))`, t1)[""]
		t.Logf("stored app_requests_total{%s}: %v", sel, got)
		if got != want {
			t.Errorf("stored app_requests_total{%s}: %v series, want %v", sel, got, want)
		}
	}
	teamTruth := requestsIncrease(20 * time.Second)
	for _, root := range []string{vm, e.srv.URL} {
		got := vector(t, root, `sum by (team) (increase(app_requests_total[20s]))`, t1)
		t.Logf("sum by (team) (increase()) through %s: %v, truth %v", root, got, teamTruth)
		for team, v := range teamTruth {
			if math.Abs(got[team]-v) > 0.02*v {
				t.Errorf("sum by (team) (increase()) through %s: %s %v, truth %v", root, team, got[team], v)
			}
		}
	}
	for _, q := range queries {
		got := vector(t, vm, q, t1)
		if len(got) != len(answers[q]) || len(got) == 0 {
			t.Errorf("%s: %d results before, %d after", q, len(answers[q]), len(got))
		}
		for k, v := range answers[q] {
			if a, ok := got[k]; !ok || math.Abs(a-v) > 0.02*math.Abs(v)+1e-9 {
				t.Errorf("%s {%s}: %v before, %v after", q, k, v, a)
			}
		}
	}

	// The applied rules show team-a's; a whole-metric rule cannot join it,
	// and team-a's rule is reverted by naming the segment.
	var applied struct {
		Rules []adaptive.Applied `json:"rules"`
	}
	apiJSON(t, "GET", base+"/applied", &applied)
	segRules := 0
	for _, a := range applied.Rules {
		if a.Segment != "" {
			segRules++
		}
	}
	if segRules != 1 {
		t.Errorf("applied rules with a segment: %d, want team-a's: %+v", segRules, applied.Rules)
	}
	page := e.srv.URL + "/ui/fragment/recommendations?" + url.Values{"tenant": {e.app.cfg.DefaultTenant.String()}, "segment": {"team-a"}}.Encode()
	if code, body := get(t, page); code != 200 || !strings.Contains(string(body), `data-segment="team-a"`) || !strings.Contains(string(body), `<option value="team-a" selected>`) {
		t.Errorf("recommendations page of team-a: %d\n%s", code, body)
	}
	var conflictErr struct {
		Error string `json:"error"`
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/apply?kind=aggregate&labels=user_id&force=true", &conflictErr); code != http.StatusConflict ||
		!strings.Contains(conflictErr.Error, "team=\"team-a\"") {
		t.Errorf("whole-metric rule over team-a's: %d %q, want 409", code, conflictErr.Error)
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/revert", nil); code != http.StatusNotFound {
		t.Errorf("revert of the whole metric, with team-a's rule only: %d, want 404", code)
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/revert?segment=team-a", nil); code != 200 {
		t.Errorf("revert team-a's rule: %d", code)
	}

	// A rule that removes a used label is refused, then forced; the query
	// that used it shows as broken.
	podQuery := queries[3]
	var refusal struct {
		Refusal adaptive.Refusal `json:"refusal"`
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/apply?kind=aggregate&labels=user_id", &refusal); code != http.StatusConflict ||
		len(refusal.Refusal.Readers) == 0 {
		t.Fatalf("removing a used label: %d %+v, want 409 naming the readers", code, refusal)
	}
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/apply?kind=aggregate&labels=user_id&force=true", nil); code != 200 {
		t.Fatalf("forced apply: %d", code)
	}
	get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {podQuery}}.Encode())
	e.app.usage.Flush()
	var detail struct {
		Rules  []adaptive.Applied `json:"rules"`
		Broken adaptive.Broken    `json:"brokenByRule"`
	}
	waitFor(t, 5*time.Second, "the read counted as broken", func() bool {
		apiJSON(t, "GET", base+"/metrics/app_requests_total", &detail)
		return detail.Broken.Count > 0
	})
	if len(detail.Rules) != 1 || !detail.Rules[0].Forced || len(detail.Broken.Reads) == 0 || detail.Broken.Reads[0].Reader.Query != podQuery {
		t.Errorf("metric detail: %+v", detail)
	}
	// The dashboard's metric page shows it too.
	frag := e.srv.URL + "/ui/fragment/adaptive-metric?" + url.Values{"tenant": {e.app.cfg.DefaultTenant.String()}, "metric": {"app_requests_total"}}.Encode()
	if code, body := get(t, frag); code != 200 || !strings.Contains(string(body), "broken_by_rule") || !strings.Contains(string(body), html.EscapeString(podQuery)) {
		t.Errorf("metric page: %d, want broken_by_rule and %q in:\n%s", code, podQuery, body)
	}
	// Revert puts the config's rules back alone.
	if code := apiJSON(t, "POST", base+"/metrics/app_requests_total/revert", nil); code != 200 {
		t.Errorf("revert: %d", code)
	}
	if n := len(e.app.adaptive.engine.Rules()[e.app.cfg.DefaultTenant]); n != len(recs) {
		t.Errorf("%d rules after revert, want %d", n, len(recs))
	}
}
