package adaptive

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/upstream"
)

// observeOnce lets the engine see the workload's segment values.
func observeOnce(e *Engine, s series, metrics ...string) {
	for _, m := range metrics {
		for _, ls := range s[m] {
			e.Observe(tn, m, ls, hashOf(ls))
		}
	}
}

func TestRuleForScope(t *testing.T) {
	t.Parallel()
	team := func(v string) Scope { return Scope{Label: "team", Value: v} }
	for _, tc := range []struct {
		name, kind, match string
		drop              []string
		sc                Scope
		want, wantErr     string
	}{
		{name: "aggregate, whole metric", kind: KindAggregate, drop: []string{"pod", "user_id"},
			want: "- if: '{__name__=\"m\"}'\n  action: labeldrop\n  regex: 'pod|user_id'\n"},
		{name: "aggregate, one segment", kind: KindAggregate, drop: []string{"pod", "user_id"}, sc: team("team-a"),
			want: "- if: '{__name__=\"m\",team=\"team-a\"}'\n  action: labeldrop\n  regex: 'pod|user_id'\n"},
		{name: "drop, one segment", kind: KindDrop, sc: team("team-a"),
			want: "- if: '{__name__=\"m\",team=\"team-a\"}'\n  action: drop\n"},
		{name: "segment value quoted", kind: KindDrop, sc: team(`a"b`),
			want: "- if: '{__name__=\"m\",team=\"a\\\"b\"}'\n  action: drop\n"},
		{name: "drop_series, whole metric", kind: KindDropSeries, match: `{__name__="m",env="dev"}`,
			want: "- if: '{__name__=\"m\",env=\"dev\"}'\n  action: drop\n"},
		{name: "drop_series, one segment", kind: KindDropSeries, match: `{__name__="m",env="dev"}`, sc: team("team-a"),
			want: "- if: '{__name__=\"m\",env=\"dev\",team=\"team-a\"}'\n  action: drop\n"},
		{name: "drop_series naming the segment already", kind: KindDropSeries, match: `m{team="team-a"}`, sc: team("team-a"),
			want: "- if: 'm{team=\"team-a\"}'\n  action: drop\n"},
		{name: "drop_series naming another segment", kind: KindDropSeries, match: `{__name__="m",team="team-b"}`, sc: team("team-a"),
			wantErr: "selects no series of team=\"team-a\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rule, text, err := ruleFor("m", tc.kind, tc.drop, tc.match, tc.sc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || text != tc.want {
				t.Fatalf("rule text %q (%v), want %q", text, err, tc.want)
			}
			if _, err := relabel.Compile([]relabel.Config{rule}); err != nil {
				t.Errorf("does not compile: %v", err)
			}
		})
	}
}

