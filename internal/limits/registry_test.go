package limits

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cardguard/cardguard/internal/tenant"
)

func mustRegistry(t *testing.T, defaults Limits, file map[tenant.ID]Limits, store Store) *Registry {
	t.Helper()
	r, err := NewRegistry(defaults, file, store, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRegistryLayers(t *testing.T) {
	t.Parallel()
	def := Default()
	def.MaxSeries = 100
	fileA := def.Clone()
	fileA.MaxSeries, fileA.IngestionRate = 500, 10
	r := mustRegistry(t, def, map[tenant.ID]Limits{tenantA: fileA}, nil)

	if r.For(tenantB).MaxSeries != 100 || r.For(tenantA).MaxSeries != 500 {
		t.Fatal("file override not applied")
	}
	// API override wins over the file, field by field.
	got, err := r.Set(tenantA, json.RawMessage(`{"max_series": 900}`))
	if err != nil || got.MaxSeries != 900 || got.IngestionRate != 10 {
		t.Fatalf("set: %+v %v", got, err)
	}
	if l := r.For(tenantA); l.MaxSeries != 900 || l.IngestionRate != 10 {
		t.Fatalf("For after Set: %+v", l)
	}
	// Merge: a second patch keeps the first field; null removes one.
	if _, err := r.Set(tenantA, json.RawMessage(`{"mode": "dry_run", "label_guard": {"max_values_per_label": 7}}`)); err != nil {
		t.Fatal(err)
	}
	if l := r.For(tenantA); l.MaxSeries != 900 || l.Mode != ModeDryRun || l.LabelGuard.MaxValuesPerLabel != 7 || l.LabelGuard.Action != GuardAggregate {
		t.Fatalf("merged: %+v", l)
	}
	if _, err := r.Set(tenantA, json.RawMessage(`{"max_series": null}`)); err != nil {
		t.Fatal(err)
	}
	if l := r.For(tenantA); l.MaxSeries != 500 || l.Mode != ModeDryRun {
		t.Fatalf("after null: %+v", l)
	}
	o, ok := r.Override(tenantA)
	if !ok || o.File == nil || string(o.API) != `{"label_guard":{"max_values_per_label":7},"mode":"dry_run"}` {
		t.Fatalf("override %+v %s", o, o.API)
	}
	// Replace drops what the patch does not name.
	if _, err := r.Replace(tenantA, json.RawMessage(`{"max_series_per_metric": 3}`)); err != nil {
		t.Fatal(err)
	}
	if l := r.For(tenantA); l.Mode != ModeEnforce || l.MaxSeriesPerMetric != 3 || l.MaxSeries != 500 {
		t.Fatalf("after replace: %+v", l)
	}
	// Reload: new defaults and file; the API override stays on top.
	def2 := Default()
	def2.MaxSeries = 7
	if err := r.Reload(def2, nil); err != nil {
		t.Fatal(err)
	}
	if l := r.For(tenantA); l.MaxSeries != 7 || l.MaxSeriesPerMetric != 3 {
		t.Fatalf("after reload: %+v", l)
	}
	if r.For(tenantB).MaxSeries != 7 || r.Defaults().MaxSeries != 7 {
		t.Fatal("defaults not reloaded")
	}
	bad := Default()
	bad.Mode = "x"
	if err := r.Reload(bad, nil); err == nil || r.Defaults().MaxSeries != 7 {
		t.Fatalf("invalid reload: %v, defaults %+v", err, r.Defaults())
	}
	// Delete falls back.
	if l, err := r.Delete(tenantA); err != nil || l.MaxSeriesPerMetric != 0 || l.MaxSeries != 7 {
		t.Fatalf("delete: %+v %v", l, err)
	}
	if _, err := r.Delete(tenantA); !errors.Is(err, ErrNoOverride) {
		t.Fatalf("second delete: %v", err)
	}
	if len(r.Overrides()) != 0 {
		t.Fatalf("overrides left: %v", r.Overrides())
	}
}

func TestRegistryRejectsInvalid(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, Default(), nil, nil)
	for _, body := range []string{`{"max_series": -1}`, `{"nope": 1}`, `{"nope": null}`, `[]`, `{`, `{"label_guard": {"action": "x"}}`} {
		if _, err := r.Set(tenantA, json.RawMessage(body)); err == nil {
			t.Errorf("%s: accepted", body)
		}
	}
	if _, ok := r.Override(tenantA); ok {
		t.Fatal("a rejected change left an override")
	}
	if _, err := NewRegistry(Limits{}, nil, nil, nil); err == nil {
		t.Fatal("zero Limits (no mode) accepted as defaults")
	}
	badFile := Default()
	badFile.MaxSeries = -3
	if _, err := NewRegistry(Default(), map[tenant.ID]Limits{tenantA: badFile}, nil, nil); err == nil {
		t.Fatal("invalid file override accepted")
	}
}

func TestRegistryForDoesNotShareMutableSlices(t *testing.T) {
	t.Parallel()
	def := Default()
	def.LabelGuard.ExemptLabels = []string{"job"}
	r := mustRegistry(t, def, nil, nil)
	def.LabelGuard.ExemptLabels[0] = "changed"
	d := r.Defaults()
	d.LabelGuard.ExemptLabels[0] = "changed too"
	if got := r.For(tenantA).LabelGuard.ExemptLabels[0]; got != "job" {
		t.Fatalf("registry state changed from outside: %q", got)
	}
}

func TestFileStorePersistence(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	store := NewFileStore(dir)
	r := mustRegistry(t, Default(), nil, store)
	if _, err := r.Set(tenantA, json.RawMessage(`{"max_series": 42}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Set(tenantB, json.RawMessage(`{"ingestion_rate": 2.5}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Delete(tenantB); err != nil {
		t.Fatal(err)
	}
	r2 := mustRegistry(t, Default(), nil, NewFileStore(dir))
	if r2.For(tenantA).MaxSeries != 42 || r2.For(tenantB).IngestionRate != 0 {
		t.Fatalf("reloaded: A %+v B %+v", r2.For(tenantA), r2.For(tenantB))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 || entries[0].Name() != OverridesFile {
		t.Fatalf("directory holds %v, want only %s", entries, OverridesFile)
	}
}

func TestFileStoreCorruptFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, OverridesFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := NewRegistry(Default(), nil, NewFileStore(dir), nil); err == nil {
		t.Fatal("corrupt store accepted")
	}
}

// failingStore fails every Save.
type failingStore struct{}

func (failingStore) Load() (map[tenant.ID]json.RawMessage, error) { return nil, nil }
func (failingStore) Save(tenant.ID, json.RawMessage) error        { return errors.New("disk full") }

func TestRegistryStoreFailureChangesNothing(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, Default(), nil, failingStore{})
	_, err := r.Set(tenantA, json.RawMessage(`{"max_series": 1}`))
	var fe *FieldError
	if err == nil || errors.As(err, &fe) {
		t.Fatalf("want a store error, got %v", err)
	}
	if r.For(tenantA).MaxSeries != 0 {
		t.Fatal("unpersisted change applied")
	}
}

func TestRegistryApply(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	r1 := mustRegistry(t, Default(), nil, NewFileStore(dir))
	r2 := mustRegistry(t, Default(), nil, NewFileStore(dir))
	if _, err := r1.Set(tenantA, json.RawMessage(`{"max_series": 5}`)); err != nil {
		t.Fatal(err)
	}
	if r2.For(tenantA).MaxSeries != 0 {
		t.Fatal("r2 changed before reloading")
	}
	if err := r2.ReloadStore(); err != nil || r2.For(tenantA).MaxSeries != 5 {
		t.Fatalf("ReloadStore: %v, %+v", err, r2.For(tenantA))
	}
	// Something invalid from elsewhere is shown and not applied.
	r2.Apply(map[tenant.ID]json.RawMessage{tenantA: json.RawMessage(`{"max_series": -5}`), tenantB: json.RawMessage(`{"max_series": 6}`)})
	if r2.For(tenantA).MaxSeries != 0 || r2.For(tenantB).MaxSeries != 6 {
		t.Fatalf("apply: A %d B %d", r2.For(tenantA).MaxSeries, r2.For(tenantB).MaxSeries)
	}
	if o := r2.Overrides()[tenantA]; o.APIError == "" {
		t.Fatalf("no error shown for the invalid override: %+v", o)
	}
}

func TestRegistryConcurrentReadsAndWrites(t *testing.T) {
	t.Parallel()
	r := mustRegistry(t, Default(), nil, nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range 200 {
			if _, err := r.Set(tenantA, json.RawMessage(`{"max_series": `+itoa(i+1)+`}`)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for range 2000 {
			if l := r.For(tenantA); l.MaxSeries < 0 || l.Mode != ModeEnforce {
				t.Error("torn limits")
				return
			}
		}
	}()
	wg.Wait()
	if r.For(tenantA).MaxSeries != 200 {
		t.Fatalf("last write lost: %d", r.For(tenantA).MaxSeries)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

func BenchmarkRegistryFor(b *testing.B) {
	r, _ := NewRegistry(Default(), map[tenant.ID]Limits{tenantA: Default()}, nil, nil)
	b.ReportAllocs()
	for b.Loop() {
		if r.For(tenantA) == nil {
			b.Fatal("nil")
		}
	}
}
