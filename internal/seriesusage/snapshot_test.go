package seriesusage

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	b, c := newTestBook(t, Config{Retention: 48 * time.Hour, MaxSelectorsPerMetric: 3})
	old := c.Now()
	read(t, b, old, tn, `m{env="old"}`) // expires before the restart ends
	c.add(30 * time.Hour)
	read(t, b, c.Now(), tn, `sum(m{env=~"prod|staging", job!=""})`)
	read(t, b, c.Now(), tn, `m{env=~"prod|staging", job!=""} or m`)
	read(t, b, c.Now(), tn, `count({env="dev", __name__=~"m|n"})`)
	p := filepath.Join(t.TempDir(), "series_usage.json")
	if err := b.SaveFile(p); err != nil {
		t.Fatal(err)
	}

	// A replica restarting a day later, with a lower cap.
	b2, c2 := newTestBook(t, Config{Retention: 48 * time.Hour, MaxSelectorsPerMetric: 1})
	c2.now = c.Now().Add(24 * time.Hour)
	if err := b2.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	rep, ok := b2.Report(tn, "m")
	if !ok {
		t.Fatal("no report after restore")
	}
	// m{env="old"} expired; of m's two live sets one fits the cap of 1, the
	// other counts as overflow: m counts as all selected.
	if len(rep.Selectors) != 2 || !rep.AllSelected || rep.SelectorOverflow != 1 {
		t.Errorf("restored with a lower cap: %+v", rep)
	}
	if !rep.Coverage.RecordingSince.Equal(old) || rep.Coverage.Queries != 3 {
		t.Errorf("coverage %+v: want recording since %s, 3 queries", rep.Coverage, old)
	}

	// The same cap: every live set back, and matching as before.
	b3, c3 := newTestBook(t, Config{Retention: 48 * time.Hour, MaxSelectorsPerMetric: 3})
	c3.now = c2.now
	if err := b3.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	writeEnvs(b3, tn, "n", 2, "prod", "dev")
	writeEnvs(b3, tn, "m", 2, "qa")
	c3.epoch.Add(1)
	rep, _ = b3.Report(tn, "m")
	want := []string{`m{env=~"prod|staging",job!=""}`, `m{}`, `{__name__=~"m|n",env="dev"}`}
	if !slices.Equal(rep.Selectors, want) || rep.Selected != 2 {
		t.Errorf("m after restore: selectors %q, selected %d; want %q and 2 (m{} selects all)", rep.Selectors, rep.Selected, want)
	}
	if rep, _ := b3.Report(tn, "n"); rep.Selected != 2 || rep.NeverSelected != 2 {
		t.Errorf("n after restore: %+v, want the 2 dev series selected", rep)
	}
}

func TestSnapshotBadFiles(t *testing.T) {
	t.Parallel()
	b, _ := newTestBook(t, Config{})
	dir := t.TempDir()
	if err := b.LoadFile(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	for name, body := range map[string]string{
		"garbage":    `{"version":`,
		"version":    `{"version": 99}`,
		"bad tenant": `{"version": 1, "tenants": [{"tenant": "x:y"}]}`,
	} {
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := b.LoadFile(p); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	// Matchers that do not compile, or with an unknown operator, are left out.
	p := filepath.Join(dir, "g")
	body := `{"version": 1, "tenants": [{"tenant": "1", "metrics": {"m": {"sets": [
		{"matchers": [["env", "=~", "("]], "first": "2026-12-01T00:00:00Z", "last": "2026-12-01T00:00:00Z"},
		{"matchers": [["env", "<>", "x"]], "first": "2026-12-01T00:00:00Z", "last": "2026-12-01T00:00:00Z"},
		{"matchers": [["env", "=", "x"]], "first": "2026-12-01T00:00:00Z", "last": "2026-12-01T00:00:00Z"}]}}}]}`
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := b.LoadFile(p); err != nil {
		t.Fatal(err)
	}
	if rep, _ := b.Report(tn, "m"); !slices.Equal(rep.Selectors, []string{`m{env="x"}`}) {
		t.Errorf("selectors %q", rep.Selectors)
	}
}
