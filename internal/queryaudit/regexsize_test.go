package queryaudit

import (
	"errors"
	"strings"
	"testing"
)

// TestRegexBudget: a regex whose program would be far larger than its text
// is refused before a parser compiles it (the read counts as unparsed), in
// queries and in match[]; the regexes dashboards send are not.
func TestRegexBudget(t *testing.T) {
	t.Parallel()
	huge := strings.Repeat(`.{1000}`, 140)
	for _, q := range []string{
		`sum(rate(m{a=~"` + huge + `"}[5m]))`,
		`m{a!~'` + huge + `'}`,
		"m{a=~`" + huge + "`}",
		`{__name__=~"` + huge + `"}`,
		`sum(m{a="1" or b=~"(?:x{30}){30}"})`,
	} {
		if _, err := Extract(q); !errors.Is(err, errRegexTooLarge) {
			t.Errorf("Extract(%.60s…): %v, want a regex too large", q, err)
		}
		if _, err := ExtractSelectors([]string{q}); !errors.Is(err, errRegexTooLarge) && !strings.HasPrefix(q, "sum") {
			t.Errorf("ExtractSelectors(%.60s…): %v, want a regex too large", q, err)
		}
	}
	var values []string
	for i := range 500 {
		values = append(values, "service-"+strings.Repeat("x", i%20)+"-prod")
	}
	for _, q := range []string{
		`sum by (job) (rate(http_requests_total{job=~"` + strings.Join(values, "|") + `"}[5m]))`,
		`m{path=~"/api/v[0-9]{1,3}/.{0,255}", ip=~"\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}"}`,
		`m{a=~"[a-z]{2,64}", b!~".+", c=~"x{100}"}`,
		`label_replace(m{a="=~"}, "b", "$1", "a", "(.{0,1000})")`,
	} {
		ex, err := Extract(q)
		if err != nil || len(ex.Selectors) == 0 || len(ex.Selectors[0].MatcherSets) == 0 || len(ex.Selectors[0].MatcherSets[0]) == 0 {
			t.Errorf("Extract(%.60s…): %+v %v", q, ex, err)
		}
	}
}
