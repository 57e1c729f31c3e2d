package readpath

import (
	"math"
	"sync"
	"time"

	"github.com/VictoriaMetrics/metricsql"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/tenant"
)

// SeriesSketches is what the max_series_per_query estimate reads from cardguard's
// own sketches (cardinality.Tracker): estimates of the last refresh, never a sketch,
// so that the check costs map lookups. Implementations must be safe for concurrent
// use and must not allocate per call.
type SeriesSketches interface {
	// MetricSeries is the active series estimate of one metric.
	MetricSeries(t tenant.ID, metric string) (int64, bool)
	// LabelValueCount is the distinct values of a label on a metric; known is
	// false when it cannot be told.
	LabelValueCount(t tenant.ID, metric, label string) (n int64, known bool)
	// EachMetric calls fn for every metric of t until fn returns false.
	EachMetric(t tenant.ID, fn func(name string, series int64) bool)
}

// plan is what the read limits need from one query expression, parsed once with the
// MetricsQL parser (every query VictoriaMetrics accepts parses) and cached.
type plan struct {
	err       error
	selectors []selector
	expr      metricsql.Expr
}

// selector is one series selector (one "or" group of a MetricsQL selector).
type selector struct {
	name         string            // exact metric name, or ""
	nameMatchers []*labels.Matcher // __name__ matchers when name is ""
	narrow       []narrowing
}

// narrowing is a label matcher that keeps a known share of a metric's series: an
// equality matcher keeps one value of the label's distinct values, a regex that is
// a list of values (a|b|c) keeps that many.
type narrowing struct {
	label  string
	values int
}

func newPlan(query string) *plan {
	e, err := metricsql.Parse(query)
	if err != nil {
		return &plan{err: err}
	}
	p := &plan{expr: e}
	metricsql.VisitAll(e, func(x metricsql.Expr) {
		me, ok := x.(*metricsql.MetricExpr)
		if !ok {
			return
		}
		for _, lfs := range me.LabelFilterss {
			p.selectors = append(p.selectors, newSelector(lfs))
		}
	})
	return p
}

func newSelector(lfs []metricsql.LabelFilter) selector {
	var s selector
	for _, f := range lfs {
		if f.Label == "__name__" {
			switch {
			case !f.IsRegexp && !f.IsNegative && s.name == "":
				s.name = f.Value
			default:
				if m, err := matcherOf(f); err == nil {
					s.nameMatchers = append(s.nameMatchers, m)
				}
			}
			continue
		}
		switch {
		case f.IsNegative || f.Value == "":
			// != and !~ keep most series; ="" selects series without the label.
		case !f.IsRegexp:
			s.narrow = append(s.narrow, narrowing{label: f.Label, values: 1})
		default:
			if m, err := matcherOf(f); err == nil {
				if set := m.SetMatches(); len(set) > 0 {
					s.narrow = append(s.narrow, narrowing{label: f.Label, values: len(set)})
				}
			}
		}
	}
	if s.name != "" {
		s.nameMatchers = nil
	}
	return s
}

func matcherOf(f metricsql.LabelFilter) (*labels.Matcher, error) {
	t := labels.MatchEqual
	switch {
	case f.IsRegexp && f.IsNegative:
		t = labels.MatchNotRegexp
	case f.IsRegexp:
		t = labels.MatchRegexp
	case f.IsNegative:
		t = labels.MatchNotEqual
	}
	return labels.NewMatcher(t, f.Label, f.Value)
}

// reach is how far before the evaluation time the query reads: its longest chain of
// range selector and subquery windows plus offsets.
func (p *plan) reach(step time.Duration) time.Duration {
	return time.Duration(reachOf(p.expr, step.Milliseconds())) * time.Millisecond
}

func reachOf(e metricsql.Expr, step int64) int64 {
	switch x := e.(type) {
	case *metricsql.RollupExpr:
		var own int64
		if x.Window != nil {
			own += max(x.Window.Duration(step), 0)
		}
		if x.Offset != nil {
			own += max(x.Offset.Duration(step), 0)
		}
		return own + reachOf(x.Expr, step)
	case *metricsql.FuncExpr:
		return maxReach(x.Args, step)
	case *metricsql.AggrFuncExpr:
		return maxReach(x.Args, step)
	case *metricsql.BinaryOpExpr:
		return max(reachOf(x.Left, step), reachOf(x.Right, step))
	}
	return 0
}

func maxReach(args []metricsql.Expr, step int64) int64 {
	var m int64
	for _, a := range args {
		m = max(m, reachOf(a, step))
	}
	return m
}

// planCache holds parsed queries. Dashboards and rules repeat the same queries, so
// nearly every lookup is a hit; the cache is cleared when its keys outgrow
// maxPlanBytes, which bounds its memory whatever the traffic.
type planCache struct {
	mu    sync.Mutex
	m     map[string]*plan
	bytes int
}

const maxPlanBytes = 8 << 20

func (c *planCache) get(query string) *plan {
	c.mu.Lock()
	p := c.m[query]
	c.mu.Unlock()
	if p != nil {
		return p
	}
	p = newPlan(query) // outside the lock: one slow parse holds up no other tenant
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || c.bytes+len(query) > maxPlanBytes {
		c.m, c.bytes = map[string]*plan{}, 0
	}
	if _, dup := c.m[query]; !dup {
		c.m[query] = p
		c.bytes += len(query)
	}
	return p
}

// estimator estimates from the sketches how many series a plan's selectors select.
type estimator struct {
	sk    SeriesSketches
	plans planCache
}

func newEstimator(sk SeriesSketches) *estimator { return &estimator{sk: sk} }

// estimate returns the series p selects for t: per selector, the series estimate of
// each metric it can match, times the share of each narrowing label matcher
// (values / the label's distinct values on the metric). It stops as soon as the
// sum is over limit and then says so; n is then a lower bound.
func (e *estimator) estimate(t tenant.ID, p *plan, limit int64) (n int64, over bool) {
	if e.sk == nil {
		return 0, false
	}
	var sum float64
	for i := range p.selectors {
		s := &p.selectors[i]
		if s.name != "" {
			if series, ok := e.sk.MetricSeries(t, s.name); ok {
				sum += e.narrowed(t, s, s.name, series)
			}
		} else {
			e.sk.EachMetric(t, func(name string, series int64) bool {
				if name == cardinality.OverflowName && len(s.nameMatchers) > 0 {
					return true // its names are not known: no name matcher can be told to match
				}
				for _, m := range s.nameMatchers {
					if !m.Matches(name) {
						return true
					}
				}
				sum += e.narrowed(t, s, name, series)
				return sum <= float64(limit)
			})
		}
		if sum > float64(limit) {
			return int64(math.Ceil(sum)), true
		}
	}
	return int64(math.Round(sum)), false
}

func (e *estimator) narrowed(t tenant.ID, s *selector, metric string, series int64) float64 {
	f := float64(series)
	for _, nw := range s.narrow {
		d, known := e.sk.LabelValueCount(t, metric, nw.label)
		switch {
		case !known:
		case d == 0:
			return 0 // the metric never has the label: an equality on it selects nothing
		case int64(nw.values) < d:
			f = f * float64(nw.values) / float64(d)
		}
	}
	return f
}
