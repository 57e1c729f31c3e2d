package guard

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func series(metric string, kv ...string) []prompb.Label {
	out := []prompb.Label{{Name: "__name__", Value: metric}}
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, prompb.Label{Name: kv[i], Value: kv[i+1]})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sameLabels(a, b []prompb.Label) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var t1 = tenant.ID{AccountID: 1}

func TestCheckActions(t *testing.T) {
	t.Parallel()
	type step struct {
		user, path string
		want       Outcome
		wantLabels []prompb.Label // nil: unchanged
	}
	tests := []struct {
		name   string
		policy limits.LabelGuard
		dryRun bool
		steps  []step
	}{
		{
			name:   "overflow_value is the default action",
			policy: limits.LabelGuard{MaxValuesPerLabel: 2},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Pass},
				{user: "c", path: "/x", want: Rewritten, wantLabels: series("req", "user", limits.DefaultGuardOverflowValue, "path", "/x")},
				{user: "a", path: "/x", want: Pass},
				{user: "d", path: "/y", want: Rewritten, wantLabels: series("req", "user", limits.DefaultGuardOverflowValue, "path", "/y")},
				{user: "e", path: "/z", want: Rewritten, wantLabels: series("req", "user", limits.DefaultGuardOverflowValue, "path", limits.DefaultGuardOverflowValue)},
				{user: "b", path: "/y", want: Pass},
			},
		},
		{
			name:   "custom overflow value",
			policy: limits.LabelGuard{MaxValuesPerLabel: 1, Action: limits.GuardOverflowValue, OverflowValue: "other"},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Rewritten, wantLabels: series("req", "user", "other", "path", "/x")},
			},
		},
		{
			name:   "drop_label",
			policy: limits.LabelGuard{MaxValuesPerLabel: 2, Action: limits.GuardDropLabel},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Pass},
				{user: "c", path: "/x", want: Rewritten, wantLabels: series("req", "path", "/x")},
				{user: "d", path: "/y", want: Rewritten, wantLabels: series("req", "path", "/y")},
				{user: "e", path: "/z", want: Rewritten, wantLabels: series("req")},
			},
		},
		{
			name:   "drop_series admits nothing from a dropped series",
			policy: limits.LabelGuard{MaxValuesPerLabel: 2, Action: limits.GuardDropSeries},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Pass},
				{user: "c", path: "/y", want: Drop},
				// /y was not admitted by the dropped series, so it still fits.
				{user: "a", path: "/y", want: Pass},
				{user: "a", path: "/z", want: Drop},
				{user: "b", path: "/y", want: Pass},
			},
		},
		{
			name:   "dry run reports and changes nothing",
			policy: limits.LabelGuard{MaxValuesPerLabel: 1, Action: limits.GuardDropLabel},
			dryRun: true,
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Rewritten},
				{user: "c", path: "/x", want: Rewritten},
				{user: "a", path: "/x", want: Pass},
			},
		},
		{
			name:   "dry run drop_series",
			policy: limits.LabelGuard{MaxValuesPerLabel: 1, Action: limits.GuardDropSeries},
			dryRun: true,
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Drop},
			},
		},
		{
			name:   "exempt label",
			policy: limits.LabelGuard{MaxValuesPerLabel: 1, ExemptLabels: []string{"user"}},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/x", want: Pass},
				{user: "c", path: "/y", want: Rewritten, wantLabels: series("req", "user", "c", "path", limits.DefaultGuardOverflowValue)},
			},
		},
		{
			name:   "exempt metric",
			policy: limits.LabelGuard{MaxValuesPerLabel: 1, ExemptMetrics: []string{"req"}},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/y", want: Pass},
			},
		},
		{
			name:   "off",
			policy: limits.LabelGuard{},
			steps: []step{
				{user: "a", path: "/x", want: Pass},
				{user: "b", path: "/y", want: Pass},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := New(Options{Now: newClock().Now})
			buf := make([]prompb.Label, 0, 4)
			for i, s := range tt.steps {
				in := series("req", "user", s.user, "path", s.path)
				orig := append([]prompb.Label(nil), in...)
				out, res := g.Check(t1, &tt.policy, "req", in, buf, tt.dryRun)
				if !sameLabels(in, orig) {
					t.Fatalf("step %d: input modified", i)
				}
				if res.Outcome != s.want {
					t.Fatalf("step %d (%s,%s): outcome %v, want %v", i, s.user, s.path, res.Outcome, s.want)
				}
				if (res.Outcome == Pass) != (res.Label == "") {
					t.Fatalf("step %d: label %q with outcome %v", i, res.Label, res.Outcome)
				}
				want := in
				if s.wantLabels != nil && !tt.dryRun {
					want = s.wantLabels
				}
				if !sameLabels(out, want) {
					t.Fatalf("step %d: labels %v, want %v", i, out, want)
				}
				if res.Outcome == Rewritten && !tt.dryRun {
					buf = out[:0]
				}
			}
		})
	}
}

