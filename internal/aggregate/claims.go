package aggregate

import (
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Claims finds the series that relabeling makes collide: it remembers, per
// tenant and output series (by the hash of its labels), the one input series
// that produced it in the current window. A second, different input of the same
// output is a collision, and from then on the output is aggregated.
//
// A caller may remember that a series claimed its output alone and skip Claim
// for it while Epoch(t) stays the same: the epoch moves on whenever a collision
// is found in t and when the window turns, so that the input that claimed an
// output first hears about the second one. Safe for concurrent use.
type Claims struct {
	window time.Duration
	max    int // claims in all tenants

	mu      sync.Mutex
	n       int
	gen     int64
	epoch   uint16 // the last epoch given out, in any tenant
	tenants map[tenant.ID]*claimSet

	// collisions counts, since start, the outputs found colliding per tenant;
	// tenants past maxCollisionTenants share collisionsOther, so that the map
	// stays bounded however many tenants write.
	collisions      map[tenant.ID]uint64
	collisionsOther uint64
}

// maxCollisionTenants bounds the tenants whose collisions are counted apart,
// as the tenant label of cardguard's metrics is bounded.
const maxCollisionTenants = tenant.DefaultLabelCap

type claimSet struct {
	gen   int64
	epoch uint16
	full  bool
	m     map[uint64]uint64 // output hash → input key
	// collided holds the outputs of m found colliding, so that each is counted
	// once however many more inputs claim it.
	collided map[uint64]struct{}
}

// NewClaims remembers at most max claims in all, in each window.
func NewClaims(window time.Duration, max int) *Claims {
	if window <= 0 {
		window = DefaultStaleness
	}
	return &Claims{window: window, max: max, tenants: map[tenant.ID]*claimSet{}, collisions: map[tenant.ID]uint64{}}
}

func (c *Claims) set(t tenant.ID, now time.Time) *claimSet {
	gen := now.UnixNano() / int64(c.window)
	if gen != c.gen {
		// A tenant that stopped writing must not keep its claims.
		c.gen = gen
		for id, cs := range c.tenants {
			if cs.gen != gen {
				c.n -= len(cs.m)
				delete(c.tenants, id)
			}
		}
	}
	cs := c.tenants[t]
	if cs == nil {
		cs = &claimSet{gen: gen, m: map[uint64]uint64{}}
		c.bump(cs)
		c.tenants[t] = cs
	}
	// Every set is of the current window: older ones were dropped above.
	return cs
}

// bump gives cs a new epoch. Epochs come from one counter for all tenants, so
// that a tenant's claims made anew never reuse an epoch a cached series still
// holds (short of 65,535 epochs within one window of the series cache).
func (c *Claims) bump(cs *claimSet) {
	c.epoch++
	if c.epoch == 0 {
		c.epoch = 1
	}
	cs.epoch = c.epoch
}

// Epoch is tenant t's current epoch, never 0.
func (c *Claims) Epoch(t tenant.ID, now time.Time) uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.set(t, now).epoch
}

// Claim records that input in produced output out and reports whether it is the
// output's only input; on a collision, prev is the input that had the output to
// itself until now (see Input.Seed). When the claims are full, nothing can be
// told apart and Claim reports false: aggregating a series that did not collide
// changes its raw values but never corrupts it, forwarding one that did would.
func (c *Claims) Claim(t tenant.ID, out, in uint64, now time.Time) (unique bool, prev uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cs := c.set(t, now)
	prev, ok := cs.m[out]
	switch {
	case ok && prev == in:
		return true, 0
	case ok:
		if _, counted := cs.collided[out]; !counted {
			if cs.collided == nil {
				cs.collided = map[uint64]struct{}{}
			}
			cs.collided[out] = struct{}{}
			c.countCollision(t)
		}
		c.bump(cs)
		return false, prev
	case c.n >= c.max:
		if !cs.full {
			cs.full = true
			c.bump(cs)
		}
		return false, 0
	}
	cs.m[out] = in
	c.n++
	return true, 0
}

func (c *Claims) countCollision(t tenant.ID) {
	if _, ok := c.collisions[t]; ok || len(c.collisions) < maxCollisionTenants {
		c.collisions[t]++
		return
	}
	c.collisionsOther++
}

// Collisions is the number of outputs of tenant t found colliding since start:
// each output whose second distinct input claimed it, once per window. An
// output already aggregated is not claimed again, so one that keeps colliding
// counts once for as long as its aggregate is held. Tenants past the first
// 1,000 with collisions are not counted apart and report 0.
func (c *Claims) Collisions(t tenant.ID) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.collisions[t]
}
