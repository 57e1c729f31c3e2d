package streamrules

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/tenant"
)

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, rules string
		n           int
		err         string
	}{
		{"empty", "", 0, ""},
		{"null", "null\n", 0, ""},
		{"empty list", "[]", 0, ""},
		{"yaml", "- match: req_total\n  interval: 1m\n  without: [user_id]\n  outputs: [total]\n", 1, ""},
		{"json", `[{"match": "req_total", "interval": "1m", "by": ["job"], "outputs": ["total", "count_series"]}]`, 1, ""},
		{"two", "- interval: 1m\n  outputs: [last]\n- interval: 2m\n  outputs: [max]\n  keep_metric_names: true\n", 2, ""},
		{"not a list", "match: x\ninterval: 1m\n", 0, "must be a list"},
		{"not yaml", "- [", 0, "cannot parse"},
		{"unknown key", "- interval: 1m\n  outputs: [total]\n  keep_input: true\n", 0, "keep_input"},
		{"short interval", "- interval: 500ms\n  outputs: [total]\n", 0, "cannot be smaller than 1s"},
		{"no outputs", "- interval: 1m\n", 0, "outputs"},
		{"bad output", "- interval: 1m\n  outputs: [median]\n", 0, "unsupported output"},
		{"by and without", "- interval: 1m\n  by: [a]\n  without: [b]\n  outputs: [total]\n", 0, "cannot be set simultaneously"},
		{"keep names, two outputs", "- interval: 1m\n  outputs: [min, max]\n  keep_metric_names: true\n", 0, "single entry"},
		{"bad match", "- match: 'x{'\n  interval: 1m\n  outputs: [total]\n", 0, "match"},
		{"dedup over interval", "- interval: 1m\n  dedup_interval: 2m\n  outputs: [total]\n", 0, "cannot exceed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n, err := Check([]byte(tt.rules))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("error %v, want one with %q", err, tt.err)
			case n != tt.n:
				t.Fatalf("%d rules, want %d", n, tt.n)
			}
		})
	}
}

// TestConfigDecodes: the section decodes strictly, keeps each list as it was
// written, and a bad rule fails the file with its line.
func TestConfigDecodes(t *testing.T) {
	t.Parallel()
	src := `
global:
  - match: 'up'
    interval: 1m
    outputs: [count_series]
    keep_metric_names: yes
tenants:
  "1":
    - match: '{__name__=~"req_total|rpc_total"}'
      interval: 30s
      without: [user_id]
      outputs: [total]
`
	var c Config
	dec := yaml.NewDecoder(strings.NewReader(src))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// yes stays yes: YAML 1.1's boolean, as vmagent (yaml.v2) reads it.
	if !bytes.Contains(c.Global, []byte("keep_metric_names: yes")) {
		t.Errorf("global rules changed on the way:\n%s", c.Global)
	}
	if l := c.Tenants[tenant.MustParse("1")]; !bytes.Contains(l, []byte(`match: '{__name__=~"req_total|rpc_total"}'`)) {
		t.Errorf("tenant rules changed on the way:\n%s", l)
	}
	both, err := concat(c.Global, c.Tenants[tenant.MustParse("1")])
	if err != nil {
		t.Fatal(err)
	}
	if n, err := Check(both); err != nil || n != 2 {
		t.Errorf("global and tenant rules together: %d rules, %v", n, err)
	}

	bad := "tenants:\n  \"1\":\n    - interval: 1m\n      outputs: [totals]\n"
	err = yaml.Unmarshal([]byte(bad), &c)
	if err == nil || !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), "totals") {
		t.Errorf("bad rule: %v", err)
	}
}

func TestConfigCaps(t *testing.T) {
	t.Parallel()
	rule := "- interval: 1m\n  outputs: [total]\n"
	many := List(strings.Repeat(rule, MaxRulesPerTenant))
	c := Config{Global: List(rule), Tenants: map[tenant.ID]List{tenant.MustParse("1"): many}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "at most 50 rules") {
		t.Errorf("51 rules for tenant 1: %v", err)
	}
	c = Config{Tenants: map[tenant.ID]List{}}
	for i := range MaxTenants + 1 {
		c.Tenants[tenant.ID{AccountID: uint32(i)}] = List(rule)
	}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "at most 1000 tenants") {
		t.Errorf("1001 tenants: %v", err)
	}
}

// sink collects what the rules write.
type sink struct {
	mu  sync.Mutex
	got map[tenant.ID][]prompb.TimeSeries
}

