package web

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestSeriesUsageBar(t *testing.T) {
	t.Parallel()
	src := newFake()
	d := src.detail["1:0/http_requests_total"]
	d.SeriesUsage = &SeriesUsage{
		ActiveSeries: 6000, Selected: 1900, NeverSelected: 4100, Complete: true,
		Explaining: []ValueExplain{{Label: "env", Value: "dev", Series: 4100}, {Label: "x", Value: `<b>"`, Series: 3}},
		Selectors:  []string{`http_requests_total{env="prod"}`},
		Queries:    37, Since: testNow.Add(-48 * time.Hour),
	}
	src.detail["1:0/http_requests_total"] = d
	u := newTestUI(t, src, nil)
	code, _, body := get(t, u, "/fragment/metric?tenant=1:0&metric=http_requests_total")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, want := range []string{
		`<section id="series-usage">`,
		`<rect class="su-selected" width="31.7" height="10"/><rect class="su-never" x="31.7" width="68.3" height="10"/>`,
		`aria-label="1,900 series selected, 4,100 never selected"`,
		`<td class="name">env="dev"</td><td class="num" title="4,100">4.1k</td>`,
		`x="&lt;b&gt;&#34;"`, // values are escaped
		`Selectors from 37 queries since`,
		`the last complete bucket`,
		`1 selector recorded`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metric page lacks %s", want)
		}
	}
	if strings.Contains(body, "su-changed") {
		t.Error("selectors changed note for a bucket they did not change in")
	}
	d.SeriesUsage.SelectorsChanged, d.SeriesUsage.Complete, d.SeriesUsage.Queries = true, false, 1
	_, _, body = get(t, u, "/fragment/metric?tenant=1:0&metric=http_requests_total")
	if !strings.Contains(body, "Selectors from 1 query since") {
		t.Error("1 query, singular")
	}
	if !strings.Contains(body, `class="su-changed"`) || !strings.Contains(body, "the current bucket (still filling)") {
		t.Error("no note that selectors changed during the current bucket")
	}
	// Without series usage, no section.
	_, _, body = get(t, u, "/fragment/metric?tenant=1:0&metric=node_cpu_seconds_total")
	if strings.Contains(body, "series-usage") {
		t.Error("series usage section without series usage")
	}
}

func TestNeverSelectedColumn(t *testing.T) {
	t.Parallel()
	src := newFake()
	l := src.metrics["1:0"]
	never := map[string]int64{"http_requests_total": 10, "node_cpu_seconds_total": 2000, "forgotten_metric": 900}
	for i := range l.Rows {
		if n, ok := never[l.Rows[i].Name]; ok {
			l.Rows[i].NeverSelected, l.Rows[i].HasSeriesUsage = n, true
		}
	}
	src.metrics["1:0"] = l
	u, err := New(Options{Tenants: src, Metrics: src, Limits: src, PageSize: 10, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	_, _, body := get(t, u, "/fragment/tenant?tenant=1:0&sort=never")
	if !strings.Contains(body, `data-sort="never">Never selected ▼</a>`) {
		t.Errorf("no sorted never selected column:\n%s", body)
	}
	rows := regexp.MustCompile(`<tr data-metric="([^"]+)"`).FindAllStringSubmatch(body, -1)
	var order []string
	for _, r := range rows {
		order = append(order, r[1])
	}
	want := []string{"node_cpu_seconds_total", "forgotten_metric", "http_requests_total", "&lt;script&gt;alert(1)&lt;/script&gt;"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Errorf("order %q, want %q", order, want)
	}
	if !strings.Contains(body, `<td class="num never-selected"><span title="2,000 series no query selects">2k</span></td>`) ||
		!strings.Contains(body, `<td class="num never-selected">–</td>`) {
		t.Errorf("never selected cells missing:\n%s", body)
	}
}
