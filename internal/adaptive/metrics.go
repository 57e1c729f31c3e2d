package adaptive

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

var (
	descApplied = prometheus.NewDesc("cardguard_adaptive_applied_rules",
		"Rules applied through the recommendations, by tenant and kind.", []string{"tenant", "kind"}, nil)
	descBroken = prometheus.NewDesc("cardguard_adaptive_broken_reads_total",
		"Reads that used what an applied rule removed (broken_by_rule), by tenant, seen by this replica.", []string{"tenant"}, nil)
	descPreviews = prometheus.NewDesc("cardguard_adaptive_previews_running",
		"Previews measuring or waiting for their bucket on this replica.", nil, nil)
)

type collector struct {
	e       *Engine
	labeler *tenant.Labeler
}

// Register adds the engine's metrics to reg.
func (e *Engine) Register(reg prometheus.Registerer) error {
	return reg.Register(&collector{e: e, labeler: tenant.NewLabeler(tenant.DefaultLabelCap)})
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descApplied
	ch <- descBroken
	ch <- descPreviews
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	applied := map[[2]string]float64{}
	c.e.mu.Lock()
	for t, ts := range c.e.state {
		for _, a := range ts.Rules {
			applied[[2]string{c.labeler.Label(t), a.Kind}]++
		}
	}
	c.e.mu.Unlock()
	for k, n := range applied {
		ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, n, k[0], k[1])
	}
	broken := map[string]float64{}
	c.e.brokenMu.Lock()
	for k, b := range c.e.broken {
		broken[c.labeler.Label(k.t)] += float64(b.Count)
	}
	c.e.brokenMu.Unlock()
	for t, n := range broken {
		ch <- prometheus.MustNewConstMetric(descBroken, prometheus.CounterValue, n, t)
	}
	ch <- prometheus.MustNewConstMetric(descPreviews, prometheus.GaugeValue, float64(c.e.preview.running()))
}
