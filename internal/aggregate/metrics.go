package aggregate

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Stats are the Aggregator's running totals.
type Stats struct {
	inputs, outputs atomic.Int64 // held now (exact after each flush)
	samples         atomic.Int64 // folded in by Add
	written         atomic.Int64 // output samples written
	flushErrors     atomic.Int64

	mu        sync.Mutex
	perTenant map[tenant.ID][2]int64 // inputs, outputs at the last flush
}

func (s *Stats) setPerTenant(m map[tenant.ID][2]int64) {
	s.mu.Lock()
	s.perTenant = m
	s.mu.Unlock()
}

// TenantSeries returns tenant t's input and output series at the last flush.
func (a *Aggregator) TenantSeries(t tenant.ID) (inputs, outputs int64) {
	a.stats.mu.Lock()
	defer a.stats.mu.Unlock()
	c := a.stats.perTenant[t]
	return c[0], c[1]
}

// Register exposes the Aggregator's metrics on reg.
func (a *Aggregator) Register(reg prometheus.Registerer) error {
	return reg.Register(&collector{a: a, labeler: tenant.NewLabeler(tenant.DefaultLabelCap)})
}

var (
	descInputs = prometheus.NewDesc("cardguard_aggregate_input_series",
		"Input series folded into aggregated output series, by tenant, at the last flush.", []string{"tenant"}, nil)
	descOutputs = prometheus.NewDesc("cardguard_aggregate_output_series",
		"Output series written by aggregation, by tenant, at the last flush.", []string{"tenant"}, nil)
	descSamples = prometheus.NewDesc("cardguard_aggregate_input_samples_total",
		"Samples folded into aggregates.", nil, nil)
	descWritten = prometheus.NewDesc("cardguard_aggregate_output_samples_total",
		"Aggregated samples written to VictoriaMetrics.", nil, nil)
	descErrors = prometheus.NewDesc("cardguard_aggregate_flush_errors_total",
		"Flushes of one tenant's aggregates that VictoriaMetrics did not take; they are retried with the next flush.", nil, nil)
)

type collector struct {
	a       *Aggregator
	labeler *tenant.Labeler
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInputs, descOutputs, descSamples, descWritten, descErrors} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := &c.a.stats
	s.mu.Lock()
	byLabel := map[string][2]int64{}
	for t, v := range s.perTenant {
		l := c.labeler.Label(t)
		cur := byLabel[l]
		byLabel[l] = [2]int64{cur[0] + v[0], cur[1] + v[1]}
	}
	s.mu.Unlock()
	for l, v := range byLabel {
		ch <- prometheus.MustNewConstMetric(descInputs, prometheus.GaugeValue, float64(v[0]), l)
		ch <- prometheus.MustNewConstMetric(descOutputs, prometheus.GaugeValue, float64(v[1]), l)
	}
	ch <- prometheus.MustNewConstMetric(descSamples, prometheus.CounterValue, float64(s.samples.Load()))
	ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(s.written.Load()))
	ch <- prometheus.MustNewConstMetric(descErrors, prometheus.CounterValue, float64(s.flushErrors.Load()))
}

// Register exposes the collisions Claims found on reg.
func (c *Claims) Register(reg prometheus.Registerer) error {
	return reg.Register(&claimsCollector{c: c, labeler: tenant.NewLabeler(tenant.DefaultLabelCap)})
}

// The metric the issue asks for is per tenant and metric; metric names from
// traffic are never labels of cardguard's own metrics, so it is per tenant here
// and the API and the dashboard list the colliding outputs of each metric.
var descCollisions = prometheus.NewDesc("cardguard_series_collisions_total",
	"Output series that relabel rules made distinct input series collide in, by tenant: each counts when its second input arrives (once per cardinality window).", []string{"tenant"}, nil)

type claimsCollector struct {
	c       *Claims
	labeler *tenant.Labeler
}

func (cc *claimsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCollisions }

func (cc *claimsCollector) Collect(ch chan<- prometheus.Metric) {
	c := cc.c
	c.mu.Lock()
	byLabel := make(map[string]uint64, len(c.collisions)+1)
	for t, n := range c.collisions {
		byLabel[cc.labeler.Label(t)] += n
	}
	if c.collisionsOther > 0 {
		byLabel[tenant.OverflowLabel] += c.collisionsOther
	}
	c.mu.Unlock()
	for l, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(descCollisions, prometheus.CounterValue, float64(n), l)
	}
}
