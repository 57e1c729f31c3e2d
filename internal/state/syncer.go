package state

import (
	"bytes"
	"cmp"
	"context"
	"encoding/gob"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/ring"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Options wire a Syncer to the state it shares. Backend, Replica, Enforcer are
// required; a nil Tracker, Registry or Usage leaves that part unshared.
type Options struct {
	Backend Backend
	// Replica names this replica; it must differ between replicas.
	Replica string
	// SyncInterval paces usage, limits and presence (default 2s).
	SyncInterval time.Duration
	// SketchInterval paces the sketches in Run (default SyncInterval);
	// SyncOnce always exchanges them.
	SketchInterval time.Duration
	// Timeout bounds what a request waits for (default 100ms).
	Timeout time.Duration

	Enforcer *limits.Enforcer
	// Registry receives the overrides other replicas set; Store, when the Registry
	// persists through it, lets reloads step aside from concurrent saves.
	Registry *limits.Registry
	Store    *LimitsStore
	// Tracker is observed locally and receives the other replicas' buckets.
	Tracker *cardinality.Tracker
	// SketchWindow and ChurnWindow are the tracker's windows (defaults 1h, 24h):
	// a published bucket expires when it leaves its window.
	SketchWindow, ChurnWindow time.Duration
	// Usage records this replica's reads; UsageView is rebuilt from every
	// replica's usage and serves the reports. Both or neither.
	Usage, UsageView *queryaudit.Recorder
	// UsageRetention is how long a replica's usage snapshot is kept (default 30 days).
	UsageRetention time.Duration
	// Selectors, when set, shares the selectors of series usage: this
	// replica's are published, the others' handed to it.
	Selectors SelectorSharer

	// AdvertiseURL is where other replicas reach this one; with Ring set, the
	// live replicas and their URLs are handed to it after every heartbeat.
	AdvertiseURL string
	Ring         RingSetter

	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Now        func() time.Time
}

// SelectorSharer is series usage's side of sharing selectors
// (seriesusage.Book).
type SelectorSharer interface {
	// ExportShared returns this replica's selectors.
	ExportShared() ([]byte, error)
	// ReplaceRemote replaces the other replicas' selectors, by replica.
	ReplaceRemote(blobs map[string][]byte) error
}

// RingSetter receives the live replicas (ring.Ring).
type RingSetter interface {
	Set(members []ring.Member)
}

// Syncer exchanges state with the other replicas through a Backend: it is the
// limits.SeriesSharing of the Enforcer and runs the loops described in the package
// documentation. It is safe for concurrent use.
type Syncer struct {
	o       Options
	b       Backend
	log     *slog.Logger
	now     func() time.Time
	errs    *prometheus.CounterVec
	up      prometheus.Gauge
	reps    atomic.Int64
	backoff time.Duration

	// Series membership: after a failed exchange, the request path does not
	// ask the backend again for backoff.
	failMu   sync.Mutex
	failErr  error
	failedAt time.Time

	// Refreshes and fail-open admissions waiting to be published.
	kick      chan struct{}
	republish atomic.Bool
	buf       []limits.Admission // flush loop only: waiting to be published

	// Slow loop: SyncOnce holds slowMu.
	slowMu    sync.Mutex
	alive     []string
	instance  string
	published map[string]uint64            // own sketch name → digest
	exported  map[tenant.ID]uint64         // tenant → Tracker.LocalChanges when last exported
	merged    map[string]map[string]uint64 // replica → sketch name → digest merged
	// Sketches each replica shares are its own (ExportLocalBuckets). What
	// another replica shared stays in the backend after it is gone, until its
	// buckets expire: ownSketches says this replica's own from before a
	// restart were taken back, departed lists gone replicas whose buckets one
	// survivor is to adopt.
	ownSketches bool
	departed    []string
	usageDigest uint64
	usageAt     time.Time
	othersUsage []queryaudit.Snapshot
	selDigest   uint64
	selAt       time.Time
	limitsMu    sync.Mutex
}

// NewSyncer returns a Syncer and makes o.Enforcer share its series through it.
// Call Run to start exchanging state.
func NewSyncer(o Options) (*Syncer, error) {
	if o.Backend == nil || o.Enforcer == nil || o.Replica == "" {
		return nil, errors.New("state: Backend, Enforcer and Replica are required")
	}
	if (o.Usage == nil) != (o.UsageView == nil) {
		return nil, errors.New("state: Usage and UsageView go together")
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.SketchInterval < o.SyncInterval {
		o.SketchInterval = o.SyncInterval
	}
	if o.SketchWindow <= 0 {
		o.SketchWindow = time.Hour
	}
	if o.ChurnWindow <= 0 {
		o.ChurnWindow = 24 * time.Hour
	}
	if o.UsageRetention <= 0 {
		o.UsageRetention = 30 * 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	f := promauto.With(o.Registerer)
	s := &Syncer{
		o: o, b: o.Backend, log: o.Logger, now: o.Now,
		errs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_state_sync_errors_total",
			Help: "Failed exchanges with the shared state backend, by operation; cardguard went on with local state.",
		}, []string{"op"}),
		up: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardguard_state_backend_up",
			Help: "1 when the last exchange with the shared state backend worked.",
		}),
		backoff:   min(time.Second, o.SyncInterval),
		kick:      make(chan struct{}, 1),
		published: map[string]uint64{},
		exported:  map[tenant.ID]uint64{},
		merged:    map[string]map[string]uint64{},
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cardguard_state_replicas",
		Help: "Replicas seen alive in the shared state at the last heartbeat.",
	}, func() float64 { return float64(s.Replicas()) })
	for _, op := range []string{"series_admit", "series_publish", "series_count", "presence", "sketches", "usage", "limits"} {
		s.errs.WithLabelValues(op)
	}
	s.reps.Store(1)
	s.republish.Store(true) // the first flush publishes what a snapshot restored
	o.Enforcer.ShareSeries(s)
	return s, nil
}

