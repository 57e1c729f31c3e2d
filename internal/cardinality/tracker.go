package cardinality

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/tenant"
)

const (
	// OverflowName names the overflow entry of a level in the read API.
	OverflowName = "__overflow__"

	metricNameLabel = "__name__"
	dedupShards     = 256
)

// Tracker estimates cardinality per tenant, metric and label over sliding windows.
//
// Tracker is safe for concurrent use. Observe is the hot path; every read method
// returns values cached by the last Refresh and never touches a sketch. Nothing a
// caller passes in is retained: names are cloned when first tracked.
type Tracker struct {
	cfg Config
	// Bucket widths in series buckets: a label bucket is labelDiv series buckets, a
	// churn bucket dayDiv, a metric churn bucket metricDayDiv.
	width        time.Duration
	labelDiv     int64
	dayDiv       int64
	metricDayDiv int64

	// epoch is the current series bucket (UnixNano / width), advanced by Rotate.
	epoch atomic.Int64
	// localSeq numbers own inserts (see LocalChanges).
	localSeq atomic.Uint64

	// seen holds the keys of (tenant, series) already inserted in the current series
	// bucket: a repeated series costs one lookup and no sketch work.
	seen [dedupShards]dedupShard

	mu       sync.RWMutex // guards tenants and overflow
	tenants  map[tenant.ID]*tenantState
	overflow *tenantState

	overflowTotal [numLevels]atomic.Uint64

	refreshMu   sync.Mutex // serialises Refresh; guards the fields below
	lastRefresh int64      // epoch of the last Refresh, -1 before the first
	scratch     []byte

	view atomic.Pointer[view]
}

type dedupShard struct {
	mu   sync.Mutex
	m    map[uint64]struct{}
	peak int
	_    [32]byte // keep shards on separate cache lines
}

type level int

const (
	levelTenant level = iota
	levelMetric
	levelMetricLabel
	levelTenantLabel
	numLevels
)

// Bucket key of a level in export: its position among the Levels.
const (
	keySeries int64 = iota
	keyLabels
	keyChurn
	keyMetricChurn
)

func (l level) String() string {
	switch l {
	case levelTenant:
		return "tenant"
	case levelMetric:
		return "metric"
	case levelMetricLabel:
		return "metric_label"
	default:
		return "tenant_label"
	}
}

type tenantState struct {
	id       tenant.ID
	overflow bool

	mu             sync.Mutex // guards everything below except the est fields
	evicted        bool
	series         ring // series, series buckets
	daily          ring // series, churn buckets
	metrics        map[string]*metricState
	overflowMetric *metricState
	labels         map[string]*labelState // values and series, label buckets
	overflowLabel  *labelState
	dirty          bool
	// local is the Tracker's sequence number at this tenant's last own
	// insert (merges leave it alone): see LocalChanges.
	local uint64

	// Written by Refresh only.
	est, estDaily int64
	mem           int64
}

type metricState struct {
	name     string
	overflow bool

	mu            sync.Mutex
	evicted       bool
	series        ring
	daily         ring                   // series, metric churn buckets
	labels        map[string]*labelState // values only
	overflowLabel *labelState
	dirty         bool

	est, estDaily int64
	mem           int64
}

type labelState struct {
	name     string
	overflow bool
	values   ring
	series   ring // tenant-level labels only: series that carry the label
	dirty    bool

	est, estSeries int64
	mem            int64
}

// New builds a Tracker. See Config for defaults.
func New(cfg Config) (*Tracker, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	t := &Tracker{
		cfg:         cfg,
		width:       cfg.Window / time.Duration(cfg.Buckets),
		labelDiv:    int64(cfg.Buckets / cfg.LabelBuckets),
		tenants:     make(map[tenant.ID]*tenantState),
		lastRefresh: -1,
	}
	t.dayDiv = int64(cfg.ChurnWindow / time.Duration(cfg.ChurnBuckets) / t.width)
	t.metricDayDiv = int64(cfg.ChurnWindow / time.Duration(cfg.MetricChurnBuckets) / t.width)
	for i := range t.seen {
		t.seen[i].m = make(map[uint64]struct{})
	}
	t.epoch.Store(t.epochOf(cfg.Now()))
	t.view.Store(&view{})
	return t, nil
}

