package seriesusage

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/atomicfile"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// The snapshot keeps the selectors across restarts: without it, every
// metric would count as never selected until its queries ran again, which
// for a weekly report takes a week. Bucket counts are not kept: they are
// rebuilt within a bucket.

const (
	snapshotVersion  = 1
	maxSnapshotBytes = 64 << 20
)

type snapshot struct {
	Version        int          `json:"version"`
	RecordingSince time.Time    `json:"recording_since"`
	Tenants        []snapTenant `json:"tenants"`
}

type snapTenant struct {
	Tenant   string               `json:"tenant"`
	Nameless snapStore            `json:"nameless"`
	Metrics  map[string]snapStore `json:"metrics"`
}

type snapStore struct {
	Sets         []snapSet `json:"sets,omitempty"`
	Overflow     uint64    `json:"overflow,omitempty"`
	OverflowLast time.Time `json:"overflow_last,omitzero"`
}

type snapSet struct {
	// Matchers are name, operator (=, !=, =~, !~) and value.
	Matchers [][3]string `json:"matchers"`
	First    time.Time   `json:"first"`
	Last     time.Time   `json:"last"`
	Reads    uint64      `json:"reads"`
}

// SaveFile writes the selectors to path, atomically.
func (b *Book) SaveFile(path string) error {
	data, err := json.Marshal(b.export())
	if err != nil {
		return fmt.Errorf("cannot encode series usage selectors: %w", err)
	}
	if len(data) > maxSnapshotBytes {
		return fmt.Errorf("cannot save series usage selectors: %d bytes, over the cap of %d", len(data), maxSnapshotBytes)
	}
	return atomicfile.Write(path, data)
}

func (b *Book) export() snapshot {
	b.selMu.Lock()
	defer b.selMu.Unlock()
	snap := snapshot{Version: snapshotVersion, RecordingSince: b.start.UTC()}
	b.mu.RLock()
	tbs := make([]*tenantBook, 0, len(b.tenants))
	for _, tb := range b.tenants {
		tbs = append(tbs, tb)
	}
	b.mu.RUnlock()
	for _, tb := range tbs {
		st := snapTenant{Tenant: tb.id.String(), Nameless: tb.namelessSets.export(), Metrics: map[string]snapStore{}}
		tb.mu.RLock()
		for name, mb := range tb.metrics {
			if !mb.sets.empty() {
				st.Metrics[name] = mb.sets.export()
			}
		}
		tb.mu.RUnlock()
		if len(st.Metrics) > 0 || !tb.namelessSets.empty() {
			snap.Tenants = append(snap.Tenants, st)
		}
	}
	return snap
}

func (s *store) export() snapStore {
	out := snapStore{Overflow: s.overflow, OverflowLast: s.overflowLast}
	for _, set := range s.sets {
		ss := snapSet{First: set.first, Last: set.last, Reads: set.reads, Matchers: make([][3]string, 0, len(set.ms))}
		for _, m := range set.ms {
			ss.Matchers = append(ss.Matchers, [3]string{m.Name, m.Type.String(), m.Value})
		}
		out.Sets = append(out.Sets, ss)
	}
	return out
}

// LoadFile adds the selectors saved in path, leaving out those expired and
// those past the caps. A missing file is an error the caller may ignore
// (os.ErrNotExist).
func (b *Book) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if len(data) > maxSnapshotBytes {
		return fmt.Errorf("series usage selectors %s: %d bytes, over the cap of %d", path, len(data), maxSnapshotBytes)
	}
	var snap snapshot
	if err := json.Unmarshal(data, &snap); err != nil {
		return fmt.Errorf("cannot read series usage selectors %s: %w", path, err)
	}
	if snap.Version != snapshotVersion {
		return fmt.Errorf("series usage selectors %s: version %d, want %d", path, snap.Version, snapshotVersion)
	}
	return b.restore(snap)
}

var matchTypes = map[string]labels.MatchType{
	"=": labels.MatchEqual, "!=": labels.MatchNotEqual, "=~": labels.MatchRegexp, "!~": labels.MatchNotRegexp,
}

func (b *Book) restore(snap snapshot) error {
	now := b.cfg.Now()
	cutoff := now.Add(-b.cfg.Retention)
	b.selMu.Lock()
	defer b.selMu.Unlock()
	if !snap.RecordingSince.IsZero() && snap.RecordingSince.Before(b.start) {
		b.start = snap.RecordingSince
	}
	for _, st := range snap.Tenants {
		id, err := tenant.Parse(st.Tenant)
		if err != nil {
			return fmt.Errorf("series usage selectors: %w", err)
		}
		tb := b.tenant(id, true)
		if tb == nil {
			continue
		}
		if b.restoreStore(&tb.namelessSets, st.Nameless, cutoff, b.cfg.MaxNamelessPerTenant) {
			b.recompileNameless(tb, now)
		}
		for name, ss := range st.Metrics {
			mb := b.metric(tb, name, true)
			if mb == nil {
				continue
			}
			if b.restoreStore(&mb.sets, ss, cutoff, b.cfg.MaxSelectorsPerMetric) {
				b.recompile(mb, now)
			}
		}
	}
	return nil
}

// restoreStore merges saved sets into s and reports whether s changed. A set
// whose matchers do not compile is left out.
func (b *Book) restoreStore(s *store, ss snapStore, cutoff time.Time, max int) bool {
	changed := false
	if ss.Overflow > 0 && ss.OverflowLast.After(cutoff) {
		s.overflow += ss.Overflow
		if ss.OverflowLast.After(s.overflowLast) {
			s.overflowLast = ss.OverflowLast
		}
		changed = true
	}
next:
	for _, saved := range ss.Sets {
		if !saved.Last.After(cutoff) {
			continue
		}
		ms := make([]*labels.Matcher, 0, len(saved.Matchers))
		for _, m := range saved.Matchers {
			typ, ok := matchTypes[m[1]]
			if !ok {
				continue next
			}
			lm, err := labels.NewMatcher(typ, m[0], m[2])
			if err != nil {
				continue next
			}
			ms = append(ms, lm)
		}
		key, ms := b.setKey(queryaudit.NormaliseMatchers(ms))
		if s.restore(b, key, ms, saved, max) {
			changed = true
		}
	}
	return changed
}

// restore adds a saved set, or merges it into the same set recorded since
// start; it reports whether the snapshot for the write path must be rebuilt.
func (s *store) restore(b *Book, key string, ms []*labels.Matcher, saved snapSet, max int) bool {
	for _, set := range s.sets {
		if set.key == key {
			if saved.First.Before(set.first) {
				set.first = saved.First
			}
			if saved.Last.After(set.last) {
				set.last = saved.Last
			}
			set.reads += saved.Reads
			return false
		}
	}
	if len(s.sets) >= max {
		// The cap was lowered (or the other replicas together have more): a
		// set not kept counts as the overflow it would have been, so that
		// nothing it selected looks unselected.
		if !s.remote {
			b.overflow.selectors.Add(1)
		}
		s.overflow++
		if saved.Last.After(s.overflowLast) {
			s.overflowLast = saved.Last
		}
		return true
	}
	s.sets = append(s.sets, &selectorSet{key: key, ms: ms, first: saved.First, last: saved.Last, reads: saved.Reads})
	if !s.remote {
		b.selectors.Add(1)
	}
	return true
}
