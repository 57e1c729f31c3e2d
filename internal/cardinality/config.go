package cardinality

import (
	"errors"
	"fmt"
	"time"
)

// Config sizes the windows, the sketches and the caps. The zero value of every field
// means its default.
type Config struct {
	// Window is the span over which "active series" are counted. Default 1h.
	Window time.Duration `yaml:"window"`
	// Buckets is how many rotating buckets make up Window (series level: tenant and
	// metric series sketches, and the dedup set). Default 6, i.e. 10 min buckets.
	Buckets int `yaml:"buckets"`
	// LabelBuckets is how many buckets make up Window for the label-level sketches
	// (distinct values per metric label and per tenant label). Fewer buckets keep
	// memory down; Buckets must be a multiple of it. Default 2.
	LabelBuckets int `yaml:"label_buckets"`
	// ChurnWindow is the long window whose distinct series, divided by the distinct
	// series of Window, is the churn. Default 24h.
	ChurnWindow time.Duration `yaml:"churn_window"`
	// ChurnBuckets splits ChurnWindow; a churn bucket must be a whole number of series
	// buckets. Default 24.
	ChurnBuckets int `yaml:"churn_buckets"`
	// MetricChurnBuckets splits ChurnWindow for the per-metric churn sketches, which
	// are many (one ring per metric): fewer, wider buckets keep their memory small at
	// the price of a coarser window (between ChurnWindow minus one bucket and
	// ChurnWindow of history). A bucket must be a whole number of series buckets.
	// Default 4 (6h buckets over 24h), or ChurnBuckets if that is smaller.
	MetricChurnBuckets int `yaml:"metric_churn_buckets"`
	// SeriesPrecision is the HLL precision of series sketches. Default 14
	// (0.81% standard error, 16 KiB once dense).
	SeriesPrecision uint8 `yaml:"series_precision"`
	// LabelPrecision is the HLL precision of label value sketches. Default 16: those
	// sketches stay sparse (about 3 bytes per value, near exact) up to ~20k values,
	// so counts under 10k are within 1%; only exploding labels pay 64 KiB.
	LabelPrecision uint8 `yaml:"label_precision"`
	// MaxTenants caps tracked tenants; further tenants share one overflow entry.
	// Default 1000.
	MaxTenants int `yaml:"max_tenants"`
	// MaxMetricsPerTenant caps metric names per tenant; further names share one
	// overflow metric. Default 10000.
	MaxMetricsPerTenant int `yaml:"max_metrics_per_tenant"`
	// MaxLabelsPerMetric caps label names per metric; further names share one
	// overflow label. Default 64.
	MaxLabelsPerMetric int `yaml:"max_labels_per_metric"`
	// MaxLabelsPerTenant caps label names tracked across a tenant's metrics.
	// Default 1000.
	MaxLabelsPerTenant int `yaml:"max_labels_per_tenant"`
	// Now is the clock; tests inject their own. Default time.Now.
	Now func() time.Time `yaml:"-"`
}

func (c Config) withDefaults() Config {
	if c.Window == 0 {
		c.Window = time.Hour
	}
	if c.Buckets == 0 {
		c.Buckets = 6
	}
	if c.LabelBuckets == 0 {
		c.LabelBuckets = min(2, c.Buckets)
	}
	if c.ChurnWindow == 0 {
		c.ChurnWindow = 24 * time.Hour
	}
	if c.ChurnBuckets == 0 {
		c.ChurnBuckets = 24
	}
	if c.MetricChurnBuckets == 0 {
		c.MetricChurnBuckets = min(4, c.ChurnBuckets)
	}
	if c.SeriesPrecision == 0 {
		c.SeriesPrecision = 14
	}
	if c.LabelPrecision == 0 {
		c.LabelPrecision = 16
	}
	if c.MaxTenants == 0 {
		c.MaxTenants = 1000
	}
	if c.MaxMetricsPerTenant == 0 {
		c.MaxMetricsPerTenant = 10000
	}
	if c.MaxLabelsPerMetric == 0 {
		c.MaxLabelsPerMetric = 64
	}
	if c.MaxLabelsPerTenant == 0 {
		c.MaxLabelsPerTenant = 1000
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// validate checks a config that has its defaults applied.
func (c Config) validate() error {
	if c.Window < time.Second {
		return fmt.Errorf("cardinality window %s is below the minimum 1s", c.Window)
	}
	if c.Buckets < 1 || c.Buckets > 1440 {
		return fmt.Errorf("cardinality buckets %d out of range [1, 1440]", c.Buckets)
	}
	if c.Window%time.Duration(c.Buckets) != 0 {
		return fmt.Errorf("cardinality window %s does not divide into %d buckets", c.Window, c.Buckets)
	}
	if c.LabelBuckets < 1 || c.Buckets%c.LabelBuckets != 0 {
		return fmt.Errorf("cardinality label_buckets %d must divide buckets %d", c.LabelBuckets, c.Buckets)
	}
	if c.ChurnBuckets < 1 || c.ChurnBuckets > 1440 {
		return fmt.Errorf("cardinality churn_buckets %d out of range [1, 1440]", c.ChurnBuckets)
	}
	w := c.Window / time.Duration(c.Buckets)
	if c.ChurnWindow%time.Duration(c.ChurnBuckets) != 0 || (c.ChurnWindow/time.Duration(c.ChurnBuckets))%w != 0 {
		return fmt.Errorf("cardinality churn bucket %s/%d is not a whole number of %s series buckets",
			c.ChurnWindow, c.ChurnBuckets, w)
	}
	if c.MetricChurnBuckets < 1 || c.MetricChurnBuckets > 1440 {
		return fmt.Errorf("cardinality metric_churn_buckets %d out of range [1, 1440]", c.MetricChurnBuckets)
	}
	if c.ChurnWindow%time.Duration(c.MetricChurnBuckets) != 0 || (c.ChurnWindow/time.Duration(c.MetricChurnBuckets))%w != 0 {
		return fmt.Errorf("cardinality metric churn bucket %s/%d is not a whole number of %s series buckets",
			c.ChurnWindow, c.MetricChurnBuckets, w)
	}
	if c.ChurnWindow < c.Window {
		return fmt.Errorf("cardinality churn_window %s is shorter than window %s", c.ChurnWindow, c.Window)
	}
	for _, p := range []uint8{c.SeriesPrecision, c.LabelPrecision} {
		if p < 4 || p > 18 {
			return fmt.Errorf("cardinality precision %d out of range [4, 18]", p)
		}
	}
	if c.MaxTenants < 1 || c.MaxMetricsPerTenant < 1 || c.MaxLabelsPerMetric < 1 || c.MaxLabelsPerTenant < 1 {
		return errors.New("cardinality caps must be positive")
	}
	return nil
}