func (t *Tracker) epochOf(now time.Time) int64 { return floorDiv(now.UnixNano(), int64(t.width)) }

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Rotate advances the buckets to now and forgets which series the previous bucket has
// seen. Observe never reads the clock: Run and Refresh call Rotate, and a caller
// without Run must call Refresh (or Rotate) at least once per bucket width. A now
// older than the current bucket is ignored.
func (t *Tracker) Rotate(now time.Time) {
	e := t.epochOf(now)
	for {
		cur := t.epoch.Load()
		if e <= cur {
			return
		}
		if t.epoch.CompareAndSwap(cur, e) {
			break
		}
	}
	for i := range t.seen {
		s := &t.seen[i]
		s.mu.Lock()
		clear(s.m) // keeps the table: no regrowth in the next bucket
		s.mu.Unlock()
	}
}

// BucketWidth is the length of a series bucket: the window over its buckets.
func (t *Tracker) BucketWidth() time.Duration { return t.width }

// Epoch numbers the current series bucket: within it, observing a series again
// changes nothing, so callers may skip the call.
func (t *Tracker) Epoch() int64 { return t.epoch.Load() }

// Observe records one series of tenant tn. metric is the value of __name__, labels the
// full label set (including __name__), seriesHash a stable 64-bit hash of the sorted
// labels (xxhash). Labels with an empty value count as absent. Nothing is retained.
//
// A series already seen in the current series bucket costs one sharded set lookup.
func (t *Tracker) Observe(tn tenant.ID, metric string, labels []prompb.Label, seriesHash uint64) {
	t.ObserveFirst(tn, metric, labels, seriesHash)
}