// TestSegmentRecommendations: with a segment, the rule carries its matcher,
// the estimate counts its series only, and the rule leaves the other
// segment's series as they are.
func TestSegmentRecommendations(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, c, _ := newTestEngine(t, s, &epoch, queriesUsing())
	observeOnce(e, s, "app_requests", "node_cpu")
	ctx := context.Background()
	whole := byMetric(e.Recommendations(ctx, tn, true))
	if r := whole["app_requests"]; r.Segment != "" || r.SeriesSaved != 900 || !strings.Contains(r.RuleText, `'{__name__="app_requests"}'`) {
		t.Fatalf("whole metric: %+v", r)
	}
	calls := c.calls.Load()
	l, err := e.SegmentRecommendations(ctx, tn, "team-a", false)
	if err != nil {
		t.Fatal(err)
	}
	recs := byMetric(l)
	if _, ok := recs["node_cpu"]; ok || len(recs) != 1 {
		t.Errorf("team-a lists %v: node_cpu carries no team", l.Items)
	}
	r := recs["app_requests"]
	// team-a: 50 pods of 10 users, 500 series; 50 instances remain.
	if r.Segment != "team-a" || r.Estimate.Method != MethodUpstream || r.Estimate.Series != 500 || r.SeriesSaved != 450 || l.SeriesSaveable != 450 {
		t.Errorf("team-a: %+v %+v", r, r.Estimate)
	}
	if r.RuleText != "- if: '{__name__=\"app_requests\",team=\"team-a\"}'\n  action: labeldrop\n  regex: 'pod|user_id'\n" {
		t.Errorf("rule text %q", r.RuleText)
	}
	if l.Segment != "team-a" || len(r.Evidence.Labels) == 0 {
		t.Errorf("list segment %q, evidence %+v", l.Segment, r.Evidence)
	}
	// Asked once per list: the second look is cached.
	if _, err := e.SegmentRecommendations(ctx, tn, "team-a", false); err != nil || c.calls.Load() != calls+2 {
		t.Errorf("upstream counts: %d, want 2", c.calls.Load()-calls)
	}
	rules, err := relabel.Compile([]relabel.Config{r.Rule})
	if err != nil {
		t.Fatal(err)
	}
	a := lbls("__name__", "app_requests", "instance", "i0", "pod", "p0", "team", "team-a", "user_id", "u1")
	b := lbls("__name__", "app_requests", "instance", "i1", "pod", "p1", "team", "team-b", "user_id", "u1")
	if out, keep, _ := rules.Apply(a, nil); !keep || len(out) != 3 {
		t.Errorf("team-a's series after the rule: %v", out)
	}
	if out, keep, changed := rules.Apply(b, nil); !keep || changed || len(out) != 5 {
		t.Errorf("team-b's series after team-a's rule: %v", out)
	}

	// Without an upstream, the sketches cannot scope: no estimate.
	e2, err := New(Options{Config: Config{SegmentLabel: "team"}, Series: s, Sources: []Source{queriesUsing()},
		Store: &memStore{m: map[string][]byte{}}, Epoch: epoch.Load})
	if err != nil {
		t.Fatal(err)
	}
	observeOnce(e2, s, "app_requests")
	l2, _ := e2.SegmentRecommendations(ctx, tn, "team-a", true)
	if r := byMetric(l2)["app_requests"]; r.Estimate.Method != MethodWithheld || r.SeriesSaved != 0 || !strings.Contains(r.Estimate.Detail, "not one segment's") {
		t.Errorf("without an upstream: %+v", r.Estimate)
	}
	if _, err := e2.SegmentRecommendations(ctx, tn, strings.Repeat("x", 200), false); statusOf(err) != http.StatusBadRequest {
		t.Errorf("a segment value of 200 bytes: %v", err)
	}
}

// TestSegmentPreview: a segment's preview counts its series only, exactly,
// beside the whole metric's.
func TestSegmentPreview(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, _, _ := newTestEngine(t, s, &epoch, queriesUsing())
	ctx := context.Background()
	for _, seg := range []string{"", "team-a"} {
		if _, err := e.StartPreview(ctx, tn, "app_requests", RuleSpec{Segment: seg}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.StartPreview(ctx, tn, "app_requests", RuleSpec{Kind: KindDrop, Segment: "team-b"}); err != nil {
		t.Fatal(err)
	}
	feed(e, &epoch, s, "app_requests")
	for _, tc := range []struct {
		kind, seg    string
		in, out, sav int64
	}{
		{KindAggregate, "", 1000, 100, 900},
		{KindAggregate, "team-a", 500, 50, 450},
		{KindDrop, "team-b", 500, 0, 500},
	} {
		p, ok := e.PreviewOf(tn, "app_requests", tc.kind, tc.seg)
		if !ok || p.State != PreviewDone || p.Segment != tc.seg || p.SeriesIn != tc.in || p.SeriesOut != tc.out || p.SeriesSaved != tc.sav {
			t.Errorf("%s %q: %+v, want %d -> %d", tc.kind, tc.seg, p, tc.in, tc.out)
		}
	}
	if _, ok := e.PreviewOf(tn, "app_requests", KindDrop, ""); ok {
		t.Error("team-b's preview shows as the whole metric's")
	}
	if r := byMetric(mustSegment(t, e, "team-a"))["app_requests"]; r.Preview == nil || r.Preview.SeriesSaved != 450 {
		t.Errorf("team-a's recommendation shows preview %+v", r.Preview)
	}
}

func mustSegment(t *testing.T, e *Engine, seg string) *List {
	t.Helper()
	l, err := e.SegmentRecommendations(context.Background(), tn, seg, false)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSegmentApplyRevert: two segments' rules on one metric are independent;
// a whole-metric rule and a segment's never act on the same series.
func TestSegmentApplyRevert(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, _, _ := newTestEngine(t, s, &epoch, queriesUsing())
	observeOnce(e, s, "app_requests")
	ctx := context.Background()
	a, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Segment: "team-a"}, "admin", false)
	if err != nil {
		t.Fatal(err)
	}
	if a.Segment != "team-a" || a.SegmentLabel != "team" || a.Estimate.Saved != 450 || a.Rule.If[0] != `{__name__="app_requests",team="team-a"}` {
		t.Errorf("applied %+v", a)
	}
	if r, ok := byMetric(mustSegment(t, e, "team-a"))["app_requests"]; ok {
		t.Errorf("team-a's rule is applied and still recommended: %+v", r)
	}
	if _, ok := byMetric(mustSegment(t, e, "team-b"))["app_requests"]; !ok {
		t.Error("team-a's rule took team-b's recommendation away")
	}
	if _, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Segment: "team-a"}, "admin", false); statusOf(err) != http.StatusConflict {
		t.Errorf("team-a twice: %v", err)
	}
	if _, err := e.Apply(ctx, tn, "app_requests", RuleSpec{Kind: KindDrop, Segment: "team-b"}, "admin", true); err != nil {
		t.Fatalf("team-b beside team-a: %v", err)
	}
	for _, spec := range []RuleSpec{{}, {Kind: KindAggregate, Labels: []string{"user_id"}}, {Kind: KindDrop}} {
		_, err := e.Apply(ctx, tn, "app_requests", spec, "admin", true)
		if statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "revert the rules of its segments") {
			t.Errorf("whole-metric %+v over segment rules: %v", spec, err)
		}
	}
	if got := e.Rules()[tn]; len(got) != 2 {
		t.Fatalf("rules %+v", got)
	}
	if _, err := e.Revert(tn, "app_requests", "", ""); statusOf(err) != http.StatusNotFound || !strings.Contains(err.Error(), "team-a, team-b") {
		t.Errorf("revert of the whole metric: %v", err)
	}
	if _, err := e.Revert(tn, "app_requests", "", "team-a"); err != nil {
		t.Fatal(err)
	}
	got := e.Applied(tn)
	if len(got) != 1 || got[0].Segment != "team-b" || got[0].Kind != KindDrop {
		t.Fatalf("after reverting team-a: %+v", got)
	}
	if _, err := e.Revert(tn, "app_requests", "", "team-a"); statusOf(err) != http.StatusNotFound {
		t.Errorf("team-a reverted twice: %v", err)
	}
	if _, err := e.Revert(tn, "app_requests", "", "team-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Apply(ctx, tn, "app_requests", RuleSpec{}, "admin", false); err != nil {
		t.Fatal(err)
	}
	_, err = e.Apply(ctx, tn, "app_requests", RuleSpec{Segment: "team-a"}, "admin", false)
	if statusOf(err) != http.StatusConflict || !strings.Contains(err.Error(), "whole of \"app_requests\"") {
		t.Errorf("segment rule over a whole-metric rule: %v", err)
	}
}

