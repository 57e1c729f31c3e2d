package seriesusage

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Replicas behind one load balancer each proxy part of the reads, while the
// series of a metric may all reach one of them. So that every replica matches
// its series against every replica's selectors, each one publishes its own
// (ExportShared) and takes the others' (ReplaceRemote) through the shared
// state. The others' selectors are kept apart from this replica's, replaced
// as a whole at each sync, and never saved to this replica's snapshot.

// ExportShared returns this replica's selectors for the other replicas: what
// SaveFile writes.
func (b *Book) ExportShared() ([]byte, error) {
	return json.Marshal(b.export())
}

type remoteKey struct {
	t      tenant.ID
	metric string // "": the selectors without a name
}

// ReplaceRemote replaces the other replicas' selectors with blobs, one per
// replica as ExportShared returned them. A blob that cannot be read is left
// out and reported; the others are taken.
func (b *Book) ReplaceRemote(blobs map[string][]byte) error {
	// The others' selectors change rarely, and the syncer hands them over
	// every few seconds: unchanged, they are not parsed and compiled again.
	digests := make(map[string]uint64, len(blobs))
	for rep, data := range blobs {
		digests[rep] = xxhash.Sum64(data)
	}
	b.remoteMu.Lock()
	defer b.remoteMu.Unlock()
	if b.remoteDigests != nil && maps.Equal(digests, b.remoteDigests) {
		return nil
	}
	b.remoteDigests = digests
	now := b.cfg.Now()
	cutoff := now.Add(-b.cfg.Retention)
	fresh := map[remoteKey]*store{}
	get := func(k remoteKey) *store {
		s := fresh[k]
		if s == nil {
			s = &store{remote: true}
			fresh[k] = s
		}
		return s
	}
	var firstErr error
	// In a fixed order, so that which sets a cap leaves out does not change
	// from one sync to the next.
	for _, rep := range slices.Sorted(maps.Keys(blobs)) {
		var snap snapshot
		if err := json.Unmarshal(blobs[rep], &snap); err != nil || snap.Version != snapshotVersion {
			if firstErr == nil {
				firstErr = fmt.Errorf("selectors of replica %q: version %d, %v", clip(rep, 64), snap.Version, err)
			}
			continue
		}
		for _, st := range snap.Tenants {
			id, err := tenant.Parse(st.Tenant)
			if err != nil {
				continue
			}
			b.restoreStore(get(remoteKey{t: id}), st.Nameless, cutoff, b.cfg.MaxNamelessPerTenant)
			for name, ss := range st.Metrics {
				if name != "" && len(name) <= b.cfg.MaxNameBytes {
					b.restoreStore(get(remoteKey{t: id, metric: name}), ss, cutoff, b.cfg.MaxSelectorsPerMetric)
				}
			}
		}
	}

	b.selMu.Lock()
	defer b.selMu.Unlock()
	// What the others no longer have goes.
	b.mu.RLock()
	tbs := make([]*tenantBook, 0, len(b.tenants))
	for _, tb := range b.tenants {
		tbs = append(tbs, tb)
	}
	b.mu.RUnlock()
	for _, tb := range tbs {
		if _, ok := fresh[remoteKey{t: tb.id}]; !ok && !tb.namelessRemote.empty() {
			tb.namelessRemote = store{remote: true}
			b.recompileNameless(tb, now)
		}
		tb.mu.RLock()
		var gone []*metricBook
		for name, mb := range tb.metrics {
			if _, ok := fresh[remoteKey{t: tb.id, metric: name}]; !ok && !mb.remote.empty() {
				gone = append(gone, mb)
			}
		}
		tb.mu.RUnlock()
		for _, mb := range gone {
			mb.remote = store{remote: true}
			b.recompile(mb, now)
		}
	}
	for k, s := range fresh {
		tb := b.tenant(k.t, true)
		if tb == nil {
			continue
		}
		if k.metric == "" {
			changed := !sameSets(&tb.namelessRemote, s, cutoff)
			tb.namelessRemote = *s
			if changed {
				b.recompileNameless(tb, now)
			}
			continue
		}
		mb := b.metric(tb, k.metric, true)
		if mb == nil {
			continue
		}
		changed := !sameSets(&mb.remote, s, cutoff)
		mb.remote = *s
		if changed {
			b.recompile(mb, now)
		}
	}
	return firstErr
}

// sameSets tells whether x and y select the same series at cutoff: the same
// sets, and both or neither over the cap.
func sameSets(x, y *store, cutoff time.Time) bool {
	if (x.overflow > 0 && x.overflowLast.After(cutoff)) != (y.overflow > 0 && y.overflowLast.After(cutoff)) {
		return false
	}
	keys := func(s *store) []string {
		var out []string
		for _, set := range s.sets {
			if set.last.After(cutoff) {
				out = append(out, set.key)
			}
		}
		slices.Sort(out)
		return out
	}
	return slices.Equal(keys(x), keys(y))
}
