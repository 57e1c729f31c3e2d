package seriesusage

import (
	"slices"
	"testing"
)

func TestReplicasShareSelectors(t *testing.T) {
	t.Parallel()
	a, ca := newTestBook(t, Config{})
	b, cb := newTestBook(t, Config{MaxSelectorsPerMetric: 2})
	// Reads through replica a; m's series all reach replica b.
	read(t, a, ca.Now(), tn, `m{env="prod"}`)
	read(t, a, ca.Now(), tn, `m{env="prod"} + m{env="staging"}`)
	read(t, a, ca.Now(), tn, `count({env="dev", __name__="n"})`)
	read(t, b, cb.Now(), tn, `m{env="prod"}`)
	shared, err := a.ExportShared()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.ReplaceRemote(map[string][]byte{"a": shared, "broken": []byte("{")}); err == nil {
		t.Error("a blob that cannot be read: no error")
	}
	writeEnvs(b, tn, "m", 3, "prod", "staging", "dev")
	writeEnvs(b, tn, "n", 3, "prod", "dev")
	cb.epoch.Add(1)
	rep, _ := b.Report(tn, "m")
	if rep.Selected != 6 || rep.NeverSelected != 3 || !slices.Equal(rep.Selectors, []string{`m{env="prod"}`, `m{env="staging"}`}) {
		t.Errorf("m on replica b: %+v", rep)
	}
	// b's own read, and a's two: listed once, counted three times.
	if rep.Coverage.Queries != 3 || rep.Coverage.Selectors != 2 {
		t.Errorf("coverage %+v: want 3 queries, 2 selectors", rep.Coverage)
	}
	if rep, _ := b.Report(tn, "n"); rep.Selected != 3 {
		t.Errorf("n on replica b: %+v, want its dev series selected by a's read", rep)
	}
	// b's own snapshot keeps b's reads only.
	own := b.export()
	if len(own.Tenants) != 1 || len(own.Tenants[0].Metrics["m"].Sets) != 1 || len(own.Tenants[0].Nameless.Sets) != 0 {
		t.Errorf("b's snapshot %+v: want its one read only", own)
	}
	if got := b.selectors.Load(); got != 1 {
		t.Errorf("b keeps %d selectors of its own, want 1", got)
	}

	// The same blobs again change nothing, and cost no parsing.
	if err := b.ReplaceRemote(map[string][]byte{"a": shared, "broken": []byte("{")}); err != nil {
		t.Errorf("unchanged blobs: %v", err)
	}
	// Replica a reads more than b's cap: m counts as all selected on b.
	read(t, a, ca.Now(), tn, `m{env="qa"}`)
	shared, _ = a.ExportShared()
	if err := b.ReplaceRemote(map[string][]byte{"a": shared}); err != nil {
		t.Fatal(err)
	}
	writeEnvs(b, tn, "m", 3, "prod", "staging", "dev")
	cb.epoch.Add(1)
	if rep, _ := b.Report(tn, "m"); !rep.AllSelected || rep.NeverSelected != 0 {
		t.Errorf("over the cap with a's selectors: %+v", rep)
	}

	// Replica a is gone: its selectors go with it.
	if err := b.ReplaceRemote(nil); err != nil {
		t.Fatal(err)
	}
	writeEnvs(b, tn, "m", 3, "prod", "staging", "dev")
	writeEnvs(b, tn, "n", 3, "prod", "dev")
	cb.epoch.Add(1)
	if rep, _ := b.Report(tn, "m"); rep.Selected != 3 || rep.AllSelected || len(rep.Selectors) != 1 {
		t.Errorf("m without a: %+v", rep)
	}
	if rep, _ := b.Report(tn, "n"); rep.Selected != 0 {
		t.Errorf("n without a: %+v", rep)
	}
}
