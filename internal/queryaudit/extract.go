package queryaudit

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// LabelUse is a set of ways a query uses a label name. Uses combine with |.
type LabelUse uint8

const (
	// UseMatcher: the label appears in a selector matcher, e.g. {job="api"}.
	UseMatcher LabelUse = 1 << iota
	// UseGrouping: the label appears in by(...) or without(...) of an aggregation.
	UseGrouping
	// UseJoin: the label appears in on/ignoring or group_left/group_right of a
	// binary operation (or is one of the identifying labels info() joins on).
	UseJoin
	// UseFunction: a function reads or writes the label: label_replace and
	// label_join (source and destination), sort_by_label, and le for
	// histogram_quantile, histogram_quantiles and histogram_fraction.
	UseFunction
	// UseValues: the label values API was asked for this label.
	UseValues

	numUses = 5
)

// Strings returns the names of the uses in u in a fixed order.
func (u LabelUse) Strings() []string {
	names := [numUses]string{"matcher", "grouping", "join", "function", "values"}
	out := make([]string, 0, numUses)
	for i := range numUses {
		if u&(1<<i) != 0 {
			out = append(out, names[i])
		}
	}
	return out
}

// String returns the uses joined by "|", e.g. "matcher|grouping".
func (u LabelUse) String() string { return strings.Join(u.Strings(), "|") }

// Extraction is what a query reads: one Selector per distinct series selector.
// It is immutable once returned and may be shared between goroutines.
type Extraction struct {
	Selectors []Selector
}

// Selector is one series selector of a query and what the query does with the
// series it selects.
type Selector struct {
	// Name is the exact metric name (from `name{...}` or {__name__="name"}), or ""
	// when the selector names no metric or names it by regex.
	Name string
	// NameMatchers are the __name__ matchers when Name is "": a regex such as
	// {__name__=~"node_.*"}, or none at all for {job="api"}. The caller resolves
	// them against the metric names it knows.
	NameMatchers []*labels.Matcher
	// Labels maps each label name (never __name__) the query uses on these series
	// to how it uses it.
	Labels map[string]LabelUse
	// RequiredLabels, when Name is "", are the labels (never __name__) every
	// selected series carries: those of matchers that do not match the empty
	// value, such as type="free" or job=~".+". Sorted. The caller credits a
	// selector without a name only to the metrics that have them all.
	RequiredLabels []string
	// MatcherSets are the matchers of the selectors merged into this one, one
	// set per distinct selector: every matcher except the exact __name__ one
	// that gave Name (so a set may hold __name__ regexes, matched against the
	// metric name). A series is selected when it satisfies every matcher of at
	// least one set. An empty set selects every series of the metric: the
	// selector had no other matchers, or one that could not be compiled, which
	// is taken to select everything. Each set is normalised (sorted by label
	// name, type and value; duplicates and =~".*" removed); sets are in the
	// order first met, without duplicates. Shared and read-only.
	MatcherSets [][]*labels.Matcher
	// AllLabels is true when every label of these series matters to the result:
	// the series reach the output with their labels (rate(x[5m]), topk, sum
	// without(...)), or a vector match compares all their labels (a / b,
	// a and b). Dropping any label then changes what the query returns.
	AllLabels bool
}

