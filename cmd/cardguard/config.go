package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/adaptive"
	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/streamrules"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// Config is the policy file (-config). Process settings (addresses, paths) are
// flags; what the operator decides about traffic lives here, validated strictly:
// an unknown key is an error, so a typo never silently disables a limit.
type Config struct {
	Upstream upstream.Config `yaml:"upstream"`
	// DefaultTenant receives the single-tenant paths (/api/v1/write, /api/v1/query,
	// ...) when the request carries no tenant token.
	DefaultTenant tenant.ID   `yaml:"default_tenant"`
	Auth          auth.Config `yaml:"auth"`
	// Limits are the per-tenant limits: defaults and file overrides. Overrides set
	// through the limits API are stored in the data directory and win over these.
	Limits limits.Config `yaml:"limits"`
	// Relabel rules run on every series before anything else looks at it.
	Relabel RelabelConfig `yaml:"relabel"`
	// Cardinality sizes the estimation windows and caps. Its window is also the
	// window of the series limits and the label guard: "active series" means the
	// same everywhere.
	Cardinality cardinality.Config `yaml:"cardinality"`
	// Aggregation sizes the aggregation of series that relabel rules or the
	// label guard fold together (what is folded is per tenant, in limits).
	Aggregation aggregate.Config `yaml:"aggregation"`
	// Aggregate holds vmagent stream aggregation rules, global and per tenant,
	// as a -streamAggr.config file writes them. Rules set through the API are
	// stored in the data directory and win over these.
	Aggregate streamrules.Config `yaml:"aggregate"`
	// QueryAudit bounds the query usage records.
	QueryAudit QueryAuditConfig `yaml:"query_audit"`
	// Usage adds the other sources of usage: assets and VictoriaMetrics' own
	// metric name stats (sources.go).
	Usage UsageConfig `yaml:"usage"`
	// Adaptive configures the recommendations (adaptive.go).
	Adaptive adaptive.Config `yaml:"adaptive"`
	// State chooses where state lives: in this process (memory, the default) or
	// shared by every replica through Redis.
	State state.Config `yaml:"state"`
}

// RelabelConfig holds Prometheus-compatible relabel rules: Global apply to every
// tenant, then a tenant's own rules apply.
type RelabelConfig struct {
	Global  []relabel.Config               `yaml:"global"`
	Tenants map[tenant.ID][]relabel.Config `yaml:"tenants"`
}

// QueryAuditConfig is the query_audit section.
type QueryAuditConfig struct {
	// Retention is how long query usage is remembered (default 30 days).
	Retention time.Duration `yaml:"retention"`
	// RarelyQueriedBelow marks metrics queried fewer times than this in the
	// retention as "rarely queried" (default 10).
	RarelyQueriedBelow uint64 `yaml:"rarely_queried_below"`
	// MaxMetricsPerTenant caps tracked metric names per tenant (default 20000).
	MaxMetricsPerTenant int `yaml:"max_metrics_per_tenant"`
	// MaxSelectorsPerMetric caps the distinct selectors (matcher sets) kept
	// per metric for series usage; past it the metric counts as all series
	// selected (default 64).
	MaxSelectorsPerMetric int `yaml:"max_selectors_per_metric"`
	// MaxNamelessSelectors caps the selectors without a metric name
	// ({env="dev"}) kept per tenant; past it every metric of the tenant
	// counts as all series selected (default 64).
	MaxNamelessSelectors int `yaml:"max_nameless_selectors"`
	// MaxSeriesUsageValues caps the label values series usage keeps to
	// explain never-selected series, all tenants together, about 100 bytes
	// each (default 262144).
	MaxSeriesUsageValues int64 `yaml:"max_series_usage_values"`
}

// defaultConfig is what cardguard runs with when no -config is given.
func defaultConfig() Config {
	return Config{Limits: limits.Config{Defaults: limits.Default()}}
}

// defaultUpstreamURL is a single node on this machine, VictoriaMetrics' default port.
const defaultUpstreamURL = "http://127.0.0.1:8428"

// fillDefaults completes what the file left out; it runs after decoding so that a
// file choosing cluster mode does not inherit the single-node URL.
func (c *Config) fillDefaults() {
	if c.Upstream.Mode == "" {
		c.Upstream.Mode = upstream.ModeSingle
	}
	if c.Upstream.Mode == upstream.ModeSingle && c.Upstream.URL == "" {
		c.Upstream.URL = defaultUpstreamURL
	}
}

// loadConfig reads path on top of the defaults. An empty path gives the defaults.
func loadConfig(path string) (Config, error) {
	cfg := defaultConfig()
	if path == "" {
		cfg.fillDefaults()
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("cannot read config: %w", err)
	}
	if err := decodeStrict(b, &cfg); err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.fillDefaults()
	return cfg, nil
}

func decodeStrict(b []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

// aggregation is the aggregation section with its defaults: inputs' last values
// are kept for the cardinality window unless said otherwise.
func (c *Config) aggregation() (aggregate.Config, error) {
	ac := c.Aggregation
	if ac.Staleness == 0 {
		ac.Staleness = c.Cardinality.Window
	}
	if ac.Staleness == 0 {
		ac.Staleness = aggregate.DefaultStaleness
	}
	return ac, ac.Validate()
}

// validate checks everything that can be checked without starting.
func (c *Config) validate() error {
	if _, err := upstream.New(c.Upstream); err != nil {
		return err
	}
	if err := c.Auth.Validate(); err != nil {
		return err
	}
	if _, err := newRuleSet(c.Relabel, nil); err != nil {
		return err
	}
	if _, err := cardinality.New(c.Cardinality); err != nil {
		return fmt.Errorf("cardinality: %w", err)
	}
	if err := c.State.Validate(); err != nil {
		return err
	}
	if _, err := c.aggregation(); err != nil {
		return err
	}
	if err := c.Aggregate.Validate(); err != nil {
		return err
	}
	if err := c.Adaptive.Validate(); err != nil {
		return err
	}
	if err := c.Usage.validate(); err != nil {
		return err
	}
	if c.QueryAudit.Retention < 0 {
		return fmt.Errorf("query_audit.retention %s: must not be negative", c.QueryAudit.Retention)
	}
	for _, f := range []struct {
		name string
		v    int64
	}{
		{"max_selectors_per_metric", int64(c.QueryAudit.MaxSelectorsPerMetric)},
		{"max_nameless_selectors", int64(c.QueryAudit.MaxNamelessSelectors)},
		{"max_series_usage_values", c.QueryAudit.MaxSeriesUsageValues},
	} {
		if f.v < 0 {
			return fmt.Errorf("query_audit.%s %d: must not be negative (0 takes the default)", f.name, f.v)
		}
	}
	if len(c.Auth.Tenants) > 0 && c.Upstream.Mode == upstream.ModeSingle && c.Upstream.TenantLabel == "" {
		return errors.New("auth.tenants needs tenants kept apart upstream: use upstream.mode cluster, or set upstream.tenant_label in single mode")
	}
	return nil
}
