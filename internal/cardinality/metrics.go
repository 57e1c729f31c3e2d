package cardinality

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Register registers the tracker's own metrics with reg. Values come from the last
// Refresh, so a scrape never touches a sketch. Labels are the tenant (capped by
// MaxTenants; "__overflow__" for the rest) and the tracking level, never a metric
// name or label value from traffic.
func (t *Tracker) Register(reg prometheus.Registerer) error {
	return reg.Register(newCollector(t))
}

type collector struct {
	t                                                                 *Tracker
	activeSeries, churnSeries, tracked, overflow, memory, lastRefresh *prometheus.Desc
}

func newCollector(t *Tracker) *collector {
	return &collector{
		t: t,
		activeSeries: prometheus.NewDesc("cardguard_tenant_active_series",
			"Estimated distinct series of the tenant in the active-series window.", []string{"tenant"}, nil),
		churnSeries: prometheus.NewDesc("cardguard_tenant_churn_window_series",
			"Estimated distinct series of the tenant in the churn window.", []string{"tenant"}, nil),
		tracked: prometheus.NewDesc("cardguard_cardinality_tracked",
			"Tracked entries by level (tenant, metric, metric_label, tenant_label), overflow entries included.", []string{"level"}, nil),
		overflow: prometheus.NewDesc("cardguard_cardinality_overflow_total",
			"First sightings of a series in a bucket that went to an overflow entry because a cap was reached, by level.", []string{"level"}, nil),
		memory: prometheus.NewDesc("cardguard_cardinality_sketch_memory_bytes",
			"Estimated heap held by cardinality sketches and the series dedup set.", nil, nil),
		lastRefresh: prometheus.NewDesc("cardguard_cardinality_last_refresh_timestamp_seconds",
			"Time of the last refresh of the cardinality estimates.", nil, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.activeSeries, c.churnSeries, c.tracked, c.overflow, c.memory, c.lastRefresh} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	v := c.t.view.Load()
	for _, tv := range v.tenants {
		ch <- prometheus.MustNewConstMetric(c.activeSeries, prometheus.GaugeValue, float64(tv.summary.ActiveSeries), tv.summary.Tenant)
		ch <- prometheus.MustNewConstMetric(c.churnSeries, prometheus.GaugeValue, float64(tv.summary.DailySeries), tv.summary.Tenant)
	}
	for l := range numLevels {
		ch <- prometheus.MustNewConstMetric(c.tracked, prometheus.GaugeValue, float64(v.tracked[l]), l.String())
		ch <- prometheus.MustNewConstMetric(c.overflow, prometheus.CounterValue, float64(c.t.overflowTotal[l].Load()), l.String())
	}
	ch <- prometheus.MustNewConstMetric(c.memory, prometheus.GaugeValue, float64(v.memory))
	if !v.updated.IsZero() {
		ch <- prometheus.MustNewConstMetric(c.lastRefresh, prometheus.GaugeValue, float64(v.updated.UnixNano())/1e9)
	}
}
