package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/adaptive"
	"github.com/cardguard/cardguard/internal/seriesusage"
)

// envCounters is a counter metric with 1,000 series per value of env (prod,
// staging, dev), each with its own id and job="api", and a small second
// metric with env prod and dev. Every counter rises at a constant rate of its
// own (1 to 5 per second, times 1, 2 and 4 for prod, staging and dev), so a
// rate answers the same whatever the time, and the answer of each query is
// known from the workload alone.
type envCounters struct {
	metric, other string
	start         time.Time // counters are 0 here
	perEnv        int
}

var envFactor = map[string]float64{"prod": 1, "staging": 2, "dev": 4}

func (w envCounters) rate(env string, id int) float64 { return float64(1+id%5) * envFactor[env] }

// sumRate is the sum of the rates of the series of metric with env.
func (w envCounters) sumRate(env string) float64 {
	s := 0.0
	for id := range w.perEnv {
		s += w.rate(env, id)
	}
	return s
}

func (w envCounters) request(at time.Time) *prompb.WriteRequest {
	// Value and timestamp from the same millisecond: rates come out exact.
	at = time.UnixMilli(at.UnixMilli())
	secs := at.Sub(w.start).Seconds()
	wr := &prompb.WriteRequest{}
	add := func(metric, env string, id int) {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: metric}, {Name: "env", Value: env}, {Name: "id", Value: strconv.Itoa(id)}, {Name: "job", Value: "api"}},
			Samples: []prompb.Sample{{Value: w.rate(env, id) * secs, Timestamp: at.UnixMilli()}},
		})
	}
	for _, env := range []string{"prod", "staging", "dev"} {
		for id := range w.perEnv {
			add(w.metric, env, id)
		}
	}
	for _, env := range []string{"prod", "dev"} {
		for id := range 10 {
			add(w.other, env, id)
		}
	}
	return wr
}