// TestSegmentStoreRoundTrip: segment rules survive a reload; rules stored
// before segments load as whole-metric rules.
func TestSegmentStoreRoundTrip(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	legacy := `{"rules":[{"metric":"node_cpu","kind":"drop","rule":{"if":["{__name__=\"node_cpu\"}"],"separator":";","regex":"(.*)","replacement":"$1","action":"drop"},` +
		`"appliedBy":"admin","appliedAt":"2025-01-01T00:00:00Z","estimate":{"method":"sketch","series":20,"after":0,"saved":20,"formula":20}}],` +
		`"exemptions":{"exact":[],"prefix":[],"regex":[]}}`
	store := &memStore{m: map[string][]byte{tn.String(): []byte(legacy)}}
	open := func() *Engine {
		e, err := New(Options{Config: Config{SegmentLabel: "team"}, Series: s, Counter: &counter{s: s}, Sources: []Source{queriesUsing()}, Store: store, Epoch: epoch.Load})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	if got := e.Applied(tn); len(got) != 1 || got[0].Segment != "" || got[0].Metric != "node_cpu" {
		t.Fatalf("legacy rule: %+v", got)
	}
	if _, err := e.Apply(context.Background(), tn, "node_cpu", RuleSpec{Kind: KindDrop, Segment: "team-a"}, "admin", true); statusOf(err) != http.StatusConflict {
		t.Errorf("a legacy rule is not taken for the whole metric: %v", err)
	}
	if _, err := e.Apply(context.Background(), tn, "app_requests", RuleSpec{Kind: KindAggregate, Labels: []string{"pod"}, Segment: "team-a"}, "admin", false); err != nil {
		t.Fatal(err)
	}
	var stored tenantState
	if err := json.Unmarshal(store.m[tn.String()], &stored); err != nil || len(stored.Rules) != 2 {
		t.Fatalf("stored %s: %v", store.m[tn.String()], err)
	}
	if strings.Count(string(store.m[tn.String()]), `"segment"`) != 1 {
		t.Errorf("a whole-metric rule is stored with a segment: %s", store.m[tn.String()])
	}
	got := open().Applied(tn)
	if len(got) != 2 || got[0].Segment != "" || got[1].Segment != "team-a" || got[1].SegmentLabel != "team" || got[1].Rule.If[0] != `{__name__="app_requests",team="team-a"}` {
		t.Errorf("reloaded %+v", got)
	}
	rules := open().Rules()[tn]
	if len(rules) != 2 {
		t.Fatalf("rules %+v", rules)
	}
	if _, err := relabel.Compile(rules); err != nil {
		t.Error(err)
	}
}

func TestSegmentAPI(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	s := workload()
	e, _, _ := newTestEngine(t, s, &epoch, queriesUsing())
	observeOnce(e, s, "app_requests")
	r := chi.NewRouter()
	pass := func(h http.Handler) http.Handler { return h }
	e.Routes(r, pass, pass, func(*http.Request) string { return "admin" })
	srv := httptest.NewServer(r)
	defer srv.Close()
	do := func(method, path string) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	base := "/recommendations/tenants/1:0"
	code, list := do("GET", base+"/?segment=team-a")
	items, _ := list["recommendations"].([]any)
	if code != 200 || list["segment"] != "team-a" || len(items) != 1 {
		t.Fatalf("team-a's list: %d %v", code, list)
	}
	it := items[0].(map[string]any)
	if it["segment"] != "team-a" || !strings.Contains(it["ruleText"].(string), `team="team-a"`) || it["seriesSaved"] != 450.0 {
		t.Errorf("team-a's recommendation: %v", it)
	}
	for _, tc := range []struct {
		method, path string
		want         int
		body         string
	}{
		{"POST", base + "/metrics/app_requests/preview?segment=team-a", 202, `"segment": "team-a"`},
		{"GET", base + "/metrics/app_requests/preview?kind=aggregate&segment=team-a", 200, `"segment": "team-a"`},
		{"GET", base + "/metrics/app_requests/preview?kind=aggregate&segment=team-b", 404, "with segment"},
		{"POST", base + "/metrics/app_requests/apply?segment=team-a", 200, `team=\"team-a\"`},
		{"POST", base + "/metrics/app_requests/apply?segment=team-b", 200, `"segment": "team-b"`},
		{"POST", base + "/metrics/app_requests/apply", 409, "revert the rules of its segments"},
		{"GET", base + "/applied", 200, `"segment": "team-b"`},
		{"POST", base + "/metrics/app_requests/revert", 404, "name one with segment="},
		{"POST", base + "/metrics/app_requests/revert?segment=team-a", 200, `"segment": "team-a"`},
		{"POST", base + "/metrics/app_requests/revert?segment=team-b", 200, `"segment": "team-b"`},
		{"POST", base + "/metrics/app_requests/apply", 200, `"rule"`},
		{"POST", base + "/metrics/app_requests/apply?segment=team-a", 409, "acts on every segment's series already"},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: %d, want %d with %q: %s", tc.method, tc.path, resp.StatusCode, tc.want, tc.body, body)
		}
	}
}

