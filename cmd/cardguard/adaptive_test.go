package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/adaptive"
	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/tenant"
)

// userSeries are n series of metric with a user_id label nobody reads.
func userSeries(metric string, n int, ts int64) *prompb.WriteRequest {
	wr := &prompb.WriteRequest{}
	for i := range n {
		wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "api"}, {Name: "user_id", Value: fmt.Sprintf("u%d", i)}},
			Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}},
		})
	}
	return wr
}

func call(t *testing.T, method, rawURL, token, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, rawURL, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdaptiveAPIAuth: a tenant's token reads its own recommendations and
// nothing else; previews, applies, reverts and exemption changes need the
// admin token; bad input gets a 4xx that says what is wrong.
func TestAdaptiveAPIAuth(t *testing.T) {
	const admin, tok1, tok2 = "admin-secret", "tenant-one", "tenant-two"
	e := newEnv(t, func(c *Config) {
		c.Upstream.TenantLabel = "vm_account_id"
		// A drop waits for the name stats' first poll of the tenant; not
		// what this test is about.
		c.Usage.MetricNamesStats.Disabled = true
		c.Auth = auth.Config{AdminToken: admin, Tenants: []auth.TenantToken{
			{Token: tok1, Tenant: tenant.MustParse("1:0")}, {Token: tok2, Tenant: tenant.MustParse("2:0")},
		}}
	})
	ts := time.Now().Add(-10 * time.Second).UnixMilli()
	if code, body := e.push("/api/v1/write", userSeries("jobs_total", 30, ts), "Authorization", "Bearer "+tok1); code != 204 {
		t.Fatalf("push: %d %s", code, body)
	}
	e.app.tracker.Refresh()
	base := e.srv.URL + "/api/cardguard/v1/recommendations/tenants/"
	m := base + "1:0/metrics/jobs_total"
	for _, tc := range []struct {
		method, url, token, body string
		want                     int
	}{
		{"GET", base + "1:0/", "", "", 401},
		{"GET", base + "1:0/", "wrong", "", 401},
		{"GET", base + "2:0/", tok1, "", 403},
		{"GET", base + "nope/", admin, "", 400},
		{"GET", base + "1:0/?refresh=1", tok1, "", 200},
		{"GET", base + "1:0/?segment=team-a", tok1, "", 400}, // no segment label configured
		{"GET", base + "1:0/applied", tok1, "", 200},
		{"GET", base + "1:0/exemptions", tok1, "", 200},
		{"PUT", base + "1:0/exemptions", tok1, `{"exact":["x"]}`, 403},
		{"POST", m + "/preview", tok1, "", 403},
		{"POST", m + "/apply", tok1, "", 403},
		{"POST", m + "/revert", tok1, "", 403},
		{"POST", m + "/apply", tok2, "", 403},
		{"POST", base + "1:0/metrics/unknown_metric/apply", admin, "", 404},
		{"POST", m + "/apply", admin, `{"kind":"shred"}`, 400},
		{"POST", m + "/apply", admin, `{"kind":"aggregate","labels":["le"]}`, 400},
		{"POST", m + "/apply", admin, `{"kind":"aggregate","labels":[`, 400},
		{"POST", m + "/apply", admin, strings.Repeat(" ", 2<<20), 413},
		{"POST", m + "/apply?force=yes", admin, "", 400},
		{"PUT", base + "1:0/exemptions", admin, `{"regex":["[a-"]}`, 400},
		{"PUT", base + "1:0/exemptions", admin, `{"prefix":[""]}`, 400},
		{"PUT", base + "1:0/exemptions", admin, `{"exact":["other"],"prefix":["debug_"],"regex":["tmp_.*"]}`, 200},
		{"POST", m + "/preview", admin, "", 202},
		{"GET", m + "/preview?kind=drop", tok1, "", 200},
		{"POST", m + "/apply", admin, "", 200},
		{"POST", m + "/apply", admin, "", 409}, // already applied
		{"GET", m, tok1, "", 200},
		{"POST", m + "/revert", admin, "", 200},
		{"POST", m + "/revert", admin, "", 404},
	} {
		if got, body := call(t, tc.method, tc.url, tc.token, tc.body); got != tc.want {
			t.Errorf("%s %s (token %q): %d, want %d: %.300s", tc.method, strings.TrimPrefix(tc.url, e.srv.URL), tc.token, got, tc.want, body)
		}
	}
	var ex adaptive.Exemptions
	_, body := call(t, "GET", base+"1:0/exemptions", tok1, "")
	if err := json.Unmarshal([]byte(body), &ex); err != nil || len(ex.Prefix) != 1 || ex.Prefix[0] != "debug_" {
		t.Errorf("exemptions %s", body)
	}
}

// TestAdaptiveRulesPersist: an applied rule is enforced at once, survives a
// restart on the same data directory, and a revert lifts it.
func TestAdaptiveRulesPersist(t *testing.T) {
	e := newEnv(t, nil)
	ts := time.Now().Add(-time.Minute).UnixMilli()
	e.push("/api/v1/write", userSeries("logins_total", 20, ts))
	// Read by job only: user_id may go. Another metric is counted.
	get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {"sum by (job) (rate(logins_total[5m]))"}}.Encode())
	get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {"count by (job) (queue_depth)"}}.Encode())
	base := e.srv.URL + "/api/cardguard/v1/recommendations/tenants/0:0"
	waitFor(t, 5*time.Second, "the recommendation", func() bool {
		e.app.usage.Flush()
		e.app.tracker.Refresh()
		_, body := call(t, "GET", base+"/?refresh=1", "", "")
		return strings.Contains(body, `"kind": "aggregate"`)
	})
	var a adaptive.Applied
	code, body := call(t, "POST", base+"/metrics/logins_total/apply", "", "")
	if code != 200 || json.Unmarshal([]byte(body), &a) != nil || a.Kind != adaptive.KindAggregate || strings.Join(a.Labels, ",") != "user_id" {
		t.Fatalf("apply: %d %s", code, body)
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
	srv := httptest.NewServer(a2.routes())
	t.Cleanup(srv.Close)
	e2 := &env{t: t, vm: e.vm, app: a2, srv: srv}
	if code, body := e2.push("/api/v1/write", userSeries("logins_total", 20, ts+15_000)); code != 204 {
		t.Fatalf("push: %d %s", code, body)
	}
	a2.folds.Flush(t.Context(), time.Now(), true)
	e.vm.Flush()
	waitFor(t, 10*time.Second, "the aggregate of the restarted replica", func() bool {
		e.vm.Flush()
		return vmScalar(t, e2, `count(logins_total{user_id=""})`) == 1
	})
	// The counting read, made before the restart, still keeps queue_depth
	// from aggregation.
	_, err = a2.adaptive.engine.Apply(t.Context(), tenant.ID{}, "queue_depth", adaptive.RuleSpec{Kind: adaptive.KindAggregate, Labels: []string{"user_id"}}, "admin", false)
	if err == nil || !strings.Contains(err.Error(), "other than by a sum") {
		t.Errorf("aggregating queue_depth after the restart: %v, want a refusal", err)
	}
	// A config reload (SIGHUP) keeps the applied rules after the config's.
	if err := a2.reload(a2.cfg); err != nil {
		t.Fatal(err)
	}
	if a2.rules.RulesFor(tenant.ID{}) == nil {
		t.Fatal("a config reload dropped the applied rule")
	}
	if code, _ := call(t, "POST", srv.URL+"/api/cardguard/v1/recommendations/tenants/0:0/metrics/logins_total/revert", "", ""); code != 200 {
		t.Fatalf("revert: %d", code)
	}
	if rs := a2.rules.RulesFor(tenant.ID{}); rs != nil {
		t.Errorf("rules left after the revert: %+v", rs)
	}
}