func (s *Syncer) fail(op string, err error) {
	s.errs.WithLabelValues(op).Inc()
	s.up.Set(0)
	s.log.Debug("shared state exchange failed", "op", op, "err", err)
}

// Replicas implements limits.SeriesSharing.
func (s *Syncer) Replicas() int { return int(s.reps.Load()) }

// FailOpenFactor implements limits.SeriesSharing: 1 when writes are routed to
// the owner of their series (each series is then held by one replica only),
// the number of live replicas otherwise.
func (s *Syncer) FailOpenFactor() int {
	if s.o.Ring != nil && s.o.AdvertiseURL != "" {
		return 1
	}
	return s.Replicas()
}

// Pending implements limits.SeriesSharing.
func (s *Syncer) Pending() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// AdmitShared implements limits.SeriesSharing with one Membership.AdmitSeries
// call, bounded by the request timeout. After a failure, calls within the
// backoff fail at once, so that an unreachable backend costs requests nothing.
func (s *Syncer) AdmitShared(t tenant.ID, l *limits.Limits, gen int64, cands []limits.Candidate) (int64, error) {
	if err := s.failingRecently(); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Timeout)
	defer cancel()
	n, err := s.b.AdmitSeries(ctx, t, gen, int64(l.MaxSeries), int64(l.MaxSeriesPerMetric), false, cands, s.expireAt(gen))
	if err != nil {
		s.fail("series_admit", err)
		s.trip(err)
		return 0, err
	}
	return n, nil
}

// expireAt is when the membership of gen is no longer needed: at the end of
// the next generation, which still counts its series, plus a minute for clocks.
func (s *Syncer) expireAt(gen int64) time.Time {
	return time.Unix(0, (gen+2)*int64(s.o.Enforcer.Window())).Add(time.Minute)
}

// Run exchanges state until ctx is done: refreshes as soon as they are made,
// everything else every SyncInterval, limits changes as they are announced.
func (s *Syncer) Run(ctx context.Context) {
	var wg sync.WaitGroup
	run := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	run(s.flushLoop)
	var lastSketches time.Time
	run(func(ctx context.Context) {
		s.every(ctx, s.o.SyncInterval, func() {
			due := s.now().Sub(lastSketches) >= s.o.SketchInterval-s.o.SyncInterval/2
			if due {
				lastSketches = s.now()
			}
			s.syncOnce(ctx, due)
		})
	})
	if s.o.Registry != nil {
		run(s.watchLimits)
	}
	wg.Wait()
}

