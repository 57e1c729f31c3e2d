package seriesusage

import (
	"context"
	"slices"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/queryaudit"
)

// store is the read side of the selectors of one metric, or of the selectors
// without a name of one tenant: the distinct matcher sets with when they were
// used. Guarded by Book.selMu.
type store struct {
	sets []*selectorSet
	// overflow counts sets refused at the cap; overflowLast is the last
	// refusal: until it expires, everything counts as selected.
	overflow     uint64
	overflowLast time.Time
	// remote: the other replicas' selectors, which the book's own metrics
	// (kept, overflow) do not count.
	remote bool
}

type selectorSet struct {
	key         string // rendered, without the metric name: {env="prod"}
	ms          []*labels.Matcher
	first, last time.Time
	// reads credited to this set: a read is credited to the first of its sets
	// for a metric, so that the sets' reads add up to the reads.
	reads uint64
}

// compiled is an immutable snapshot of a store for the write path. A nil
// *compiled selects nothing.
type compiled struct {
	all bool // a set without matchers, or the cap reached: every series
	// names are the label names the sets read; uniq the distinct matchers
	// (index into names), evaluated at most once per series; sets index
	// into uniq.
	names []string
	uniq  []indexedMatcher
	sets  [][]int
	// nameMatchers, for nameless selectors: per set, its __name__ matchers.
	nameSets [][]*labels.Matcher
}

type indexedMatcher struct {
	idx int
	m   *labels.Matcher
}

const (
	maxStackNames = 16
	maxMemo       = 128 // distinct matchers remembered per series evaluation
)

// matches tells whether a series is selected, and whether by a snapshot that
// selects everything (all).
func (c *compiled) matches(ls []prompb.Label) (selected, all bool) {
	if c == nil {
		return false, false
	}
	if c.all {
		return true, true
	}
	var stack [maxStackNames]string
	var vals []string
	if len(c.names) <= maxStackNames {
		vals = stack[:len(c.names)]
	} else {
		vals = make([]string, len(c.names))
	}
	found := 0
	for i := range ls {
		l := &ls[i]
		for j, n := range c.names {
			if n == l.Name {
				vals[j] = l.Value
				found++
				break
			}
		}
		if found == len(vals) {
			break
		}
	}
	// memo: 0 not evaluated, 1 matches, 2 does not.
	var memo [maxMemo]uint8
	for _, set := range c.sets {
		ok := true
		for _, u := range set {
			var r bool
			if u < maxMemo && memo[u] != 0 {
				r = memo[u] == 1
			} else {
				im := &c.uniq[u]
				r = im.m.Matches(vals[im.idx])
				if u < maxMemo {
					memo[u] = 2
					if r {
						memo[u] = 1
					}
				}
			}
			if !r {
				ok = false
				break
			}
		}
		if ok {
			return true, false
		}
	}
	return false, false
}

// selective tells whether c selects some series and not all.
func (c *compiled) selective() bool { return c != nil && !c.all && len(c.sets) > 0 }