func TestNameNeverGuarded(t *testing.T) {
	t.Parallel()
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1}
	for i := range 5 {
		m := "metric_" + strconv.Itoa(i)
		if _, res := g.Check(t1, p, m, series(m, "a", "1"), nil, false); res.Outcome != Pass {
			t.Fatalf("metric %d: %v", i, res.Outcome)
		}
	}
	if n := g.TrackedPairs(t1); n != 5 {
		t.Fatalf("tracked %d pairs, want 5 (one per metric, none for __name__)", n)
	}
}

func TestExistingSeriesKeepFlowing(t *testing.T) {
	t.Parallel()
	g := New(Options{Now: newClock().Now})
	p := &limits.LabelGuard{MaxValuesPerLabel: 10}
	old := make([][]prompb.Label, 10)
	for i := range old {
		old[i] = series("req", "user", "old"+strconv.Itoa(i))
		g.Check(t1, p, "req", old[i], nil, false)
	}
	for i := range 1000 {
		g.Check(t1, p, "req", series("req", "user", "new"+strconv.Itoa(i)), nil, false)
		s := old[i%len(old)]
		if out, res := g.Check(t1, p, "req", s, nil, false); res.Outcome != Pass || !sameLabels(out, s) {
			t.Fatalf("old series %v rewritten: %v", s, out)
		}
	}
	if n := g.GuardedCount(t1); n != 1 {
		t.Fatalf("guarded %d, want 1", n)
	}
}

func TestRecoveryAfterWindow(t *testing.T) {
	t.Parallel()
	clk := newClock()
	g := New(Options{Now: clk.Now, Window: time.Hour})
	p := &limits.LabelGuard{MaxValuesPerLabel: 2}
	check := func(user string) Outcome {
		_, res := g.Check(t1, p, "req", series("req", "user", user), nil, false)
		return res.Outcome
	}
	start := clk.Now()
	check("a")
	check("b")
	if got := check("c"); got != Rewritten {
		t.Fatalf("c: %v", got)
	}
	gp := g.Guarded(t1)
	if len(gp) != 1 || gp[0].Metric != "req" || gp[0].Label != "user" || gp[0].AdmittedValues != 2 || gp[0].Rejected != 1 || !gp[0].Since.Equal(start) {
		t.Fatalf("guarded after trip: %+v", gp)
	}

	// Next window: values are admitted again first come; the streak goes on
	// because the previous window had rejections.
	clk.Add(time.Hour)
	if got := check("c"); got != Pass {
		t.Fatalf("c in the next window: %v", got)
	}
	if got := check("d"); got != Pass {
		t.Fatalf("d in the next window: %v", got)
	}
	if got := check("a"); got != Rewritten {
		t.Fatalf("a after c and d took the room: %v", got)
	}
	clk.Add(time.Hour)
	check("a")
	check("b")
	if n := g.GuardedCount(t1); n != 1 {
		t.Fatalf("guarded %d after a window with rejections, want 1", n)
	}
	if gp := g.Guarded(t1); len(gp) != 1 || !gp[0].Since.Equal(start) || gp[0].Rejected != 2 {
		t.Fatalf("streak not carried: %+v", gp)
	}
	// A whole window under the limit releases the pair.
	clk.Add(time.Hour)
	if n := g.GuardedCount(t1); n != 0 {
		t.Fatalf("guarded %d after a clean window, want 0", n)
	}
	check("a")
	if gp := g.Guarded(t1); len(gp) != 0 {
		t.Fatalf("still guarded: %+v", gp)
	}
}

