package main

import (
	"fmt"
	"sync/atomic"

	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
)

// ruleSet holds the compiled relabel rules: the global ones, and for each tenant
// with rules of its own, the global rules followed by the tenant's, followed by
// the rules applied to the tenant through the recommendations API. It is
// immutable; a config reload or an applied rule builds a new one.
type ruleSet struct {
	global  *relabel.Rules
	tenants map[tenant.ID]*relabel.Rules
}

// newRuleSet compiles the config's rules and, after a tenant's own, the
// applied adaptive rules of each tenant in extra (nil: none).
func newRuleSet(c RelabelConfig, extra map[tenant.ID][]relabel.Config) (*ruleSet, error) {
	rs := &ruleSet{tenants: make(map[tenant.ID]*relabel.Rules, len(c.Tenants)+len(extra))}
	var err error
	if len(c.Global) > 0 {
		if rs.global, err = relabel.Compile(c.Global); err != nil {
			return nil, fmt.Errorf("relabel.global: %w", err)
		}
	}
	for t, rules := range c.Tenants {
		all := append(append(append([]relabel.Config{}, c.Global...), rules...), extra[t]...)
		compiled, err := relabel.Compile(all)
		if err != nil {
			return nil, fmt.Errorf("relabel.tenants[%s]: %w", t, err)
		}
		rs.tenants[t] = compiled
	}
	for t, rules := range extra {
		if _, done := c.Tenants[t]; done || len(rules) == 0 {
			continue
		}
		compiled, err := relabel.Compile(append(append([]relabel.Config{}, c.Global...), rules...))
		if err != nil {
			return nil, fmt.Errorf("adaptive rules of tenant %s: %w", t, err)
		}
		rs.tenants[t] = compiled
	}
	return rs, nil
}

// RulesFor implements ingest.RuleSource.
func (rs *ruleSet) RulesFor(t tenant.ID) *relabel.Rules {
	if r, ok := rs.tenants[t]; ok {
		return r
	}
	return rs.global
}

// liveRules lets SIGHUP swap the rules without a lock on the hot path.
type liveRules struct{ p atomic.Pointer[ruleSet] }

func (l *liveRules) RulesFor(t tenant.ID) *relabel.Rules { return l.p.Load().RulesFor(t) }
