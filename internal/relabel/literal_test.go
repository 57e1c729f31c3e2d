package relabel

import (
	"regexp"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// TestLiteralsMatchLikeTheRegex: for every expression, the literal fast path (when
// it applies) agrees with the anchored regex on every probe.
func TestLiteralsMatchLikeTheRegex(t *testing.T) {
	t.Parallel()
	exprs := []struct {
		expr    string
		literal bool
	}{
		{"az", true},
		{"pod|instance|az", true},
		{"", true},
		{"a|", true},
		{"foo_bar", true},
		{"a.c", false},
		{"(?i)az", false},
		{"az.*", false},
		{"a+", false},
		{"(az)", true}, // a capture group of plain text still matches only "az"
		{`a\.b`, true},
		{"a|b.*", false},
		{"[ab]", false},
	}
	probes := []string{"", "az", "AZ", "azz", "pod", "instance", "a", "b", "abc", "a.c", "a.b", "axb", "foo_bar", "foo"}
	for _, e := range exprs {
		lit := literalsOf(e.expr)
		if lit.ok != e.literal {
			t.Errorf("%q: literal = %v, want %v", e.expr, lit.ok, e.literal)
		}
		re := regexp.MustCompile("^(?s:" + e.expr + ")$")
		ru := rule{re: re, lit: lit}
		for _, p := range probes {
			if got, want := ru.match(p), re.MatchString(p); got != want {
				t.Errorf("%q on %q: fast path %v, regex %v", e.expr, p, got, want)
			}
		}
	}
}

// BenchmarkLabeldropLiteral compares a labeldrop of a plain label name through the
// literal fast path and through the regex engine, on a 10-label series the rule
// changes (the label is present), side by side.
func BenchmarkLabeldropLiteral(b *testing.B) {
	cfgs, err := ParseConfigs([]byte("- action: labeldrop\n  regex: az\n"))
	if err != nil {
		b.Fatal(err)
	}
	fast, err := Compile(cfgs)
	if err != nil {
		b.Fatal(err)
	}
	slow, _ := Compile(cfgs)
	slow.rules[0].lit = literals{}
	in := benchLabels10()
	for _, bc := range []struct {
		name string
		r    *Rules
	}{{"literal", fast}, {"regex", slow}} {
		b.Run(bc.name, func(b *testing.B) {
			var buf []prompb.Label
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				out, _, _ := bc.r.Apply(in, buf[:0])
				buf = out[:0]
			}
		})
	}
}

func benchLabels10() []prompb.Label {
	return []prompb.Label{
		{Name: "__name__", Value: "http_requests_total"}, {Name: "az", Value: "eu-1a"}, {Name: "code", Value: "200"},
		{Name: "handler", Value: "/api"}, {Name: "instance", Value: "10.0.0.1:9090"}, {Name: "job", Value: "api"},
		{Name: "method", Value: "GET"}, {Name: "namespace", Value: "prod"}, {Name: "pod", Value: "api-7d9f"}, {Name: "service", Value: "api"},
	}
}
