package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/seriesusage"
	"github.com/cardguard/cardguard/internal/tenant"
)

// seriesSet is n series per value of env (none when envs is empty) of each
// metric, each with its own id and job="api".
func seriesSet(ts int64, n int, metrics []string, envs ...string) []prompb.TimeSeries {
	var out []prompb.TimeSeries
	for _, m := range metrics {
		vals := envs
		if len(vals) == 0 {
			vals = []string{""}
		}
		for _, env := range vals {
			for i := range n {
				ls := []prompb.Label{{Name: "__name__", Value: m}, {Name: "id", Value: strconv.Itoa(i)}, {Name: "job", Value: "api"}}
				if env != "" {
					ls = append(ls, prompb.Label{Name: "env", Value: env})
				}
				out = append(out, prompb.TimeSeries{Labels: ls, Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}}})
			}
		}
	}
	return out
}

func seriesReport(t *testing.T, e *env, tenantID, metric string) (int, seriesusage.Report) {
	t.Helper()
	code, body := get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/"+tenantID+"/metrics/"+url.PathEscape(metric)+"/series")
	var rep seriesusage.Report
	if code == 200 {
		if err := json.Unmarshal(body, &rep); err != nil {
			t.Fatalf("series report %s: %v: %s", metric, err, body)
		}
	}
	return code, rep
}

