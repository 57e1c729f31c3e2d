package guard

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Defaults for Options.
const (
	DefaultWindow            = time.Hour
	DefaultMaxTenants        = 1000
	DefaultMaxPairsPerTenant = 20000
)

const numShards = 16

// Options configure a Guard. Zero fields take the defaults.
type Options struct {
	// Window is the length of a generation; windows are aligned to multiples
	// of it on the clock.
	Window time.Duration
	// MaxTenants caps the tenants tracked.
	MaxTenants int
	// MaxPairsPerTenant caps the (metric, label) pairs tracked per tenant.
	MaxPairsPerTenant int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Registerer receives the guard's metrics; nil registers nothing.
	Registerer prometheus.Registerer
}

// Outcome is the guard's decision for one series.
type Outcome uint8

// Outcomes.
const (
	// Pass: the series goes on unchanged.
	Pass Outcome = iota
	// Rewritten: overflow_value or drop_label applied; out holds the new labels.
	Rewritten
	// Drop: drop_series applies; the series must not be forwarded.
	Drop
)

func (o Outcome) String() string {
	switch o {
	case Rewritten:
		return "rewritten"
	case Drop:
		return "drop"
	}
	return "pass"
}

// Result says what Check decided.
type Result struct {
	Outcome Outcome
	// Label is the name of the first label beyond its limit, "" on Pass. It
	// points into the labels passed to Check: clone it to keep it.
	Label string
	// Action is the policy's action that was (or in dry run would be) applied.
	Action limits.GuardAction
}

// Guard tracks admitted label values per tenant. It is safe for concurrent use.
type Guard struct {
	window     int64 // nanoseconds
	maxTenants int
	maxPairs   int64
	now        func() time.Time

	mu      sync.RWMutex
	tenants map[tenant.ID]*tenantState

	untrackedTenants prometheus.Counter
}

type tenantState struct {
	maxPairs  int64
	pairs     atomic.Int64  // tracked pairs
	untracked atomic.Uint64 // label checks beyond the pair cap
	lastGen   atomic.Int64  // last generation a Check saw
	sweptGen  atomic.Int64
	shards    [numShards]shard
}

type shard struct {
	mu      sync.Mutex
	metrics map[string]*metricState
}

type metricState struct {
	name   string
	labels map[string]*pair
}

// pair is the state of one (metric, label). Guarded by its shard's mutex.
type pair struct {
	metric, label string
	gen           int64 // generation of admitted
	admitted      map[uint64]struct{}
	rejectedGen   uint64    // series rejected in generation gen
	rejected      uint64    // series rejected since `since`
	since         time.Time // start of the guarded streak; zero when released
}

// New returns a Guard and registers its metrics on opts.Registerer.
func New(opts Options) *Guard {
	g := &Guard{
		window:     int64(opts.Window),
		maxTenants: opts.MaxTenants,
		maxPairs:   int64(opts.MaxPairsPerTenant),
		now:        opts.Now,
		tenants:    make(map[tenant.ID]*tenantState),
	}
	if g.window <= 0 {
		g.window = int64(DefaultWindow)
	}
	if g.maxTenants <= 0 {
		g.maxTenants = DefaultMaxTenants
	}
	if g.maxPairs <= 0 {
		g.maxPairs = DefaultMaxPairsPerTenant
	}
	if g.now == nil {
		g.now = time.Now
	}
	if opts.Registerer != nil {
		g.untrackedTenants = promauto.With(opts.Registerer).NewCounter(prometheus.CounterOpts{
			Name: "cardguard_guard_untracked_tenants_total",
			Help: "Checks of tenants beyond the guard's tenant cap; their series pass unguarded.",
		})
		opts.Registerer.MustRegister(newCollector(g))
	}
	return g
}

func (g *Guard) gen(now time.Time) int64 { return now.UnixNano() / g.window }

