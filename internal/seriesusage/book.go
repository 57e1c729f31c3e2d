// Package seriesusage tells, per tenant and metric, which series the queries
// actually select: it keeps the matcher sets of the selectors reads use
// (queryaudit's ReadListener), matches them against every series once per
// series bucket on the write path, and reports the series selected, those no
// query selects, and the label values that only the latter carry (env="dev"
// copies of every metric).
//
// Counts are per series bucket of the cardinality tracker (Window/Buckets):
// a report gives the last complete bucket, when there is one, and the
// current one. A series is matched against the selectors known when it is
// first seen in a bucket; a selector recorded later counts from the next
// bucket on. State is in memory, per replica: each replica counts the series
// and reads that reach it.
package seriesusage

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Config bounds a Book. Zero fields take their defaults.
type Config struct {
	// Retention: a selector not used for this long is forgotten, as query usage
	// is (query_audit.retention). Default 30 days.
	Retention time.Duration
	// MaxSelectorsPerMetric caps the distinct matcher sets kept per metric.
	// Past it the metric counts as all series selected (until the overflow is
	// older than Retention) and the overflow is counted. Default 64.
	MaxSelectorsPerMetric int
	// MaxNamelessPerTenant caps the matcher sets of selectors without a metric
	// name ({env="dev"}) per tenant. Past it every metric of the tenant counts
	// as all selected. Default 64.
	MaxNamelessPerTenant int
	// MaxSelectorBytes: a matcher set longer than this once rendered is not
	// kept; it is taken to select every series of its metric. Default 1024.
	MaxSelectorBytes int
	// MaxTenants and MaxMetricsPerTenant cap the tenants and metrics tracked
	// (from writes or reads); more are counted, not tracked. Defaults 1000 and
	// 20000.
	MaxTenants          int
	MaxMetricsPerTenant int
	// MaxNameBytes: metric names longer than this are not tracked. Default 256.
	MaxNameBytes int
	// MaxLabelsPerMetric and MaxValuesPerLabel cap the label values kept per
	// metric and bucket to explain never-selected series. A label over a cap
	// is not used to explain (its values are dropped, the overflow counted).
	// Defaults 32 and 100.
	MaxLabelsPerMetric int
	MaxValuesPerLabel  int
	// MaxValues caps the label values kept in all, every tenant, metric and
	// bucket together (about 100 bytes each). Default 262144.
	MaxValues int64
	// MaxExplaining caps the explaining values a report lists. Default 50.
	MaxExplaining int
	// BucketWidth is the length of one series bucket (the cardinality window
	// divided by its buckets); Epoch numbers the current bucket (the
	// tracker's Epoch: UnixNano / BucketWidth). Required.
	BucketWidth time.Duration
	Epoch       func() int64
	// Window is the cardinality window: when no series at all was written
	// for this long, the last complete bucket is not reported any more.
	// Default 2 × BucketWidth.
	Window time.Duration
	// Now is the clock of reports and expiry. Default time.Now.
	Now func() time.Time
	// Unseen, when set, tells how many reads of tenant t in the retention
	// never reached the book: unparsed, or dropped when the usage recorder's
	// queue was full. Such a read may select series the report counts as
	// never selected; reports show the counts (Coverage).
	Unseen func(t tenant.ID) (unparsed, dropped uint64)
}

