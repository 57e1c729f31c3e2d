package streamrules

import (
	"errors"
	"fmt"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/streamaggr"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Caps on what rules may make cardguard hold. Every rule runs a goroutine and
// keeps state per output series for each tenant it applies to.
const (
	// MaxRulesPerTenant bounds the rules that apply to one tenant: the global
	// rules and its own.
	MaxRulesPerTenant = 50
	// MaxTenants bounds the tenants with rules of their own, and separately the
	// tenants the global rules are running for.
	MaxTenants = 1000
)

// List is one list of vmagent stream aggregation rules (the content of a
// -streamAggr.config file) in YAML or JSON, kept as written: it is compiled by
// VictoriaMetrics' own lib/streamaggr, so every key vmagent knows works here as
// there. A List is checked when it is decoded.
type List []byte

// UnmarshalYAML keeps the node as YAML and checks it: a config file with a bad
// rule does not load.
func (l *List) UnmarshalYAML(n *yaml.Node) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	if _, err := Check(b); err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*l = b
	return nil
}

// MarshalYAML writes the list back as the YAML it was.
func (l List) MarshalYAML() (any, error) {
	if len(l) == 0 {
		return nil, nil
	}
	var n yaml.Node
	if err := yaml.Unmarshal(l, &n); err != nil {
		return nil, err
	}
	if len(n.Content) == 0 {
		return nil, nil
	}
	return n.Content[0], nil
}

// Config is the aggregate section of the policy file: Global rules apply to
// every tenant, then a tenant's own.
type Config struct {
	Global  List               `yaml:"global"`
	Tenants map[tenant.ID]List `yaml:"tenants"`
}

// Validate checks what a List cannot check alone: the caps.
func (c *Config) Validate() error {
	g, err := count(c.Global)
	if err != nil {
		return fmt.Errorf("aggregate.global: %w", err)
	}
	if g > MaxRulesPerTenant {
		return fmt.Errorf("aggregate.global: %d rules; at most %d rules may apply to a tenant", g, MaxRulesPerTenant)
	}
	if len(c.Tenants) > MaxTenants {
		return fmt.Errorf("aggregate.tenants: %d tenants; at most %d tenants may have rules of their own", len(c.Tenants), MaxTenants)
	}
	for t, l := range c.Tenants {
		n, err := count(l)
		if err != nil {
			return fmt.Errorf("aggregate.tenants[%s]: %w", t, err)
		}
		if g+n > MaxRulesPerTenant {
			return fmt.Errorf("aggregate.tenants[%s]: %d rules and %d global rules; at most %d rules may apply to a tenant", t, n, g, MaxRulesPerTenant)
		}
	}
	return nil
}

// Check compiles data, a rule list, the way vmagent loads -streamAggr.config,
// and returns how many rules it holds. The error is lib/streamaggr's own.
func Check(data []byte) (int, error) {
	n, err := count(data)
	if err != nil || n == 0 {
		return n, err
	}
	as, err := streamaggr.LoadFromData(data, func([]prompb.TimeSeries) {}, nil, "check")
	if err != nil {
		return 0, err
	}
	as.MustStop()
	return n, nil
}

// count reads how many rules data holds: it must be a YAML (or JSON) list, or
// nothing.
func count(data []byte) (int, error) {
	seq, err := sequence(data)
	if err != nil {
		return 0, err
	}
	if seq == nil {
		return 0, nil
	}
	return len(seq.Content), nil
}

// sequence parses data into its list node; nil for an empty document or null.
func sequence(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("cannot parse stream aggregation rules: %w", err)
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	n := doc.Content[0]
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return nil, nil
	case n.Kind != yaml.SequenceNode:
		return nil, errors.New("stream aggregation rules must be a list, as in a vmagent -streamAggr.config file")
	}
	return n, nil
}

// concat returns the rules of a followed by those of b as one YAML list,
// keeping each node as it was written; nil when both are empty.
func concat(a, b List) ([]byte, error) {
	out := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
	for _, l := range []List{a, b} {
		seq, err := sequence(l)
		if err != nil {
			return nil, err
		}
		if seq != nil {
			out.Content = append(out.Content, seq.Content...)
		}
	}
	if len(out.Content) == 0 {
		return nil, nil
	}
	return yaml.Marshal(out)
}

// DefaultFlushTimeout bounds one write of aggregated series to VictoriaMetrics.
const DefaultFlushTimeout = 20 * time.Second
