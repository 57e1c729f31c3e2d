package adaptive

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/cardguard/cardguard/internal/aggregate"

	"github.com/prometheus/prometheus/promql/parser"
)

// An aggregation folds series together and writes their sum (counters: the
// sum of their increases; gauges: the tenant's gauge output, sum by default).
// A query keeps its answer only if it sums the series of the metric before
// doing anything a sum does not commute with: sum by (kept labels) (rate(m[5m]))
// is the same on the inputs and on their aggregate, count by (job) (m),
// avg by (job) (m) and max by (job) (m) are not, whatever labels they name.

// counterFuncs read a counter's increases, which its aggregate keeps; its
// raw values it does not (the aggregate counts increases from when it starts).
var counterFuncs = map[string]bool{"rate": true, "irate": true, "increase": true}

// linearFuncs commute with a sum of series: f(a+b) = f(a)+f(b) per series.
// irate and idelta are linear on aligned samples, as the aggregate's are.
var linearFuncs = map[string]bool{
	"rate": true, "irate": true, "increase": true, "delta": true, "idelta": true, "deriv": true,
	"sum_over_time": true, "avg_over_time": true, "last_over_time": true,
	"predict_linear": true,
}

// sumsFirst reports whether every selector of metric in query reaches a sum
// (or group) aggregation through linear steps only, or the end of the query
// (which then returns the series with their labels, a read with all labels,
// judged elsewhere). It returns what breaks the rule otherwise.
func sumsFirst(query, metric string) (bool, string) {
	expr, err := parser.NewParser(parser.Options{EnableExperimentalFunctions: true}).ParseExpr(withoutVariables(query))
	if err != nil {
		return false, "not PromQL: how it combines series cannot be checked"
	}
	var why string
	counter := aggregate.KindOf(metric) == aggregate.Counter
	var walk func(n parser.Node, path []parser.Node) bool
	walk = func(n parser.Node, path []parser.Node) bool {
		if vs, ok := n.(*parser.VectorSelector); ok && selects(vs, metric) {
			if ok, w := linearUpTo(append(path, vs), counter); !ok {
				why = w
				return false
			}
			return true
		}
		path = append(path, n)
		for _, c := range parser.Children(n) {
			if !walk(c, path) {
				return false
			}
		}
		return true
	}
	if !walk(expr, nil) {
		return false, why
	}
	return true, ""
}

func selects(vs *parser.VectorSelector, metric string) bool {
	if vs.Name != "" {
		return vs.Name == metric
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == "__name__" && !m.Matches(metric) {
			return false
		}
	}
	return true
}

// linearUpTo checks the ancestors of a selector, the last of chain, up to
// the first sum; a counter must be read through rate, irate or increase
// before it.
func linearUpTo(chain []parser.Node, counter bool) (bool, string) {
	increases := false
	for i := len(chain) - 2; i >= 0; i-- {
		switch n := chain[i].(type) {
		case *parser.ParenExpr, *parser.MatrixSelector, *parser.StepInvariantExpr, *parser.SubqueryExpr:
		case *parser.AggregateExpr:
			switch n.Op {
			case parser.GROUP:
				return true, ""
			case parser.SUM:
				if counter && !increases {
					return false, "sum of a counter's raw values: its aggregate counts increases from when the rule applies, read it through rate() or increase()"
				}
				return true, ""
			}
			return false, fmt.Sprintf("%s combines the series before any sum", n.Op)
		case *parser.Call:
			if !linearFuncs[n.Func.Name] {
				return false, fmt.Sprintf("%s() applies to each series before any sum", n.Func.Name)
			}
			if counter && !counterFuncs[n.Func.Name] {
				return false, fmt.Sprintf("%s() of a counter's raw values: its aggregate counts increases from when the rule applies", n.Func.Name)
			}
			increases = increases || counterFuncs[n.Func.Name]
		case *parser.BinaryExpr:
			if n.Op == parser.LOR {
				// A union of series sets (and the match[] of a series read,
				// joined with or): each set sums on its own.
				continue
			}
			// Scaling by a number commutes with a sum (x*2, 2*x, x/2, not
			// 2/x); anything else (a comparison, an addition, a match with
			// another vector) does not.
			fromLHS := chain[i+1] == parser.Node(n.LHS)
			other := n.RHS
			if !fromLHS {
				other = n.LHS
			}
			scaling := n.Op == parser.MUL || (n.Op == parser.DIV && fromLHS)
			if !scaling || other.Type() != parser.ValueTypeScalar || n.ReturnBool {
				return false, fmt.Sprintf("the %s operation applies to each series before any sum", n.Op)
			}
		default:
			return false, fmt.Sprintf("%T applies to each series before any sum", n)
		}
	}
	return true, ""
}

var (
	durationVariable = regexp.MustCompile(`\[\s*\$\{?\w+(?::\w+)?\}?\s*(:[^\]]*)?\]`)
	variable         = regexp.MustCompile(`\$\{?\w+(?::\w+)?\}?`)
)

// withoutVariables puts a duration for the Grafana variables of a range
// ([$__rate_interval]) and a name for the others ($job), so that a
// dashboard's expression parses: only its shape matters here.
func withoutVariables(q string) string {
	if !strings.Contains(q, "$") {
		return q
	}
	q = durationVariable.ReplaceAllString(q, "[5m$1]")
	return variable.ReplaceAllString(q, "x")
}