func (s *sink) Write(_ context.Context, t tenant.ID, tss []prompb.TimeSeries) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[tenant.ID][]prompb.TimeSeries{}
	}
	for _, ts := range tss {
		// The series are the aggregator's: copy.
		c := prompb.TimeSeries{Samples: append([]prompb.Sample(nil), ts.Samples...)}
		for _, l := range ts.Labels {
			c.Labels = append(c.Labels, prompb.Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)})
		}
		s.got[t] = append(s.got[t], c)
	}
	return nil
}

// last returns the latest value written for metric of t, and whether there is one.
func (s *sink) last(t tenant.ID, metric string) (float64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := 0.0, false
	for _, ts := range s.got[t] {
		for _, l := range ts.Labels {
			if l.Name == "__name__" && l.Value == metric && len(ts.Samples) > 0 {
				v, ok = ts.Samples[len(ts.Samples)-1].Value, true
			}
		}
	}
	return v, ok
}

func counters(metric string, users int, value float64) []prompb.TimeSeries {
	now := time.Now().UnixMilli()
	tss := make([]prompb.TimeSeries, 0, users+1)
	for u := range users {
		tss = append(tss, prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: metric}, {Name: "job", Value: "app"}, {Name: "user_id", Value: fmt.Sprint(u)}},
			Samples: []prompb.Sample{{Value: value, Timestamp: now}},
		})
	}
	// Another metric, which the rule does not match.
	tss = append(tss, prompb.TimeSeries{
		Labels:  []prompb.Label{{Name: "__name__", Value: "other"}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: now}},
	})
	return tss
}

