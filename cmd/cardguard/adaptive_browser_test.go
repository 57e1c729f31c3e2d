package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cardguard/cardguard/internal/tenant"
)

// TestRecommendationsInBrowser clicks through the recommendations page in
// headless Chromium against cardguard and VictoriaMetrics with auth on:
// preview a recommendation and see the measured saving beside the estimate,
// apply it and see it enforced and listed with its author, see it on the
// tenant and metric pages, revert it; choose a team and apply and revert its
// rule, for its series only. No console error, no exception.
func TestRecommendationsInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics and Chromium")
	}
	chromium := chromiumPath(t)
	const admin = "ui-admin-token"
	e := newEnv(t, func(c *Config) {
		c.Auth.AdminToken = admin
		c.Cardinality.Window = 4 * time.Second
		c.Cardinality.Buckets = 2
		c.Usage.MetricNamesStats.Disabled = true
		c.Aggregation.Interval = time.Second
		c.Adaptive.SegmentLabel = "team"
	})
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() {
		for ctx.Err() == nil {
			wr := &prompb.WriteRequest{}
			ts := time.Now().UnixMilli()
			for u := range 30 {
				// team-a runs job-0 (10 users), team-b the two others.
				team := "team-b"
				if u%3 == 0 {
					team = "team-a"
				}
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
					Labels: []prompb.Label{{Name: "__name__", Value: "req_total"}, {Name: "job", Value: fmt.Sprintf("job-%d", u%3)},
						{Name: "team", Value: team}, {Name: "user_id", Value: fmt.Sprintf("u%d", u)}},
					Samples: []prompb.Sample{{Value: float64(ts / 1000), Timestamp: ts}},
				})
			}
			e.push("/api/v1/write", wr, "Authorization", "Bearer "+admin)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {"sum by (job) (rate(req_total[1m]))"}}.Encode(), "Authorization", "Bearer "+admin)
	waitFor(t, 10*time.Second, "the recommendation", func() bool {
		e.app.usage.Flush()
		e.app.tracker.Refresh()
		l := e.app.adaptive.engine.Recommendations(t.Context(), tenant.ID{}, true)
		return len(l.Items) == 1 && l.Items[0].Metric == "req_total" && l.Items[0].Kind == "aggregate"
	})

	bctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	bctx, cancelAlloc := chromedp.NewExecAllocator(bctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	)
	defer cancelAlloc()
	bctx, cancelTab := chromedp.NewContext(bctx)
	defer cancelTab()
	var (
		mu       sync.Mutex
		problems []string
	)
	if err := chromedp.Listen(bctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				p = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			p = "uncaught exception: " + (&chromedp.ExceptionError{ExceptionDetails: ev.ExceptionDetails}).Error()
		}
		if p != "" {
			mu.Lock()
			problems = append(problems, p)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(bctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(bctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) {
		t.Helper()
		b, err := chromedp.Run(bctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(screenshotDir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	base := e.srv.URL
	row := `#recommendations tr[data-metric="req_total"]`

	do("set the token",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SendKeys(chromedp.CSS("#token"), admin),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#tenants")))
	do("open the tenant page",
		chromedp.Navigate(base+"/ui/tenant?tenant=0:0"),
		chromedp.WaitVisible(chromedp.CSS("#tenant-adaptive")))
	if got := eval(`document.querySelector("#tenant-adaptive").innerText`); !strings.Contains(got, "27 more available from 1") {
		t.Errorf("tenant page: %q, want 27 series available", got)
	}
	do("open the recommendations", chromedp.Navigate(base+"/ui/recommendations?tenant=0:0"), chromedp.WaitVisible(chromedp.CSS(row)))
	if got := eval(`document.querySelector('` + row + ` .estimate').innerText`); !strings.HasPrefix(got, "27") {
		t.Errorf("estimate %q, want 27 (30 users of 3 jobs)", got)
	}

	do("click preview", chromedp.Click(chromedp.CSS(row+` [data-adaptive-action="preview"]`)))
	if err := chromedp.Do(bctx, waitJS(`!!document.querySelector('`+row+` [data-preview-state]')`)); err != nil {
		t.Fatalf("preview: %v; page says %q", err, eval(`document.querySelector("main").innerText`))
	}
	// One whole bucket after the start: up to two tracker refreshes.
	do("wait for the measured preview", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](`!!document.querySelector('`+row+` [data-preview-state="done"]')`, chromedp.WithPollingTimeout(30*time.Second))(ctx, tg)
		return err
	}))
	if got := eval(`document.querySelector('` + row + ` .measured').innerText`); got != "27" {
		t.Errorf("measured preview %q, want 27", got)
	}
	if got := eval(`document.querySelector('#adaptive-status').innerText`); !strings.Contains(got, "Preview started") {
		t.Errorf("status after preview: %q", got)
	}

	shot("10-recommendation-previewed.png")
	do("apply", chromedp.Click(chromedp.CSS(row+` [data-adaptive-action="apply"]`)),
		waitJS(`!!document.querySelector('#applied tr[data-metric="req_total"]')`))
	if got := eval(`document.querySelector('#applied tr[data-metric="req_total"]').innerText`); !strings.Contains(got, "27 measured") || !strings.Contains(got, "by admin") {
		t.Errorf("applied row %q", got)
	}
	shot("11-recommendation-applied.png")
	if rules := e.app.adaptive.engine.Rules()[tenant.ID{}]; len(rules) != 1 || rules[0].Regex != "user_id" {
		t.Errorf("rules after apply: %+v", rules)
	}
	if e.app.rules.RulesFor(tenant.ID{}) == nil {
		t.Error("the applied rule is not enforced")
	}
	do("open the metric page",
		chromedp.Navigate(base+"/ui/metric?tenant=0:0&metric=req_total"),
		chromedp.WaitVisible(chromedp.CSS("#metric-adaptive")))
	if got := eval(`document.querySelector("#metric-adaptive").innerText`); !strings.Contains(got, "user_id") {
		t.Errorf("metric page: %q", got)
	}

	do("revert",
		chromedp.Navigate(base+"/ui/recommendations?tenant=0:0"),
		chromedp.WaitVisible(chromedp.CSS(`#applied tr[data-metric="req_total"]`)),
		chromedp.Click(chromedp.CSS(`#applied tr[data-metric="req_total"] [data-adaptive-action="revert"]`)),
		waitJS(`!document.querySelector('#applied tr[data-metric="req_total"]')`))
	if rules := e.app.adaptive.engine.Rules()[tenant.ID{}]; len(rules) != 0 || e.app.rules.RulesFor(tenant.ID{}) != nil {
		t.Errorf("rules after revert: %+v", rules)
	}
	if got := eval(`document.querySelector('#adaptive-status').innerText`); !strings.Contains(got, "Reverted") {
		t.Errorf("status after revert: %q", got)
	}

	// team-a's view: its rule, estimate and buttons are for its series only.
	// After the revert, the recommendation comes back once the tracker's
	// window holds the series with user_id again.
	waitFor(t, 15*time.Second, "the recommendation again, with its teams", func() bool {
		e.app.tracker.Refresh()
		l := e.app.adaptive.engine.Recommendations(t.Context(), tenant.ID{}, true)
		return len(l.Items) == 1 && strings.Join(l.Items[0].Segments, ",") == "team-a,team-b"
	})
	teamRow := row + `[data-segment="team-a"]`
	do("reload the recommendations", chromedp.Navigate(base+"/ui/recommendations?tenant=0:0"), chromedp.WaitVisible(chromedp.CSS(row)))
	if got := eval(`(() => { const s = document.querySelector('#adaptive-segment'); s.value = 'team-a'; s.dispatchEvent(new Event('change', { bubbles: true })); return s.value; })()`); got != "team-a" {
		t.Fatalf("the segment selector offers no team-a: %q", got)
	}
	do("load team-a's recommendations", waitJS(`!!document.querySelector('`+teamRow+`')`))
	if got := eval(`location.search`); !strings.Contains(got, "segment=team-a") {
		t.Errorf("address after choosing team-a: %q", got)
	}
	if got := eval(`document.querySelector('` + teamRow + ` .estimate').innerText`); !strings.HasPrefix(got, "9") {
		t.Errorf("team-a's estimate %q, want 9 (10 users of one job)", got)
	}
	if got := eval(`document.querySelector('` + teamRow + ` pre').textContent`); !strings.Contains(got, `team="team-a"`) {
		t.Errorf("team-a's rule text %q", got)
	}
	do("apply team-a's rule", chromedp.Click(chromedp.CSS(teamRow+` [data-adaptive-action="apply"]`)),
		waitJS(`!!document.querySelector('#applied tr[data-metric="req_total"][data-segment="team-a"]')`))
	if rules := e.app.adaptive.engine.Rules()[tenant.ID{}]; len(rules) != 1 || rules[0].If[0] != `{__name__="req_total",team="team-a"}` {
		t.Errorf("rules after applying team-a's: %+v", rules)
	}
	shot("12-recommendation-segment-applied.png")
	do("revert team-a's rule",
		chromedp.Click(chromedp.CSS(`#applied tr[data-segment="team-a"] [data-adaptive-action="revert"]`)),
		waitJS(`!document.querySelector('#applied tr[data-metric="req_total"]')`))
	if rules := e.app.adaptive.engine.Rules()[tenant.ID{}]; len(rules) != 0 {
		t.Errorf("rules after reverting team-a's: %+v", rules)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
}
