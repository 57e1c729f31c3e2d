package main

import (
	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/tenant"
)

// trackerEstimates adapts the cardinality tracker to the limits API.
type trackerEstimates struct{ t *cardinality.Tracker }

func (e trackerEstimates) TenantSeries(t tenant.ID) (int64, bool) {
	s, ok := e.t.Tenant(t)
	return s.ActiveSeries, ok
}

// usageEstimates adapts the cardinality tracker to the query usage report.
type usageEstimates struct{ t *cardinality.Tracker }

func (e usageEstimates) MetricSeries(t tenant.ID) map[string]int64 {
	names := e.t.MetricNames(t)
	out := make(map[string]int64, len(names))
	for _, n := range names {
		if v, ok := e.t.MetricSeries(t, n); ok {
			out[n] = v
		}
	}
	return out
}

func (e usageEstimates) LabelValueCounts(t tenant.ID, metric string) map[string]int64 {
	return e.t.LabelValues(t, metric)
}