func (s *Syncer) every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (s *Syncer) flushLoop(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Flush(context.Background())
			return
		case <-s.kick:
		case <-t.C:
		}
		s.Flush(ctx)
	}
}

// maxRetry bounds the admissions kept to be published again after a failed
// publish; beyond it the whole membership is published again instead.
const maxRetry = 1 << 20

// Flush publishes the refreshes and fail-open admissions waiting in the
// Enforcer. While the backend is failing they stay queued (the Enforcer bounds
// the queue); a batch that could not be published is tried again at the next
// flush. Only what overflowed makes the whole membership be published again:
// republishing everything on every hiccup would load a busy Redis with the
// whole membership and make it busier.
func (s *Syncer) Flush(ctx context.Context) {
	if s.failingRecently() != nil {
		return
	}
	var complete bool
	s.buf, complete = s.o.Enforcer.DrainAdmissions(s.buf)
	if !complete {
		s.republish.Store(true)
	}
	if len(s.buf) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.SyncInterval)
	err := s.publish(ctx, s.buf)
	cancel()
	if err == nil {
		clear(s.buf)
		s.buf = s.buf[:0]
		return
	}
	s.fail("series_publish", err)
	s.trip(err)
	if len(s.buf) > maxRetry {
		clear(s.buf)
		s.buf = s.buf[:0]
		s.republish.Store(true)
	}
}

// trip makes request-path calls fail at once for the backoff.
func (s *Syncer) trip(err error) {
	s.failMu.Lock()
	s.failErr, s.failedAt = err, s.now()
	s.failMu.Unlock()
}

// failingRecently returns the last failure when it is within the backoff.
func (s *Syncer) failingRecently() error {
	s.failMu.Lock()
	defer s.failMu.Unlock()
	if s.failErr != nil && s.now().Sub(s.failedAt) < s.backoff {
		return s.failErr
	}
	return nil
}

// publish records as (refreshes, fail-open admissions, the whole membership)
// in the shared membership without checking limits: they are admitted already.
// Generations older than the previous one are skipped: they no longer count.
func (s *Syncer) publish(ctx context.Context, as []limits.Admission) error {
	type key struct {
		t   tenant.ID
		gen int64
	}
	epoch := s.o.Enforcer.Generation(s.now())
	groups := map[key][]limits.Candidate{}
	for _, a := range as {
		if a.Gen < epoch-1 {
			continue
		}
		k := key{a.Tenant, min(a.Gen, epoch)}
		groups[k] = append(groups[k], limits.Candidate{Hash: a.Hash, Metric: a.Metric})
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b key) int {
		return cmp.Or(cmp.Compare(a.gen, b.gen), cmp.Compare(a.t.AccountID, b.t.AccountID), cmp.Compare(a.t.ProjectID, b.t.ProjectID))
	})
	for _, k := range keys {
		if _, err := s.b.AdmitSeries(ctx, k.t, k.gen, 0, 0, true, groups[k], s.expireAt(k.gen)); err != nil {
			return err
		}
	}
	return nil
}

// republishSeries publishes the whole membership this replica knows: after the
// backend lost data or missed admissions.
func (s *Syncer) republishSeries(ctx context.Context) error {
	var all []limits.Admission
	s.o.Enforcer.EachSeries(func(a limits.Admission) { all = append(all, a) })
	if err := s.publish(ctx, all); err != nil {
		return err
	}
	if len(all) > 0 {
		s.log.Info("published the series membership to the shared state", "series", len(all))
	}
	return nil
}

