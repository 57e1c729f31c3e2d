package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/cardguard/cardguard/internal/tenant"
)

// screenshotDir is where the browser test leaves its screenshots for people to
// look at; e2e/out is git-ignored.
const screenshotDir = "../../e2e/out/screenshots"

// TestDashboardInBrowser drives the dashboard in headless Chromium against
// cardguard with real VictoriaMetrics behind it and auth on: the overview lists
// both tenants, the tenant page ranks the biggest metric first and marks the
// never-queried one, the metric page shows unused labels, and the limits form
// changes a limit through the API and shows the API's validation error next to
// the field. Series that the label guard and a relabel rule fold together show
// as aggregations, live, before any flush: on the overview, on the tenant page
// and on the metric page, with their number of inputs. The page must log no
// console error and throw no exception.
func TestDashboardInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics and Chromium")
	}
	chromium := chromiumPath(t)
	const admin = "ui-admin-token"
	e := newEnv(t, func(c *Config) {
		// Tenant 1's guard keeps 2 values of a label per metric; id is exempt so
		// that big_metric keeps its 600 series.
		multiTenant("overrides:\n  \"1\":\n    max_series: 5000\n    label_guard:\n      max_values_per_label: 2\n      exempt_labels: [id]\n  \"2\":\n    max_series: 25\n")(c)
		if err := decodeStrict([]byte("tenants:\n  \"1\":\n    - action: labeldrop\n      regex: session\n"), &c.Relabel); err != nil {
			t.Fatal(err)
		}
		c.Auth.AdminToken = admin
	})
	seedDashboardData(t, e, admin)
	seedAggregations(t, e, admin)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromium),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1366, 900),
	)
	defer cancelAlloc()
	ctx, cancelTab := chromedp.NewContext(ctx)
	defer cancelTab()

	var (
		mu       sync.Mutex
		problems []string
	)
	if err := chromedp.Listen(ctx, func(ev any) {
		var p string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert || ev.Type == runtime.ConsoleAPICalledTypeWarning {
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
	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func(name string) {
		t.Helper()
		// A full-page capture draws the sticky header where the page is
		// scrolled to: scroll to the top first.
		if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`window.scrollTo(0, 0), true`)); err != nil {
			t.Fatalf("scroll: %v", err)
		}
		b, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		p := filepath.Join(screenshotDir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		abs, _ := filepath.Abs(p)
		t.Logf("screenshot: %s", abs)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		return s
	}
	// clickAndLoad clicks something that navigates and waits for the new document,
	// so that the waits after it cannot match the old page.
	clickAndLoad := func(sel chromedp.CSS) {
		t.Helper()
		if _, err := chromedp.RunResponse(ctx, chromedp.Click(sel)); err != nil {
			t.Fatalf("click %s: %v", sel, err)
		}
	}
	base := e.srv.URL

	// Without the token the dashboard shows no data and asks for it.
	do("open the root", chromedp.Navigate(base+"/"), chromedp.WaitVisible(chromedp.CSS("#load-error")))
	if loc := eval(`location.pathname`); loc != "/ui/" {
		t.Errorf("/ redirected to %s, want /ui/", loc)
	}
	if got := eval(`document.querySelector("main").innerText`); !strings.Contains(got, "admin token") || strings.Contains(got, "1:0") {
		t.Errorf("without a token the page shows %q", got)
	}
	shot("00-token-needed.png")

	do("type the admin token",
		chromedp.SendKeys(chromedp.CSS("#token"), admin),
		chromedp.Click(chromedp.CSS(`#token-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#tenants")))
	if got := eval(`[...document.querySelectorAll("#tenants tbody tr")].map(r => r.dataset.tenant).sort().join(",")`); got != "1:0,2:0" {
		t.Errorf("overview lists tenants %q, want 1:0,2:0", got)
	}
	if got := eval(`document.querySelector("#rejections figcaption").innerText`); !strings.Contains(got, "max_series") {
		t.Errorf("rejections chart legend %q does not name max_series", got)
	}
	// logins_total: 4 inputs folded by the guard; sessions_total: 3 by labeldrop.
	if got := eval(`document.querySelector('#tenants tr[data-tenant="1:0"] .aggregated').innerText`); got != "7 → 2" {
		t.Errorf("overview shows tenant 1 aggregated %q, want 7 → 2", got)
	}
	if got := eval(`document.querySelector('#tenants tr[data-tenant="2:0"] .aggregated').innerText`); got != "–" {
		t.Errorf("overview shows tenant 2, which folds nothing, aggregated %q", got)
	}
	shot("01-overview.png")

	clickAndLoad(chromedp.CSS(`#tenants tr[data-tenant="1:0"] a`))
	do("open tenant 1", chromedp.WaitVisible(chromedp.CSS("#metrics")))
	if got := eval(`document.querySelector("#metrics tbody tr").dataset.metric`); got != "big_metric" {
		t.Errorf("top metric of tenant 1 is %q, want big_metric", got)
	}
	if got := eval(`String(!!document.querySelector('#metrics tr[data-metric="never_read_metric"] .never-queried'))`); got != "true" {
		t.Errorf("never_read_metric is not marked never queried")
	}
	if got := eval(`String(!!document.querySelector('#metrics tr[data-metric="big_metric"] .never-queried'))`); got != "false" {
		t.Errorf("big_metric, which was queried, is marked never queried")
	}
	if got := eval(`document.querySelector("#tenant-aggregated").innerText`); !strings.Contains(got, "7 input series folded into 2 output series") || !strings.Contains(got, "1 output series made to collide by relabel rules") {
		t.Errorf("tenant 1's aggregation summary: %q", got)
	}
	shot("02-tenant.png")

	do("type a filter", chromedp.SendKeys(chromedp.CSS("#filter-q"), "small"))
	clickAndLoad(chromedp.CSS(`form.filter button[type="submit"]`))
	do("wait for the filtered page", chromedp.WaitVisible(chromedp.CSS(`#metrics tr[data-metric="small_metric"]`)))
	if got := eval(`[...document.querySelectorAll("#metrics tbody tr")].map(r => r.dataset.metric).join(",")`); got != "small_metric" {
		t.Errorf("filter 'small' shows %q", got)
	}
	if got := eval(`location.search`); !strings.Contains(got, "q=small") || !strings.Contains(got, "tenant=1") {
		t.Errorf("filter is not in the URL: %q", got)
	}

	do("open big_metric",
		chromedp.Navigate(base+"/ui/tenant?tenant=1:0"),
		chromedp.WaitVisible(chromedp.CSS(`#metrics tr[data-metric="big_metric"] a`)))
	clickAndLoad(chromedp.CSS(`#metrics tr[data-metric="big_metric"] a`))
	do("wait for big_metric", chromedp.WaitVisible(chromedp.CSS("#labels")))
	if got := eval(`[...document.querySelectorAll("#labels tr.unused")].map(r => r.dataset.label).sort().join(",")`); got != "id,pod" {
		t.Errorf("unused labels of big_metric: %q, want id,pod", got)
	}
	if got := eval(`document.querySelector("#savings").innerText`); !strings.Contains(got, "would save") {
		t.Errorf("savings: %q", got)
	}
	if got := eval(`document.querySelector("#no-aggregations").innerText`); !strings.Contains(got, "No series of this metric is aggregated") {
		t.Errorf("big_metric, which nothing folds, says %q", got)
	}
	shot("03-metric.png")

	do("open logins_total",
		chromedp.Navigate(base+"/ui/metric?tenant=1:0&metric=logins_total"),
		chromedp.WaitVisible(chromedp.CSS("#aggregations, #no-aggregations")))
	rows := eval(`[...document.querySelectorAll("#aggregations tbody tr")].map(r => [r.dataset.source, ...[...r.cells].map(c => c.innerText)].join("|")).join("\n")`)
	if want := `label_guard|{job="api",user_id="__cardguard_overflow__"}|counter|total|label guard|4`; rows != want {
		t.Errorf("aggregations of logins_total:\n%s\nwant\n%s", rows, want)
	}
	shot("03-metric-aggregated.png")
	do("open sessions_total",
		chromedp.Navigate(base+"/ui/metric?tenant=1:0&metric=sessions_total"),
		chromedp.WaitVisible(chromedp.CSS("#aggregations, #no-aggregations")))
	rows = eval(`[...document.querySelectorAll("#aggregations tbody tr")].map(r => [r.dataset.source, ...[...r.cells].map(c => c.innerText)].join("|")).join("\n")`)
	if want := `relabel|{job="web"}|counter|total|relabel rules|3`; rows != want {
		t.Errorf("aggregations of sessions_total:\n%s\nwant\n%s", rows, want)
	}

	do("open the limits of tenant 1",
		chromedp.Navigate(base+"/ui/limits?tenant=1:0"),
		chromedp.WaitVisible(chromedp.CSS("#limits-form")))
	if got := eval(`document.querySelector("#f-max_series").value`); got != "5000" {
		t.Errorf("max_series field shows %q, want 5000", got)
	}
	do("save max_series 7000",
		chromedp.SetValue(chromedp.CSS("#f-max_series"), "7000"),
		chromedp.Click(chromedp.CSS(`#limits-form button[type="submit"]`)),
		waitJS(`document.querySelector("#limits-status").textContent.startsWith("Saved")`))
	if got := limitOf(t, e, admin, "1"); got != 7000 {
		t.Errorf("after saving, the API says max_series %d, want 7000", got)
	}
	if got := eval(`document.querySelector('tr[data-field="max_series"] .tag').textContent`); got != "api" {
		t.Errorf("max_series source shows %q after saving, want api", got)
	}
	shot("04-limits.png")

	do("save an invalid max_series",
		chromedp.SetValue(chromedp.CSS("#f-max_series"), "-5"),
		chromedp.Click(chromedp.CSS(`#limits-form button[type="submit"]`)),
		waitJS(`document.querySelector("#err-f-max_series").textContent !== ""`))
	if got := eval(`document.querySelector("#err-f-max_series").textContent`); !strings.Contains(got, "must be 0 (unlimited) or positive") {
		t.Errorf("error next to max_series: %q", got)
	}
	if got := eval(`document.querySelector("#f-max_series").getAttribute("aria-invalid")`); got != "true" {
		t.Errorf("max_series not marked invalid: %q", got)
	}
	if got := eval(`document.querySelector("#limits-error").textContent`); got != "" {
		t.Errorf("a field error also shows as a form error: %q", got)
	}
	if got := limitOf(t, e, admin, "1"); got != 7000 {
		t.Errorf("the invalid value changed max_series to %d", got)
	}
	shot("05-limits-error.png")

	do("switch to dark mode", func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
			Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}},
		})
		return chromedp.Void{}, err
	},
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS("#tenants")))
	shot("06-overview-dark.png")
	do("dark tenant page", chromedp.Navigate(base+"/ui/tenant?tenant=1:0"), chromedp.WaitVisible(chromedp.CSS("#metrics")))
	shot("07-tenant-dark.png")

	mu.Lock()
	defer mu.Unlock()
	for _, p := range problems {
		t.Errorf("browser: %s", p)
	}
}