// mayMatchName tells whether some set of c can select series named name.
func (c *compiled) mayMatchName(name string) bool {
	if c == nil {
		return false
	}
	if c.all {
		return true
	}
	for _, ns := range c.nameSets {
		ok := true
		for _, m := range ns {
			if !m.Matches(name) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// compile builds the write path's snapshot of the stores (this replica's
// and the other replicas') at now; expired sets are left out, a set in both
// is compiled once. nil when they hold nothing live.
func compile(now time.Time, retention time.Duration, stores ...*store) *compiled {
	cutoff := now.Add(-retention)
	c := &compiled{}
	var keys []string
	for _, s := range stores {
		if s.overflow > 0 && s.overflowLast.After(cutoff) {
			c.all = true
			return c
		}
	}
	for _, s := range stores {
		for _, set := range s.sets {
			if !set.last.After(cutoff) || slices.Contains(keys, set.key) {
				continue
			}
			keys = append(keys, set.key)
			if len(set.ms) == 0 {
				return &compiled{all: true}
			}
			c.add(set)
		}
	}
	if len(c.sets) == 0 {
		return nil
	}
	return c
}

// add compiles one set into c.
func (c *compiled) add(set *selectorSet) {
	cs := make([]int, 0, len(set.ms))
	var ns []*labels.Matcher
	for _, m := range set.ms {
		idx := slices.Index(c.names, m.Name)
		if idx < 0 {
			idx = len(c.names)
			c.names = append(c.names, m.Name)
		}
		u := slices.IndexFunc(c.uniq, func(im indexedMatcher) bool {
			return im.m.Name == m.Name && im.m.Type == m.Type && im.m.Value == m.Value
		})
		if u < 0 {
			u = len(c.uniq)
			c.uniq = append(c.uniq, indexedMatcher{idx: idx, m: m})
		}
		cs = append(cs, u)
		if m.Name == model.MetricNameLabel {
			ns = append(ns, m)
		}
	}
	c.sets = append(c.sets, cs)
	c.nameSets = append(c.nameSets, ns)
}

// add records that a read used set at now; it reports whether the store's
// snapshot must be rebuilt, and credits the read when credit is true.
// ms is kept, never modified.
func (s *store) add(b *Book, key string, ms []*labels.Matcher, now time.Time, max int, credit bool) bool {
	for _, set := range s.sets {
		if set.key == key {
			set.last = now
			if credit {
				set.reads++
			}
			return false
		}
	}
	if len(s.sets) >= max {
		b.overflow.selectors.Add(1)
		s.overflow++
		first := s.overflowLast.IsZero()
		s.overflowLast = now
		return first
	}
	set := &selectorSet{key: key, ms: ms, first: now, last: now}
	if credit {
		set.reads = 1
	}
	s.sets = append(s.sets, set)
	b.selectors.Add(1)
	return true
}

// expire drops the sets last used before cutoff; it reports whether any went.
func (s *store) expire(b *Book, cutoff time.Time) bool {
	n := len(s.sets)
	s.sets = slices.DeleteFunc(s.sets, func(set *selectorSet) bool { return !set.last.After(cutoff) })
	changed := len(s.sets) != n
	if !s.remote {
		b.selectors.Add(int64(len(s.sets) - n))
	}
	if s.overflow > 0 && !s.overflowLast.After(cutoff) {
		s.overflow, s.overflowLast = 0, time.Time{}
		changed = true
	}
	return changed
}

func (s *store) empty() bool { return len(s.sets) == 0 && s.overflow == 0 }

// recompile publishes mb's selectors, this replica's and the others', to the
// write path. Needs selMu.
func (b *Book) recompile(mb *metricBook, now time.Time) {
	mb.sel.Store(compile(now, b.cfg.Retention, &mb.sets, &mb.remote))
}

// recompileNameless is recompile for tb's selectors without a name.
func (b *Book) recompileNameless(tb *tenantBook, now time.Time) {
	tb.nameless.Store(compile(now, b.cfg.Retention, &tb.namelessSets, &tb.namelessRemote))
}

// OnRead records the matcher sets of the selectors of one read: it is the
// queryaudit.ReadListener of the usage recorder. Selectors with an exact
// metric name are kept with their metric; the others with their tenant,
// matched against the series of every metric (their __name__ matchers
// included).
func (b *Book) OnRead(r *queryaudit.Read) {
	if len(r.Extraction.Selectors) == 0 {
		return
	}
	now := r.At
	if now.IsZero() {
		now = b.cfg.Now()
	}
	b.selMu.Lock() // first: Prune, which also takes it, must not drop tb under us
	defer b.selMu.Unlock()
	tb := b.tenant(r.Tenant, true)
	if tb == nil {
		return
	}
	var rebuild []*metricBook
	rebuildNameless := false
	creditedNameless := false
	credited := make(map[*metricBook]bool, len(r.Extraction.Selectors))
	for i := range r.Extraction.Selectors {
		s := &r.Extraction.Selectors[i]
		if s.Name == "" {
			for _, ms := range s.MatcherSets {
				key, ms := b.setKey(ms)
				if tb.namelessSets.add(b, key, ms, now, b.cfg.MaxNamelessPerTenant, !creditedNameless) {
					rebuildNameless = true
				}
				creditedNameless = true
			}
			continue
		}
		mb := b.metric(tb, s.Name, true)
		if mb == nil {
			continue
		}
		sets := s.MatcherSets
		if len(sets) == 0 {
			sets = [][]*labels.Matcher{nil} // an extraction without sets: every series
		}
		for _, ms := range sets {
			key, ms := b.setKey(ms)
			if mb.sets.add(b, key, ms, now, b.cfg.MaxSelectorsPerMetric, !credited[mb]) && !slices.Contains(rebuild, mb) {
				rebuild = append(rebuild, mb)
			}
			credited[mb] = true
		}
	}
	for _, mb := range rebuild {
		b.recompile(mb, now)
	}
	if rebuildNameless {
		b.recompileNameless(tb, now)
	}
	if now.Sub(b.lastPrune) >= time.Minute {
		b.pruneLocked(now)
	}
}

// setKey renders a set; a set too long to keep becomes the empty set, which
// selects everything.
func (b *Book) setKey(ms []*labels.Matcher) (string, []*labels.Matcher) {
	key := queryaudit.FormatMatchers("", ms)
	if len(key) > b.cfg.MaxSelectorBytes {
		return "{}", nil
	}
	return key, ms
}

// Run prunes expired selectors and idle metrics every interval until ctx ends.
func (b *Book) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			b.Prune(b.cfg.Now())
		}
	}
}