// syncCounts reads every tracked tenant's count in the shared membership, so
// that SeriesCount shows the tenant's series, not this replica's share.
func (s *Syncer) syncCounts(ctx context.Context) error {
	ts := s.o.Enforcer.Tenants()
	if len(ts) == 0 {
		return nil
	}
	gen := s.o.Enforcer.Generation(s.now())
	ns, err := s.b.SeriesCounts(ctx, gen, ts)
	if err != nil {
		return err
	}
	for i, t := range ts {
		s.o.Enforcer.SetSharedCount(t, gen, ns[i])
	}
	return nil
}

// SyncOnce runs one round of the slow loop: presence, membership republishing
// when needed, sketches, usage and limits. Tests call it to converge at once.
func (s *Syncer) SyncOnce(ctx context.Context) { s.syncOnce(ctx, true) }

func (s *Syncer) syncOnce(ctx context.Context, sketches bool) {
	s.slowMu.Lock()
	defer s.slowMu.Unlock()
	// Each exchange has its own deadline: a long one (republishing a large
	// membership, many changed sketches) must not make the others fail.
	step := func(op string, f func(context.Context) error) bool {
		timeout := s.o.SyncInterval
		if op == "series_publish" {
			// The whole membership: millions of series take seconds.
			timeout = max(timeout, 30*time.Second)
		}
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		if err := f(c); err != nil {
			s.fail(op, err)
			return false
		}
		return true
	}
	if !step("presence", s.presence) {
		if s.o.Usage != nil {
			// Only the local part: the backend is away, and the view must still
			// show this replica's reads.
			_ = s.o.UsageView.ReplaceWith(append([]queryaudit.Snapshot{s.o.Usage.Export()}, s.othersUsage...)...)
		}
		return // everything else would fail the same way
	}
	if s.republish.Load() {
		s.republish.Store(false)
		if !step("series_publish", s.republishSeries) {
			s.republish.Store(true)
		}
	}
	step("series_count", s.syncCounts)
	if s.o.Tracker != nil && sketches {
		step("sketches", s.syncSketches)
	}
	if s.o.Usage != nil {
		step("usage", s.syncUsage)
	}
	if s.o.Selectors != nil {
		step("selectors", s.syncSelectors)
	}
	if s.o.Registry != nil {
		step("limits", s.reloadLimits)
	}
}

func (s *Syncer) presence(ctx context.Context) error {
	inst, err := s.b.Instance(ctx, max(s.o.ChurnWindow, s.o.UsageRetention))
	if err != nil {
		return err
	}
	if inst != s.instance {
		if s.instance != "" {
			s.log.Warn("the shared state was lost (Redis restarted without persistence?); publishing local state again")
		}
		s.instance = inst
		s.republish.Store(true)
		clear(s.published)
		clear(s.exported)
		clear(s.merged)
		s.usageDigest = 0
		if s.o.Registry != nil {
			if err := s.b.SeedLimits(ctx, apiOverrides(s.o.Registry)); err != nil {
				return err
			}
		}
	}
	alive, err := s.b.Heartbeat(ctx, s.o.Replica, s.now(), 3*s.o.SyncInterval+time.Second)
	if err != nil {
		return err
	}
	for _, rep := range s.alive {
		if rep != s.o.Replica && !slices.Contains(alive, rep) && !slices.Contains(s.departed, rep) {
			s.departed = append(s.departed, rep)
		}
	}
	s.alive = alive
	s.reps.Store(int64(max(len(alive), 1)))
	if s.o.Ring != nil && s.o.AdvertiseURL != "" {
		urls, err := s.b.Announce(ctx, s.o.Replica, s.o.AdvertiseURL, alive, 3*s.o.SyncInterval+time.Second)
		if err != nil {
			return err
		}
		members := make([]ring.Member, 0, len(urls))
		for id, u := range urls {
			members = append(members, ring.Member{ID: id, URL: u})
		}
		s.o.Ring.Set(members)
	}
	s.up.Set(1)
	return nil
}

// Sketches.

func bucketName(b *cardinality.Bucket) string {
	t := b.Tenant.String()
	if b.Overflow {
		t = "overflow"
	}
	return t + "|" + string(b.Level) + "|" + strconv.FormatInt(b.Start.UnixNano(), 10)
}