// waitJS waits until the expression is true.
func waitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))(ctx, tg)
		return err
	})
}

// chromiumPath finds Chromium: $CHROMIUM, /usr/bin/chromium, or chromium on the
// PATH. Missing Chromium fails the test: CI installs it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium"} {
		if p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium not found: install it (apt-get install chromium) or set CHROMIUM; go test -short skips this test")
	return ""
}

// seedDashboardData gives tenant 1 a metric with clearly the most series
// (big_metric), a queried small one and one nobody queries, and tenant 2 one
// metric that goes over its max_series of 25, between two history samples so
// that the rejections chart has something to draw.
func seedDashboardData(t *testing.T, e *env, admin string) {
	t.Helper()
	auth := []string{"Authorization", "Bearer " + admin}
	ts := time.Now().Add(-time.Minute).UnixMilli()
	var wr prompb.WriteRequest
	wr.Timeseries = append(wr.Timeseries, genSeries("big_metric", 600, ts, prompb.Label{Name: "job", Value: "api"}, prompb.Label{Name: "pod", Value: "p1"})...)
	wr.Timeseries = append(wr.Timeseries, genSeries("small_metric", 40, ts, prompb.Label{Name: "job", Value: "api"})...)
	wr.Timeseries = append(wr.Timeseries, genSeries("never_read_metric", 150, ts, prompb.Label{Name: "job", Value: "batch"})...)
	if code, body := e.push("/insert/1/prometheus/api/v1/write", &wr, auth...); code != 204 {
		t.Fatalf("push tenant 1: %d %s", code, body)
	}
	if code, body := e.push("/insert/2/prometheus/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("other_metric", 20, ts)}, auth...); code != 204 {
		t.Fatalf("push tenant 2: %d %s", code, body)
	}
	e.app.tracker.Refresh()
	e.app.ui.history.Sample(time.Now())
	if code, body := e.push("/insert/2/prometheus/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("other_metric", 40, ts+1000)}, auth...); code != 204 {
		t.Fatalf("push tenant 2 over its limit: %d %s", code, body)
	}
	e.vm.Flush()
	e.app.tracker.Refresh()
	e.app.ui.history.Sample(time.Now())

	grafana := []string{"X-Dashboard-Uid", "api-overview", "X-Dashboard-Title", "API overview", "X-Panel-Id", "3", "X-Panel-Title", "Requests by job"}
	for _, q := range []string{`sum by (job) (big_metric)`, `sum by (job) (rate(big_metric[5m]))`, `small_metric{job="api"}`} {
		code, body := postForm(t, e.srv.URL+"/select/1/prometheus/api/v1/query", url.Values{"query": {q}}, append(auth, grafana...)...)
		if code != http.StatusOK {
			t.Fatalf("query %s: %d %s", q, code, body)
		}
	}
	e.app.usage.Flush()
}