// TestAdaptiveRulesShared: a rule applied on one replica is enforced by the
// other through Redis, and so is its revert.
func TestAdaptiveRulesShared(t *testing.T) {
	_, apps, srvs := foldCluster(t, func(*Config) {})
	call(t, "POST", srvs[0].URL+"/api/cardguard/v1/recommendations/tenants/0:0/metrics/logins_total/apply", "", `{"kind":"aggregate","labels":["user_id"]}`)
	waitFor(t, 10*time.Second, "the rule on the other replica", func() bool {
		return len(apps[1].adaptive.engine.Rules()[tenant.ID{}]) == 1 && apps[1].rules.RulesFor(tenant.ID{}) != nil
	})
	if code, _ := call(t, "POST", srvs[1].URL+"/api/cardguard/v1/recommendations/tenants/0:0/metrics/logins_total/revert", "", ""); code != 200 {
		t.Fatalf("revert on the other replica: %d", code)
	}
	waitFor(t, 10*time.Second, "the revert on the first replica", func() bool {
		return len(apps[0].adaptive.engine.Rules()[tenant.ID{}]) == 0 && apps[0].rules.RulesFor(tenant.ID{}) == nil
	})

	// A read through the first replica that counts a metric's series keeps
	// the second from aggregating it.
	get(t, srvs[0].URL+"/api/v1/query?"+url.Values{"query": {"count by (job) (queue_depth)"}}.Encode())
	waitFor(t, 10*time.Second, "the counting read in Redis and in the second replica's usage", func() bool {
		apps[0].usage.Flush()
		m, _, err := apps[1].shared.redis.RulesIn(adaptiveReadsHash).LoadRules(t.Context())
		code, _ := call(t, "GET", srvs[1].URL+"/api/cardguard/v1/usage/tenants/0:0/metrics/queue_depth", "", "")
		return err == nil && len(m) == 1 && code == 200
	})
	// The second replica reads the shared reads again at most 10 s later.
	waitFor(t, 15*time.Second, "the second replica refusing to aggregate the counted metric", func() bool {
		code, body := call(t, "POST", srvs[1].URL+"/api/cardguard/v1/recommendations/tenants/0:0/metrics/queue_depth/preview", "", `{"kind":"aggregate","labels":["user_id"]}`)
		if code != http.StatusAccepted {
			t.Fatalf("preview: %d %s", code, body)
		}
		e := apps[1].adaptive.engine
		_, err := e.Apply(t.Context(), tenant.ID{}, "queue_depth", adaptive.RuleSpec{Kind: adaptive.KindAggregate, Labels: []string{"user_id"}}, "admin", false)
		if err == nil {
			// Its cache of the shared reads is from before they were
			// published: undo, and try again once it has expired.
			if _, err := e.Revert(tenant.ID{}, "queue_depth", "", ""); err != nil {
				t.Fatal(err)
			}
			return false
		}
		return strings.Contains(err.Error(), "other than by a sum")
	})
}