// seriesSetAt is what /api/v1/series answers for match over [from, to]: the
// label sets, rendered and sorted.
func seriesSetAt(t *testing.T, base, match string, from, to time.Time) []string {
	t.Helper()
	q := url.Values{"match[]": {match}, "start": {fmt.Sprintf("%.3f", float64(from.UnixMilli())/1000)}, "end": {fmt.Sprintf("%.3f", float64(to.UnixMilli())/1000)}}
	code, body := get(t, base+"/api/v1/series?"+q.Encode())
	var resp struct {
		Data []map[string]string `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); code != 200 || err != nil {
		t.Fatalf("series %s: %d %v: %.200s", match, code, err, body)
	}
	out := make([]string, 0, len(resp.Data))
	for _, m := range resp.Data {
		var kv []string
		for k, v := range m {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		out = append(out, strings.Join(kv, ","))
	}
	sort.Strings(out)
	return out
}

func postJSON(t *testing.T, rawURL string, body, dst any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := http.Post(rawURL, "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if dst != nil {
		_ = json.NewDecoder(resp.Body).Decode(dst)
	}
	return resp.StatusCode
}

// TestDropSeriesEndToEnd: 3,000 counters written continuously through
// cardguard into a real VictoriaMetrics, 1,000 per env; the queries through
// cardguard select prod and staging only. The series report says the 1,000
// dev series are never selected; the drop_series recommendation for env="dev"
// follows, its preview measures 1,000, and once applied every recorded query
// answers as before while the dev series stop reaching VictoriaMetrics.
// Revert brings them back; a query without a metric name that selects them
// then blocks the rule.
func TestDropSeriesEndToEnd(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Cardinality.Window = 4 * time.Second
		c.Cardinality.Buckets = 2
		c.Aggregation.Interval = time.Second
		c.Usage.MetricNamesStats.Interval = time.Second
	})
	const metric = "checkout_requests_total"
	w := envCounters{metric: metric, other: "checkout_errors_total", start: time.UnixMilli(time.Now().Add(-time.Minute).UnixMilli()), perEnv: 1000}
	began := time.Now()
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			if code, body := e.push("/api/v1/write", w.request(time.Now())); code != http.StatusNoContent {
				t.Errorf("push: %d %s", code, body)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	defer wg.Wait()
	defer stop()

	tid := e.app.cfg.DefaultTenant
	base := e.srv.URL + "/api/cardguard/v1/recommendations/tenants/" + tid.String()
	vm := e.vm.URL + "/prometheus"
	// The recorded queries, with the answer the workload implies at any time
	// at which their 10 s windows hold samples. Each can only keep its answer
	// if every series it selects keeps arriving.
	prod, staging := w.sumRate("prod"), w.sumRate("staging")
	type recorded struct {
		query string
		truth map[string]float64
	}
	queries := []recorded{
		{`sum(rate(` + metric + `{env="prod"}[10s]))`, map[string]float64{"": prod}},
		// The job matcher holds for every series: it selects no fewer.
		{`sum by (env) (rate(` + metric + `{env=~"prod|staging", job=~"api|web"}[10s]))`, map[string]float64{"env=prod": prod, "env=staging": staging}},
		// MetricsQL only: WITH and rollup_rate (min, max and avg of the rates
		// between adjacent samples, the same for a counter rising steadily).
		{`WITH (sel = ` + metric + `{env=~"prod|staging", job="api"}) sum by (rollup) (rollup_rate(sel[10s]))`,
			map[string]float64{"rollup=avg": prod + staging, "rollup=max": prod + staging, "rollup=min": prod + staging}},
	}
	seriesMatch := metric + `{env="staging"}` // read through /api/v1/series
	wantSelectors := []string{
		metric + `{env="prod"}`,
		metric + `{env="staging"}`,
		metric + `{env=~"prod|staging",job="api"}`,
		metric + `{env=~"prod|staging",job=~"api|web"}`,
	}
	var wantStaging []string
	for id := range w.perEnv {
		wantStaging = append(wantStaging, fmt.Sprintf("__name__=%s,env=staging,id=%d,job=api", metric, id))
	}
	sort.Strings(wantStaging)

	// Record the queries once the first samples are stored.
	waitFor(t, 10*time.Second, "the first samples", func() bool {
		e.vm.Flush()
		return len(vector(t, vm, `count(`+metric+`)`, time.Now())) == 1
	})
	for _, q := range queries {
		if code, body := get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {q.query}}.Encode()); code != 200 {
			t.Fatalf("%s: %d %s", q.query, code, body)
		}
	}
	if code, body := get(t, e.srv.URL+"/api/v1/series?"+url.Values{"match[]": {seriesMatch}}.Encode()); code != 200 {
		t.Fatalf("series %s: %d %s", seriesMatch, code, body)
	}
	e.app.usage.Flush()
	queried := time.Now()

	// The report, from a whole bucket that began after the queries.
	var rep seriesusage.Report
	waitFor(t, 20*time.Second, "a complete bucket after the queries", func() bool {
		e.app.tracker.Refresh()
		var code int
		code, rep = seriesReport(t, e, tid.String(), metric)
		return code == 200 && rep.Coverage.Selectors == len(wantSelectors) && rep.Bucket.Complete && !rep.Bucket.Start.Before(queried)
	})
	t.Logf("report: active %d, selected %d, never selected %d, explaining %+v, selectors %q, coverage %+v",
		rep.ActiveSeries, rep.Selected, rep.NeverSelected, rep.Explaining, rep.Selectors, rep.Coverage)
	if !within(rep.ActiveSeries, 3000, 0.02) || !within(rep.Selected, 2000, 0.02) || !within(rep.NeverSelected, 1000, 0.02) {
		t.Errorf("active %d, selected %d, never selected %d: want 3000, 2000, 1000 (±2%%)", rep.ActiveSeries, rep.Selected, rep.NeverSelected)
	}
	if len(rep.Explaining) == 0 || rep.Explaining[0].Label != "env" || rep.Explaining[0].Value != "dev" || !within(rep.Explaining[0].Series, 1000, 0.02) {
		t.Errorf("explaining %+v: want env=dev with 1000 series first", rep.Explaining)
	}
	for _, x := range rep.Explaining {
		if x.Label != "env" || x.Value != "dev" {
			t.Errorf("explained by %s=%s, which selected series carry too", x.Label, x.Value)
		}
	}
	if got := slices.Sorted(slices.Values(rep.Selectors)); !slices.Equal(got, wantSelectors) || rep.Coverage.UnparsedReads != 0 {
		t.Errorf("selectors %q (unparsed reads %d), want %q", got, rep.Coverage.UnparsedReads, wantSelectors)
	}

	// The recommendation.
	match := `{__name__="` + metric + `",env="dev"}`
	recommended := func() (adaptive.Recommendation, bool) {
		var l adaptive.List
		if code := apiJSON(t, "GET", base+"/?refresh=1", &l); code != 200 {
			t.Fatalf("list: %d", code)
		}
		for _, r := range l.Items {
			if r.Metric == metric && r.Kind == adaptive.KindDropSeries {
				return r, true
			}
		}
		return adaptive.Recommendation{}, false
	}
	var rec adaptive.Recommendation
	waitFor(t, 20*time.Second, "the drop_series recommendation", func() bool {
		e.app.tracker.Refresh()
		var ok bool
		rec, ok = recommended()
		return ok
	})
	t.Logf("recommend %s %s: saves %d (%s); %s", rec.Kind, rec.Match, rec.SeriesSaved, rec.Estimate.Method, rec.Reason)
	if rec.Match != match || !within(rec.SeriesSaved, 1000, 0.02) {
		t.Errorf("recommended %s saving %d, want %s saving 1000 (±2%%)", rec.Match, rec.SeriesSaved, match)
	}

	// The preview counts the series the rule drops on live traffic.
	if code := apiJSON(t, "POST", base+"/metrics/"+metric+"/preview?kind="+adaptive.KindDropSeries, nil); code != http.StatusAccepted {
		t.Fatalf("preview: %d", code)
	}
	var p adaptive.Preview
	waitFor(t, 20*time.Second, "the preview", func() bool {
		e.app.tracker.Refresh()
		apiJSON(t, "GET", base+"/metrics/"+metric+"/preview?kind="+adaptive.KindDropSeries, &p)
		return p.State == adaptive.PreviewDone
	})
	t.Logf("preview: in %d, out %d, saved %d, truncated %v", p.SeriesIn, p.SeriesOut, p.SeriesSaved, p.Truncated)
	if !within(p.SeriesSaved, 1000, 0.02) || p.Truncated || p.Match != match {
		t.Errorf("preview of %s measured %d dropped series: want 1000 (±2%%)", p.Match, p.SeriesSaved)
	}

	// count tells how many series of sel have samples in (from, at], as
	// VictoriaMetrics stores them.
	count := func(sel string, from, at time.Time) int64 {
		t.Helper()
		d := at.Sub(from).Milliseconds()
		v := vector(t, vm, fmt.Sprintf(`count(count_over_time(%s[%dms]))`, sel, d), at)
		return int64(v[""])
	}
	// check replays every recorded query through cardguard at at, and
	// compares its answer with the truth: a rule that dropped any selected
	// series would leave its 10 s window without their samples, and a sum,
	// a group or the series list without them.
	check := func(when string, at time.Time) map[string]map[string]float64 {
		t.Helper()
		got := map[string]map[string]float64{}
		for _, q := range queries {
			v := vector(t, e.srv.URL, q.query, at)
			got[q.query] = v
			if len(v) != len(q.truth) {
				t.Errorf("%s, %s: %v, want %v", when, q.query, v, q.truth)
				continue
			}
			for k, want := range q.truth {
				if a, ok := v[k]; !ok || math.Abs(a-want) > 1e-6*want {
					t.Errorf("%s, %s {%s}: %v, want %v", when, q.query, k, a, want)
				}
			}
		}
		return got
	}
	// Before: at a time whose windows hold samples.
	waitFor(t, 30*time.Second, "12 s of samples", func() bool { return time.Since(began) > 13*time.Second })
	e.vm.Flush()
	t0 := time.Now().Add(-time.Second)
	before := check("before", t0)
	stagingBefore := seriesSetAt(t, e.srv.URL, seriesMatch, t0.Add(-10*time.Second), t0)
	if !slices.Equal(stagingBefore, wantStaging) {
		t.Errorf("before: series %s: %d series, want the %d staging ones", seriesMatch, len(stagingBefore), len(wantStaging))
	}
	devBefore := count(metric+`{env="dev"}`, t0.Add(-5*time.Second), t0)
	keptBefore := count(metric+`{env=~"prod|staging"}`, t0.Add(-5*time.Second), t0)
	if devBefore != 1000 || keptBefore != 2000 {
		t.Fatalf("before: %d dev and %d prod and staging series stored, want 1000 and 2000", devBefore, keptBefore)
	}

	var applied adaptive.Applied
	if code := apiJSON(t, "POST", base+"/metrics/"+metric+"/apply?kind="+adaptive.KindDropSeries, &applied); code != 200 {
		t.Fatalf("apply: %d", code)
	}
	applyAt := time.Now()
	if applied.Match != match || applied.Preview == nil || applied.Preview.SeriesSaved != p.SeriesSaved {
		t.Errorf("applied %+v: want %s with its preview", applied, match)
	}

	// After: once the 10 s windows hold nothing from before the rule, and
	// 1 s after it was applied for the samples a push in flight carried.
	time.Sleep(time.Until(applyAt.Add(13 * time.Second)))
	e.vm.Flush()
	t1 := time.Now().Add(-time.Second)
	after := check("after", t1)
	for _, q := range queries {
		for k, v := range before[q.query] {
			if a := after[q.query][k]; math.Abs(a-v) > 1e-6*v {
				t.Errorf("%s {%s}: %v before, %v after", q.query, k, v, a)
			}
		}
	}
	if stagingAfter := seriesSetAt(t, e.srv.URL, seriesMatch, t1.Add(-10*time.Second), t1); !slices.Equal(stagingAfter, stagingBefore) {
		t.Errorf("after: series %s: %d series, %d before", seriesMatch, len(stagingAfter), len(stagingBefore))
	}
	// /api/v1/series may list series by day, with or without samples in the
	// range: that every selected series still arrives is counted by samples.
	from := applyAt.Add(time.Second)
	devAfter := count(metric+`{env="dev"}`, from, t1)
	keptAfter := count(metric+`{env=~"prod|staging"}`, from, t1)
	t.Logf("stored series with samples: before %d dev, %d prod and staging; after the apply %d dev, %d prod and staging", devBefore, keptBefore, devAfter, keptAfter)
	if devAfter != 0 || keptAfter != 2000 {
		t.Errorf("after the apply: %d dev and %d prod and staging series with samples, want 0 and 2000", devAfter, keptAfter)
	}
	for _, sel := range wantSelectors {
		want := int64(2000)
		if strings.Contains(sel, `env="`) {
			want = 1000
		}
		if n := count(sel, from, t1); n != want {
			t.Errorf("after the apply, %s: %d series with samples, want %d", sel, n, want)
		}
	}
	e.app.usage.Flush()
	if b := e.app.adaptive.engine.BrokenBy(tid, metric); b.Count != 0 {
		t.Errorf("the recorded queries, replayed, count as broken by the rule: %+v", b)
	}

	// Revert: the dev series reach VictoriaMetrics again.
	if code := apiJSON(t, "POST", base+"/metrics/"+metric+"/revert", nil); code != 200 {
		t.Fatalf("revert: %d", code)
	}
	revertAt := time.Now()
	var devBack int64
	waitFor(t, 15*time.Second, "the dev series back", func() bool {
		now := time.Now()
		if now.Before(revertAt.Add(2 * time.Second)) {
			return false
		}
		e.vm.Flush()
		devBack = count(metric+`{env="dev"}`, revertAt.Add(time.Second), now)
		return devBack == 1000
	})
	t.Logf("after the revert: %d dev series with samples", devBack)

	// With the dev series back, the recommendation is too.
	waitFor(t, 20*time.Second, "the drop_series recommendation again", func() bool {
		e.app.tracker.Refresh()
		_, ok := recommended()
		return ok
	})

	// A query without a metric name selects the dev series of every metric
	// that has them (TestSeriesUsage, tenant 1). Once recorded, applying the
	// rule is refused, naming its selector, ...
	nameless := `count({env="dev"})`
	if code, body := get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {nameless}}.Encode()); code != 200 {
		t.Fatalf("%s: %d %s", nameless, code, body)
	}
	e.app.usage.Flush()
	namelessAt := time.Now()
	var refusal struct {
		Refusal adaptive.Refusal `json:"refusal"`
	}
	code := apiJSON(t, "POST", base+"/metrics/"+metric+"/apply?kind="+adaptive.KindDropSeries, &refusal)
	t.Logf("apply after %s: %d %+v", nameless, code, refusal.Refusal)
	if code != http.StatusConflict || !slices.ContainsFunc(refusal.Refusal.Readers, func(r adaptive.Ref) bool { return r.Query == `{env="dev"}` }) {
		t.Errorf("apply after %s: %d %+v, want 409 naming {env=\"dev\"}", nameless, code, refusal.Refusal)
	}
	// ... and the same rule named in the body too.
	if code := postJSON(t, base+"/metrics/"+metric+"/apply", adaptive.RuleSpec{Kind: adaptive.KindDropSeries, Match: match}, nil); code != http.StatusConflict {
		t.Errorf("apply of %s in the body after %s: %d, want 409", match, nameless, code)
	}
	// ... and from the next whole bucket on, the dev series count as
	// selected (of both metrics, nothing else), so there is nothing to recommend.
	waitFor(t, 20*time.Second, "a complete bucket after the query without a name", func() bool {
		e.app.tracker.Refresh()
		var code int
		code, rep = seriesReport(t, e, tid.String(), metric)
		return code == 200 && rep.Bucket.Complete && !rep.Bucket.Start.Before(namelessAt)
	})
	if rep.NeverSelected != 0 || !within(rep.Selected, 3000, 0.02) || !slices.Contains(rep.Selectors, `{env="dev"}`) {
		t.Errorf("after %s: selected %d, never selected %d, selectors %q: want all 3000 selected", nameless, rep.Selected, rep.NeverSelected, rep.Selectors)
	}
	if code, other := seriesReport(t, e, tid.String(), w.other); code != 200 || other.Selected != 10 || other.NeverSelected != 10 {
		t.Errorf("after %s, %s: %d, selected %d, never %d: want its 10 dev series only", nameless, w.other, code, other.Selected, other.NeverSelected)
	}
	if r, ok := recommended(); ok {
		t.Errorf("after %s, still recommended: %s %s", nameless, r.Kind, r.Match)
	}
	if n := len(e.app.adaptive.engine.Applied(tid)); n != 0 {
		t.Errorf("%d rules applied, want none", n)
	}
}
