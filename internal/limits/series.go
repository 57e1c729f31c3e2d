package limits

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

// seriesShards splits a tenant's membership so that concurrent requests rarely wait
// on the same lock. 16 keeps an idle tenant around 1 KiB.
const seriesShards = 16

// seriesSet is the exact set of a tenant's active series. HyperLogLog answers "how
// many" but never "seen before?", and invariant 4 (existing series keep flowing)
// needs the latter. While the membership is shared (SeriesSharing), the shared
// membership is the authority and this set holds the series this replica
// decided about: what it may pass without asking, and what it counts when it
// must decide alone.
//
// Two generations per shard: cur holds series seen in the current window, prev those
// seen in the previous one and not since. A hit in prev moves the series to cur; at
// the next window prev is forgotten and cur becomes prev. Each entry points at its
// metric's counter so that expiry can decrement it without the name.
//
// count and each metricState.count are the sizes of cur ∪ prev. A new series reserves
// a unit of both with compare-and-swap before it is inserted, so concurrent
// admissions never overshoot a limit.
//
// Lock order: shard.mu, then metricsMu. Rotation takes rotMu, then each shard.mu in
// turn, then metricsMu alone.
type seriesSet struct {
	epoch atomic.Int64 // last window every shard was rotated to
	count atomic.Int64
	// shared is the tenant's count in the shared membership, as last seen.
	shared sharedSlot
	// pendingLost is set when an admission could not be queued for sharing.
	pendingLost atomic.Bool
	rotMu       sync.Mutex
	shards      [seriesShards]seriesShard

	metricsMu      sync.RWMutex
	metrics        map[string]*metricState
	maxMetrics     int
	overflowMetric metricState // shared by metrics beyond maxMetrics; never limited
	metricOverflow prometheus.Counter
}

type seriesShard struct {
	mu        sync.Mutex
	gen       int64
	cur, prev map[uint64]*metricState
	// pending holds the admissions and refreshes not yet taken by DrainAdmissions;
	// only filled while the enforcer shares its series (see SeriesSharing).
	pending []pendingSeries
	_       [64 - 8 - 8 - 16 - 24]byte // keep shards on separate cache lines
}

type pendingSeries struct {
	gen int64
	h   uint64
	ms  *metricState
}

// maxPendingPerShard bounds the admissions waiting to be shared, per tenant shard.
// Beyond it they are dropped and DrainAdmissions reports the loss, so that the
// sharing side republishes everything instead.
const maxPendingPerShard = 1 << 14

type metricState struct {
	count atomic.Int64
	name  string // "" for the overflow metric
}

func (s *seriesSet) init(maxMetrics int, overflow prometheus.Counter) {
	s.metrics = make(map[string]*metricState)
	s.maxMetrics = maxMetrics
	s.metricOverflow = overflow
	for i := range s.shards {
		s.shards[i].cur = make(map[uint64]*metricState)
		s.shards[i].prev = make(map[uint64]*metricState)
	}
}

func shardOf(h uint64) int { return int((h ^ h>>32) % seriesShards) }

