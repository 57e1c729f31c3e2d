package queryaudit

import (
	"strings"
	"testing"
)

// FuzzExtract feeds queries from clients (any bytes at all) to the extractor: it
// must return an Extraction or an error, never panic, and never report __name__ as
// a label.
func FuzzExtract(f *testing.F) {
	for _, tc := range extractCorpus {
		f.Add(tc.query)
	}
	for _, q := range []string{
		`WITH (x = up) x`, `sum(x) default 0`, `rate(x[5m]) keep_metric_names`,
		`{__name__=~"a|b"}`, `label_replace((x), ("d"), "", ("s"), "")`, `info(x)`,
		`x[5m:1m] @ start() offset -1h`, `-x`, `x > bool on(a) group_left(b) y`,
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
			if _, ok := s.Labels["__name__"]; ok {
				t.Fatalf("Extract(%q) reports __name__ as a label", q)
			}
		}
		// match[] values come from clients too.
		_, _ = ExtractSelectors(strings.Fields(q))
	})
}