// seedAggregations writes, to tenant 1, six users' logins_total, of which the
// guard (2 values per label) folds the last four into one output, and three
// sessions' sessions_total, which the labeldrop rule makes collide. Sessions are
// written twice: the session that claimed the output first joins the
// aggregate at its next write. Nothing is flushed: the dashboard shows what is
// held.
func seedAggregations(t *testing.T, e *env, admin string) {
	t.Helper()
	ts := time.Now().Add(-time.Minute).UnixMilli()
	for step := range 2 {
		var wr prompb.WriteRequest
		for i := range 3 {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "sessions_total"}, {Name: "job", Value: "web"}, {Name: "session", Value: fmt.Sprintf("s%d", i)}},
				Samples: []prompb.Sample{{Value: float64(step + i), Timestamp: ts + int64(step)*1000}},
			})
		}
		if step == 0 {
			for i := range 6 {
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
					Labels:  []prompb.Label{{Name: "__name__", Value: "logins_total"}, {Name: "job", Value: "api"}, {Name: "user_id", Value: fmt.Sprintf("u%d", i)}},
					Samples: []prompb.Sample{{Value: float64(i), Timestamp: ts}},
				})
			}
		}
		if code, body := e.push("/insert/1/prometheus/api/v1/write", &wr, "Authorization", "Bearer "+admin); code != 204 {
			t.Fatalf("push folded series: %d %s", code, body)
		}
	}
	e.app.tracker.Refresh()
	if n := e.app.claims.Collisions(tenant.ID{AccountID: 1}); n != 1 {
		t.Fatalf("%d collisions in tenant 1, want 1 (sessions_total)", n)
	}
}

// limitOf reads max_series of tenant tn through the limits API.
func limitOf(t *testing.T, e *env, admin, tn string) int {
	t.Helper()
	code, body := get(t, e.srv.URL+"/api/cardguard/v1/limits/"+tn, "Authorization", "Bearer "+admin)
	if code != http.StatusOK {
		t.Fatalf("GET limits/%s: %d %s", tn, code, body)
	}
	var v struct {
		Limits struct {
			MaxSeries int `json:"max_series"`
		} `json:"limits"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return v.Limits.MaxSeries
}