// decodeBucket decodes a bucket a replica shared: in the binary encoding, or
// in gob, which replicas of earlier versions share during a rolling upgrade.
// The result may alias data.
func decodeBucket(data []byte) (cardinality.Bucket, error) {
	if cardinality.IsBinaryBucket(data) {
		return cardinality.DecodeBucket(data)
	}
	var b cardinality.Bucket
	err := gob.NewDecoder(bytes.NewReader(data)).Decode(&b)
	return b, err
}

// canonical sorts a bucket's parts so that equal content encodes equally.
func canonical(b *cardinality.Bucket) {
	byName := func(a, b cardinality.LabelBucket) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(b.Labels, byName)
	slices.SortFunc(b.Metrics, func(x, y cardinality.MetricBucket) int {
		return cmp.Or(strings.Compare(x.Name, y.Name), cmp.Compare(len(x.Series), len(y.Series)))
	})
	for i := range b.Metrics {
		slices.SortFunc(b.Metrics[i].Labels, byName)
	}
}

// adoptSketches takes as this replica's own the sketches it shared before a
// restart (a replica ID is kept in the data directory), and those of replicas
// that are gone, when this replica is the survivor that adopts them (the
// first alive ID in order): each replica shares only what it observed
// itself, so what a gone replica observed would otherwise be missing from the
// union that replicas started later see.
func (s *Syncer) adoptSketches(ctx context.Context) error {
	if !s.ownSketches {
		if err := s.adopt(ctx, s.o.Replica); err != nil {
			return err
		}
		s.ownSketches = true
	}
	if len(s.departed) == 0 {
		return nil
	}
	if len(s.alive) > 0 && slices.Min(s.alive) != s.o.Replica {
		s.departed = s.departed[:0]
		return nil
	}
	for len(s.departed) > 0 {
		if err := s.adopt(ctx, s.departed[0]); err != nil {
			return err
		}
		delete(s.merged, s.departed[0])
		s.departed = s.departed[1:]
	}
	return nil
}

// adopt merges every bucket replica shared into the tracker as this
// replica's own.
func (s *Syncer) adopt(ctx context.Context, replica string) error {
	idx, err := s.b.SketchIndex(ctx, replica)
	if err != nil || len(idx) == 0 {
		return err
	}
	names := slices.Sorted(maps.Keys(idx))
	datas, err := s.b.GetSketches(ctx, replica, names)
	if err != nil {
		return err
	}
	n := 0
	for i, data := range datas {
		if data == nil {
			continue
		}
		b, err := decodeBucket(data)
		if err != nil {
			s.log.Warn("damaged sketch bucket in the shared state; skipped", "replica", replica, "bucket", names[i], "err", err)
			continue
		}
		if err := s.o.Tracker.AdoptBuckets([]cardinality.Bucket{b}); err != nil {
			s.log.Warn("sketch bucket does not fit this configuration; skipped", "replica", replica, "bucket", names[i], "err", err)
			continue
		}
		n++
	}
	if n > 0 {
		s.log.Info("took over the sketch buckets a replica shared", "replica", replica, "buckets", n)
		s.o.Tracker.Refresh()
	}
	return nil
}