// Prune forgets selectors unused for the retention and metrics with neither
// selectors nor series in the last two buckets.
func (b *Book) Prune(now time.Time) {
	b.selMu.Lock()
	defer b.selMu.Unlock()
	b.pruneLocked(now)
}

// pruneLocked needs selMu. It holds the write path's locks only to delete:
// Observe looks tenants and metrics up under read locks meanwhile.
func (b *Book) pruneLocked(now time.Time) {
	b.lastPrune = now
	cutoff := now.Add(-b.cfg.Retention)
	epoch := b.cfg.Epoch()
	last := b.lastComplete(epoch)
	idle := func(mb *metricBook) bool { // needs mb.mu
		return mb.cur.series == 0 || (mb.cur.epoch < epoch && (last < 0 || mb.cur.epoch < last))
	}
	b.mu.RLock()
	tbs := make([]*tenantBook, 0, len(b.tenants))
	for _, tb := range b.tenants {
		tbs = append(tbs, tb)
	}
	b.mu.RUnlock()
	var idleTenants []*tenantBook
	for _, tb := range tbs {
		if e1, e2 := tb.namelessSets.expire(b, cutoff), tb.namelessRemote.expire(b, cutoff); e1 || e2 {
			b.recompileNameless(tb, now)
		}
		tb.mu.RLock()
		mbs := make([]*metricBook, 0, len(tb.metrics))
		for _, mb := range tb.metrics {
			mbs = append(mbs, mb)
		}
		tb.mu.RUnlock()
		var drop []*metricBook
		for _, mb := range mbs {
			if e1, e2 := mb.sets.expire(b, cutoff), mb.remote.expire(b, cutoff); e1 || e2 {
				b.recompile(mb, now)
			}
			if !mb.sets.empty() || !mb.remote.empty() {
				continue
			}
			mb.mu.Lock()
			if idle(mb) {
				drop = append(drop, mb)
			}
			mb.mu.Unlock()
		}
		tb.mu.Lock()
		for _, mb := range drop {
			mb.mu.Lock()
			if idle(mb) { // Observe may have counted a series since
				mb.evicted = true
				b.release(&mb.cur)
				b.release(&mb.prev)
				delete(tb.metrics, mb.name)
			}
			mb.mu.Unlock()
		}
		if len(tb.metrics) == 0 && tb.namelessSets.empty() && tb.namelessRemote.empty() {
			idleTenants = append(idleTenants, tb)
		}
		tb.mu.Unlock()
	}
	if len(idleTenants) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, tb := range idleTenants {
		tb.mu.Lock()
		if len(tb.metrics) == 0 { // nameless sets change under selMu only
			tb.evicted = true
			delete(b.tenants, tb.id)
		}
		tb.mu.Unlock()
	}
}
