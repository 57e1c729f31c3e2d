package queryaudit

import (
	"strings"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// extractMetricsQL reads a query with the MetricsQL parser, the one
// VictoriaMetrics runs: WITH templates come expanded, and default_rollup,
// rollup_*, keep_metric_names, `default`, `if` and `{a="1" or b="2"}` parse.
// Its attribution follows the PromQL walker's; where MetricsQL has no types to
// tell a scalar from a vector, it assumes a vector, which credits more labels,
// never fewer.
func extractMetricsQL(query string) (Extraction, error) {
	e, err := metricsql.Parse(query)
	if err != nil {
		return Extraction{}, err
	}
	var w mqlWalker
	w.walk(e, true)
	if w.err != nil {
		return Extraction{}, w.err
	}
	return Extraction{Selectors: w.sels}, nil
}

// mqlWalker is walker's counterpart for MetricsQL expressions; it shares the
// selector bookkeeping. Used once, by one goroutine.
type mqlWalker struct {
	walker
	err error // a name regex Prometheus' matcher cannot compile
}

func (w *mqlWalker) walk(e metricsql.Expr, keep bool) []int {
	switch n := e.(type) {
	case nil:
		return nil
	case *metricsql.MetricExpr:
		if len(n.LabelFilterss) == 0 {
			// {} selects every series: a selector without name or labels,
			// credited to every known metric.
			return []int{w.addFilters(nil, keep)}
		}
		var ids []int
		for _, lfs := range n.LabelFilterss { // one selector per `or` group
			ids = append(ids, w.addFilters(lfs, keep))
		}
		return ids
	case *metricsql.RollupExpr:
		if n.At != nil {
			w.walk(n.At, false)
		}
		return w.walk(n.Expr, keep)
	case *metricsql.NumberExpr, *metricsql.StringExpr, *metricsql.DurationExpr:
		return nil
	case *metricsql.AggrFuncExpr:
		return w.aggregate(n, keep)
	case *metricsql.FuncExpr:
		return w.call(n, keep)
	case *metricsql.BinaryOpExpr:
		return w.binary(n, keep)
	default:
		// An expression type added by a later parser version: still find its
		// selectors, crediting them without labels.
		var ids []int
		metricsql.VisitAll(n, func(x metricsql.Expr) {
			if me, ok := x.(*metricsql.MetricExpr); ok && x != n {
				ids = append(ids, w.walk(me, false)...)
			}
		})
		return ids
	}
}

// addFilters records one `or` group of label filters.
func (w *mqlWalker) addFilters(lfs []metricsql.LabelFilter, keep bool) int {
	name := ""
	var nameMatchers []*labels.Matcher
	for _, f := range lfs {
		if f.Label != model.MetricNameLabel {
			continue
		}
		if !f.IsRegexp && !f.IsNegative && name == "" {
			name = f.Value
			continue
		}
		m, err := newMatcher(f)
		if err != nil {
			w.err = err
			continue
		}
		nameMatchers = append(nameMatchers, m)
	}
	var required []string
	if name == "" { // only then are they used, and a regex costs a compile
		for _, f := range lfs {
			if f.Label != model.MetricNameLabel && !filterMatchesEmpty(f) {
				required = append(required, f.Label)
			}
		}
	}
	idx := w.selector(name, nameMatchers, required, keep)
	w.addSet(idx, filterSet(lfs, name))
	for _, f := range lfs {
		w.use([]int{idx}, f.Label, UseMatcher)
	}
	return idx
}

// filterSet compiles the filters of one `or` group, except the exact name
// filter that gave name, into a matcher set. A filter Prometheus' matcher
// cannot compile makes the set empty: taken to select every series, which
// reports more series selected, never fewer.
func filterSet(lfs []metricsql.LabelFilter, name string) []*labels.Matcher {
	set := make([]*labels.Matcher, 0, len(lfs))
	skipped := false
	for _, f := range lfs {
		if !skipped && name != "" && f.Label == model.MetricNameLabel && !f.IsRegexp && !f.IsNegative && f.Value == name {
			skipped = true
			continue
		}
		m, err := newMatcher(f)
		if err != nil {
			return nil
		}
		set = append(set, m)
	}
	return set
}

// filterMatchesEmpty tells whether f accepts a series without its label. A regex
// that does not compile is taken to accept it: that requires nothing.
func filterMatchesEmpty(f metricsql.LabelFilter) bool {
	if !f.IsRegexp {
		return (f.Value == "") != f.IsNegative
	}
	m, err := newMatcher(f)
	return err != nil || m.Matches("")
}

func matchType(f metricsql.LabelFilter) labels.MatchType {
	switch {
	case f.IsRegexp && f.IsNegative:
		return labels.MatchNotRegexp
	case f.IsRegexp:
		return labels.MatchRegexp
	case f.IsNegative:
		return labels.MatchNotEqual
	}
	return labels.MatchEqual
}

// seriesAggregates return some of their input series unchanged, labels and all.
var seriesAggregates = map[string]bool{
	"topk": true, "bottomk": true, "limitk": true, "limit_ratio": true, "limit_offset": true,
	"topk_min": true, "topk_max": true, "topk_avg": true, "topk_median": true, "topk_last": true,
	"bottomk_min": true, "bottomk_max": true, "bottomk_avg": true, "bottomk_median": true, "bottomk_last": true,
	"outliersk": true, "outliers_mad": true, "outliers_iqr": true, "any": true, "zscore": true, "share": true,
}

func (w *mqlWalker) aggregate(n *metricsql.AggrFuncExpr, keep bool) []int {
	name := strings.ToLower(n.Name)
	childKeep := false
	if seriesAggregates[name] || strings.EqualFold(n.Modifier.Op, "without") {
		childKeep = keep
	}
	// MetricsQL aggregates may take several series arguments: sum(a, b).
	var ids []int
	for _, a := range n.Args {
		ids = append(ids, w.walk(a, childKeep)...)
	}
	for _, l := range n.Modifier.Args {
		w.use(ids, l, UseGrouping)
	}
	return ids
}

// labelArgs lists, for functions that name labels in string arguments, which
// arguments are label names: a list of indexes, or from with every following
// argument (step 1) or every other one (step 2).
var labelArgs = map[string]struct {
	idx        []int
	from, step int
}{
	"label_replace":              {idx: []int{1, 3}},       // (q, dst, replacement, src, regex)
	"label_join":                 {idx: []int{1}, from: 3}, // (q, dst, separator, src...)
	"label_set":                  {from: 1, step: 2},       // (q, label, value, ...)
	"label_copy":                 {from: 1},                // (q, src, dst, ...)
	"label_move":                 {from: 1},
	"label_del":                  {from: 1},
	"label_keep":                 {from: 1},
	"label_uppercase":            {from: 1},
	"label_lowercase":            {from: 1},
	"labels_equal":               {from: 1},
	"sort_by_label":              {from: 1},
	"sort_by_label_desc":         {from: 1},
	"sort_by_label_numeric":      {from: 1},
	"sort_by_label_numeric_desc": {from: 1},
	"label_map":                  {idx: []int{1}}, // (q, label, from, to, ...)
	"label_match":                {idx: []int{1}}, // (q, label, regex)
	"label_mismatch":             {idx: []int{1}},
	"label_transform":            {idx: []int{1}}, // (q, label, regex, replacement)
	"label_value":                {idx: []int{1}},
}

func (w *mqlWalker) call(n *metricsql.FuncExpr, keep bool) []int {
	name := strings.ToLower(n.Name)
	switch name {
	case "absent", "absent_over_time", "scalar":
		// The result keeps no input labels.
		return w.walkArgs(n.Args, false)
	case "histogram_quantile", "histogram_quantiles", "histogram_share", "histogram_fraction":
		// With classic histograms these group the buckets by le.
		ids := w.walkArgs(n.Args, keep)
		w.use(ids, "le", UseFunction)
		return ids
	}
	ids := w.walkArgs(n.Args, keep)
	if la, ok := labelArgs[name]; ok {
		for _, i := range la.idx {
			w.useString(ids, n.Args, i)
		}
		if la.from > 0 {
			for i := la.from; i < len(n.Args); i += max(la.step, 1) {
				w.useString(ids, n.Args, i)
			}
		}
	}
	return ids
}

// walkArgs walks function arguments. Without types, every argument is taken to
// pass its series on; numbers and strings select none anyway.
func (w *mqlWalker) walkArgs(args []metricsql.Expr, keep bool) []int {
	var ids []int
	for _, a := range args {
		ids = append(ids, w.walk(a, keep)...)
	}
	return ids
}

func (w *mqlWalker) useString(ids []int, args []metricsql.Expr, i int) {
	if i < len(args) {
		if s, ok := args[i].(*metricsql.StringExpr); ok {
			w.use(ids, s.S, UseFunction)
		}
	}
}

func (w *mqlWalker) binary(n *metricsql.BinaryOpExpr, keep bool) []int {
	if isScalar(n.Left, 8) || isScalar(n.Right, 8) {
		// Vector and scalar: the vector side keeps its labels.
		return append(w.walk(n.Left, keep), w.walk(n.Right, keep)...)
	}
	on := strings.EqualFold(n.GroupModifier.Op, "on")
	join := strings.ToLower(n.JoinModifier.Op)
	var lKeep, rKeep bool
	switch op := strings.ToLower(n.Op); {
	case !on:
		// Default matching and ignoring(...) compare every other label.
		lKeep, rKeep = true, true
	case op == "or" || op == "default":
		lKeep, rKeep = keep, keep
	case op == "and" || op == "unless" || op == "if" || op == "ifnot":
		lKeep = keep
	case join == "group_left":
		lKeep = keep
	case join == "group_right":
		rKeep = keep
	}
	lids := w.walk(n.Left, lKeep)
	rids := w.walk(n.Right, rKeep)
	all := append(lids[:len(lids):len(lids)], rids...)
	for _, l := range n.GroupModifier.Args {
		w.use(all, l, UseJoin)
	}
	one := rids // group_left copies labels from the right
	if join == "group_right" {
		one = lids
	}
	for _, l := range n.JoinModifier.Args {
		w.use(one, l, UseJoin)
	}
	return all
}

// isScalar tells whether e is a number for vector matching: a literal, a
// function of no series, or arithmetic of those. depth bounds the recursion;
// past it, e is taken for a vector, which credits more labels, never fewer.
func isScalar(e metricsql.Expr, depth int) bool {
	switch n := e.(type) {
	case *metricsql.NumberExpr, *metricsql.DurationExpr, *metricsql.StringExpr:
		return true
	case *metricsql.FuncExpr:
		switch strings.ToLower(n.Name) {
		case "scalar", "time", "pi", "now", "start", "end", "step":
			return true
		}
	case *metricsql.BinaryOpExpr:
		return depth > 0 && isScalar(n.Left, depth-1) && isScalar(n.Right, depth-1)
	}
	return false
}