func (s *Syncer) syncSketches(ctx context.Context) error {
	tr := s.o.Tracker
	if err := s.adoptSketches(ctx); err != nil {
		return err
	}
	var buckets []cardinality.Bucket
	current := map[string]bool{}
	versions := map[tenant.ID]uint64{}
	for _, id := range tr.TenantIDs() {
		v := tr.LocalChanges(id)
		if last, ok := s.exported[id]; ok && last == v {
			// Nothing of its own since the last export: what merges added
			// came from the others, who have it. Its published buckets stay.
			prefix := id.String() + "|"
			for name := range s.published {
				if strings.HasPrefix(name, prefix) {
					current[name] = true
				}
			}
			continue
		}
		versions[id] = v
		buckets = append(buckets, tr.ExportLocalBuckets(id)...)
	}
	buckets = append(buckets, tr.ExportLocalOverflowBuckets()...)
	size := 0
	for i := range buckets {
		canonical(&buckets[i])
		size += cardinality.BucketSize(&buckets[i])
	}
	// One buffer for them all, of its final size: what is put aliases it.
	arena := make([]byte, 0, size)
	var put []Blob
	for i := range buckets {
		b := &buckets[i]
		start := len(arena)
		arena = cardinality.AppendBucket(arena, b)
		data := arena[start:len(arena):len(arena)]
		name := bucketName(b)
		current[name] = true
		d := xxhash.Sum64(data)
		if s.published[name] == d {
			continue
		}
		put = append(put, Blob{Name: name, Digest: d, Data: data, ExpireAt: s.bucketExpiry(b)})
	}
	var del []string
	for name := range s.published {
		if !current[name] {
			del = append(del, name)
		}
	}
	if len(put) > 0 || len(del) > 0 || len(s.published) == 0 {
		if err := s.b.PutSketches(ctx, s.o.Replica, put, del, s.o.ChurnWindow+time.Hour); err != nil {
			return err
		}
		for _, b := range put {
			s.published[b.Name] = b.Digest
		}
		for _, n := range del {
			delete(s.published, n)
		}
	}
	maps.Copy(s.exported, versions)

	changed := false
	for _, rep := range s.alive {
		if rep == s.o.Replica {
			continue
		}
		idx, err := s.b.SketchIndex(ctx, rep)
		if err != nil {
			return err
		}
		seen := s.merged[rep]
		if seen == nil {
			seen = map[string]uint64{}
			s.merged[rep] = seen
		}
		var names []string
		for n, d := range idx {
			if seen[n] != d {
				names = append(names, n)
			}
		}
		for n := range seen {
			if _, ok := idx[n]; !ok {
				delete(seen, n)
			}
		}
		if len(names) == 0 {
			continue
		}
		datas, err := s.b.GetSketches(ctx, rep, names)
		if err != nil {
			return err
		}
		for i, data := range datas {
			if data == nil {
				seen[names[i]] = idx[names[i]] // expired: not asked for again
				continue
			}
			// A bucket that cannot be merged (damaged, written by a later
			// version, or of another configuration) counts as seen too:
			// it is fetched and warned about again only once it changes,
			// not at every exchange.
			seen[names[i]] = idx[names[i]]
			b, err := decodeBucket(data)
			if err != nil {
				s.log.Warn("damaged sketch bucket in the shared state; skipped until it changes", "replica", rep, "bucket", names[i], "err", err)
				continue
			}
			if err := tr.MergeBucketsFrom(rep, []cardinality.Bucket{b}); err != nil {
				s.log.Warn("sketch bucket of another replica does not fit this configuration; skipped until it changes", "replica", rep, "bucket", names[i], "err", err)
				continue
			}
			changed = true
		}
	}
	if changed {
		tr.Refresh()
	}
	return nil
}

// Query usage.

func (s *Syncer) syncUsage(ctx context.Context) error {
	local := s.o.Usage.Export()
	data, err := json.Marshal(local)
	if err != nil {
		return err
	}
	now := s.now()
	var firstErr error
	if d := xxhash.Sum64(data); d != s.usageDigest || now.Sub(s.usageAt) > time.Hour {
		if err := s.b.PutUsage(ctx, s.o.Replica, data, now, s.o.UsageRetention); err != nil {
			firstErr = err
		} else {
			s.usageDigest, s.usageAt = d, now
		}
	}
	// The view is rebuilt even when the backend fails: this replica's own reads
	// must show, beside the others' as last read.
	if firstErr == nil {
		all, err := s.b.AllUsage(ctx, now, s.o.UsageRetention)
		if err != nil {
			firstErr = err
		} else {
			s.othersUsage = s.othersUsage[:0]
			for rep, data := range all {
				if rep == s.o.Replica {
					continue // our own is local, and fresher
				}
				var snap queryaudit.Snapshot
				if err := json.Unmarshal(data, &snap); err != nil {
					s.log.Warn("damaged query usage of another replica; skipped", "replica", rep, "err", err)
					continue
				}
				s.othersUsage = append(s.othersUsage, snap)
			}
		}
	}
	if err := s.o.UsageView.ReplaceWith(append([]queryaudit.Snapshot{local}, s.othersUsage...)...); err != nil {
		return err
	}
	return firstErr
}

