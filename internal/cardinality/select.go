package cardinality

import "github.com/cardguard/cardguard/internal/tenant"

// The methods below serve the read path's estimate of how many series a query
// selects, before it runs. They read the view of the last Refresh, never a sketch,
// and do not allocate.

// LabelValueCount returns the distinct values of label on metric. known is false
// when the metric is not tracked, or when the label is not among its tracked labels
// while some of its labels went to the overflow entry: the count is then unknown.
// A tracked metric without the label gives 0, known: a selector with that label
// equal to a value selects none of its series.
func (t *Tracker) LabelValueCount(tn tenant.ID, metric, label string) (n int64, known bool) {
	mv := t.metricView(tn, metric)
	if mv == nil {
		return 0, false
	}
	overflow := false
	for i := range mv.labels {
		l := &mv.labels[i]
		if l.Name == label && !l.Overflow {
			return l.Values, true
		}
		overflow = overflow || l.Overflow
	}
	return 0, !overflow
}

// EachMetric calls fn with every tracked metric of tn and its active series
// estimate, by series descending, until fn returns false. The overflow metric is
// passed with the name OverflowName.
func (t *Tracker) EachMetric(tn tenant.ID, fn func(name string, series int64) bool) {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return
	}
	for _, mv := range tv.metrics {
		if !fn(mv.name, mv.series) {
			return
		}
	}
}
