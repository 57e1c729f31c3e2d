package web

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

type fakeAdaptive struct{}

func (fakeAdaptive) Recommendations(_ *http.Request, _ tenant.ID, segment string, _ bool) AdaptiveList {
	l := AdaptiveList{Computed: testNow, SegmentLabel: "team", SeriesSaved: 38, Sources: []AdaptiveSource{{Name: "queries", OK: true}, {Name: "assets", OK: false, Detail: "2 problems"}},
		Applied: []AppliedRule{{Metric: "node_cpu", Kind: "aggregate", Labels: "cpu", AppliedBy: "admin", AppliedAt: testNow, Measured: 38, HasMeasured: true, Broken: 2},
			{Metric: "http_bucket", Kind: "drop", Segment: "team-c", SegmentLabel: "team", AppliedBy: "admin", AppliedAt: testNow}},
		SegmentValues: []string{"team-a", "team-b"}, Segment: segment}
	if segment == "" || segment == "team-a" {
		l.Items = []Recommendation{{Metric: "http_bucket", Kind: "aggregate", Labels: "pod, user_id", Series: 800, SeriesSaved: 720, Method: "upstream", Formula: 780,
			Segments: []string{"team-a"}, Reason: "no read uses pod, user_id", Preview: &AdaptivePreview{State: "measuring", SeriesIn: 10},
			Evidence: []EvidenceRow{{Label: "instance", DistinctValues: 20, Kept: true, Why: "used (grouping)", Who: []string{"dashboard API / latency"}}}}}
		l.SeriesSaveable = 720
		if segment != "" {
			l.Items[0].Segment = segment
		}
	}
	l.Withheld = []Withheld{{Metric: "app_requests_total", Series: 1000, Reason: "saves nothing"}}
	return l
}

func (fakeAdaptive) MetricRules(tenant.ID, string) AdaptiveMetric {
	return AdaptiveMetric{Rules: []AppliedRule{{Metric: "node_cpu", Kind: "aggregate", Labels: "cpu"}}, Broken: 2,
		BrokenReads: []BrokenRead{{Query: `sum by (cpu) (node_cpu)`, Reader: "dashboard Nodes", Labels: "cpu"}}}
}

func TestRecommendationsFragments(t *testing.T) {
	src := newFake()
	u, err := New(Options{Tenants: src, Metrics: src, Limits: src, Adaptive: fakeAdaptive{}, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(u)
	defer srv.Close()
	fetch := func(path string) (int, string) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := fetch("/fragment/recommendations?tenant=1:0")
	for _, want := range []string{`data-metric="http_bucket"`, `data-preview-state="measuring"`, `data-adaptive-action="apply"`, "formula 780",
		`data-adaptive-action="revert"`, "38 <span class=\"muted\">measured", "saves nothing", "not answering", `data-api="/api/cardguard/v1/recommendations/tenants"`} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("recommendations page (%d) lacks %q", code, want)
		}
	}
	for _, want := range []string{`<select name="segment" id="adaptive-segment">`, `<option value="team-b">team-b</option>`, `data-segment=""`,
		`data-segment="team-c"`, `team="team-c"`, "whole metric"} {
		if !strings.Contains(body, want) {
			t.Errorf("recommendations page lacks %q", want)
		}
	}
	if _, body := fetch("/fragment/recommendations?tenant=1:0&segment=team-b"); strings.Contains(body, `data-metric="http_bucket" data-kind="aggregate"`) {
		t.Error("segment team-b shows team-a's recommendation")
	}
	_, body = fetch("/fragment/recommendations?tenant=1:0&segment=team-a")
	for _, want := range []string{`<option value="team-a" selected>`, `data-kind="aggregate" data-segment="team-a"`, `id="adaptive-segment-note"`,
		`data-segment="team-a">`, "segment=team-a&amp;refresh=1"} {
		if !strings.Contains(body, want) {
			t.Errorf("team-a's page lacks %q", want)
		}
	}
	if code, _ := fetch("/fragment/recommendations?tenant=bad"); code != 400 {
		t.Errorf("bad tenant: %d", code)
	}
	if _, body := fetch("/fragment/adaptive-tenant?tenant=1:0"); !strings.Contains(body, "series saved by 2 applied rules") {
		t.Errorf("tenant part: %s", body)
	}
	if _, body := fetch("/fragment/adaptive-metric?tenant=1:0&metric=node_cpu"); !strings.Contains(body, "broken_by_rule") || !strings.Contains(body, "sum by (cpu) (node_cpu)") {
		t.Errorf("metric part: %s", body)
	}
	if _, body := fetch("/fragment/tenant?tenant=1:0"); !strings.Contains(body, `data-adaptive-fragment="adaptive-tenant"`) {
		t.Error("the tenant page holds no place for the recommendations")
	}
	if code, _ := fetch("/recommendations?tenant=1:0"); code != 200 {
		t.Errorf("shell: %d", code)
	}
}