// Series usage selectors.

// syncSelectors publishes this replica's selectors when they changed (and
// hourly, so that they do not expire while unchanged) and hands the others'
// to series usage. Other replicas' selectors that cannot be read are left out.
func (s *Syncer) syncSelectors(ctx context.Context) error {
	data, err := s.o.Selectors.ExportShared()
	if err != nil {
		return err
	}
	now := s.now()
	if d := xxhash.Sum64(data); d != s.selDigest || now.Sub(s.selAt) > time.Hour {
		if err := s.b.PutSelectors(ctx, s.o.Replica, data, now, s.o.UsageRetention); err != nil {
			return err
		}
		s.selDigest, s.selAt = d, now
	}
	all, err := s.b.AllSelectors(ctx, now, s.o.UsageRetention)
	if err != nil {
		return err // the others' stay as last read
	}
	delete(all, s.o.Replica) // our own are local, and fresher
	if err := s.o.Selectors.ReplaceRemote(all); err != nil {
		s.log.Warn("damaged series usage selectors of another replica; skipped", "err", err)
	}
	return nil
}

// Limits.

func apiOverrides(reg *limits.Registry) map[string][]byte {
	out := map[string][]byte{}
	for t, o := range reg.Overrides() {
		if o.API != nil {
			out[t.String()] = o.API
		}
	}
	return out
}

func (s *Syncer) reloadLimits(ctx context.Context) error {
	s.limitsMu.Lock()
	defer s.limitsMu.Unlock()
	var saves uint64
	if s.o.Store != nil {
		saves = s.o.Store.saves.Load()
	}
	m, err := s.b.LoadLimits(ctx)
	if err != nil {
		return err
	}
	if s.o.Store != nil && (saves%2 == 1 || s.o.Store.saves.Load() != saves) {
		return nil // a save ran meanwhile: its announcement brings the next reload
	}
	next := decodeOverrides(m, s.log)
	cur := map[tenant.ID]json.RawMessage{}
	for t, o := range s.o.Registry.Overrides() {
		if o.API != nil {
			cur[t] = o.API
		}
	}
	if !maps.EqualFunc(cur, next, func(a, b json.RawMessage) bool { return bytes.Equal(a, b) }) {
		s.o.Registry.Apply(next)
		if s.o.Store != nil {
			s.o.Store.mirror(next)
		}
		s.log.Info("limits overrides changed by another replica applied", "tenants", len(next))
	}
	return nil
}

func decodeOverrides(m map[string][]byte, log *slog.Logger) map[tenant.ID]json.RawMessage {
	out := make(map[tenant.ID]json.RawMessage, len(m))
	for k, v := range m {
		t, err := tenant.Parse(k)
		if err != nil {
			log.Warn("limits override under a bad tenant in the shared state; skipped", "tenant", k, "err", err)
			continue
		}
		out[t] = v
	}
	return out
}

func (s *Syncer) watchLimits(ctx context.Context) {
	for ctx.Err() == nil {
		err := s.b.WatchLimits(ctx, func() {
			rctx, cancel := context.WithTimeout(ctx, s.o.SyncInterval)
			defer cancel()
			if err := s.reloadLimits(rctx); err != nil {
				s.fail("limits", err)
			}
		})
		if err != nil {
			s.fail("limits", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(s.o.SyncInterval):
		}
	}
}

// Logger returns the logger the Syncer writes to.
func (s *Syncer) Logger() *slog.Logger { return s.log }

// bucketExpiry is when a published bucket leaves every window that reads it:
// churn buckets, the tenant's and the metrics', live for the churn window.
func (s *Syncer) bucketExpiry(b *cardinality.Bucket) time.Time {
	window := s.o.SketchWindow
	if b.Level == cardinality.LevelChurn || b.Level == cardinality.LevelMetricChurn {
		window = s.o.ChurnWindow
	}
	return b.Start.Add(b.Width + window)
}
