package guard

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

// collector reports per-tenant guard state at scrape time, so Check never
// touches a metric. The tenant label is bounded by Options.MaxTenants.
type collector struct {
	g         *Guard
	guarded   *prometheus.Desc
	tracked   *prometheus.Desc
	untracked *prometheus.Desc
}

func newCollector(g *Guard) *collector {
	return &collector{
		g: g,
		guarded: prometheus.NewDesc("cardguard_guarded_labels",
			"(metric, label) pairs of the tenant currently guarded for too many distinct values.",
			[]string{"tenant"}, nil),
		tracked: prometheus.NewDesc("cardguard_guard_tracked_pairs",
			"(metric, label) pairs of the tenant the guard tracks.",
			[]string{"tenant"}, nil),
		untracked: prometheus.NewDesc("cardguard_guard_untracked_labels_total",
			"Label checks that passed unguarded because the tenant reached the guard's pair cap.",
			[]string{"tenant"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.guarded
	ch <- c.tracked
	ch <- c.untracked
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	type entry struct {
		id tenant.ID
		ts *tenantState
	}
	c.g.mu.RLock()
	list := make([]entry, 0, len(c.g.tenants))
	for id, ts := range c.g.tenants {
		list = append(list, entry{id, ts})
	}
	c.g.mu.RUnlock()
	gen := c.g.gen(c.g.now())
	for _, e := range list {
		tn := e.id.String()
		ch <- prometheus.MustNewConstMetric(c.guarded, prometheus.GaugeValue, float64(e.ts.guardedCount(gen)), tn)
		ch <- prometheus.MustNewConstMetric(c.tracked, prometheus.GaugeValue, float64(e.ts.pairs.Load()), tn)
		ch <- prometheus.MustNewConstMetric(c.untracked, prometheus.CounterValue, float64(e.ts.untracked.Load()), tn)
	}
}