func (c Config) withDefaults() Config {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	def(&c.MaxSelectorsPerMetric, 64)
	def(&c.MaxNamelessPerTenant, 64)
	def(&c.MaxSelectorBytes, 1024)
	def(&c.MaxTenants, 1000)
	def(&c.MaxMetricsPerTenant, 20000)
	def(&c.MaxNameBytes, 256)
	def(&c.MaxLabelsPerMetric, 32)
	def(&c.MaxValuesPerLabel, 100)
	def(&c.MaxExplaining, 50)
	if c.MaxValues <= 0 {
		c.MaxValues = 262144
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Window < c.BucketWidth {
		c.Window = 2 * c.BucketWidth
	}
	return c
}

// Book is the series usage of every tenant. Observe is the write path and is
// safe for concurrent use; OnRead runs on the usage recorder's goroutine;
// reports may run concurrently with both. Nothing a caller passes in is
// retained: names and values are cloned when first kept.
type Book struct {
	cfg   Config
	start time.Time

	mu      sync.RWMutex // guards tenants
	tenants map[tenant.ID]*tenantBook

	// selMu guards the selector stores (read side) of every tenant and
	// metric. The write path never takes it: it reads compiled snapshots.
	selMu     sync.Mutex
	lastPrune time.Time

	// remoteMu serialises ReplaceRemote; remoteDigests are the blobs it
	// took last.
	remoteMu      sync.Mutex
	remoteDigests map[string]uint64

	values atomic.Int64 // label values kept, all buckets (MaxValues)
	// epochs are the current and the previous epoch the write path saw.
	epochs struct {
		mu   sync.Mutex
		cur  atomic.Int64
		prev int64
	}
	overflow struct {
		tenants, metrics, longNames, values, selectors atomic.Uint64
	}
	selectors atomic.Int64 // sets kept in all stores
}

// New returns an empty Book.
func New(cfg Config) *Book {
	cfg = cfg.withDefaults()
	if cfg.Epoch == nil || cfg.BucketWidth <= 0 {
		panic("seriesusage: Config.Epoch and Config.BucketWidth are required")
	}
	return &Book{cfg: cfg, start: cfg.Now(), tenants: make(map[tenant.ID]*tenantBook)}
}

// noteEpoch records that the write path has reached epoch.
func (b *Book) noteEpoch(epoch int64) {
	b.epochs.mu.Lock()
	if cur := b.epochs.cur.Load(); epoch > cur {
		b.epochs.prev = cur
		b.epochs.cur.Store(epoch)
	}
	b.epochs.mu.Unlock()
}

// lastComplete is the epoch of the last complete bucket at epoch now: the
// one the write path saw before the current one. The tracker moves its
// epoch when it rotates, so epochs are skipped when buckets are shorter than
// its refresh interval. -1 when there is none, or when the write path has
// been idle for longer than the window.
func (b *Book) lastComplete(now int64) int64 {
	b.epochs.mu.Lock()
	cur, prev := b.epochs.cur.Load(), b.epochs.prev
	b.epochs.mu.Unlock()
	switch {
	case cur == 0:
		return -1
	case cur < now:
		if time.Duration(now-cur)*b.cfg.BucketWidth > b.cfg.Window {
			return -1
		}
		return cur
	case prev == 0:
		return -1
	}
	return prev
}

type tenantBook struct {
	id tenant.ID

	mu      sync.RWMutex // guards metrics and evicted
	metrics map[string]*metricBook
	evicted bool // Prune dropped it: look the tenant up again

	// nameless is the compiled snapshot of the selectors without a name; the
	// write path matches it against every metric's series.
	nameless atomic.Pointer[compiled]
	// namelessSets: selMu; namelessRemote the other replicas'.
	namelessSets, namelessRemote store
}

type metricBook struct {
	name string

	// sel is the compiled snapshot of the metric's selectors.
	sel atomic.Pointer[compiled]
	// sets: selMu. remote holds the other replicas' (ReplaceRemote).
	sets, remote store

	mu      sync.Mutex // guards the fields below
	evicted bool
	cur     window
	prev    window
	// namelessFor caches whether the tenant's nameless selectors can select
	// series of this metric (their __name__ matchers), for snapshot namelessFor.
	namelessFor     *compiled
	namelessApplies bool
}

// window is what one series bucket saw of a metric.
type window struct {
	epoch    int64
	series   int64
	selected int64
	// first holds the snapshots in force at the first series; changed tells
	// whether they changed during the bucket (the counts then mix two sets of
	// selectors).
	firstNamed, firstNameless *compiled
	changed                   bool
	allSelected               bool // a series was counted as selected by the cap
	// labels, in the order first seen: series of a metric mostly carry
	// their labels in the same order, so the next label is looked for right
	// after the last one found, which beats a map lookup per label.
	labels         []*labelValues
	labelsOverflow bool
	values         int64 // entries over all labels, for Book.values
}

// labelValues are the values of one label in a bucket. complete is false once
// a value could not be kept: the label then explains nothing, since a value
// missing from the map may be one a selected series carries.
type labelValues struct {
	name     string
	values   map[string]*valueCount
	complete bool
	// last is the count of the value last counted: labels with one value
	// (service="checkout") skip the map.
	last *valueCount
}

// label returns the label name of w, looking from position hint on, or nil.
func (w *window) label(name string, hint int) (*labelValues, int) {
	n := len(w.labels)
	for k := range n {
		i := hint + k
		if i >= n {
			i -= n
		}
		if lv := w.labels[i]; lv.name == name {
			return lv, i
		}
	}
	return nil, hint
}

type valueCount struct {
	value      string // the map key
	unselected int64
	selected   bool
}

func (b *Book) tenant(t tenant.ID, create bool) *tenantBook {
	b.mu.RLock()
	tb := b.tenants[t]
	b.mu.RUnlock()
	if tb != nil || !create {
		return tb
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if tb = b.tenants[t]; tb != nil {
		return tb
	}
	if len(b.tenants) >= b.cfg.MaxTenants {
		b.overflow.tenants.Add(1)
		return nil
	}
	tb = &tenantBook{id: t, metrics: make(map[string]*metricBook)}
	b.tenants[t] = tb
	return tb
}

func (b *Book) metric(tb *tenantBook, name string, create bool) *metricBook {
	tb.mu.RLock()
	mb := tb.metrics[name]
	tb.mu.RUnlock()
	if mb != nil || !create {
		return mb
	}
	if len(name) > b.cfg.MaxNameBytes || name == "" {
		b.overflow.longNames.Add(1)
		return nil
	}
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if mb = tb.metrics[name]; mb != nil || tb.evicted {
		return mb
	}
	if len(tb.metrics) >= b.cfg.MaxMetricsPerTenant {
		b.overflow.metrics.Add(1)
		return nil
	}
	mb = &metricBook{name: strings.Clone(name)}
	tb.metrics[mb.name] = mb
	return mb
}

// Observe matches one series of tenant t against the selectors of its metric
// and of its tenant and counts it in the current bucket. The pipeline calls it
// once per series per bucket (cmd/cardguard's observers), after relabeling.
// labels include __name__; a label with an empty value counts as absent.
// seriesHash is not used: deduplication is the caller's. For a known metric
// and known label values it does not allocate.
func (b *Book) Observe(t tenant.ID, metric string, labels []prompb.Label, seriesHash uint64) {
	tb := b.tenant(t, true)
	if tb == nil {
		return
	}
	mb := b.metric(tb, metric, true)
	if mb == nil {
		tb.mu.RLock()
		evicted := tb.evicted
		tb.mu.RUnlock()
		if !evicted {
			return
		}
		if tb = b.tenant(t, true); tb == nil { // Prune has dropped the tenant
			return
		}
		if mb = b.metric(tb, metric, true); mb == nil {
			return
		}
	}
	named, nameless := mb.sel.Load(), tb.nameless.Load()
	selected, all := named.matches(labels)
	if !selected && nameless != nil {
		selected, all = nameless.matches(labels)
	}
	epoch := b.cfg.Epoch()
	if b.epochs.cur.Load() != epoch {
		b.noteEpoch(epoch)
	}
	for {
		mb.mu.Lock()
		if !mb.evicted {
			break
		}
		// Prune dropped it between our lookup and now; look it up again.
		mb.mu.Unlock()
		if mb = b.metric(tb, metric, true); mb == nil {
			return
		}
	}
	w := b.window(mb, epoch)
	if w.series == 0 {
		w.firstNamed, w.firstNameless = named, nameless
	} else if w.firstNamed != named || w.firstNameless != nameless {
		w.changed = true
	}
	w.series++
	switch {
	case all:
		w.selected++
		w.allSelected = true
	case selected:
		w.selected++
		b.countValues(w, labels, true)
	case named.selective() || (nameless.selective() && mb.namelessMayApply(nameless)):
		// Explain only where some selector picks series: a metric no
		// selector can select is explained by its name alone.
		b.countValues(w, labels, false)
	}
	mb.mu.Unlock()
}

// namelessMayApply tells whether a selector of nl can select series of mb's
// metric, by their __name__ matchers. Needs mb.mu.
func (mb *metricBook) namelessMayApply(nl *compiled) bool {
	if mb.namelessFor != nl {
		mb.namelessFor, mb.namelessApplies = nl, nl.mayMatchName(mb.name)
	}
	return mb.namelessApplies
}

// window returns the window of epoch, turning the buckets over if needed.
// Needs mb.mu. An epoch older than the current window (a series observed
// just as the bucket turned over) is counted in the current one. Reports
// tell whether the previous window is the last complete bucket.
func (b *Book) window(mb *metricBook, epoch int64) *window {
	if epoch <= mb.cur.epoch {
		return &mb.cur
	}
	b.release(&mb.prev)
	mb.prev = mb.cur
	mb.cur = window{epoch: epoch}
	return &mb.cur
}

func (b *Book) release(w *window) {
	if w.values != 0 {
		b.values.Add(-w.values)
		w.values = 0
	}
	w.labels = nil
}

// countValues records, for every label of a series, that its value occurs in
// a selected or an unselected series. Needs the metric's lock.
func (b *Book) countValues(w *window, labels []prompb.Label, selected bool) {
	hint := 0
	for i := range labels {
		l := &labels[i]
		if l.Value == "" || l.Name == "__name__" {
			continue
		}
		lv, at := w.label(l.Name, hint)
		if lv == nil {
			if len(w.labels) >= b.cfg.MaxLabelsPerMetric {
				w.labelsOverflow = true
				continue
			}
			lv = &labelValues{name: strings.Clone(l.Name), values: make(map[string]*valueCount), complete: true}
			at = len(w.labels)
			w.labels = append(w.labels, lv)
		}
		hint = at + 1
		if !lv.complete {
			continue
		}
		vc := lv.last
		if vc == nil || vc.value != l.Value {
			vc = lv.values[l.Value]
		}
		if vc == nil {
			if len(lv.values) >= b.cfg.MaxValuesPerLabel || b.values.Add(1) > b.cfg.MaxValues {
				if len(lv.values) < b.cfg.MaxValuesPerLabel {
					b.values.Add(-1) // the Add above
				}
				b.overflow.values.Add(1)
				n := int64(len(lv.values))
				b.values.Add(-n)
				w.values -= n
				lv.values, lv.complete, lv.last = nil, false, nil
				continue
			}
			w.values++
			vc = &valueCount{value: strings.Clone(l.Value)}
			lv.values[vc.value] = vc
		}
		lv.last = vc
		if selected {
			vc.selected = true
		} else {
			vc.unselected++
		}
	}
}