func (s *seriesSet) admit(epoch int64, l *Limits, metric string, h uint64, share SeriesSharing) (r Reason, deferred bool) {
	if s.epoch.Load() < epoch {
		s.rotate(epoch)
	}
	sh := &s.shards[shardOf(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(epoch, s) // in case a rotation raced with this call
	if _, ok := sh.cur[h]; ok {
		return "", false
	}
	if ms, ok := sh.prev[h]; ok {
		delete(sh.prev, h)
		sh.cur[h] = ms
		if share != nil && s.queue(sh, epoch, h, ms) {
			share.Pending()
		}
		return "", false
	}
	if share != nil {
		// New here: the shared membership decides (Admitter.Resolve).
		return "", true
	}
	return s.insert(sh, l, metric, h, 1), false
}

// insert admits a series new to the set within factor times l's limits (0: no
// limit); the caller holds sh.mu.
func (s *seriesSet) insert(sh *seriesShard, l *Limits, metric string, h uint64, factor int64) Reason {
	if _, ok := sh.cur[h]; ok {
		return ""
	}
	if ms, ok := sh.prev[h]; ok {
		delete(sh.prev, h)
		sh.cur[h] = ms
		return ""
	}
	var maxSeries, maxPerMetric int64
	if l != nil {
		maxSeries, maxPerMetric = int64(l.MaxSeries)*factor, int64(l.MaxSeriesPerMetric)*factor
	}
	if !reserve(&s.count, maxSeries) {
		return ReasonMaxSeries
	}
	ms := &s.overflowMetric
	if metric != "" {
		ms = s.reserveMetric(metric, maxPerMetric)
	} else {
		ms.count.Add(1)
	}
	if ms == nil {
		s.count.Add(-1)
		return ReasonMaxSeriesPerMetric
	}
	sh.cur[h] = ms
	return ""
}

// settle records the shared membership's verdicts on series admit deferred: the
// admitted ones join the set, uncounted against limits (the shared membership
// counted them). With the sharing side unreachable, decide reports false and
// each series is decided here, failing open (see SeriesSharing.FailOpenFactor);
// those admissions are queued to be published.
func (s *seriesSet) settle(epoch int64, l *Limits, cands []Candidate, decided bool, share SeriesSharing) {
	queued, factor := false, int64(max(share.FailOpenFactor(), 1))
	for i := range cands {
		c := &cands[i]
		if decided && c.Reason != "" {
			continue
		}
		sh := &s.shards[shardOf(c.Hash)]
		sh.mu.Lock()
		sh.rotate(epoch, s)
		if decided {
			s.insert(sh, nil, c.Metric, c.Hash, 0)
		} else if c.Reason = s.insert(sh, l, c.Metric, c.Hash, factor); c.Reason == "" {
			if ms := sh.cur[c.Hash]; ms != nil && s.queue(sh, epoch, c.Hash, ms) {
				queued = true
			}
		}
		sh.mu.Unlock()
	}
	if queued {
		share.Pending()
	}
}

// queue records an admission or a refresh for DrainAdmissions; the caller holds
// sh.mu. It reports whether the entry was queued.
func (s *seriesSet) queue(sh *seriesShard, gen int64, h uint64, ms *metricState) bool {
	if len(sh.pending) >= maxPendingPerShard {
		s.pendingLost.Store(true)
		return false
	}
	sh.pending = append(sh.pending, pendingSeries{gen: gen, h: h, ms: ms})
	return true
}

// addRemote records a series admitted in generation gen (restored from a
// snapshot), without checking limits: it is admitted already. Generations older than the
// previous one are ignored; newer ones (a clock ahead of ours) count as current.
func (s *seriesSet) addRemote(epoch, gen int64, metric string, h uint64) {
	if gen < epoch-1 {
		return
	}
	gen = min(gen, epoch)
	if s.epoch.Load() < epoch {
		s.rotate(epoch)
	}
	sh := &s.shards[shardOf(h)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.rotate(epoch, s)
	if _, ok := sh.cur[h]; ok {
		return
	}
	if ms, ok := sh.prev[h]; ok {
		if gen == epoch {
			delete(sh.prev, h)
			sh.cur[h] = ms
		}
		return
	}
	var ms *metricState
	if metric == "" {
		s.overflowMetric.count.Add(1)
		ms = &s.overflowMetric
	} else {
		ms = s.reserveMetric(metric, 0)
	}
	s.count.Add(1)
	if gen == epoch {
		sh.cur[h] = ms
	} else {
		sh.prev[h] = ms
	}
}

// drain appends every queued admission to dst and forgets them.
func (s *seriesSet) drain(t tenant.ID, dst []Admission) []Admission {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, p := range sh.pending {
			dst = append(dst, Admission{Tenant: t, Gen: p.gen, Hash: p.h, Metric: p.ms.name})
		}
		clear(sh.pending)
		sh.pending = sh.pending[:0]
		sh.mu.Unlock()
	}
	return dst
}

// each calls fn for every series of the set with its generation.
func (s *seriesSet) each(t tenant.ID, fn func(Admission)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for h, ms := range sh.cur {
			fn(Admission{Tenant: t, Gen: sh.gen, Hash: h, Metric: ms.name})
		}
		for h, ms := range sh.prev {
			fn(Admission{Tenant: t, Gen: sh.gen - 1, Hash: h, Metric: ms.name})
		}
		sh.mu.Unlock()
	}
}

// reserve adds one to c unless that would exceed max (0 = no maximum).
func reserve(c *atomic.Int64, max int64) bool {
	for {
		v := c.Load()
		if max > 0 && v >= max {
			return false
		}
		if c.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// reserveMetric counts one more series for metric and returns its state, or nil when
// the metric is at max. The reservation happens under metricsMu so that the sweep in
// rotate never removes a state that is about to be counted.
func (s *seriesSet) reserveMetric(metric string, max int64) *metricState {
	s.metricsMu.RLock()
	ms := s.metrics[metric]
	if ms != nil {
		ok := reserve(&ms.count, max)
		s.metricsMu.RUnlock()
		if !ok {
			return nil
		}
		return ms
	}
	s.metricsMu.RUnlock()

	s.metricsMu.Lock()
	defer s.metricsMu.Unlock()
	ms = s.metrics[metric]
	if ms == nil {
		if len(s.metrics) >= s.maxMetrics {
			s.metricOverflow.Inc()
			s.overflowMetric.count.Add(1)
			return &s.overflowMetric
		}
		name := strings.Clone(metric)
		ms = &metricState{name: name}
		s.metrics[name] = ms
	}
	if !reserve(&ms.count, max) {
		return nil
	}
	return ms
}

// sharedCount is a tenant's active series in the shared membership in one
// generation.
type sharedCount struct{ gen, n int64 }

type sharedSlot struct{ p atomic.Pointer[sharedCount] }

func (s *sharedSlot) Load() sharedCount {
	if c := s.p.Load(); c != nil {
		return *c
	}
	return sharedCount{gen: -1}
}

func (s *sharedSlot) Store(c sharedCount) { s.p.Store(&c) }

// maxMetricsReached reports whether metric would be counted in the metric
// overflow: it is not tracked and the tenant tracks as many metrics as it may.
func (s *seriesSet) maxMetricsReached(metric string) bool {
	s.metricsMu.RLock()
	defer s.metricsMu.RUnlock()
	_, ok := s.metrics[metric]
	return !ok && len(s.metrics) >= s.maxMetrics
}

func (s *seriesSet) metricCount(metric string) int {
	s.metricsMu.RLock()
	defer s.metricsMu.RUnlock()
	if ms := s.metrics[metric]; ms != nil {
		return int(ms.count.Load())
	}
	return 0
}

// rotate brings every shard to epoch and forgets metrics without series.
func (s *seriesSet) rotate(epoch int64) {
	if s.epoch.Load() >= epoch {
		return
	}
	s.rotMu.Lock()
	defer s.rotMu.Unlock()
	if s.epoch.Load() >= epoch {
		return
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		sh.rotate(epoch, s)
		sh.mu.Unlock()
	}
	s.metricsMu.Lock()
	for name, ms := range s.metrics {
		if ms.count.Load() == 0 {
			delete(s.metrics, name)
		}
	}
	s.metricsMu.Unlock()
	s.epoch.Store(epoch)
}

// rotate moves the shard to epoch; the caller holds sh.mu. A clock going backwards
// rotates nothing.
func (sh *seriesShard) rotate(epoch int64, s *seriesSet) {
	if epoch <= sh.gen {
		return
	}
	s.expire(sh.prev)
	if epoch == sh.gen+1 {
		sh.prev, sh.cur = sh.cur, sh.prev
	} else {
		s.expire(sh.cur)
	}
	sh.gen = epoch
}

// expire forgets every series of m (which is emptied) and decrements the counts.
func (s *seriesSet) expire(m map[uint64]*metricState) {
	if len(m) == 0 {
		return
	}
	for _, ms := range m {
		ms.count.Add(-1)
	}
	s.count.Add(-int64(len(m)))
	clear(m)
}
