package seriesusage

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Register registers the book's own metrics with reg: what its caps kept out
// and how much it keeps. No label comes from traffic.
func (b *Book) Register(reg prometheus.Registerer) error {
	return reg.Register(&collector{b: b,
		overflow: prometheus.NewDesc("cardguard_series_usage_overflow_total",
			"What series usage did not track because a cap was reached, by kind: tenants, metrics, long_names (metric names), label_values, selectors (refused past max_selectors_per_metric or max_nameless_selectors).",
			[]string{"kind"}, nil),
		values: prometheus.NewDesc("cardguard_series_usage_label_values",
			"Label values series usage keeps to explain never-selected series (max_series_usage_values).", nil, nil),
		selectors: prometheus.NewDesc("cardguard_series_usage_selectors",
			"Selectors (matcher sets) series usage keeps, of every tenant and metric.", nil, nil),
	})
}

type collector struct {
	b                           *Book
	overflow, values, selectors *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.overflow
	ch <- c.values
	ch <- c.selectors
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	for kind, v := range map[string]uint64{
		"tenants": b.overflow.tenants.Load(), "metrics": b.overflow.metrics.Load(),
		"long_names": b.overflow.longNames.Load(), "label_values": b.overflow.values.Load(),
		"selectors": b.overflow.selectors.Load(),
	} {
		ch <- prometheus.MustNewConstMetric(c.overflow, prometheus.CounterValue, float64(v), kind)
	}
	ch <- prometheus.MustNewConstMetric(c.values, prometheus.GaugeValue, float64(b.values.Load()))
	ch <- prometheus.MustNewConstMetric(c.selectors, prometheus.GaugeValue, float64(b.selectors.Load()))
}
