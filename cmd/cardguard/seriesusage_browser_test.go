package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/chromedp/chromedp"
)

// TestSeriesUsageInBrowser shows series usage in headless Chromium, against
// cardguard with real VictoriaMetrics behind it: the metric page draws the
// selected series against the never-selected ones with the value that
// explains them, and the tenant page sorts by never-selected series.
func TestSeriesUsageInBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts VictoriaMetrics and Chromium")
	}
	chromium := chromiumPath(t)
	e := newEnv(t, func(c *Config) {
		// Buckets longer than the tracker's 5s refresh, so that its estimates,
		// which the tenant page lists, are not emptied at every refresh.
		c.Cardinality.Window = 20 * time.Second
		c.Cardinality.Buckets = 2
		c.Aggregation.Interval = time.Second
	})
	write := func() error {
		now := time.Now().UnixMilli()
		ts := append(seriesSet(now, 100, []string{"web_requests_total"}, "prod", "staging", "dev"),
			seriesSet(now, 50, []string{"unread_total"})...)
		resp, err := http.Post(e.srv.URL+"/api/v1/write", "application/x-protobuf", bytes.NewReader(encodeWR(&prompb.WriteRequest{Timeseries: ts})))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 204 {
			return fmt.Errorf("write: %s", resp.Status)
		}
		return nil
	}
	if err := write(); err != nil {
		t.Fatal(err)
	}
	e.vm.Flush()
	if code, body := get(t, e.srv.URL+"/api/v1/query?"+url.Values{"query": {`sum(web_requests_total{env=~"prod|staging"})`}}.Encode()); code != 200 {
		t.Fatalf("query: %d %s", code, body)
	}
	queried := time.Now()
	for deadline := time.Now().Add(60 * time.Second); ; {
		if err := write(); err != nil {
			t.Fatal(err)
		}
		if code, rep := seriesReport(t, e, "0", "web_requests_total"); code == 200 && rep.Bucket.Complete && !rep.Bucket.Start.Before(queried) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no complete bucket after the query")
		}
		time.Sleep(time.Second)
	}
	// Write on while the browser looks, as a scraper would.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				_ = write()
			}
		}
	}()
	defer func() { close(stop); <-done }()

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	ctx, cancelAlloc := chromedp.NewExecAllocator(ctx,
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
	ctx, cancelTab := chromedp.NewContext(ctx)
	defer cancelTab()
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
	base := e.srv.URL

	do("open the metric page",
		chromedp.Navigate(base+"/ui/metric?tenant=0:0&metric=web_requests_total"),
		chromedp.WaitVisible(chromedp.CSS("#series-usage")))
	width := func(sel string) float64 {
		t.Helper()
		s := eval(`String(document.querySelector("#series-usage ` + sel + `").getBoundingClientRect().width / document.querySelector("#series-usage svg.bar").getBoundingClientRect().width)`)
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("width of %s: %q", sel, s)
		}
		return f
	}
	// 200 of 300 series selected: two thirds of the bar, drawn.
	if sel, never := width(".su-selected"), width(".su-never"); sel < 0.65 || sel > 0.68 || never < 0.32 || never > 0.35 {
		t.Errorf("bar: selected %.3f, never selected %.3f of its width, want 0.667 and 0.333", sel, never)
	}
	if got := eval(`document.querySelector("#series-usage .su-never-n").innerText`); got != "100" {
		t.Errorf("never selected %q, want 100", got)
	}
	if got := eval(`document.querySelector("#series-explaining tbody tr td").innerText`); got != `env="dev"` {
		t.Errorf("first explaining value %q, want env=\"dev\"", got)
	}
	if got := eval(`getComputedStyle(document.querySelector("#series-usage .su-never")).fill`); got == getFillOf(t, ctx, ".su-selected") {
		t.Errorf("selected and never-selected parts drawn alike (%s)", got)
	}

	if err := os.MkdirAll(screenshotDir, 0o755); err != nil {
		t.Fatal(err)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if err := os.WriteFile(filepath.Join(screenshotDir, "08-metric-series-usage.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}

	do("open the tenant page sorted by never selected",
		chromedp.Navigate(base+"/ui/tenant?tenant=0:0&sort=never"),
		chromedp.WaitVisible(chromedp.CSS("#metrics")))
	got := eval(`[...document.querySelectorAll("#metrics tbody tr")].map(r => r.dataset.metric + ":" + r.querySelector(".never-selected").innerText).join(",")`)
	if got != "web_requests_total:100,unread_total:50" {
		t.Errorf("tenant page rows %q, want web_requests_total:100,unread_total:50 (never selected, most first)", got)
	}
}

func getFillOf(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.querySelector("#series-usage `+sel+`")).fill`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
