package queryaudit

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/prometheus/model/labels"
)

// setsSummary renders the matcher sets of an extraction as selector key ->
// sets joined by " | ", the key as in summary.
func setsSummary(e Extraction) map[string]string {
	out := make(map[string]string, len(e.Selectors))
	for _, s := range e.Selectors {
		key := s.Name
		if key == "" {
			key = "~"
			for _, m := range s.NameMatchers {
				key += m.String()
			}
			if len(s.RequiredLabels) > 0 {
				key += "{" + strings.Join(s.RequiredLabels, ",") + "}"
			}
		}
		var sets []string
		for _, set := range s.MatcherSets {
			sets = append(sets, FormatMatchers("", set))
		}
		out[key] = strings.Join(sets, " | ")
	}
	return out
}

// extractPromQL runs the Prometheus walker alone.
func extractPromQL(t *testing.T, q string) Extraction {
	t.Helper()
	expr, err := newQueryParser().ParseExpr(q)
	if err != nil {
		t.Fatalf("ParseExpr(%q): %v", q, err)
	}
	var w walker
	w.walk(expr, true)
	return Extraction{Selectors: w.sels}
}

func TestMatcherSets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		query string
		want  map[string]string
		// promql: the Prometheus parser reads it too (not MetricsQL-only syntax).
		promql bool
	}{
		{name: "bare", query: `up`, want: map[string]string{"up": "{}"}, promql: true},
		{
			name:   "sorted and normalised",
			query:  `rate(http_requests_total{job=~"api|web", env="prod", env="prod", path=~".*"}[5m])`,
			want:   map[string]string{"http_requests_total": `{env="prod",job=~"api|web"}`},
			promql: true,
		},
		{
			name:   "two selectors of one metric keep both sets",
			query:  `x{env="prod"} / x{env="staging"} + x{env="prod"}`,
			want:   map[string]string{"x": `{env="prod"} | {env="staging"}`},
			promql: true,
		},
		{
			name:   "name given as matcher",
			query:  `{__name__="x", env!="dev"}`,
			want:   map[string]string{"x": `{env!="dev"}`},
			promql: true,
		},
		{
			name:   "no name",
			query:  `count({env="dev"})`,
			want:   map[string]string{"~{env}": `{env="dev"}`},
			promql: true,
		},
		{
			name:   "name regex stays in the set",
			query:  `{__name__=~"node_.*", env="dev"}`,
			want:   map[string]string{`~__name__=~"node_.*"{env}`: `{__name__=~"node_.*",env="dev"}`},
			promql: true,
		},
		{
			name:   "negative and regex matchers",
			query:  `sum by (job) (y{env!~"dev|test", region!=""})`,
			want:   map[string]string{"y": `{env!~"dev|test",region!=""}`},
			promql: true,
		},
		{
			name:  "metricsql or filters are sets of their own",
			query: `z{env="prod" or env="staging", job="a"}`,
			want:  map[string]string{"z": `{env="prod"} | {env="staging",job="a"}`},
		},
		{
			name:  "metricsql with templates are expanded",
			query: `WITH (f = {env="prod"}) w{f, job="a"}`,
			want:  map[string]string{"w": `{env="prod",job="a"}`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Extract(tc.query)
			if err != nil {
				t.Fatalf("Extract(%q): %v", tc.query, err)
			}
			if s := setsSummary(got); !maps.Equal(s, tc.want) {
				t.Errorf("Extract(%q) sets\n got %q\nwant %q", tc.query, s, tc.want)
			}
			if !tc.promql {
				return
			}
			if s := setsSummary(extractPromQL(t, tc.query)); !maps.Equal(s, tc.want) {
				t.Errorf("Prometheus walker %q sets\n got %q\nwant %q", tc.query, s, tc.want)
			}
		})
	}
}

func TestMatcherSetsMatchSeries(t *testing.T) {
	t.Parallel()
	ex, err := ExtractSelectors([]string{`m{env=~"prod|staging", job!=""}`})
	if err != nil {
		t.Fatal(err)
	}
	set := ex.Selectors[0].MatcherSets[0]
	matches := func(ls labels.Labels) bool {
		for _, m := range set {
			if !m.Matches(ls.Get(m.Name)) {
				return false
			}
		}
		return true
	}
	for _, tc := range []struct {
		ls   labels.Labels
		want bool
	}{
		{labels.FromStrings("__name__", "m", "env", "prod", "job", "a"), true},
		{labels.FromStrings("__name__", "m", "env", "staging", "job", "a"), true},
		{labels.FromStrings("__name__", "m", "env", "dev", "job", "a"), false},
		{labels.FromStrings("__name__", "m", "env", "prod"), false},
		{labels.FromStrings("__name__", "m", "env", "production", "job", "a"), false}, // anchored
	} {
		if got := matches(tc.ls); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.ls, got, tc.want)
		}
	}
}

func TestNormaliseMatchers(t *testing.T) {
	t.Parallel()
	mk := func(ty labels.MatchType, n, v string) *labels.Matcher { return labels.MustNewMatcher(ty, n, v) }
	got := NormaliseMatchers([]*labels.Matcher{
		mk(labels.MatchRegexp, "b", "x|y"), mk(labels.MatchEqual, "a", "1"), mk(labels.MatchRegexp, "c", ".*"),
		mk(labels.MatchEqual, "a", "1"), mk(labels.MatchNotEqual, "a", "2"),
	})
	var s []string
	for _, m := range got {
		s = append(s, m.String())
	}
	want := []string{`a="1"`, `a!="2"`, `b=~"x|y"`}
	if !slices.Equal(s, want) {
		t.Errorf("got %q, want %q", s, want)
	}
}