// tenant returns the state of tn, creating it within the cap; nil beyond it.
func (g *Guard) tenant(tn tenant.ID, gen int64) *tenantState {
	g.mu.RLock()
	ts := g.tenants[tn]
	g.mu.RUnlock()
	if ts != nil {
		return ts
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if ts = g.tenants[tn]; ts != nil {
		return ts
	}
	if len(g.tenants) >= g.maxTenants {
		// Forget tenants that sent nothing in this or the previous window. A
		// Check still holding a forgotten state loses what it records; the
		// next one starts afresh.
		for id, t := range g.tenants {
			if t.lastGen.Load() < gen-1 {
				delete(g.tenants, id)
			}
		}
		if len(g.tenants) >= g.maxTenants {
			if g.untrackedTenants != nil {
				g.untrackedTenants.Inc()
			}
			return nil
		}
	}
	ts = &tenantState{maxPairs: g.maxPairs}
	ts.lastGen.Store(gen)
	ts.sweptGen.Store(gen)
	for i := range ts.shards {
		ts.shards[i].metrics = make(map[string]*metricState)
	}
	g.tenants[tn] = ts
	return ts
}

func (g *Guard) lookup(tn tenant.ID) *tenantState {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.tenants[tn]
}

// Check applies the label guard policy p of tenant tn to one series of metric with labels
// (__name__ included, any order). buf is caller-owned scratch that must not
// overlap labels.
//
// On Pass out is labels. On Rewritten out is built in buf (grown if needed;
// keep it as the next call's buf) and its strings point into labels' strings,
// except the overflow marker. On Drop out is labels and the series must not be
// forwarded. In dry run the decision is reported and counted the same way but
// out is always labels.
//
// A nil p or p.MaxValuesPerLabel <= 0 passes everything. Check allocates only
// when it tracks something new or rewrites a series. It keeps clones of the
// metric and label names, never the values (only their hashes).
func (g *Guard) Check(tn tenant.ID, p *limits.LabelGuard, metric string, labels []prompb.Label, buf []prompb.Label, dryRun bool) (out []prompb.Label, res Result) {
	if p == nil || p.MaxValuesPerLabel <= 0 || slices.Contains(p.ExemptMetrics, metric) {
		return labels, Result{}
	}
	now := g.now()
	gen := g.gen(now)
	ts := g.enter(tn, gen)
	if ts == nil {
		return labels, Result{}
	}
	return ts.check(p, gen, now, metric, labels, buf, dryRun)
}

// enter returns the state of tn for generation gen, sweeping it once per
// generation; nil beyond the tenant cap.
func (g *Guard) enter(tn tenant.ID, gen int64) *tenantState {
	ts := g.tenant(tn, gen)
	if ts == nil {
		return nil
	}
	if ts.lastGen.Load() != gen {
		ts.lastGen.Store(gen)
	}
	if sg := ts.sweptGen.Load(); sg != gen && ts.sweptGen.CompareAndSwap(sg, gen) {
		ts.sweep(gen)
	}
	return ts
}

// Checker is Check bound to one tenant, policy and moment: what one
// remote-write request needs, so that the tenant lookup and the clock are paid
// once per request instead of once per series. It is a small value, valid while
// the Guard is. Callers that remember which series passed in the current Window
// (a series that passed passes again until the window ends, because admitted sets
// only grow within it) may skip Check for them.
type Checker struct {
	ts     *tenantState
	p      *limits.LabelGuard
	gen    int64
	now    time.Time
	dryRun bool
}

// Checker binds Check to tn, p and now.
func (g *Guard) Checker(tn tenant.ID, p *limits.LabelGuard, now time.Time, dryRun bool) Checker {
	if p == nil || p.MaxValuesPerLabel <= 0 {
		return Checker{}
	}
	gen := g.gen(now)
	return Checker{ts: g.enter(tn, gen), p: p, gen: gen, now: now, dryRun: dryRun}
}

// Window numbers the guard window the Checker was bound in: a series that passed
// in it passes again until the next one.
func (c Checker) Window() int64 { return c.gen }

// Check is Guard.Check for the bound tenant.
func (c Checker) Check(metric string, labels, buf []prompb.Label) ([]prompb.Label, Result) {
	if c.ts == nil || slices.Contains(c.p.ExemptMetrics, metric) {
		return labels, Result{}
	}
	return c.ts.check(c.p, c.gen, c.now, metric, labels, buf, c.dryRun)
}

func (ts *tenantState) check(p *limits.LabelGuard, gen int64, now time.Time, metric string, labels []prompb.Label, buf []prompb.Label, dryRun bool) (out []prompb.Label, res Result) {
	act := action(p)
	max := p.MaxValuesPerLabel
	sh := &ts.shards[xxhash.Sum64String(metric)%numShards]

	sh.mu.Lock()
	defer sh.mu.Unlock()
	ms := sh.metrics[metric]

	if act == limits.GuardDropSeries {
		// Decide before admitting, so that a dropped series takes no room.
		tripped, needAdmit := -1, false
		for i := range labels {
			l := &labels[i]
			if l.Name == "__name__" || slices.Contains(p.ExemptLabels, l.Name) {
				continue
			}
			pr := ts.pairFor(sh, &ms, metric, l.Name, gen)
			if pr == nil {
				continue
			}
			h := xxhash.Sum64String(l.Value)
			if _, ok := pr.admitted[h]; ok {
				continue
			}
			if len(pr.admitted) < max {
				needAdmit = true
				continue
			}
			pr.reject(now)
			if tripped < 0 {
				tripped = i
			}
		}
		if tripped >= 0 {
			return labels, Result{Outcome: Drop, Label: labels[tripped].Name, Action: act}
		}
		if needAdmit {
			for i := range labels {
				l := &labels[i]
				if l.Name == "__name__" || slices.Contains(p.ExemptLabels, l.Name) {
					continue
				}
				if ms == nil {
					break
				}
				if pr := ms.labels[l.Name]; pr != nil && len(pr.admitted) < max {
					pr.admitted[xxhash.Sum64String(l.Value)] = struct{}{}
				}
			}
		}
		return labels, Result{}
	}

	marker := overflowValue(p)
	rewriting := false
	for i := range labels {
		l := &labels[i]
		trip := false
		if l.Name != "__name__" && !slices.Contains(p.ExemptLabels, l.Name) {
			if pr := ts.pairFor(sh, &ms, metric, l.Name, gen); pr != nil {
				h := xxhash.Sum64String(l.Value)
				if _, ok := pr.admitted[h]; !ok {
					if len(pr.admitted) < max {
						pr.admitted[h] = struct{}{}
					} else {
						pr.reject(now)
						trip = true
					}
				}
			}
		}
		if trip && res.Outcome == Pass {
			res = Result{Outcome: Rewritten, Label: l.Name, Action: act}
			if !dryRun {
				out = append(buf[:0], labels[:i]...)
				rewriting = true
			}
		}
		if !rewriting {
			continue
		}
		switch {
		case !trip:
			out = append(out, *l)
		case act == limits.GuardOverflowValue || act == limits.GuardAggregate:
			out = append(out, prompb.Label{Name: l.Name, Value: marker})
		}
	}
	if !rewriting {
		return labels, res
	}
	return out, res
}

// action is p's action; empty means aggregate, so that the zero value of
// limits.LabelGuard with only MaxValuesPerLabel set works.
func action(p *limits.LabelGuard) limits.GuardAction {
	if p.Action == "" {
		return limits.GuardAggregate
	}
	return p.Action
}

// overflowValue is the marker that replaces guarded values under overflow_value.
func overflowValue(p *limits.LabelGuard) string {
	if p.OverflowValue == "" {
		return limits.DefaultGuardOverflowValue
	}
	return p.OverflowValue
}

// pairFor returns the pair of (metric, label), creating it (and the metric)
// within the tenant's cap, rotated to gen; nil beyond the cap. The caller holds
// sh.mu.
func (ts *tenantState) pairFor(sh *shard, ms **metricState, metric, label string, gen int64) *pair {
	if m := *ms; m != nil {
		if pr := m.labels[label]; pr != nil {
			pr.rotate(gen)
			return pr
		}
	}
	// Shards count concurrently, so the cap may be overshot by a few pairs.
	if ts.pairs.Load() >= ts.maxPairs {
		ts.untracked.Add(1)
		return nil
	}
	ts.pairs.Add(1)
	if *ms == nil {
		name := strings.Clone(metric)
		*ms = &metricState{name: name, labels: make(map[string]*pair)}
		sh.metrics[name] = *ms
	}
	pr := &pair{
		metric:   (*ms).name,
		label:    strings.Clone(label),
		gen:      gen,
		admitted: make(map[uint64]struct{}),
	}
	(*ms).labels[pr.label] = pr
	return pr
}

// rotate starts generation gen if pr is still in an older one. The guarded
// streak survives only a window that had rejections.
func (pr *pair) rotate(gen int64) {
	if pr.gen == gen {
		return
	}
	if pr.gen != gen-1 || pr.rejectedGen == 0 {
		pr.since = time.Time{}
		pr.rejected = 0
	}
	pr.gen = gen
	pr.rejectedGen = 0
	clear(pr.admitted)
}

func (pr *pair) reject(now time.Time) {
	pr.rejectedGen++
	pr.rejected++
	if pr.since.IsZero() {
		pr.since = now
	}
}

// guarded reports, without rotating, whether pr is guarded in generation gen.
func (pr *pair) guarded(gen int64) bool {
	switch pr.gen {
	case gen:
		return !pr.since.IsZero()
	case gen - 1:
		return pr.rejectedGen > 0
	}
	return false
}

// admittedIn is the number of values admitted in generation gen.
func (pr *pair) admittedIn(gen int64) int {
	if pr.gen == gen {
		return len(pr.admitted)
	}
	return 0
}

// sweep forgets pairs seen in neither gen nor gen-1.
func (ts *tenantState) sweep(gen int64) {
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.Lock()
		for name, ms := range sh.metrics {
			for label, pr := range ms.labels {
				if pr.gen < gen-1 {
					delete(ms.labels, label)
					ts.pairs.Add(-1)
				}
			}
			if len(ms.labels) == 0 {
				delete(sh.metrics, name)
			}
		}
		sh.mu.Unlock()
	}
}