func newRules(t *testing.T, file Config, store Store) (*Rules, *sink) {
	t.Helper()
	s := &sink{}
	r, err := New(file, Options{Sink: s, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r, s
}

// hourRule's interval lasts the test: only Stop flushes. Its staleness
// interval is longer than the time to the end of the first, unaligned
// interval plus one, which is when lib/streamaggr stamps a flush on stop:
// with the default (the interval) it would drop the state as stale.
const hourRule = "- match: req_total\n  interval: 1h\n  staleness_interval: 3h\n  without: [user_id]\n  outputs: [total]\n"

// TestRulesAggregateAndFlushOnStop: a tenant's rule takes the series it
// matches and leaves the others; Stop writes what the interval held so far.
func TestRulesAggregateAndFlushOnStop(t *testing.T) {
	t.Parallel()
	t1, t2 := tenant.MustParse("1"), tenant.MustParse("2")
	r, s := newRules(t, Config{Tenants: map[tenant.ID]List{t1: List(hourRule)}}, NewFileStore(t.TempDir()))
	if !r.Has(t1) || r.Has(t2) {
		t.Fatalf("Has: tenant 1 %v, tenant 2 %v", r.Has(t1), r.Has(t2))
	}
	var matched []uint32
	for i, v := range []float64{10, 13, 20} {
		tss := counters("req_total", 5, v)
		matched = r.Push(t1, tss, matched)
		if len(matched) != 6 || matched[0] != 1 || matched[4] != 1 || matched[5] != 0 {
			t.Fatalf("push %d: matched %v", i, matched)
		}
		time.Sleep(5 * time.Millisecond) // keep samples in order
	}
	if m := r.Push(t2, counters("req_total", 5, 1), nil); m[0] != 0 {
		t.Fatalf("tenant 2 has no rules, yet %v", m)
	}
	r.Stop()
	// Five inputs, each up 3 then 7 after its baseline.
	if v, ok := s.last(t1, "req_total:1h_without_user_id_total"); !ok || v != 50 {
		t.Errorf("output after stop: %v, %v; want 50", v, ok)
	}
	if r.Has(t1) {
		t.Error("stopped rules still take series")
	}
}

// TestRulesAPIOverFile: rules set through the API win over the file's, are
// stored, and a Delete brings the file's back; a new Rules over the same store
// starts with them.
func TestRulesAPIOverFile(t *testing.T) {
	t.Parallel()
	t1 := tenant.MustParse("1")
	dir := t.TempDir()
	r, _ := newRules(t, Config{Tenants: map[tenant.ID]List{t1: List(hourRule)}}, NewFileStore(dir))
	gauge := "- match: g\n  interval: 1h\n  outputs: [max]\n"
	if err := r.Set(t1.String(), []byte(gauge)); err != nil {
		t.Fatal(err)
	}
	if l, src, _ := r.Get(t1.String()); src != "api" || string(l) != gauge {
		t.Errorf("Get: %q from %s", l, src)
	}
	if m := r.Push(t1, counters("req_total", 2, 1), nil); m[0] != 0 {
		t.Errorf("the file's rule still runs: %v", m)
	}
	r2, _ := newRules(t, Config{}, NewFileStore(dir))
	if l, src, _ := r2.Get(t1.String()); src != "api" || string(l) != gauge {
		t.Errorf("after a restart: %q from %s", l, src)
	}
	if err := r.Delete(t1.String()); err != nil {
		t.Fatal(err)
	}
	if err := r.Delete(t1.String()); err != ErrNotSet {
		t.Errorf("second delete: %v", err)
	}
	if _, src, _ := r.Get(t1.String()); src != "file" {
		t.Errorf("after delete the rules come from %q", src)
	}
	if m := r.Push(t1, counters("req_total", 2, 1), nil); m[0] != 1 {
		t.Errorf("the file's rule is not back: %v", m)
	}
	// Refused: a bad list, and one over the cap.
	var le *LimitError
	if err := r.Set(t1.String(), []byte("- interval: 1m\n")); !asLimit(err, &le) {
		t.Errorf("bad list: %v", err)
	}
	if err := r.Set(GlobalKey, bytes.Repeat([]byte("- interval: 1m\n  outputs: [total]\n"), MaxRulesPerTenant)); !asLimit(err, &le) {
		t.Errorf("50 global rules beside tenant 1's: %v", err)
	}
}

func asLimit(err error, le **LimitError) bool {
	e, ok := err.(*LimitError)
	*le = e
	return ok
}

// TestGlobalRulesPerTenant: global rules run for every tenant that writes,
// each with its own aggregates, written to that tenant.
func TestGlobalRulesPerTenant(t *testing.T) {
	t.Parallel()
	r, s := newRules(t, Config{Global: List(hourRule)}, NewFileStore(t.TempDir()))
	t1, t2 := tenant.MustParse("1"), tenant.MustParse("2:3")
	for _, tn := range []tenant.ID{t1, t2} {
		if !r.Has(tn) {
			t.Fatalf("tenant %s has no rules", tn)
		}
	}
	r.Push(t1, counters("req_total", 3, 1), nil)
	r.Push(t2, counters("req_total", 1, 1), nil)
	time.Sleep(5 * time.Millisecond)
	r.Push(t1, counters("req_total", 3, 2), nil)
	r.Push(t2, counters("req_total", 1, 5), nil)
	r.Stop()
	if v, _ := s.last(t1, "req_total:1h_without_user_id_total"); v != 3 {
		t.Errorf("tenant 1: %v, want 3", v)
	}
	if v, _ := s.last(t2, "req_total:1h_without_user_id_total"); v != 4 {
		t.Errorf("tenant 2:3: %v, want 4", v)
	}
}

// TestReloadFromSharedStore: a change one replica stores reaches another's
// Reload; a change in flight is not undone by a reload that read before it.
func TestReloadFromSharedStore(t *testing.T) {
	t.Parallel()
	store := NewFileStore(t.TempDir())
	a, _ := newRules(t, Config{}, store)
	b, _ := newRules(t, Config{}, store)
	t1 := tenant.MustParse("1")
	if err := a.Set(t1.String(), []byte(hourRule)); err != nil {
		t.Fatal(err)
	}
	if b.Has(t1) {
		t.Fatal("replica b has the rule before reloading")
	}
	if err := b.Reload(); err != nil {
		t.Fatal(err)
	}
	if !b.Has(t1) {
		t.Fatal("replica b does not have the rule after reloading")
	}
	if err := a.Delete(t1.String()); err != nil {
		t.Fatal(err)
	}
	if err := b.Reload(); err != nil || b.Has(t1) {
		t.Fatalf("replica b after the delete: %v, has %v", err, b.Has(t1))
	}
}

// TestOutputWithinInterval: with a 1s interval the aggregate reaches the sink
// while the rules run, under vmagent's output name.
func TestOutputWithinInterval(t *testing.T) {
	t.Parallel()
	t1 := tenant.MustParse("1")
	rule := "- match: req_total\n  interval: 1s\n  staleness_interval: 1m\n  without: [user_id]\n  outputs: [total]\n"
	r, s := newRules(t, Config{Tenants: map[tenant.ID]List{t1: List(rule)}}, NewFileStore(t.TempDir()))
	r.Push(t1, counters("req_total", 4, 1), nil)
	time.Sleep(5 * time.Millisecond)
	r.Push(t1, counters("req_total", 4, 3), nil)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if v, ok := s.last(t1, "req_total:1s_without_user_id_total"); ok && v == 8 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	v, ok := s.last(t1, "req_total:1s_without_user_id_total")
	t.Fatalf("output %v, %v; want 8 within 5s", v, ok)
}
