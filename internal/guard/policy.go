// Package guard is the automatic high-cardinality label guard: per tenant, per
// metric and label, it admits at most MaxValuesPerLabel distinct values in a
// window and rewrites or drops what comes beyond.
//
// # Semantics
//
// For every (metric, label) pair of a tenant the guard keeps the exact set of
// value hashes (xxhash) admitted in the current window. A value already in the
// set passes. A new value is admitted, first come, while the set holds fewer
// than MaxValuesPerLabel values. Any other value makes the pair "guarded" and the
// policy's action applies to that series:
//
//   - overflow_value: the label's value becomes OverflowValue;
//   - drop_label: the label is removed from the series;
//   - drop_series: the series is dropped, and none of its other values are
//     admitted (a dropped series does not take room from other labels).
//
// So a guarded label contributes at most MaxValuesPerLabel+1 distinct values
// (the admitted ones and the overflow marker) downstream per window.
// `__name__`, ExemptLabels and ExemptMetrics are never guarded.
//
// Series that existed before the guard tripped keep flowing unchanged: their
// values were admitted when first seen, and an admitted value always passes for
// the rest of the window. Windows are aligned to multiples of Options.Window on
// the injected clock; at each boundary the admitted sets start empty and values
// are admitted again first come, whether old or new. Under a sustained
// explosion an old series whose value arrives after the set filled up again is
// therefore rewritten in the new window; once distinct values stay under the
// threshold, everything is admitted again as soon as the window turns.
//
// Two generations of counters are kept per pair: the current window and the one
// before. A pair is reported as guarded from its first rejection until a whole
// window ends without rejection; only then does the guard release it (Since is
// cleared). Pairs not seen in the current or previous window are forgotten.
//
// # Memory
//
// Per tenant at most Options.MaxPairsPerTenant pairs are tracked, each with at
// most MaxValuesPerLabel hashes; at most Options.MaxTenants tenants are tracked.
// Pairs and tenants beyond the caps pass unguarded and are counted in
// cardguard_guard_untracked_pairs_total and cardguard_guard_untracked_tenants_total.
// Worst case memory is about MaxTenants × MaxPairsPerTenant × MaxValuesPerLabel ×
// 16 bytes, so keep the caps realistic.
package guard

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Action is what the guard does to a series with a value beyond the limit.
type Action string

// Actions.
const (
	OverflowValue Action = "overflow_value"
	DropLabel     Action = "drop_label"
	DropSeries    Action = "drop_series"
)

// DefaultOverflowValue replaces guarded values under the overflow_value action.
const DefaultOverflowValue = "__cardguard_overflow__"

// Policy configures the guard for one tenant. The zero value is off. It is a
// plain value: copy it freely; Check only reads it.
type Policy struct {
	// MaxValuesPerLabel is the number of distinct values a label of one metric
	// may have in a window; 0 turns the guard off.
	MaxValuesPerLabel int `yaml:"max_values_per_label" json:"max_values_per_label"`
	// Action applies to series whose value is beyond the limit; empty means
	// overflow_value.
	Action Action `yaml:"action,omitempty" json:"action,omitempty"`
	// OverflowValue is the marker for overflow_value; empty means
	// DefaultOverflowValue.
	OverflowValue string `yaml:"overflow_value,omitempty" json:"overflow_value,omitempty"`
	// ExemptLabels are label names never guarded.
	ExemptLabels []string `yaml:"exempt_labels,omitempty" json:"exempt_labels,omitempty"`
	// ExemptMetrics are metric names whose labels are never guarded.
	ExemptMetrics []string `yaml:"exempt_metrics,omitempty" json:"exempt_metrics,omitempty"`
}

// Validate reports a policy the guard cannot apply.
func (p *Policy) Validate() error {
	if p.MaxValuesPerLabel < 0 {
		return fmt.Errorf("guard max_values_per_label is %d; want 0 (off) or more", p.MaxValuesPerLabel)
	}
	switch p.Action {
	case "", OverflowValue, DropLabel, DropSeries:
	default:
		return fmt.Errorf("unknown guard action %q; want %s, %s or %s", truncate(string(p.Action)), OverflowValue, DropLabel, DropSeries)
	}
	if !utf8.ValidString(p.OverflowValue) {
		return errors.New("guard overflow_value is not valid UTF-8")
	}
	for _, l := range p.ExemptLabels {
		if l == "" {
			return errors.New("guard exempt_labels holds an empty name")
		}
	}
	for _, m := range p.ExemptMetrics {
		if m == "" {
			return errors.New("guard exempt_metrics holds an empty name")
		}
	}
	return nil
}

func (p *Policy) action() Action {
	if p.Action == "" {
		return OverflowValue
	}
	return p.Action
}

func (p *Policy) overflowValue() string {
	if p.OverflowValue == "" {
		return DefaultOverflowValue
	}
	return p.OverflowValue
}

func (p *Policy) exemptLabel(name string) bool {
	for _, l := range p.ExemptLabels {
		if l == name {
			return true
		}
	}
	return false
}

func (p *Policy) exemptMetric(name string) bool {
	for _, m := range p.ExemptMetrics {
		if m == name {
			return true
		}
	}
	return false
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
