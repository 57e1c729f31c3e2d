package queryaudit

import (
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/VictoriaMetrics/metricsql"

	"github.com/cardguard/cardguard/internal/cardinality"
)

// The tracker is what cmd/cardguard passes as MetricNamer: it must keep telling
// which labels a metric has, or {type="free"} is credited to no metric.
var _ LabelCounter = (*cardinality.Tracker)(nil)

func TestExtractMetricsQL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, query string
		want        map[string]string
	}{
		{
			name:  "vmalert state restore",
			query: `default_rollup(ALERTS_FOR_STATE{alertname="x"}[1h])`,
			want:  map[string]string{"ALERTS_FOR_STATE": "alertname:matcher [all]"},
		},
		{
			name:  "WITH template expanded",
			query: `WITH (f(m) = rate(m[5m]), cf = {code="500"}) sum by (job) (f(http_requests_total{cf}))`,
			want:  map[string]string{"http_requests_total": "code:matcher job:grouping"},
		},
		{
			name:  "rollup function",
			query: `rollup_rate(x[5m])`,
			want:  map[string]string{"x": "[all]"},
		},
		{
			name:  "keep_metric_names",
			query: `sum(rate(x[5m])) by (job) + 1 keep_metric_names`,
			want:  map[string]string{"x": "job:grouping"},
		},
		{
			name:  "function keep_metric_names",
			query: `rate(x{job="a"}[5m]) keep_metric_names`,
			want:  map[string]string{"x": "job:matcher [all]"},
		},
		{
			name:  "no metric name",
			query: `{type="free"}`,
			want:  map[string]string{"~{type}": "type:matcher [all]"},
		},
		{
			name:  "or filter groups are separate selectors",
			query: `count({a="1" or b="2", c!=""})`,
			want:  map[string]string{"~{a}": "a:matcher", "~{b,c}": "b:matcher c:matcher"},
		},
		{
			name:  "name regex",
			query: `sum by (x) ({__name__=~"a|b"})`,
			want:  map[string]string{`~__name__=~"a|b"`: "x:grouping"},
		},
		{
			name:  "default operator",
			query: `sum(rate(x[5m])) by (job) default 0`,
			want:  map[string]string{"x": "job:grouping"},
		},
		{
			name:  "if with on",
			query: `x if on (pod) y`,
			want:  map[string]string{"x": "pod:join [all]", "y": "pod:join"},
		},
		{
			name:  "group_left labels from the right",
			query: `x * on (pod) group_left (node) kube_pod_info`,
			want:  map[string]string{"x": "pod:join [all]", "kube_pod_info": "node:join pod:join"},
		},
		{
			name:  "topk_max keeps series, limit",
			query: `topk_max(3, rate(x[5m])) by (job) limit 5`,
			want:  map[string]string{"x": "job:grouping [all]"},
		},
		{
			name:  "label functions",
			query: `label_set(label_del(label_copy(x, "a", "b"), "c"), "d", "v")`,
			want:  map[string]string{"x": "a:function b:function c:function d:function [all]"},
		},
		{
			name:  "subquery with at",
			query: `max_over_time(rate(x[1m])[1h:5m] @ end())`,
			want:  map[string]string{"x": "[all]"},
		},
		{
			name:  "scalar on the right keeps the vector's labels",
			query: `x > scalar(y)`,
			want:  map[string]string{"x": "[all]", "y": ""},
		},
		{
			name:  "info falls back to the Prometheus parser",
			query: `info(x)`,
			want:  map[string]string{"x": "instance:join job:join [all]", "target_info": "instance:join job:join"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := Extract(tc.query)
			if err != nil {
				t.Fatalf("Extract(%q): %v", tc.query, err)
			}
			if s := summary(got); !maps.Equal(s, tc.want) {
				t.Errorf("Extract(%q)\n got %q\nwant %q", tc.query, s, tc.want)
			}
		})
	}
}

// TestExtractMetricsQLParserCorpus extracts every expression the metricsql
// module's own TestParseSuccess expects to parse (same(...) and another(...)),
// read from the module in use: whatever VictoriaMetrics accepts must be
// attributed, never counted as unparsed.
func TestExtractMetricsQLParserCorpus(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/VictoriaMetrics/metricsql").Output()
	if err != nil {
		t.Fatalf("cannot find the metricsql module: %v", err)
	}
	path := filepath.Join(strings.TrimSpace(string(out)), "parser_test.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("cannot read the metricsql parser tests: %v", err)
	}
	var queries []string
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Name.Name != "TestParseSuccess" {
			continue
		}
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			if id, ok := call.Fun.(*ast.Ident); !ok || (id.Name != "same" && id.Name != "another") {
				return true
			}
			// another(s, sExpected): the canonical form must parse too.
			for _, a := range call.Args {
				if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if q, err := strconv.Unquote(lit.Value); err == nil {
						queries = append(queries, q)
					}
				}
			}
			return true
		})
	}
	if len(queries) < 300 {
		t.Fatalf("found %d queries in %s, want hundreds: has TestParseSuccess changed shape?", len(queries), path)
	}
	noSelectors := 0
	for _, q := range queries {
		got, err := Extract(q)
		if err != nil {
			t.Errorf("Extract(%q): %v", q, err)
			continue
		}
		// A query with selectors must give some, named or not; one without
		// (1+2, time()) legitimately gives none.
		if n := selectorCount(t, q); n > 0 && len(got.Selectors) == 0 {
			t.Errorf("Extract(%q) gives no selector, metricsql sees %d", q, n)
		} else if n == 0 && len(got.Selectors) > 0 {
			t.Errorf("Extract(%q) gives selectors %q, metricsql sees none", q, summary(got))
		} else if n == 0 {
			noSelectors++
		}
		for _, name := range metricNames(t, q) {
			found := false
			for _, s := range got.Selectors {
				found = found || s.Name == name
			}
			if !found {
				t.Errorf("Extract(%q) does not credit %q: %q", q, name, summary(got))
			}
		}
	}
	t.Logf("%d queries from %s, %d of them without selectors", len(queries), path, noSelectors)
}

// selectorCount counts the series selectors (`or` groups apart) the MetricsQL
// parser sees in q.
func selectorCount(t *testing.T, q string) int {
	t.Helper()
	e, err := metricsql.Parse(q)
	if err != nil {
		t.Fatalf("metricsql.Parse(%q): %v", q, err)
	}
	n := 0
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		if me, ok := x.(*metricsql.MetricExpr); ok {
			n += max(len(me.LabelFilterss), 1)
		}
	})
	return n
}

// metricNames lists the exact metric names the MetricsQL parser sees in q.
func metricNames(t *testing.T, q string) []string {
	t.Helper()
	e, err := metricsql.Parse(q)
	if err != nil {
		t.Fatalf("metricsql.Parse(%q): %v", q, err)
	}
	var names []string
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		if me, ok := x.(*metricsql.MetricExpr); ok {
			for _, lfs := range me.LabelFilterss {
				for _, lf := range lfs {
					if lf.Label == "__name__" && !lf.IsRegexp && !lf.IsNegative {
						names = append(names, lf.Value)
						break
					}
				}
			}
		}
	})
	return names
}
