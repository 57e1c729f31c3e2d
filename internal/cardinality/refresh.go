package cardinality

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// view is what readers see: immutable once published by Refresh.
type view struct {
	updated time.Time
	tenants []*tenantView // active series descending; the overflow tenant included
	byID    map[tenant.ID]*tenantView
	memory  int64
	tracked [numLevels]int
}

type tenantView struct {
	summary  TenantSummary
	metrics  []*metricView // series descending, then name
	byName   map[string]*metricView
	labels   []LabelSummary // values descending, then name
	bySeries []LabelSummary // series descending, then name
	pairs    int64          // sum of series per label name
}

type metricView struct {
	name     string
	overflow bool
	series   int64
	churn    float64
	labels   []LabelCount // values descending, then name
}

// Run rotates the buckets and refreshes the estimates every interval until ctx is
// done. It refreshes once at the start, so the read API has data right away.
func (t *Tracker) Run(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		t.Refresh()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Refresh rotates the buckets to cfg.Now(), recomputes the estimates of every sketch
// changed since the last Refresh (all of them when the window moved), drops entries
// with nothing left in their window, and publishes the result for the read API. It
// costs up to a few ms per dense sketch; call it every few seconds, never per request.
func (t *Tracker) Refresh() {
	t.Rotate(t.cfg.Now())
	t.refreshMu.Lock()
	defer t.refreshMu.Unlock()

	cur := t.epoch.Load()
	moved := cur != t.lastRefresh
	t.lastRefresh = cur
	labelCur := floorDiv(cur, t.labelDiv)
	dayCur := floorDiv(cur, t.dayDiv)
	metricDayCur := floorDiv(cur, t.metricDayDiv)

	t.mu.RLock()
	states := make([]*tenantState, 0, len(t.tenants)+1)
	for _, ts := range t.tenants {
		states = append(states, ts)
	}
	if t.overflow != nil {
		states = append(states, t.overflow)
	}
	t.mu.RUnlock()

	v := &view{updated: t.cfg.Now(), byID: make(map[tenant.ID]*tenantView, len(states))}
	var dead []*tenantState
	for _, ts := range states {
		tv, alive := t.refreshTenant(ts, epochs{cur, labelCur, dayCur, metricDayCur}, moved, v)
		if !alive {
			dead = append(dead, ts)
			continue
		}
		v.tenants = append(v.tenants, tv)
		if !ts.overflow {
			v.byID[ts.id] = tv
		}
	}
	if len(dead) > 0 {
		t.mu.Lock()
		for _, ts := range dead {
			// An Observe may have found it since; it then has fresh data.
			ts.mu.Lock()
			if ts.daily.newest() <= dayCur-int64(t.cfg.ChurnBuckets) {
				ts.evicted = true
				if ts.overflow {
					t.overflow = nil
				} else {
					delete(t.tenants, ts.id)
				}
			}
			ts.mu.Unlock()
		}
		t.mu.Unlock()
	}
	slices.SortFunc(v.tenants, func(a, b *tenantView) int {
		if c := cmp.Compare(b.summary.ActiveSeries, a.summary.ActiveSeries); c != 0 {
			return c
		}
		return cmp.Compare(a.summary.Tenant, b.summary.Tenant)
	})
	v.tracked[levelTenant] = len(v.tenants)
	v.memory += t.dedupBytes()
	t.view.Store(v)
}

// epochs are the current buckets of every level.
type epochs struct{ series, labels, day, metricDay int64 }

func (t *Tracker) refreshTenant(ts *tenantState, e epochs, moved bool, v *view) (*tenantView, bool) {
	cur, labelCur, dayCur := e.series, e.labels, e.day
	ts.mu.Lock()
	if ts.daily.newest() <= dayCur-int64(t.cfg.ChurnBuckets) {
		ts.mu.Unlock()
		return nil, false
	}
	recompute := moved || ts.dirty
	ts.dirty = false
	var series, daily windowed
	if recompute {
		series, daily = ts.series.window(cur), ts.daily.window(dayCur)
		var m1, m2 int64
		m1, t.scratch = ts.series.bytes(t.scratch)
		m2, t.scratch = ts.daily.bytes(t.scratch)
		ts.mem = m1 + m2
	}
	labels := make([]*labelState, 0, len(ts.labels)+1)
	for name, ls := range ts.labels {
		if ls.values.newest() <= labelCur-int64(t.cfg.LabelBuckets) {
			delete(ts.labels, name)
			continue
		}
		labels = append(labels, ls)
	}
	if ols := ts.overflowLabel; ols != nil {
		if ols.values.newest() <= labelCur-int64(t.cfg.LabelBuckets) {
			ts.overflowLabel = nil
		} else {
			labels = append(labels, ols)
		}
	}
	var work []labelPair
	for _, ls := range labels {
		if moved || ls.dirty {
			work = append(work, labelPair{ls: ls, values: ls.values.window(labelCur), series: ls.series.window(labelCur)})
			ls.dirty = false
			var m1, m2 int64
			m1, t.scratch = ls.values.bytes(t.scratch)
			m2, t.scratch = ls.series.bytes(t.scratch)
			ls.mem = m1 + m2
		}
	}
	metrics := make([]*metricState, 0, len(ts.metrics)+1)
	for _, ms := range ts.metrics {
		metrics = append(metrics, ms)
	}
	if ts.overflowMetric != nil {
		metrics = append(metrics, ts.overflowMetric)
	}
	ts.mu.Unlock()

	if recompute {
		ts.est, ts.estDaily = series.estimate(), daily.estimate()
	}
	for i := range work {
		work[i].ls.est = work[i].values.estimate()
		work[i].ls.estSeries = work[i].series.estimate()
	}

	tv := &tenantView{
		summary: TenantSummary{
			Tenant:       ts.id.String(),
			Overflow:     ts.overflow,
			ActiveSeries: ts.est,
			DailySeries:  ts.estDaily,
		},
	}
	if ts.overflow {
		tv.summary.Tenant = OverflowName
	}
	if ts.est > 0 {
		tv.summary.Churn = float64(ts.estDaily) / float64(ts.est)
	}
	v.memory += ts.mem
	for _, ls := range labels {
		v.memory += ls.mem + stateBytes
		tv.labels = append(tv.labels, LabelSummary{Name: ls.name, Overflow: ls.overflow, Values: ls.est, Series: ls.estSeries})
		tv.pairs += ls.estSeries
	}
	v.tracked[levelTenantLabel] += len(labels)
	tv.bySeries = slices.Clone(tv.labels)
	slices.SortFunc(tv.bySeries, func(a, b LabelSummary) int {
		if c := cmp.Compare(b.Series, a.Series); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	sortLabels(tv.labels)

	tv.byName = make(map[string]*metricView, len(metrics))
	var deadMetrics []*metricState
	for _, ms := range metrics {
		mv, alive := t.refreshMetric(ms, e, moved, v)
		if !alive {
			deadMetrics = append(deadMetrics, ms)
			continue
		}
		tv.metrics = append(tv.metrics, mv)
		if !ms.overflow {
			tv.byName[ms.name] = mv
		}
	}
	v.tracked[levelMetric] += len(tv.metrics)
	if len(deadMetrics) > 0 {
		ts.mu.Lock()
		for _, ms := range deadMetrics {
			ms.mu.Lock()
			if ms.series.newest() <= cur-int64(t.cfg.Buckets) {
				ms.evicted = true
				if ms.overflow {
					ts.overflowMetric = nil
				} else {
					delete(ts.metrics, ms.name)
				}
			}
			ms.mu.Unlock()
		}
		ts.mu.Unlock()
	}
	slices.SortFunc(tv.metrics, func(a, b *metricView) int {
		if c := cmp.Compare(b.series, a.series); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	tv.summary.Metrics = len(tv.metrics)
	return tv, true
}

type labelPair struct {
	ls             *labelState
	values, series windowed
}

func (t *Tracker) refreshMetric(ms *metricState, e epochs, moved bool, v *view) (*metricView, bool) {
	cur, labelCur := e.series, e.labels
	ms.mu.Lock()
	if ms.series.newest() <= cur-int64(t.cfg.Buckets) {
		ms.mu.Unlock()
		return nil, false
	}
	recompute := moved || ms.dirty
	ms.dirty = false
	var series, daily windowed
	if recompute {
		series, daily = ms.series.window(cur), ms.daily.window(e.metricDay)
		var m1, m2 int64
		m1, t.scratch = ms.series.bytes(t.scratch)
		m2, t.scratch = ms.daily.bytes(t.scratch)
		ms.mem = m1 + m2
	}
	labels := make([]*labelState, 0, len(ms.labels)+1)
	var work []labelPair
	for name, ls := range ms.labels {
		if ls.values.newest() <= labelCur-int64(t.cfg.LabelBuckets) {
			delete(ms.labels, name) // deleting during range is allowed
			continue
		}
		labels = append(labels, ls)
	}
	if ols := ms.overflowLabel; ols != nil {
		if ols.values.newest() <= labelCur-int64(t.cfg.LabelBuckets) {
			ms.overflowLabel = nil
		} else {
			labels = append(labels, ols)
		}
	}
	for _, ls := range labels {
		if moved || ls.dirty {
			work = append(work, labelPair{ls: ls, values: ls.values.window(labelCur)})
			ls.dirty = false
			ls.mem, t.scratch = ls.values.bytes(t.scratch)
		}
	}
	ms.mu.Unlock()

	if recompute {
		ms.est, ms.estDaily = series.estimate(), daily.estimate()
	}
	for i := range work {
		work[i].ls.est = work[i].values.estimate()
	}
	mv := &metricView{name: ms.name, overflow: ms.overflow, series: ms.est, churn: churn(ms.estDaily, ms.est), labels: make([]LabelCount, 0, len(labels))}
	v.memory += ms.mem + stateBytes
	for _, ls := range labels {
		v.memory += ls.mem + stateBytes
		mv.labels = append(mv.labels, LabelCount{Name: ls.name, Overflow: ls.overflow, Values: ls.est, Share: share(ls.est, ms.est)})
	}
	v.tracked[levelMetricLabel] += len(labels)
	slices.SortFunc(mv.labels, func(a, b LabelCount) int {
		if c := cmp.Compare(b.Values, a.Values); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return mv, true
}

// stateBytes is the bookkeeping of one tracked tenant, metric or label besides its
// sketches: the state struct, its ring slots, its name and its map entry.
const stateBytes = 320

// churn is a metric's churn-window series over its window series, at least 1: the
// churn window holds the window, so less is estimation noise (or a churn window of a
// single, young bucket). 0 without series.
func churn(daily, series int64) float64 {
	if series <= 0 {
		return 0
	}
	return max(1, float64(daily)/float64(series))
}

func share(values, series int64) float64 {
	if series <= 0 {
		return 0
	}
	return min(1, float64(values)/float64(series))
}

func sortLabels(ls []LabelSummary) {
	slices.SortFunc(ls, func(a, b LabelSummary) int {
		if c := cmp.Compare(b.Values, a.Values); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}

// dedupBytes approximates the dedup set: Go's swiss table stores an 8-byte key and a
// control byte per slot, at most 7/8 full, and keeps its size after clear.
func (t *Tracker) dedupBytes() int64 {
	var n int64
	for i := range t.seen {
		s := &t.seen[i]
		s.mu.Lock()
		n += int64(s.peak)
		s.mu.Unlock()
	}
	return n * 9 * 8 / 7 * 3 / 2 // average fill between 7/16 and 7/8
}

// MemoryBytes estimates the heap held by sketches and the dedup set, as of the last
// Refresh.
func (t *Tracker) MemoryBytes() int64 { return t.view.Load().memory }
