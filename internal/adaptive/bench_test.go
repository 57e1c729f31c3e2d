package adaptive

import (
	"context"
	"sync/atomic"
	"testing"
)

// BenchmarkObserve is the pipeline's cost of the engine per series observed:
// with no preview running, and with one preview of another metric and one of
// this metric measuring.
func BenchmarkObserve(b *testing.B) {
	s := workload()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(b, s, &epoch, queriesUsing())
	ls := s["app_requests"][0]
	h := hashOf(ls)
	b.Run("idle", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.Observe(tn, "app_requests", ls, h)
		}
	})
	if _, err := e.StartPreview(context.Background(), tn, "node_cpu", RuleSpec{}); err != nil {
		b.Fatal(err)
	}
	b.Run("other metric previewed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.Observe(tn, "app_requests", ls, h)
		}
	})
	if _, err := e.StartPreview(context.Background(), tn, "app_requests", RuleSpec{}); err != nil {
		b.Fatal(err)
	}
	epoch.Add(1)
	b.Run("previewed", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.Observe(tn, "app_requests", ls, h)
		}
	})
}

// FuzzRuleSpec: whatever an admin sends as a rule, the engine answers with a
// rule or an error, never a panic, and never removes __name__ or le.
func FuzzRuleSpec(f *testing.F) {
	f.Add("aggregate", "pod,le", "")
	f.Add("drop_series", "", `{__name__="app_requests",env="dev"}`)
	f.Add("drop_series", "", `{__name__=~".+"}`)
	f.Add("drop", "", "")
	s := workload()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(f, s, &epoch, queriesUsing())
	f.Fuzz(func(t *testing.T, kind, lbls, match string) {
		spec := RuleSpec{Kind: kind, Labels: splitComma(lbls), Match: match}
		got, _, err := e.resolve(context.Background(), tn, "app_requests", spec)
		if err != nil {
			return
		}
		for _, l := range got.Labels {
			if l == "__name__" || l == "le" || l == "team" {
				t.Fatalf("%+v removes %s", spec, l)
			}
		}
		rule, _, _ := ruleFor("app_requests", got.Kind, got.Labels, got.Match, Scope{})
		if len(rule.If) != 1 {
			t.Fatalf("rule without a selector: %+v", rule)
		}
	})
}
