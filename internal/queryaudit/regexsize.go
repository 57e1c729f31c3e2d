package queryaudit

import (
	"errors"
	"fmt"
	"regexp/syntax"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/prometheus/prometheus/model/labels"
)

// errRegexTooLarge: a regex of a query whose compiled program would be far
// larger than its text. `.{1000}` repeated to 1 KiB compiles to 16 MB; the
// series usage keeps the matchers of every selector for the usage retention,
// and the parse cache keeps them too, so a tenant's reads could make cardguard
// hold gigabytes. Such a matcher is not built: a selector with one is taken to
// select every series (the safe side for series usage), and a metric name
// regex makes the read unparsed.
var errRegexTooLarge = errors.New("regex too large once compiled")

// regexBudget is how many program instructions a regex of n bytes may
// compile to: twice its length, plus room for a bounded repeat such as
// .{0,255}. Alternations of literals (Grafana's multi-value variables) stay
// well inside it.
func regexBudget(n int) int { return 2*n + 256 }

// newMatcher is labels.NewMatcher for a MetricsQL filter, refusing regexes
// over their budget before compiling them.
func newMatcher(f metricsql.LabelFilter) (*labels.Matcher, error) {
	if f.IsRegexp {
		re, err := syntax.Parse(f.Value, syntax.Perl)
		if err != nil {
			return nil, err
		}
		if n, budget := regexSize(re, regexBudget(len(f.Value))+1), regexBudget(len(f.Value)); n > budget {
			return nil, fmt.Errorf("%w: %s=~%q compiles to over %d instructions", errRegexTooLarge, f.Label, clipString(f.Value, 64), budget)
		}
	}
	return labels.NewMatcher(matchType(f), f.Label, f.Value)
}

// regexSize estimates the instructions re compiles to, without expanding its
// repeats; it stops counting at limit.
func regexSize(re *syntax.Regexp, limit int) int {
	sat := func(n int) int { return min(n, limit) }
	switch re.Op {
	case syntax.OpLiteral:
		return sat(len(re.Rune) + 1)
	case syntax.OpRepeat:
		times := re.Max
		if times < 0 {
			times = re.Min + 1
		}
		sub := regexSize(re.Sub[0], limit)
		if times > 0 && sub > limit/times {
			return limit
		}
		return sat(max(times, 1)*sub + 1)
	case syntax.OpConcat, syntax.OpAlternate, syntax.OpCapture, syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		n := 1
		for _, s := range re.Sub {
			if n += regexSize(s, limit); n >= limit {
				return limit
			}
		}
		return n
	}
	return 1
}

// checkRegexes refuses a query or selector with a regex matcher (=~, !~) over
// its budget, before any parser compiles it: both parsers build the matchers
// of every selector.
func checkRegexes(q string) error {
	for i := 0; i+1 < len(q); i++ {
		if (q[i] != '=' && q[i] != '!') || q[i+1] != '~' {
			continue
		}
		j := i + 2
		for j < len(q) && (q[j] == ' ' || q[j] == '\t' || q[j] == '\n' || q[j] == '\r') {
			j++
		}
		lit, ok := stringLiteral(q[j:])
		if !ok {
			continue
		}
		re, err := syntax.Parse(lit, syntax.Perl)
		if err != nil {
			continue // the parser says what is wrong
		}
		if budget := regexBudget(len(lit)); regexSize(re, budget+1) > budget {
			return fmt.Errorf("%w: =~%q compiles to over %d instructions", errRegexTooLarge, clipString(lit, 64), budget)
		}
	}
	return nil
}

// stringLiteral returns the value of the PromQL string literal s starts with.
func stringLiteral(s string) (string, bool) {
	if s == "" || (s[0] != '"' && s[0] != '\'' && s[0] != '`') {
		return "", false
	}
	quote := s[0]
	for i := 1; i < len(s); i++ {
		switch {
		case s[i] == '\\' && quote != '`':
			i++
		case s[i] == quote:
			raw := s[:i+1]
			if quote == '\'' {
				raw = `"` + strings.ReplaceAll(strings.ReplaceAll(raw[1:i], `\'`, `'`), `"`, `\"`) + `"`
			}
			v, err := strconv.Unquote(raw)
			return v, err == nil
		}
	}
	return "", false
}
