package main

import (
	"log/slog"
	"testing"

	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
)

// TestAppliedRulesOfOneTenantDoNotCompile: an applied rule that does not
// compile (stored by a newer replica) takes away its tenant's applied rules
// only; every other tenant keeps its own.
func TestAppliedRulesOfOneTenantDoNotCompile(t *testing.T) {
	t.Parallel()
	good := relabel.DefaultConfig()
	good.Action, good.Regex = relabel.LabelDrop, "user_id"
	bad := relabel.DefaultConfig()
	bad.Action = "shred"
	t1, t2 := tenant.MustParse("1"), tenant.MustParse("2")
	rs := ruleSetWithApplied(RelabelConfig{}, map[tenant.ID][]relabel.Config{t1: {good}, t2: {good, bad}}, slog.New(slog.DiscardHandler))
	if rs == nil {
		t.Fatal("no rule set")
	}
	if rs.RulesFor(t1) == nil {
		t.Error("tenant 1 lost its applied rules to tenant 2's rule that does not compile")
	}
	if rs.RulesFor(t2) != nil {
		t.Error("tenant 2 runs rules that do not compile")
	}
}