func TestBoundedMemory(t *testing.T) {
	t.Parallel()
	clk := newClock()
	reg := prometheus.NewRegistry()
	g := New(Options{Now: clk.Now, MaxPairsPerTenant: 5, MaxTenants: 2, Registerer: reg})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1}
	for i := range 20 {
		name := "l" + strconv.Itoa(i)
		// Untracked pairs pass, whatever their values.
		for _, v := range []string{"x", "y"} {
			if _, res := g.Check(t1, p, "m", series("m", name, v), nil, false); i >= 5 && res.Outcome != Pass {
				t.Fatalf("untracked pair %s: %v", name, res.Outcome)
			}
		}
	}
	if n := g.TrackedPairs(t1); n != 5 {
		t.Fatalf("tracked %d pairs, want the cap 5", n)
	}
	g.Check(tenant.ID{AccountID: 2}, p, "m", series("m", "a", "1"), nil, false)
	t3 := tenant.ID{AccountID: 3}
	g.Check(t3, p, "m", series("m", "a", "1"), nil, false)
	if _, res := g.Check(t3, p, "m", series("m", "a", "2"), nil, false); res.Outcome != Pass {
		t.Fatalf("untracked tenant guarded: %v", res.Outcome)
	}
	if n := g.TrackedPairs(t3); n != 0 {
		t.Fatalf("tenant beyond the cap tracks %d pairs", n)
	}
	got := gather(t, reg)
	for k, want := range map[string]float64{
		`cardguard_guard_tracked_pairs{tenant="1:0"}`:          5,
		`cardguard_guard_untracked_labels_total{tenant="1:0"}`: 30,
		`cardguard_guarded_labels{tenant="1:0"}`:               5,
		`cardguard_guard_untracked_tenants_total`:              2,
	} {
		if got[k] != want {
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}

	// Two windows later idle pairs and tenants are forgotten, making room.
	clk.Add(2 * time.Hour)
	if _, res := g.Check(t3, p, "m", series("m", "a", "1"), nil, false); res.Outcome != Pass {
		t.Fatalf("t3: %v", res.Outcome)
	}
	if n := g.TrackedPairs(t3); n != 1 {
		t.Fatalf("t3 not tracked after idle tenants expired: %d pairs", n)
	}
	g.Check(t1, p, "m", series("m", "new", "1"), nil, false)
	if n := g.TrackedPairs(t1); n != 1 {
		t.Fatalf("t1 tracks %d pairs after the sweep, want 1", n)
	}
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var lp []string
			for _, l := range m.GetLabel() {
				lp = append(lp, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			k := mf.GetName()
			if len(lp) > 0 {
				k += "{" + strings.Join(lp, ",") + "}"
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			out[k] = v
		}
	}
	return out
}

// TestExplosionIsContained: 100,000 distinct user_id values leave at most
// MaxValuesPerLabel+1 distinct values downstream, and another metric of the
// same tenant goes through untouched.
func TestExplosionIsContained(t *testing.T) {
	t.Parallel()
	const max = 100
	for _, act := range []limits.GuardAction{limits.GuardOverflowValue, limits.GuardDropLabel, limits.GuardDropSeries} {
		t.Run(string(act), func(t *testing.T) {
			t.Parallel()
			g := New(Options{Now: newClock().Now})
			p := &limits.LabelGuard{MaxValuesPerLabel: max, Action: act}
			seen := map[string]bool{}
			var buf []prompb.Label
			for i := range 100_000 {
				in := series("api_requests_total", "user_id", "u"+strconv.Itoa(i), "method", "GET")
				out, res := g.Check(t1, p, "api_requests_total", in, buf, false)
				if res.Outcome == Drop {
					continue
				}
				if res.Outcome == Rewritten {
					buf = out[:0]
				}
				for _, l := range out {
					if l.Name == "user_id" {
						seen[l.Value] = true
					}
				}
				other := series("node_load1", "instance", "host-"+strconv.Itoa(i%50), "job", "node")
				if o, res := g.Check(t1, p, "node_load1", other, nil, false); res.Outcome != Pass || !sameLabels(o, other) {
					t.Fatalf("other metric touched: %v %v", res, o)
				}
			}
			if len(seen) > max+1 {
				t.Fatalf("%d distinct user_id values downstream, want at most %d", len(seen), max+1)
			}
			if len(seen) < max {
				t.Fatalf("only %d distinct user_id values passed, want at least %d", len(seen), max)
			}
			gp := g.Guarded(t1)
			if len(gp) != 1 || gp[0].Label != "user_id" || gp[0].Rejected != 100_000-max {
				t.Fatalf("guarded: %+v", gp)
			}
		})
	}
}

func TestConcurrentChecks(t *testing.T) {
	t.Parallel()
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 50}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]bool{}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf []prompb.Label
			local := map[string]bool{}
			for i := range 5000 {
				in := series("m", "id", strconv.Itoa(w*5000+i))
				out, res := g.Check(t1, p, "m", in, buf, false)
				if res.Outcome == Rewritten {
					buf = out[:0]
				}
				local[out[1].Value] = true
			}
			mu.Lock()
			for k := range local {
				seen[k] = true
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(seen) != 51 {
		t.Fatalf("%d distinct values downstream, want 51", len(seen))
	}
}

func TestCheckZeroAllocsInSteadyState(t *testing.T) {
	g := New(Options{})
	p := &limits.LabelGuard{MaxValuesPerLabel: 1000, ExemptLabels: []string{"le"}}
	in := benchSeries()
	g.Check(t1, p, "http_requests_total", in, nil, false)
	allocs := testing.AllocsPerRun(100, func() {
		if _, res := g.Check(t1, p, "http_requests_total", in, nil, false); res.Outcome != Pass {
			t.Fatal(res.Outcome)
		}
	})
	if allocs != 0 {
		t.Fatalf("Check allocated %v times in steady state", allocs)
	}
}

func benchSeries() []prompb.Label {
	return series("http_requests_total",
		"code", "200", "env", "prod", "instance", "10.1.2.3:8080", "job", "checkout",
		"method", "GET", "namespace", "shop", "pod", "checkout-7f9c4", "team", "payments", "le", "0.5")
}