func within(got, want int64, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

// TestSeriesUsage writes through cardguard into a real VictoriaMetrics,
// queries through it, and checks that the series report tells the series the
// queries select from those they never select, and why.
func TestSeriesUsage(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Cardinality.Window = 4 * time.Second
		c.Cardinality.Buckets = 2
		c.Aggregation.Interval = time.Second // staleness follows the window
	})
	const perEnv = 1000
	app := []string{"app_requests_total"}
	svc := []string{"svc_a_up", "svc_b_up"}
	write := func() {
		now := time.Now().UnixMilli()
		if code, body := e.push("/api/v1/write", &prompb.WriteRequest{Timeseries: seriesSet(now, perEnv, app, "prod", "staging", "dev")}); code != 204 {
			t.Fatalf("write tenant 0: %d %s", code, body)
		}
		// Tenant 1: two metrics with env, one without.
		wr := &prompb.WriteRequest{Timeseries: append(seriesSet(now, 200, svc, "prod", "dev"), seriesSet(now, 200, []string{"svc_c_up"})...)}
		if code, body := e.push("/insert/1/prometheus/api/v1/write", wr); code != 204 {
			t.Fatalf("write tenant 1: %d %s", code, body)
		}
	}
	write()
	e.vm.Flush()

	query := func(prefix, q string) {
		t.Helper()
		code, body := get(t, e.srv.URL+prefix+"api/v1/query?"+url.Values{"query": {q}}.Encode())
		if code != 200 {
			t.Fatalf("query %s: %d %s", q, code, body)
		}
	}
	query("/", `sum(rate(app_requests_total{env="prod"}[1m]))`)
	// The job matcher holds for every series: it selects no fewer.
	code, body := get(t, e.srv.URL+"/api/v1/series?"+url.Values{"match[]": {`app_requests_total{env=~"prod|staging", job=~"api|web"}`}}.Encode())
	if code != 200 {
		t.Fatalf("series: %d %s", code, body)
	}
	query("/select/1/prometheus/", `count({env="dev"})`)
	queried := time.Now()

	// Write on, as a scraper would, until a whole bucket has gone by since
	// the queries were recorded.
	var rep seriesusage.Report
	deadline := time.Now().Add(40 * time.Second)
	for {
		write()
		var code int
		code, rep = seriesReport(t, e, "0", "app_requests_total")
		if code == 200 && rep.Coverage.Selectors == 2 && rep.Bucket.Complete && !rep.Bucket.Start.Before(queried) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no complete bucket after the queries: %d %+v", code, rep)
		}
		time.Sleep(time.Second)
	}
	t.Logf("report: active %d, selected %d, never %d, explaining %+v, bucket %s to %s, coverage %+v",
		rep.ActiveSeries, rep.Selected, rep.NeverSelected, rep.Explaining, rep.Bucket.Start, rep.Bucket.End, rep.Coverage)
	if !within(rep.ActiveSeries, 3*perEnv, 0.02) || !within(rep.NeverSelected, perEnv, 0.02) || !within(rep.Selected, 2*perEnv, 0.02) {
		t.Errorf("active %d, selected %d, never selected %d: want 3000, 2000, 1000 (±2%%)", rep.ActiveSeries, rep.Selected, rep.NeverSelected)
	}
	if rep.AllSelected || rep.Bucket.SelectorsChanged {
		t.Errorf("all selected %v, selectors changed %v", rep.AllSelected, rep.Bucket.SelectorsChanged)
	}
	if len(rep.Explaining) == 0 || rep.Explaining[0].Label != "env" || rep.Explaining[0].Value != "dev" || !within(rep.Explaining[0].Series, perEnv, 0.02) {
		t.Errorf("explaining %+v: want env=dev with 1000 series first", rep.Explaining)
	}
	for _, x := range rep.Explaining {
		if x.Label == "job" || (x.Label == "env" && x.Value != "dev") {
			t.Errorf("explained by %s=%s, which selected series carry too", x.Label, x.Value)
		}
	}
	wantSel := []string{`app_requests_total{env="prod"}`, `app_requests_total{env=~"prod|staging",job=~"api|web"}`}
	if !slices.Equal(rep.Selectors, wantSel) || rep.Coverage.Queries != 2 || rep.Coverage.Since.After(queried) {
		t.Errorf("selectors %q, coverage %+v: want %q from 2 queries", rep.Selectors, rep.Coverage, wantSel)
	}

	// Tenant 1: the selector without a name selects the dev series of every
	// metric that has them, and nothing else.
	for _, m := range []string{"svc_a_up", "svc_b_up", "svc_c_up"} {
		code, rep := seriesReport(t, e, "1", m)
		if code != 200 || !rep.Bucket.Complete {
			t.Errorf("%s: %d, bucket %+v", m, code, rep.Bucket)
			continue
		}
		wantSelected, wantNever := int64(200), int64(200)
		if m == "svc_c_up" {
			wantSelected = 0
		}
		if rep.Selected != wantSelected || rep.NeverSelected != wantNever {
			t.Errorf("%s: selected %d, never %d, want %d and %d", m, rep.Selected, rep.NeverSelected, wantSelected, wantNever)
		}
		if m != "svc_c_up" && (len(rep.Explaining) == 0 || rep.Explaining[0] != (seriesusage.ValueExplain{Label: "env", Value: "prod", Series: 200})) {
			t.Errorf("%s explaining %+v: want env=prod 200", m, rep.Explaining)
		}
	}
	// Tenant 0's reads select nothing of tenant 1's and the reverse.
	if code, rep := seriesReport(t, e, "1", "app_requests_total"); code != 404 {
		t.Errorf("tenant 1 report of tenant 0's metric: %d %+v", code, rep)
	}

	// The tenant summary, by never-selected series.
	code, body = get(t, e.srv.URL+"/api/cardguard/v1/usage/tenants/1/series")
	var sum seriesusage.Summary
	if err := json.Unmarshal(body, &sum); code != 200 || err != nil {
		t.Fatalf("summary: %d %v %s", code, err, body)
	}
	var names []string
	for _, m := range sum.Metrics {
		names = append(names, fmt.Sprintf("%s:%d", m.Metric, m.NeverSelected))
	}
	if !slices.Equal(names, []string{"svc_a_up:200", "svc_b_up:200", "svc_c_up:200"}) {
		t.Errorf("summary %q", names)
	}
	for path, want := range map[string]int{
		"/api/cardguard/v1/usage/tenants/0/metrics/no_such_metric/series": 404,
		"/api/cardguard/v1/usage/tenants/zz/metrics/x/series":             400,
		"/api/cardguard/v1/usage/tenants/0/series?limit=-1":               400,
	} {
		if code, body := get(t, e.srv.URL+path); code != want {
			t.Errorf("%s: %d %s, want %d", path, code, body, want)
		}
	}
}