// Metrics returns the exact metric names of the extraction, sorted.
func (e Extraction) Metrics() []string {
	var out []string
	for i := range e.Selectors {
		if n := e.Selectors[i].Name; n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// newParser returns a parser configured for this package. Every option that lets
// more queries parse is on: cardguard only reads queries, it never runs them, so
// accepting experimental syntax costs nothing and counts fewer queries as unparsed.
func newQueryParser() parser.Parser {
	return parser.NewParser(parser.Options{
		EnableExperimentalFunctions:  true,
		ExperimentalDurationExpr:     true,
		EnableExtendedRangeSelectors: true,
		EnableBinopFillModifiers:     true,
	})
}

// Extract parses a query and returns the selectors it reads with the label names
// it uses on each. It reads MetricsQL first, as VictoriaMetrics does (WITH
// templates, default_rollup, rollup_rate, keep_metric_names, `default`), and falls
// back to the Prometheus parser for the PromQL that MetricsQL lacks (info(),
// experimental functions, duration expressions). A query neither parser reads is
// an error; callers count it as unparsed. A query without selectors (1+1,
// vector(1), time()) gives an empty Extraction and no error.
//
// Attribution is conservative: a label named by an operator is credited to every
// selector whose series flow into that operator, even when an inner aggregation has
// already removed it, so that a label is reported unused only when no query can be
// reading it. on/ignoring labels are credited to both operands; group_left and
// group_right labels to the "one" side they are copied from.
func Extract(query string) (Extraction, error) {
	if err := checkRegexes(query); err != nil {
		return Extraction{}, fmt.Errorf("cannot parse query %q: %w", clipString(query, 128), err)
	}
	ex, mqlErr := extractMetricsQL(query)
	if mqlErr == nil {
		return ex, nil
	}
	if errors.Is(mqlErr, errRegexTooLarge) {
		// The Prometheus parser would compile it.
		return Extraction{}, fmt.Errorf("cannot parse query %q: %w", clipString(query, 128), mqlErr)
	}
	expr, err := newQueryParser().ParseExpr(query)
	if err != nil {
		return Extraction{}, fmt.Errorf("cannot parse query %q: %w", clipString(query, 128), mqlErr)
	}
	var w walker
	w.walk(expr, true)
	return Extraction{Selectors: w.sels}, nil
}

// ExtractSelectors parses series selectors as given in match[] of the series,
// labels, label values, export and federate APIs. The endpoint decides whether all
// labels are returned; AllLabels is left false here.
func ExtractSelectors(matchers []string) (Extraction, error) {
	p := newQueryParser()
	var w walker
	for _, s := range matchers {
		if err := checkRegexes(s); err != nil {
			return Extraction{}, fmt.Errorf("cannot parse match[] %q: %w", clipString(s, 128), err)
		}
		ms, err := p.ParseMetricSelector(s)
		if err != nil {
			return Extraction{}, fmt.Errorf("cannot parse match[] %q: %w", clipString(s, 128), err)
		}
		w.add(ms, "", false)
	}
	return Extraction{Selectors: w.sels}, nil
}

// walker collects selectors while descending the AST. It is used once, by one
// goroutine.
type walker struct {
	sels []Selector
}

// walk visits e and returns the indexes (into w.sels) of the selectors whose series
// flow into e's result. keep says whether all labels of those series matter to the
// query (see Selector.AllLabels).
func (w *walker) walk(e parser.Node, keep bool) []int {
	switch n := e.(type) {
	case nil:
		return nil
	case *parser.VectorSelector:
		return []int{w.add(n.LabelMatchers, "", keep)}
	case *parser.MatrixSelector:
		return w.walk(n.VectorSelector, keep)
	case *parser.SubqueryExpr:
		return w.walk(n.Expr, keep)
	case *parser.ParenExpr:
		return w.walk(n.Expr, keep)
	case *parser.StepInvariantExpr:
		return w.walk(n.Expr, keep)
	case *parser.UnaryExpr:
		return w.walk(n.Expr, keep)
	case *parser.NumberLiteral, *parser.StringLiteral, *parser.DurationExpr:
		return nil
	case *parser.AggregateExpr:
		return w.aggregate(n, keep)
	case *parser.Call:
		return w.call(n, keep)
	case *parser.BinaryExpr:
		return w.binary(n, keep)
	default:
		// A node type added by a later parser version: still find its selectors.
		var ids []int
		for c := range parser.ChildrenIter(n) {
			ids = append(ids, w.walk(c, false)...)
		}
		return ids
	}
}

func (w *walker) aggregate(n *parser.AggregateExpr, keep bool) []int {
	w.walk(n.Param, false) // topk(scalar(x), ...) may select series too.
	childKeep := false
	switch {
	case n.Op == parser.TOPK || n.Op == parser.BOTTOMK || n.Op == parser.LIMITK || n.Op == parser.LIMIT_RATIO:
		childKeep = keep // these return the input series unchanged
	case n.Without:
		childKeep = keep // everything but the listed labels reaches the result
	}
	ids := w.walk(n.Expr, childKeep)
	for _, l := range n.Grouping {
		w.use(ids, l, UseGrouping)
	}
	return ids
}

func (w *walker) call(n *parser.Call, keep bool) []int {
	args := n.Args
	switch n.Func.Name {
	case "label_replace": // (v, dst, replacement, src, regex)
		ids := w.walkArgs(n, keep)
		w.useStrings(ids, args, UseFunction, 1, 3)
		return ids
	case "label_join": // (v, dst, separator, src...)
		ids := w.walkArgs(n, keep)
		idx := []int{1}
		for i := 3; i < len(args); i++ {
			idx = append(idx, i)
		}
		w.useStrings(ids, args, UseFunction, idx...)
		return ids
	case "sort_by_label", "sort_by_label_desc": // (v, label...)
		ids := w.walkArgs(n, keep)
		idx := make([]int, 0, len(args))
		for i := 1; i < len(args); i++ {
			idx = append(idx, i)
		}
		w.useStrings(ids, args, UseFunction, idx...)
		return ids
	case "histogram_quantile", "histogram_quantiles", "histogram_fraction":
		// With classic histograms these group the buckets by le.
		ids := w.walkArgs(n, keep)
		w.use(ids, "le", UseFunction)
		return ids
	case "absent", "absent_over_time", "scalar":
		// The result keeps no input labels (absent keeps equality matcher values only).
		return w.walkArgs(n, false)
	case "info":
		// info(v, {selector}) joins target_info (by default) on instance and job.
		var ids []int
		if len(args) > 0 {
			ids = w.walk(args[0], keep)
		}
		var infoIDs []int
		if len(args) > 1 {
			if vs, ok := unparen(args[1]).(*parser.VectorSelector); ok {
				infoIDs = []int{w.add(vs.LabelMatchers, "target_info", false)}
			} else {
				infoIDs = w.walk(args[1], false)
			}
		} else {
			infoIDs = []int{w.add(nil, "target_info", false)}
		}
		all := append(slices.Clone(ids), infoIDs...)
		w.use(all, "instance", UseJoin)
		w.use(all, "job", UseJoin)
		return ids
	default:
		return w.walkArgs(n, keep)
	}
}

// walkArgs walks the arguments of a call: vector and matrix arguments pass keep on
// and make up the result; scalar and string arguments are walked for their own
// selectors (clamp_max(x, scalar(y))) but do not.
func (w *walker) walkArgs(n *parser.Call, keep bool) []int {
	var ids []int
	for _, a := range n.Args {
		if t := a.Type(); t == parser.ValueTypeVector || t == parser.ValueTypeMatrix {
			ids = append(ids, w.walk(a, keep)...)
		} else {
			w.walk(a, false)
		}
	}
	return ids
}

func (w *walker) binary(n *parser.BinaryExpr, keep bool) []int {
	vm := n.VectorMatching
	if vm == nil || n.LHS.Type() != parser.ValueTypeVector || n.RHS.Type() != parser.ValueTypeVector {
		// Vector and scalar: the vector side keeps its labels.
		return append(w.walk(n.LHS, keep), w.walk(n.RHS, keep)...)
	}
	var lKeep, rKeep bool
	switch {
	case !vm.On:
		// Default matching and ignoring(...) compare every other label.
		lKeep, rKeep = true, true
	case n.Op == parser.LOR:
		lKeep, rKeep = keep, keep
	case n.Op == parser.LAND || n.Op == parser.LUNLESS:
		lKeep = keep
	case vm.Card == parser.CardManyToOne:
		lKeep = keep
	case vm.Card == parser.CardOneToMany:
		rKeep = keep
	}
	lids := w.walk(n.LHS, lKeep)
	rids := w.walk(n.RHS, rKeep)
	all := append(slices.Clone(lids), rids...)
	for _, l := range vm.MatchingLabels {
		w.use(all, l, UseJoin)
	}
	one := rids // group_left copies labels from the right
	if vm.Card == parser.CardOneToMany {
		one = lids
	}
	for _, l := range vm.Include {
		w.use(one, l, UseJoin)
	}
	return all
}

// add records a selector of the Prometheus parser and returns its index.
// defaultName names a selector without __name__ matchers (info's target_info).
func (w *walker) add(ms []*labels.Matcher, defaultName string, keep bool) int {
	name := ""
	var nameMatchers []*labels.Matcher
	var required []string
	for _, m := range ms {
		if m.Name != model.MetricNameLabel {
			if !m.Matches("") {
				required = append(required, m.Name)
			}
			continue
		}
		if m.Type == labels.MatchEqual && name == "" {
			name = m.Value
		} else {
			nameMatchers = append(nameMatchers, m)
		}
	}
	if name == "" && len(nameMatchers) == 0 {
		name = defaultName
	}
	idx := w.selector(name, nameMatchers, required, keep)
	set := make([]*labels.Matcher, 0, len(ms))
	skipped := false
	for _, m := range ms {
		if !skipped && name != "" && m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual && m.Value == name {
			skipped = true // the exact name
			continue
		}
		set = append(set, m)
	}
	w.addSet(idx, set)
	for _, m := range ms {
		if m.Name != model.MetricNameLabel {
			w.use([]int{idx}, m.Name, UseMatcher)
		}
	}
	return idx
}

// selector returns the index of the selector with this name, name matchers and
// required labels, adding it if needed. Selectors with the same exact name are
// merged, and so are those with the same name matchers and required labels:
// {a="1"} and {b="2"} stay apart, as they select different metrics.
func (w *walker) selector(name string, nameMatchers []*labels.Matcher, required []string, keep bool) int {
	if name != "" {
		nameMatchers = nil // the exact name decides; other name matchers only narrow it
		required = nil
	} else {
		slices.Sort(required)
		required = slices.Compact(required)
	}
	idx := -1
	for i := range w.sels {
		s := &w.sels[i]
		if s.Name == name && sameMatchers(s.NameMatchers, nameMatchers) && slices.Equal(s.RequiredLabels, required) {
			idx = i
			break
		}
	}
	if idx < 0 {
		idx = len(w.sels)
		w.sels = append(w.sels, Selector{Name: name, NameMatchers: nameMatchers, RequiredLabels: required})
	}
	if keep {
		w.sels[idx].AllLabels = true
	}
	return idx
}

// addSet adds the matcher set of one selector to the selector at idx, after
// normalising it. set is owned by addSet.
func (w *walker) addSet(idx int, set []*labels.Matcher) {
	set = NormaliseMatchers(set)
	s := &w.sels[idx]
	for _, have := range s.MatcherSets {
		if slices.EqualFunc(have, set, sameMatcher) {
			return
		}
	}
	s.MatcherSets = append(s.MatcherSets, set)
}

// NormaliseMatchers sorts ms by label name, type and value in place and
// removes duplicates and matchers that accept every value (=~".*"), so that
// equal selectors have equal sets: {b="2",a="1"} is {a="1",b="2"}.
func NormaliseMatchers(ms []*labels.Matcher) []*labels.Matcher {
	ms = slices.DeleteFunc(ms, func(m *labels.Matcher) bool {
		return m.Type == labels.MatchRegexp && m.Value == ".*"
	})
	slices.SortFunc(ms, func(a, b *labels.Matcher) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if c := int(a.Type) - int(b.Type); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	return slices.CompactFunc(ms, sameMatcher)
}

func sameMatcher(a, b *labels.Matcher) bool {
	return a.Name == b.Name && a.Type == b.Type && a.Value == b.Value
}

// FormatMatchers renders a normalised matcher set as a selector: {a="1",b=~"x|y"}.
func FormatMatchers(name string, ms []*labels.Matcher) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteByte('{')
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(m.String())
	}
	b.WriteByte('}')
	return b.String()
}

func (w *walker) use(ids []int, label string, how LabelUse) {
	if label == model.MetricNameLabel || label == "" {
		return
	}
	for _, i := range ids {
		s := &w.sels[i]
		if s.Labels == nil {
			s.Labels = make(map[string]LabelUse)
		}
		s.Labels[label] |= how
	}
}

func (w *walker) useStrings(ids []int, args parser.Expressions, how LabelUse, idx ...int) {
	for _, i := range idx {
		if i < len(args) {
			if s, ok := unparen(args[i]).(*parser.StringLiteral); ok {
				w.use(ids, s.Val, how)
			}
		}
	}
}

func unparen(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

func sameMatchers(a, b []*labels.Matcher) bool {
	return slices.EqualFunc(a, b, func(x, y *labels.Matcher) bool {
		return x.Type == y.Type && x.Value == y.Value
	})
}

// clipString cuts s to at most max bytes on a rune boundary, marking the cut.
func clipString(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max] + "..."
}
