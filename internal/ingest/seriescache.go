package ingest

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
)

// seriesCache remembers, per tenant and series (by the hash of the label bytes as
// received, see seriesKey), what the stages already decided in the current periods, so that the
// series every scrape repeats cost one lookup instead of a validation pass, a
// relabel run, a second hash and one set lookup in each of the cardinality
// tracker, the label guard and the series limiter.
//
// The stages keep their own state and stay the source of truth: an entry only lets
// ingest skip a call whose answer is known to be the same as last time:
//   - validation: the same labels validated before (same hash);
//   - relabeling: the same rules (pointer) kept the series unchanged, dropped it,
//     or removed the same labels from it;
//   - Observe: already observed in the tracker's current dedup period;
//   - the guard: passed in the guard's current window (admitted values only grow
//     within a window, so it passes again);
//   - the series limits: admitted in the limiter's current generation while a series
//     limit was on (an admitted series always passes again in that generation).
//
// The cache is cleared every window, which bounds it to the series of one window,
// and a shard stops taking entries at maxEntriesPerShard (those series then take
// the slow path, which is still correct). Safe for concurrent use.
type seriesCache struct {
	window int64 // nanoseconds
	shards [cacheShards]cacheShard
	rules  rulesIDs
}

const (
	cacheShardBits     = 6
	cacheShards        = 1 << cacheShardBits
	maxEntriesPerShard = 1 << 16 // 4M series in all: at most 2^17 slots of 32 bytes per shard, 256 MiB
)

type cacheShard struct {
	mu  sync.Mutex
	gen int64
	t   table
}

// table is an open-addressing hash table with linear probing, keyed by a 64-bit
// sum that is already a good hash. A lookup of a series not in the CPU cache
// costs about one memory access, where a Go map costs three (directory, table,
// group); on the write path, with every series looked up once, that is the
// difference that shows. Entries are only added or replaced, never deleted: the
// table is emptied as a whole when its window ends.
type table struct {
	slots []slot // len is a power of two, or 0
	n     int
}

type slot struct {
	key uint64 // 0: empty
	e   cacheEntry
}

// slotKey maps a sum to a stored key; 0 marks empty slots.
func slotKey(sum uint64) uint64 {
	if sum == 0 {
		return 1
	}
	return sum
}

func (t *table) get(sum uint64) (cacheEntry, bool) {
	if len(t.slots) == 0 {
		return cacheEntry{}, false
	}
	k, mask := slotKey(sum), uint64(len(t.slots)-1)
	for i := k & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == k {
			return s.e, true
		}
		if s.key == 0 {
			return cacheEntry{}, false
		}
	}
}