// TestSeriesUsageSurvivesRestart: the selectors are saved with the other
// snapshots, so that after a restart series are matched against the queries
// of before it, not counted as never selected until those run again.
func TestSeriesUsageSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	if code, body := e.push("/api/v1/write", &prompb.WriteRequest{Timeseries: seriesSet(time.Now().UnixMilli(), 5, []string{"restart_total"}, "prod", "dev")}); code != 204 {
		t.Fatalf("write: %d %s", code, body)
	}
	if code, body := get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {`restart_total{env="prod"}`}}.Encode()); code != 200 {
		t.Fatalf("query: %d %s", code, body)
	}
	var before seriesusage.Report
	for deadline := time.Now().Add(10 * time.Second); before.Coverage.Selectors != 1; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("selector not recorded: %+v", before)
		}
		before, _ = e.app.seriesUsage.Report(tenant.ID{}, "restart_total")
	}
	e.app.stop()

	a2, err := newApp(e.app.cfg, e.app.opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a2.stop)
	after, ok := a2.seriesUsage.Report(tenant.ID{}, "restart_total")
	if !ok || !slices.Equal(after.Selectors, before.Selectors) || after.Coverage.Queries != 1 ||
		!after.Coverage.RecordingSince.Equal(before.Coverage.RecordingSince) {
		t.Errorf("after restart %+v, before %+v", after.Coverage, before.Coverage)
	}
	// The restarted replica matches new series against them.
	srv := httptest.NewServer(a2.routes())
	t.Cleanup(srv.Close)
	e2 := &env{t: t, vm: e.vm, app: a2, srv: srv}
	if code, body := e2.push("/api/v1/write", &prompb.WriteRequest{Timeseries: seriesSet(time.Now().UnixMilli(), 5, []string{"restart_total"}, "prod", "dev")}); code != 204 {
		t.Fatalf("write after restart: %d %s", code, body)
	}
	if rep, _ := a2.seriesUsage.Report(tenant.ID{}, "restart_total"); rep.Bucket.ActiveSeries != 10 || rep.Bucket.Selected != 5 {
		t.Errorf("after restart: %+v, want 5 of 10 series selected", rep.Bucket)
	}
}

// TestSeriesUsageAcrossReplicas: two replicas sharing a real Redis. The query
// goes through one, the series through the other: the other still counts
// them as selected, since the replicas share their selectors.
func TestSeriesUsageAcrossReplicas(t *testing.T) {
	c := newCluster(t, "")
	if code, body := get(t, c.srvs[0].URL+"/select/1/prometheus/api/v1/query?"+url.Values{"query": {`shared_total{env="prod"}`}}.Encode()); code != 200 {
		t.Fatalf("query through replica 0: %d %s", code, body)
	}
	t1 := tenant.ID{AccountID: 1}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if rep, _ := c.apps[0].seriesUsage.Report(t1, "shared_total"); rep.Coverage.Selectors == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("replica 0 did not record the selector")
		}
	}
	c.syncAll()
	c.next = 1 // to replica 1
	c.push("1", seriesSet(time.Now().UnixMilli(), 5, []string{"shared_total"}, "prod", "dev"))
	rep, ok := c.apps[1].seriesUsage.Report(t1, "shared_total")
	if !ok || rep.ActiveSeries != 10 || rep.Selected != 5 || !slices.Equal(rep.Selectors, []string{`shared_total{env="prod"}`}) || rep.Coverage.Queries != 1 {
		t.Errorf("replica 1: %+v, want 5 of 10 series selected by replica 0's query", rep)
	}
	// Replica 1 keeps replica 0's selectors out of its own snapshot.
	if n := c.apps[1].seriesUsage.Summary(t1, 0).Overflow; n["selectors"] != 0 {
		t.Errorf("overflow %v", n)
	}
}