// LocalChanges returns a number that changes whenever tenant tn's sketches
// take a series this replica observed itself, and not when they merge other
// replicas' buckets: a replica sharing its sketches exports a tenant again
// only when it has something new of its own to say, so that merged content
// does not travel back and forth between replicas. 0 for an unknown tenant.
func (t *Tracker) LocalChanges(tn tenant.ID) uint64 {
	t.mu.RLock()
	ts := t.tenants[tn]
	t.mu.RUnlock()
	if ts == nil {
		return 0
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.local
}

// ObserveFirst is Observe, telling whether the series is new in the current
// series bucket: other observers that count series once per bucket follow it
// instead of keeping a set of their own.
func (t *Tracker) ObserveFirst(tn tenant.ID, metric string, labels []prompb.Label, seriesHash uint64) bool {
	key := mix(seriesHash ^ mix(uint64(tn.AccountID)<<32|uint64(tn.ProjectID)))
	s := &t.seen[key>>56]
	s.mu.Lock()
	// Reading the epoch under the shard lock pairs with Rotate clearing the shard after
	// advancing it: a key in the set always belongs to the current epoch.
	epoch := t.epoch.Load()
	if _, ok := s.m[key]; ok {
		s.mu.Unlock()
		return false
	}
	s.m[key] = struct{}{}
	if n := len(s.m); n > s.peak {
		s.peak = n
	}
	s.mu.Unlock()
	t.insert(tn, metric, labels, seriesHash, epoch)
	return true
}

func (t *Tracker) insert(tn tenant.ID, metric string, labels []prompb.Label, seriesHash uint64, epoch int64) {
	labelEpoch := floorDiv(epoch, t.labelDiv)
	ts := t.tenant(tn)
	ts.mu.Lock()
	for ts.evicted {
		// Refresh dropped it between our lookup and now; look it up again.
		ts.mu.Unlock()
		ts = t.tenant(tn)
		ts.mu.Lock()
	}
	ts.dirty = true
	ts.local = t.localSeq.Add(1)
	ts.series.insert(epoch, seriesHash)
	ts.daily.insert(floorDiv(epoch, t.dayDiv), seriesHash)
	for i := range labels {
		l := &labels[i]
		if l.Value == "" {
			continue
		}
		ls, vh := t.tenantLabel(ts, l)
		ls.dirty = true
		ls.values.insert(labelEpoch, vh)
		ls.series.insert(labelEpoch, seriesHash)
	}
	ms := t.metric(ts, metric)
	ts.mu.Unlock()

	for {
		ms.mu.Lock()
		if !ms.evicted {
			break
		}
		// Refresh dropped it between our lookup and now; look it up again.
		ms.mu.Unlock()
		ts.mu.Lock()
		ms = t.metric(ts, metric)
		ts.mu.Unlock()
	}
	ms.dirty = true
	ms.series.insert(epoch, seriesHash)
	ms.daily.insert(floorDiv(epoch, t.metricDayDiv), seriesHash)
	for i := range labels {
		l := &labels[i]
		if l.Value == "" || l.Name == metricNameLabel {
			continue
		}
		ls, vh := t.metricLabel(ms, l)
		ls.dirty = true
		ls.values.insert(labelEpoch, vh)
	}
	ms.mu.Unlock()
}

func (t *Tracker) tenant(tn tenant.ID) *tenantState {
	t.mu.RLock()
	ts := t.tenants[tn]
	t.mu.RUnlock()
	if ts != nil {
		return ts
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if ts = t.tenants[tn]; ts != nil {
		return ts
	}
	if len(t.tenants) >= t.cfg.MaxTenants {
		t.overflowTotal[levelTenant].Add(1)
		if t.overflow == nil {
			t.overflow = t.newTenant(tenant.ID{}, true)
		}
		return t.overflow
	}
	ts = t.newTenant(tn, false)
	t.tenants[tn] = ts
	return ts
}

func (t *Tracker) newTenant(tn tenant.ID, overflow bool) *tenantState {
	return &tenantState{
		id:       tn,
		overflow: overflow,
		series:   newRing(t.cfg.SeriesPrecision, t.cfg.Buckets),
		daily:    newRing(t.cfg.SeriesPrecision, t.cfg.ChurnBuckets),
		metrics:  make(map[string]*metricState),
		labels:   make(map[string]*labelState),
	}
}

// metric needs ts.mu.
func (t *Tracker) metric(ts *tenantState, name string) *metricState {
	if ms := ts.metrics[name]; ms != nil {
		return ms
	}
	if len(ts.metrics) >= t.cfg.MaxMetricsPerTenant {
		t.overflowTotal[levelMetric].Add(1)
		if ts.overflowMetric == nil {
			ts.overflowMetric = t.newMetric(OverflowName, true)
		}
		return ts.overflowMetric
	}
	ms := t.newMetric(strings.Clone(name), false)
	ts.metrics[ms.name] = ms
	return ms
}

func (t *Tracker) newMetric(name string, overflow bool) *metricState {
	return &metricState{
		name:     name,
		overflow: overflow,
		series:   newRing(t.cfg.SeriesPrecision, t.cfg.Buckets),
		daily:    newRing(t.cfg.SeriesPrecision, t.cfg.MetricChurnBuckets),
		labels:   make(map[string]*labelState),
	}
}

func (t *Tracker) newLabel(name string, overflow, withSeries bool) *labelState {
	ls := &labelState{
		name:     name,
		overflow: overflow,
		values:   newRing(t.cfg.LabelPrecision, t.cfg.LabelBuckets),
	}
	if withSeries {
		ls.series = newRing(t.cfg.SeriesPrecision, t.cfg.LabelBuckets)
	}
	return ls
}

// tenantLabel needs ts.mu. It returns the label's state and the hash to insert as its
// value: the overflow entry hashes name and value together so that distinct names
// count apart.
func (t *Tracker) tenantLabel(ts *tenantState, l *prompb.Label) (*labelState, uint64) {
	vh := xxhash.Sum64String(l.Value)
	if ls := ts.labels[l.Name]; ls != nil {
		return ls, vh
	}
	if len(ts.labels) >= t.cfg.MaxLabelsPerTenant {
		t.overflowTotal[levelTenantLabel].Add(1)
		if ts.overflowLabel == nil {
			ts.overflowLabel = t.newLabel(OverflowName, true, true)
		}
		return ts.overflowLabel, mix(vh ^ xxhash.Sum64String(l.Name))
	}
	ls := t.newLabel(strings.Clone(l.Name), false, true)
	ts.labels[ls.name] = ls
	return ls, vh
}

// metricLabel needs ms.mu.
func (t *Tracker) metricLabel(ms *metricState, l *prompb.Label) (*labelState, uint64) {
	vh := xxhash.Sum64String(l.Value)
	if ls := ms.labels[l.Name]; ls != nil {
		return ls, vh
	}
	if len(ms.labels) >= t.cfg.MaxLabelsPerMetric {
		t.overflowTotal[levelMetricLabel].Add(1)
		if ms.overflowLabel == nil {
			ms.overflowLabel = t.newLabel(OverflowName, true, false)
		}
		return ms.overflowLabel, mix(vh ^ xxhash.Sum64String(l.Name))
	}
	ls := t.newLabel(strings.Clone(l.Name), false, false)
	ms.labels[ls.name] = ls
	return ls, vh
}

// mix is the murmur3 finaliser: it spreads a combination of hashes back over 64 bits.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}