// TestUpstreamCountScope: a segment's count query carries its matcher.
func TestUpstreamCountScope(t *testing.T) {
	t.Parallel()
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.URL.Query().Get("query"))
		mu.Unlock()
		_, _ = io.WriteString(w, `{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"500"]}]}}`)
	}))
	defer srv.Close()
	scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	u := NewUpstream(scheme, time.Minute, time.Second)
	ctx := context.Background()
	for _, tc := range []struct {
		sc      Scope
		without []string
		want    string
	}{
		{Scope{}, nil, `count(last_over_time({__name__="m"}[60s]))`},
		{Scope{Label: "team", Value: "team-a"}, nil, `count(last_over_time({__name__="m",team="team-a"}[60s]))`},
		{Scope{Label: "team", Value: "team-a"}, []string{"pod"}, `count(count without (pod) (last_over_time({__name__="m",team="team-a"}[60s])))`},
	} {
		n, err := u.Count(ctx, tn, "m", tc.sc, tc.without)
		mu.Lock()
		q := got[len(got)-1]
		mu.Unlock()
		if err != nil || n != 500 || q != tc.want {
			t.Errorf("%v %v: %d %v, query %q, want %q", tc.sc, tc.without, n, err, q, tc.want)
		}
	}
	if _, err := u.Count(ctx, tn, "m", Scope{Label: "bad-label", Value: "x"}, nil); err == nil {
		t.Error("a segment label that is no label name was put in a query")
	}
}