// put stores e under sum; a new key is added only while the table holds fewer
// than max entries.
func (t *table) put(sum uint64, e cacheEntry, max int) {
	k := slotKey(sum)
	if len(t.slots) == 0 || (t.n+1)*4 > len(t.slots)*3 {
		if t.n >= max {
			t.replace(k, e)
			return
		}
		t.grow()
	}
	mask := uint64(len(t.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == k {
			s.e = e
			return
		}
		if s.key == 0 {
			if t.n >= max {
				return
			}
			s.key, s.e = k, e
			t.n++
			return
		}
	}
}

// replace updates an existing key and never adds one.
func (t *table) replace(k uint64, e cacheEntry) {
	if len(t.slots) == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	for i := k & mask; ; i = (i + 1) & mask {
		s := &t.slots[i]
		if s.key == k {
			s.e = e
			return
		}
		if s.key == 0 {
			return
		}
	}
}

func (t *table) grow() {
	old := t.slots
	size := 2 * len(old)
	if size == 0 {
		size = 1024
	}
	t.slots = make([]slot, size)
	mask := uint64(size - 1)
	for _, s := range old {
		if s.key == 0 {
			continue
		}
		for i := s.key & mask; ; i = (i + 1) & mask {
			if t.slots[i].key == 0 {
				t.slots[i] = s
				break
			}
		}
	}
}

// reset empties the table and keeps its memory for the next window.
func (t *table) reset() {
	clear(t.slots)
	t.n = 0
}

// cacheKey identifies a series of a tenant.
type cacheKey struct {
	t tenant.ID
	h uint64
}

// sum folds a key into the 64 bits the map is keyed by: like the series hash
// itself, it treats a 64-bit collision as impossible, and halves the key's size.
func (k cacheKey) sum() uint64 {
	t := uint64(k.t.AccountID)<<32 | uint64(k.t.ProjectID)
	return k.h ^ (t * 0x9e3779b97f4a7c15)
}

// Relabel outcomes remembered for a rules pointer.
const (
	relabelUnknown uint8 = iota
	relabelUnchanged
	relabelChanged // labels changed: the rules run again for the new labels
	relabelMasked  // labels removed, nothing else: cacheEntry.mask says which
	relabelDropped
)

// cacheEntry is what is known about one series: 20 bytes, without pointers, so
// that a slot is 32 bytes (two to a cache line) and the garbage collector
// does not scan the table. Periods are stored plus one, so that zero means
// "not yet", and truncated to 16 bits: a stored period could only be taken
// for a later one 65,536 periods on, and no entry lives longer than the
// cache's window.
type cacheEntry struct {
	rules uint32 // id of the rules the relabel fields are valid for (rulesID)
	// mask has bit i set for each label, in the order received, that the rules
	// remove, when relabel == relabelMasked.
	mask     uint32
	observed uint16 // tracker dedup period + 1
	guarded  uint16 // guard window + 1
	admitted uint16 // limiter generation + 1
	folded   uint16 // claims epoch in which the series claimed its output alone
	// The forwarded labels' count and longest name and value, saturating, when
	// relabel is relabelUnchanged or relabelMasked: enough to check the label
	// limits without reading the labels.
	maxValue uint16
	labels   uint8
	maxName  uint8
	relabel  uint8
}

// setLabelStats records what checking label limits needs to know of ls.
func (e *cacheEntry) setLabelStats(ls []prompb.Label) {
	e.labels = uint8(min(len(ls), math.MaxUint8))
	e.maxName, e.maxValue = 0, 0
	for i := range ls {
		e.maxName = max(e.maxName, uint8(min(len(ls[i].Name), math.MaxUint8)))
		e.maxValue = max(e.maxValue, uint16(min(len(ls[i].Value), math.MaxUint16)))
	}
}

// withinLabelLimits reports whether the forwarded labels are known to pass
// limits.CheckLabels with l; false means they must be checked.
func (e *cacheEntry) withinLabelLimits(l *limits.Limits) bool {
	within := func(v, sat, limit int) bool { return limit <= 0 || (v != sat && v <= limit) }
	return within(int(e.labels), math.MaxUint8, l.MaxLabelsPerSeries) &&
		within(int(e.maxName), math.MaxUint8, l.MaxLabelNameLength) &&
		within(int(e.maxValue), math.MaxUint16, l.MaxLabelValueLength)
}

// rulesIDs numbers the relabel rules the cache has seen, so that an entry can
// say which rules its relabel outcome is for in 4 bytes rather than a pointer.
// Numbers are never given twice (short of 2^32 rule sets): the map may forget
// old rules, whose entries then simply do not match.
type rulesIDs struct {
	mu   sync.Mutex
	ids  map[*relabel.Rules]uint32
	next uint32
}

// rulesID is the number of r, never 0.
func (c *seriesCache) rulesID(r *relabel.Rules) uint32 {
	c.rules.mu.Lock()
	defer c.rules.mu.Unlock()
	if id, ok := c.rules.ids[r]; ok {
		return id
	}
	if c.rules.ids == nil || len(c.rules.ids) >= 1024 {
		// Rules replaced by a reload or the API are not used again: forget
		// them rather than keep them alive.
		c.rules.ids = make(map[*relabel.Rules]uint32)
	}
	c.rules.next++
	if c.rules.next == 0 {
		c.rules.next++
	}
	c.rules.ids[r] = c.rules.next
	return c.rules.next
}

func newSeriesCache(window time.Duration) *seriesCache {
	if window <= 0 {
		window = time.Hour
	}
	return &seriesCache{window: int64(window)}
}

func (c *seriesCache) shard(sum uint64) *cacheShard {
	return &c.shards[shardOf(sum)]
}

// shardOf is the shard of sum, taken from its top bits: a shard's table indexes
// by the low bits, and if those chose the shard as well, all the keys of a shard
// would share their lowest six index bits, crowd into 1/64 of its slots and make
// every lookup probe a long run of them.
func shardOf(sum uint64) uint64 { return sum >> (64 - cacheShardBits) }

// lock locks the shard of sum, emptied first if its window is over.
func (c *seriesCache) lock(sum uint64, now time.Time) *cacheShard {
	sh := c.shard(sum)
	gen := now.UnixNano() / c.window
	sh.mu.Lock()
	if sh.gen != gen {
		sh.t.reset()
		sh.gen = gen
	}
	return sh
}

// put stores e for k, unless the shard is full.
func (c *seriesCache) put(k cacheKey, e cacheEntry, now time.Time) {
	sum := k.sum()
	sh := c.lock(sum, now)
	sh.t.put(sum, e, maxEntriesPerShard)
	sh.mu.Unlock()
}

// len counts the entries, for cardguard_ingest_series_cache_entries.
func (c *seriesCache) len() int {
	if c == nil {
		return 0
	}
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.t.n
		sh.mu.Unlock()
	}
	return n
}

// getAll looks up every entry of a request, shard by shard: one lock per shard
// instead of one per series, and lookups the CPU can overlap, since nothing
// between them waits for memory. order is scratch space.
func (c *seriesCache) getAll(t tenant.ID, entries []requestEntry, order *[]int32, now time.Time) {
	gen := now.UnixNano() / c.window
	var counts [cacheShards + 1]int32
	for i := range entries {
		counts[shardOf(cacheKey{t, entries[i].raw}.sum())+1]++
	}
	for i := 1; i <= cacheShards; i++ {
		counts[i] += counts[i-1]
	}
	o := slices.Grow((*order)[:0], len(entries))[:len(entries)]
	next := counts
	for i := range entries {
		sh := shardOf(cacheKey{t, entries[i].raw}.sum())
		o[next[sh]] = int32(i)
		next[sh]++
	}
	*order = o
	for s := 0; s < cacheShards; s++ {
		from, to := counts[s], counts[s+1]
		if from == to {
			continue
		}
		sh := &c.shards[s]
		sh.mu.Lock()
		if sh.gen != gen {
			sh.t.reset()
			sh.gen = gen
		}
		for _, i := range o[from:to] {
			e := &entries[i]
			e.cacheEntry, e.known = sh.t.get(cacheKey{t, e.raw}.sum())
		}
		sh.mu.Unlock()
	}
}
