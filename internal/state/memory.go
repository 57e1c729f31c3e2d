package state

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Memory is a Backend held in this process: several Syncers given the same Memory
// share state as replicas sharing one Redis do. It exists for tests and as the
// executable description of the Backend contract; expiry times are kept but not
// enforced. SetDown makes it fail like an unreachable Redis and Reset like one
// restarted without persistence. It is safe for concurrent use.
type Memory struct {
	mu       sync.Mutex
	down     bool
	instance string
	replicas map[string]time.Time
	peers    map[string]string
	members  map[memberKey]*memberGen
	sketches map[string]map[string]Blob
	usage    map[string]usageEntry
	sels     map[string]usageEntry
	limits   map[string][]byte
	rules    map[string][]byte // nil: no rules were ever set
	watchers map[int]func()
	ruleWs   map[int]func()
	nextW    int
}

type usageEntry struct {
	data []byte
	at   time.Time
}

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	m := &Memory{watchers: map[int]func(){}, ruleWs: map[int]func(){}}
	m.resetLocked()
	return m
}

func (m *Memory) resetLocked() {
	m.instance = ""
	m.replicas = map[string]time.Time{}
	m.members = map[memberKey]*memberGen{}
	m.sketches = map[string]map[string]Blob{}
	m.usage = map[string]usageEntry{}
	m.sels = map[string]usageEntry{}
	m.limits = map[string][]byte{}
	m.rules = nil
}

// SetDown makes every call fail (true) or work again (false).
func (m *Memory) SetDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// Reset forgets everything, as a Redis restarted without persistence.
func (m *Memory) Reset() {
	m.mu.Lock()
	m.resetLocked()
	m.mu.Unlock()
}

func (m *Memory) lock(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	if m.down {
		m.mu.Unlock()
		return errDown
	}
	return nil
}

// Instance implements Presence.
func (m *Memory) Instance(ctx context.Context, _ time.Duration) (string, error) {
	if err := m.lock(ctx); err != nil {
		return "", err
	}
	defer m.mu.Unlock()
	if m.instance == "" {
		m.instance = randomToken()
	}
	return m.instance, nil
}

// Heartbeat implements Presence.
func (m *Memory) Heartbeat(ctx context.Context, replica string, now time.Time, ttl time.Duration) ([]string, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	m.replicas[replica] = now
	var out []string
	for r, at := range m.replicas {
		if now.Sub(at) <= ttl {
			out = append(out, r)
		} else {
			delete(m.replicas, r)
		}
	}
	slices.Sort(out)
	return out, nil
}

// Announce implements Presence.
func (m *Memory) Announce(ctx context.Context, replica, url string, alive []string, _ time.Duration) (map[string]string, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	if m.peers == nil {
		m.peers = map[string]string{}
	}
	m.peers[replica] = url
	out := map[string]string{}
	for id, u := range m.peers {
		if slices.Contains(alive, id) || id == replica {
			out[id] = u
		} else {
			delete(m.peers, id)
		}
	}
	return out, nil
}

// memberGen is one tenant's membership in one generation.
type memberGen struct {
	set       map[uint64]string // series → metric ("" none)
	perMetric map[string]int64
	newTotal  int64
	newMetric map[string]int64
}

func (m *Memory) gen(t tenant.ID, gen int64, create bool) *memberGen {
	k := memberKey{t, gen}
	g := m.members[k]
	if g == nil && create {
		g = &memberGen{set: map[uint64]string{}, perMetric: map[string]int64{}, newMetric: map[string]int64{}}
		m.members[k] = g
	}
	return g
}

type memberKey struct {
	t   tenant.ID
	gen int64
}

// AdmitSeries implements Membership as admitScript does, under the lock.
func (m *Memory) AdmitSeries(ctx context.Context, t tenant.ID, gen int64, maxSeries, maxPerMetric int64, force bool, cands []limits.Candidate, _ time.Time) (int64, error) {
	if err := m.lock(ctx); err != nil {
		return 0, err
	}
	defer m.mu.Unlock()
	cur, prev := m.gen(t, gen, true), m.gen(t, gen-1, false)
	if prev == nil {
		prev = &memberGen{}
	}
	total := int64(len(prev.set)) + cur.newTotal
	for i := range cands {
		c := &cands[i]
		c.Reason = ""
		if _, ok := cur.set[c.Hash]; ok {
			continue
		}
		if _, ok := prev.set[c.Hash]; ok {
			cur.set[c.Hash] = c.Metric
			if c.Metric != "" {
				cur.perMetric[c.Metric]++
			}
			continue
		}
		if !force {
			if maxSeries > 0 && total >= maxSeries {
				c.Reason = limits.ReasonMaxSeries
				continue
			}
			if maxPerMetric > 0 && c.Metric != "" && prev.perMetric[c.Metric]+cur.newMetric[c.Metric] >= maxPerMetric {
				c.Reason = limits.ReasonMaxSeriesPerMetric
				continue
			}
		}
		cur.set[c.Hash] = c.Metric
		total++
		cur.newTotal++
		if c.Metric != "" {
			cur.perMetric[c.Metric]++
			cur.newMetric[c.Metric]++
		}
	}
	for k := range m.members {
		if k.gen < gen-1 {
			delete(m.members, k)
		}
	}
	return total, nil
}

