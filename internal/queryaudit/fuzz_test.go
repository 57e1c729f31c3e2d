package queryaudit

import (
	"slices"
	"strings"
	"testing"
)

// FuzzExtract feeds queries from clients (any bytes at all) to the extractor: it
// must return an Extraction or an error, never panic, and never report __name__ as
// a label. MetricsQL seeds exercise the MetricsQL parser, the first one tried.
func FuzzExtract(f *testing.F) {
	for _, tc := range extractCorpus {
		f.Add(tc.query)
	}
	for _, q := range []string{
		`WITH (x = up) x`, `sum(x) default 0`, `rate(x[5m]) keep_metric_names`,
		`{__name__=~"a|b"}`, `label_replace((x), ("d"), "", ("s"), "")`, `info(x)`,
		`x[5m:1m] @ start() offset -1h`, `-x`, `x > bool on(a) group_left(b) y`,
		`default_rollup(ALERTS_FOR_STATE{alertname="x"}[1h])`, `{a="1" or b="2"}`,
		`WITH (f(m) = rate(m[5m])) sum(f(x)) by (job) limit 3`, `x if on(a) y default 0`,
		`label_set(x, "a", "b") keep_metric_names`, `topk_max(3, x) by (a)`,
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, q string) {
		e, err := Extract(q)
		if err != nil {
			_, _ = ExtractSelectors(strings.Fields(q))
			return
		}
		for _, s := range e.Selectors {
			if _, ok := s.Labels["__name__"]; ok || slices.Contains(s.RequiredLabels, "__name__") {
				t.Fatalf("Extract(%q) reports __name__ as a label", q)
			}
		}
		// match[] values come from clients too.
		_, _ = ExtractSelectors(strings.Fields(q))
	})
}
