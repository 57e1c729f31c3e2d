// Package ring is the set of live replicas and the owner of each piece of work
// among them: rendezvous (highest random weight) hashing, as Mimir's and Tempo's
// rings choose an ingester. Aggregation needs every input of one output series
// in one place, and the label guard and the collision check need every series of
// one metric in one place; the owner of (tenant, metric) is that place.
//
// Rendezvous hashing moves only the keys of a replica that joins or leaves: every
// other key keeps its owner, so ownership changes as little as the membership.
package ring

import (
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Member is one live replica: its ID in the shared state and the URL other
// replicas reach it at.
type Member struct {
	ID  string
	URL string
}

// Ring holds the live members. The zero value is not usable; a Ring is safe for
// concurrent use.
type Ring struct {
	self string

	mu      sync.RWMutex
	members []member // sorted by ID
}

type member struct {
	Member
	seed uint64
}

// New returns a Ring of one member, self.
func New(self string) *Ring {
	r := &Ring{self: self}
	r.Set(nil)
	return r
}

// Self is this replica's ID.
func (r *Ring) Self() string { return r.self }

// Set replaces the live members. This replica is always one of them, whatever
// members says: it never routes its own work away because of a stale list.
func (r *Ring) Set(members []Member) {
	ms := make([]member, 0, len(members)+1)
	seen := map[string]bool{}
	for _, m := range members {
		if m.ID == "" || seen[m.ID] || (m.URL == "" && m.ID != r.self) {
			continue
		}
		seen[m.ID] = true
		ms = append(ms, member{Member: m, seed: xxhash.Sum64String(m.ID)})
	}
	if !seen[r.self] {
		ms = append(ms, member{Member: Member{ID: r.self}, seed: xxhash.Sum64String(r.self)})
	}
	slices.SortFunc(ms, func(a, b member) int {
		switch {
		case a.ID < b.ID:
			return -1
		case a.ID > b.ID:
			return 1
		}
		return 0
	})
	r.mu.Lock()
	r.members = ms
	r.mu.Unlock()
}

// Members returns the live members, sorted by ID.
func (r *Ring) Members() []Member {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Member, len(r.members))
	for i, m := range r.members {
		out[i] = m.Member
	}
	return out
}

// Size is the number of live members, at least 1.
func (r *Ring) Size() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.members)
}

// Owner returns the member that owns key and whether that is this replica.
func (r *Ring) Owner(key uint64) (Member, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(r.members) == 1 {
		return r.members[0].Member, true
	}
	best, bestScore := 0, uint64(0)
	for i := range r.members {
		if s := mix(key ^ r.members[i].seed); i == 0 || s > bestScore {
			best, bestScore = i, s
		}
	}
	m := r.members[best].Member
	return m, m.ID == r.self
}

// MetricKey is the key of the work on one metric of one tenant.
func MetricKey(t tenant.ID, metric string) uint64 {
	var d xxhash.Digest
	d.Reset()
	var b [8]byte
	b[0], b[1], b[2], b[3] = byte(t.AccountID), byte(t.AccountID>>8), byte(t.AccountID>>16), byte(t.AccountID>>24)
	b[4], b[5], b[6], b[7] = byte(t.ProjectID), byte(t.ProjectID>>8), byte(t.ProjectID>>16), byte(t.ProjectID>>24)
	_, _ = d.Write(b[:])
	_, _ = d.WriteString(metric)
	return d.Sum64()
}

// OwnerOf is Owner(MetricKey(t, metric)).
func (r *Ring) OwnerOf(t tenant.ID, metric string) (Member, bool) {
	return r.Owner(MetricKey(t, metric))
}

// mix is splitmix64's finaliser: a key and a member seed xored are scrambled
// into a weight in which every bit depends on both.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