// SeriesCounts implements Membership.
func (m *Memory) SeriesCounts(ctx context.Context, gen int64, ts []tenant.ID) ([]int64, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make([]int64, len(ts))
	for i, t := range ts {
		if p := m.gen(t, gen-1, false); p != nil {
			out[i] += int64(len(p.set))
		}
		if c := m.gen(t, gen, false); c != nil {
			out[i] += c.newTotal
		}
	}
	return out, nil
}

// MembersOf returns how many series t's membership holds in gen, for tests.
func (m *Memory) MembersOf(t tenant.ID, gen int64) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if g := m.gen(t, gen, false); g != nil {
		return len(g.set)
	}
	return 0
}

// PutSketches implements SketchStore.
func (m *Memory) PutSketches(ctx context.Context, replica string, put []Blob, del []string, _ time.Duration) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	s := m.sketches[replica]
	if s == nil {
		s = map[string]Blob{}
		m.sketches[replica] = s
	}
	for _, b := range put {
		b.Data = slices.Clone(b.Data)
		s[b.Name] = b
	}
	for _, n := range del {
		delete(s, n)
	}
	return nil
}

// SketchIndex implements SketchStore.
func (m *Memory) SketchIndex(ctx context.Context, replica string) (map[string]uint64, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := map[string]uint64{}
	for n, b := range m.sketches[replica] {
		out[n] = b.Digest
	}
	return out, nil
}

// GetSketches implements SketchStore.
func (m *Memory) GetSketches(ctx context.Context, replica string, names []string) ([][]byte, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := make([][]byte, len(names))
	for i, n := range names {
		if b, ok := m.sketches[replica][n]; ok {
			out[i] = slices.Clone(b.Data)
		}
	}
	return out, nil
}

// PutUsage implements UsageStore.
func (m *Memory) PutUsage(ctx context.Context, replica string, data []byte, now time.Time, _ time.Duration) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.usage[replica] = usageEntry{data: slices.Clone(data), at: now}
	return nil
}

// AllUsage implements UsageStore.
func (m *Memory) AllUsage(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for r, e := range m.usage {
		if now.Sub(e.at) <= retention {
			out[r] = slices.Clone(e.data)
		}
	}
	return out, nil
}

// PutSelectors implements SelectorStore.
func (m *Memory) PutSelectors(ctx context.Context, replica string, data []byte, now time.Time, _ time.Duration) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	m.sels[replica] = usageEntry{data: slices.Clone(data), at: now}
	return nil
}

// AllSelectors implements SelectorStore.
func (m *Memory) AllSelectors(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for r, e := range m.sels {
		if now.Sub(e.at) <= retention {
			out[r] = slices.Clone(e.data)
		}
	}
	return out, nil
}

// LoadLimits implements LimitsBackend.
func (m *Memory) LoadLimits(ctx context.Context) (map[string][]byte, error) {
	if err := m.lock(ctx); err != nil {
		return nil, err
	}
	defer m.mu.Unlock()
	return maps.Clone(m.limits), nil
}

// SaveLimit implements LimitsBackend.
func (m *Memory) SaveLimit(ctx context.Context, tenant string, override []byte) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	if override == nil {
		delete(m.limits, tenant)
	} else {
		m.limits[tenant] = slices.Clone(override)
	}
	ws := slices.Collect(maps.Values(m.watchers))
	m.mu.Unlock()
	for _, w := range ws {
		go w()
	}
	return nil
}

// SeedLimits implements LimitsBackend.
func (m *Memory) SeedLimits(ctx context.Context, overrides map[string][]byte) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	for t, o := range overrides {
		if _, ok := m.limits[t]; !ok {
			m.limits[t] = slices.Clone(o)
		}
	}
	return nil
}

// WatchLimits implements LimitsBackend.
func (m *Memory) WatchLimits(ctx context.Context, changed func()) error {
	m.mu.Lock()
	id := m.nextW
	m.nextW++
	m.watchers[id] = changed
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	delete(m.watchers, id)
	m.mu.Unlock()
	return nil
}

func randomToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// LoadRules implements RulesBackend.
func (m *Memory) LoadRules(ctx context.Context) (map[string][]byte, bool, error) {
	if err := m.lock(ctx); err != nil {
		return nil, false, err
	}
	defer m.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range m.rules {
		out[k] = slices.Clone(v)
	}
	return out, m.rules != nil, nil
}

// SaveRules implements RulesBackend.
func (m *Memory) SaveRules(ctx context.Context, key string, rules []byte) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	if m.rules == nil {
		m.rules = map[string][]byte{}
	}
	if rules == nil {
		delete(m.rules, key)
	} else {
		m.rules[key] = slices.Clone(rules)
	}
	ws := slices.Collect(maps.Values(m.ruleWs))
	m.mu.Unlock()
	for _, w := range ws {
		go w()
	}
	return nil
}

// SeedRules implements RulesBackend.
func (m *Memory) SeedRules(ctx context.Context, rules map[string][]byte) error {
	if err := m.lock(ctx); err != nil {
		return err
	}
	defer m.mu.Unlock()
	if m.rules == nil {
		m.rules = map[string][]byte{}
	}
	for k, v := range rules {
		if _, ok := m.rules[k]; !ok {
			m.rules[k] = slices.Clone(v)
		}
	}
	return nil
}

// WatchRules implements RulesBackend.
func (m *Memory) WatchRules(ctx context.Context, changed func()) error {
	m.mu.Lock()
	id := m.nextW
	m.nextW++
	m.ruleWs[id] = changed
	m.mu.Unlock()
	<-ctx.Done()
	m.mu.Lock()
	delete(m.ruleWs, id)
	m.mu.Unlock()
	return nil
}