// GuardedPair describes one guarded (metric, label) of a tenant.
type GuardedPair struct {
	Metric string `json:"metric"`
	Label  string `json:"label"`
	// AdmittedValues is the number of values admitted in the current window.
	AdmittedValues int `json:"admitted_values"`
	// Rejected counts series rewritten or dropped (or that would have been,
	// in dry run) since the pair became guarded.
	Rejected uint64 `json:"rejected_series"`
	// Since is when the pair became guarded.
	Since time.Time `json:"since"`
}

// Guarded lists the guarded pairs of tn, sorted by metric and label. The
// result is the caller's.
func (g *Guard) Guarded(tn tenant.ID) []GuardedPair {
	ts := g.lookup(tn)
	if ts == nil {
		return nil
	}
	gen := g.gen(g.now())
	var out []GuardedPair
	ts.forEachPair(func(pr *pair) {
		if pr.guarded(gen) {
			out = append(out, GuardedPair{
				Metric:         pr.metric,
				Label:          pr.label,
				AdmittedValues: pr.admittedIn(gen),
				Rejected:       pr.rejected,
				Since:          pr.since,
			})
		}
	})
	sort.Slice(out, func(i, j int) bool {
		if out[i].Metric != out[j].Metric {
			return out[i].Metric < out[j].Metric
		}
		return out[i].Label < out[j].Label
	})
	return out
}

// GuardedCount returns the number of guarded pairs of tn.
func (g *Guard) GuardedCount(tn tenant.ID) int {
	ts := g.lookup(tn)
	if ts == nil {
		return 0
	}
	return ts.guardedCount(g.gen(g.now()))
}

// TrackedPairs returns the number of (metric, label) pairs tracked for tn.
func (g *Guard) TrackedPairs(tn tenant.ID) int {
	ts := g.lookup(tn)
	if ts == nil {
		return 0
	}
	return int(ts.pairs.Load())
}

func (ts *tenantState) guardedCount(gen int64) int {
	n := 0
	ts.forEachPair(func(pr *pair) {
		if pr.guarded(gen) {
			n++
		}
	})
	return n
}

// forEachPair calls f under each shard's lock in turn.
func (ts *tenantState) forEachPair(f func(*pair)) {
	for i := range ts.shards {
		sh := &ts.shards[i]
		sh.mu.Lock()
		for _, ms := range sh.metrics {
			for _, pr := range ms.labels {
				f(pr)
			}
		}
		sh.mu.Unlock()
	}
}
