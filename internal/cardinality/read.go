package cardinality

import (
	"slices"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// TenantSummary is one tenant's series estimates.
type TenantSummary struct {
	// Tenant is "accountID:projectID", or OverflowName for the tenants over the cap.
	Tenant   string `json:"tenant"`
	Overflow bool   `json:"overflow,omitempty"`
	// ActiveSeries is the distinct series seen in Config.Window.
	ActiveSeries int64 `json:"activeSeries"`
	// DailySeries is the distinct series seen in Config.ChurnWindow.
	DailySeries int64 `json:"dailySeries"`
	// Churn is DailySeries / ActiveSeries: 1 for a stable set of series, 24 when the
	// whole set is replaced every hour (with the default windows).
	Churn float64 `json:"churn"`
	// Metrics is the number of tracked metric names, the overflow entry included.
	Metrics int `json:"metrics"`
}

// MetricSummary is one metric's series estimate and labels.
type MetricSummary struct {
	Name     string `json:"name"`
	Overflow bool   `json:"overflow,omitempty"`
	// Series is the distinct series of the metric seen in Config.Window.
	Series int64 `json:"series"`
	// Churn is the metric's distinct series in Config.ChurnWindow (over
	// Config.MetricChurnBuckets buckets) divided by Series: 1 for a stable set of
	// series, 2 when the whole set was replaced once within the churn window. Never
	// below 1; 0 when Series is.
	Churn  float64      `json:"churn"`
	Labels []LabelCount `json:"labels"`
}

// LabelCount is one label name of a metric.
type LabelCount struct {
	Name     string `json:"name"`
	Overflow bool   `json:"overflow,omitempty"`
	// Values is the distinct values of the label within the metric.
	Values int64 `json:"values"`
	// Share is Values / the metric's series, capped at 1: how much of the metric's
	// cardinality this label alone explains. 1 means every series has its own value,
	// the label dropping which would collapse the metric the most.
	Share float64 `json:"share"`
}

// LabelSummary is one label name across a tenant's metrics.
type LabelSummary struct {
	Name     string `json:"name"`
	Overflow bool   `json:"overflow,omitempty"`
	// Values is the distinct values across all metrics.
	Values int64 `json:"values"`
	// Series is the distinct series that carry the label.
	Series int64 `json:"series"`
}

// UpdatedAt is the time of the last Refresh (zero before it).
func (t *Tracker) UpdatedAt() time.Time { return t.view.Load().updated }

// Tenants returns every tracked tenant, the overflow entry included, by active series
// descending. The slice is the caller's.
func (t *Tracker) Tenants() []TenantSummary {
	v := t.view.Load()
	out := make([]TenantSummary, len(v.tenants))
	for i, tv := range v.tenants {
		out[i] = tv.summary
	}
	return out
}

// Tenant returns one tenant's summary; false if it is not tracked.
func (t *Tracker) Tenant(tn tenant.ID) (TenantSummary, bool) {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return TenantSummary{}, false
	}
	return tv.summary, true
}

// TopMetrics returns up to n metrics of tn by series descending (the overflow metric
// among them), each with its top k labels by distinct values. Nil if tn is unknown.
func (t *Tracker) TopMetrics(tn tenant.ID, n, k int) []MetricSummary {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return nil
	}
	ms := tv.metrics[:min(max(n, 0), len(tv.metrics))]
	out := make([]MetricSummary, len(ms))
	for i, mv := range ms {
		out[i] = mv.summary(k)
	}
	return out
}

// Metric returns one metric of tn with all its labels; false if it is not tracked.
// OverflowName finds the overflow metric.
func (t *Tracker) Metric(tn tenant.ID, metric string) (MetricSummary, bool) {
	mv := t.metricView(tn, metric)
	if mv == nil {
		return MetricSummary{}, false
	}
	return mv.summary(len(mv.labels)), true
}

func (t *Tracker) metricView(tn tenant.ID, metric string) *metricView {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return nil
	}
	if mv := tv.byName[metric]; mv != nil {
		return mv
	}
	if metric == OverflowName {
		for _, mv := range tv.metrics {
			if mv.overflow {
				return mv
			}
		}
	}
	return nil
}

func (mv *metricView) summary(k int) MetricSummary {
	return MetricSummary{
		Name:     mv.name,
		Overflow: mv.overflow,
		Series:   mv.series,
		Churn:    mv.churn,
		Labels:   slices.Clone(mv.labels[:min(max(k, 0), len(mv.labels))]),
	}
}

// TopLabels returns up to n label names of tn by distinct values descending. Nil if tn
// is unknown.
func (t *Tracker) TopLabels(tn tenant.ID, n int) []LabelSummary {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return nil
	}
	return slices.Clone(tv.labels[:min(max(n, 0), len(tv.labels))])
}

// MetricNames returns every tracked metric name of tn, sorted, without the overflow
// entry.
func (t *Tracker) MetricNames(tn tenant.ID) []string {
	tv := t.view.Load().byID[tn]
	if tv == nil {
		return nil
	}
	out := make([]string, 0, len(tv.byName))
	for name := range tv.byName {
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// MetricSeries returns the active series estimate of one metric; false if it is not
// tracked.
func (t *Tracker) MetricSeries(tn tenant.ID, metric string) (int64, bool) {
	mv := t.metricView(tn, metric)
	if mv == nil {
		return 0, false
	}
	return mv.series, true
}

// LabelValues returns the distinct values of each label name of one metric (nil if
// the metric is not tracked). The map is the caller's.
func (t *Tracker) LabelValues(tn tenant.ID, metric string) map[string]int64 {
	mv := t.metricView(tn, metric)
	if mv == nil {
		return nil
	}
	out := make(map[string]int64, len(mv.labels))
	for _, l := range mv.labels {
		out[l.Name] = l.Values
	}
	return out
}
