package seriesusage

import (
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/queryaudit"
)

// FuzzMatch records any query and matches a series against it: the write
// path's compiled matching must agree with the matchers themselves, and
// nothing may panic.
func FuzzMatch(f *testing.F) {
	for _, seed := range []struct{ q, m, env, job string }{
		{`m{env="prod"}`, "m", "prod", "api"},
		{`m{env=~"prod|staging", job!~"a.*"}`, "m", "staging", "web"},
		{`count({env="dev"})`, "x", "dev", ""},
		{`{__name__=~"node_.*", env!=""}`, "node_load1", "", "n"},
		{`sum(rate(m{env="prod" or job="api"}[5m])) / m`, "m", "qa", "api"},
		{`WITH (f = {env="a"}) m{f}`, "m", "a", ""},
	} {
		f.Add(seed.q, seed.m, seed.env, seed.job)
	}
	f.Fuzz(func(t *testing.T, q, metric, env, job string) {
		if metric == "" {
			return
		}
		ex, err := queryaudit.Extract(q)
		if err != nil {
			return
		}
		b, c := newTestBook(t, Config{MaxSelectorBytes: 1 << 20})
		b.OnRead(&queryaudit.Read{Tenant: tn, Query: q, At: c.Now(), Extraction: ex})
		ls := []prompb.Label{{Name: "__name__", Value: metric}, {Name: "env", Value: env}, {Name: "job", Value: job}}
		b.Observe(tn, metric, ls, 0)

		// The reference: a set of a selector for this metric (named, or
		// without a name) whose every matcher accepts the series.
		pl := labels.FromStrings("__name__", metric, "env", env, "job", job)
		want := false
		for _, s := range ex.Selectors {
			if s.Name != "" && s.Name != metric {
				continue
			}
			for _, set := range s.MatcherSets {
				ok := true // an empty set: {} or one that could not be compiled
				for _, m := range set {
					if !m.Matches(pl.Get(m.Name)) {
						ok = false
					}
				}
				want = want || ok
			}
			if s.Name == metric && len(s.MatcherSets) == 0 {
				want = true
			}
		}
		rep, ok := b.Report(tn, metric)
		if !ok {
			if len(metric) <= 256 {
				t.Fatalf("no report for %q", metric)
			}
			return
		}
		if rep.Selected+rep.NeverSelected != rep.ActiveSeries || rep.ActiveSeries != 1 {
			t.Fatalf("report %+v", rep)
		}
		if got := rep.Selected == 1; got != want {
			t.Fatalf("%q on %s: selected %v, matchers say %v (selectors %q)", q, pl, got, want, rep.Selectors)
		}
	})
}
