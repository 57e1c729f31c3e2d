package state

import (
	"bytes"
	"context"
	"encoding/gob"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

var tn = tenant.MustParse("7:1")

// replica is one cardguard's shared state, without HTTP.
type replica struct {
	enf     *limits.Enforcer
	reg     *limits.Registry
	store   *LimitsStore
	tracker *cardinality.Tracker
	usage   *queryaudit.Recorder
	view    *queryaudit.Recorder
	s       *Syncer
}

// testBackend is a Backend a test can take down and wipe.
type testBackend interface {
	Backend
	SetDown(down bool)
	Reset()
}

// backends runs test against Memory, against a real redis-server and against a
// real 3-master Redis Cluster (both skipped under -short).
func backends(t *testing.T, test func(t *testing.T, b testBackend)) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		test(t, NewMemory())
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		test(t, startRedis(t))
	})
	t.Run("redis-cluster", func(t *testing.T) {
		t.Parallel()
		test(t, startRedisCluster(t))
	})
}

func newReplica(t *testing.T, b Backend, id string) *replica {
	t.Helper()
	r := &replica{enf: limits.NewEnforcer(limits.EnforcerOptions{Window: time.Hour})}
	r.store = NewLimitsStore(b, limits.NewFileStore(t.TempDir()), time.Second, nil)
	var err error
	if r.reg, err = limits.NewRegistry(limits.Default(), nil, r.store, nil); err != nil {
		t.Fatal(err)
	}
	if r.tracker, err = cardinality.New(cardinality.Config{}); err != nil {
		t.Fatal(err)
	}
	r.usage = queryaudit.NewRecorder(queryaudit.RecorderConfig{}, r.tracker, nil, nil)
	r.view = queryaudit.NewRecorder(queryaudit.RecorderConfig{}, r.tracker, nil, nil)
	r.s, err = NewSyncer(Options{
		Backend: b, Replica: id, Timeout: time.Second, SyncInterval: time.Second,
		Enforcer: r.enf, Registry: r.reg, Store: r.store, Tracker: r.tracker,
		Usage: r.usage, UsageView: r.view,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.s.SyncOnce(context.Background())
	return r
}

// request admits hashes as one remote-write request does: the series this
// replica knows are decided at once, the others in one exchange with the
// shared membership; then refreshes are published. It returns the admitted ones.
func (r *replica) request(l *limits.Limits, hashes ...uint64) []uint64 {
	ok := r.admit(l, hashes...)
	r.s.Flush(context.Background())
	return ok
}

func (r *replica) admit(l *limits.Limits, hashes ...uint64) []uint64 {
	a := r.enf.Admitter(tn, l, time.Now())
	var ok []uint64
	var cands []limits.Candidate
	for _, h := range hashes {
		m := fmt.Sprintf("m%d", h%3)
		switch reason, deferred := a.Defer(m, h); {
		case deferred:
			cands = append(cands, limits.Candidate{Hash: h, Metric: m})
		case reason == "":
			ok = append(ok, h)
		}
	}
	a.Resolve(cands)
	for _, c := range cands {
		if c.Reason == "" {
			ok = append(ok, c.Hash)
		}
	}
	return ok
}

func seriesLimit(n int) *limits.Limits {
	l := limits.Default()
	l.MaxSeries = n
	return &l
}

func hashes(from, to int) []uint64 {
	var out []uint64
	for i := from; i < to; i++ {
		out = append(out, uint64(i)*0x9e3779b97f4a7c15+1)
	}
	return out
}

// TestSeriesLimitHoldsAcrossReplicas sends new series round-robin to two replicas
// in requests of 7: the limit must hold for the union exactly, and every series
// admitted by either replica must pass on both afterwards.
func TestSeriesLimitHoldsAcrossReplicas(t *testing.T) {
	t.Parallel()
	backends(t, testSeriesLimitHoldsAcrossReplicas)
}

func testSeriesLimitHoldsAcrossReplicas(t *testing.T, b testBackend) {
	reps := []*replica{newReplica(t, b, "a"), newReplica(t, b, "b")}
	l := seriesLimit(100)
	all := hashes(0, 300)
	admitted := map[uint64]bool{}
	for i := 0; i*7 < len(all); i++ {
		req := all[i*7 : min(len(all), i*7+7)]
		for _, h := range reps[i%2].request(l, req...) {
			admitted[h] = true
		}
	}
	if len(admitted) != 100 {
		t.Fatalf("admitted %d distinct series across two replicas; want exactly the limit, 100", len(admitted))
	}
	for i, r := range reps {
		var existing []uint64
		for h := range admitted {
			existing = append(existing, h)
		}
		if got := r.request(l, existing...); len(got) != len(existing) {
			t.Errorf("replica %d refused %d existing series", i, len(existing)-len(got))
		}
		if n := r.enf.SeriesCount(tn); n != 100 {
			t.Errorf("replica %d counts %d series; want 100", i, n)
		}
	}
}

// TestSeriesNeverRefusedWhenBackendDown: series replica a admitted while the
// backend was down are unknown to b; b must admit them (fail open, each replica
// up to 2 x the limit with two replicas and no owner routing), and once the
// backend is back both replicas count the union.
func TestSeriesNeverRefusedWhenBackendDown(t *testing.T) {
	t.Parallel()
	backends(t, testSeriesNeverRefusedWhenBackendDown)
}

func testSeriesNeverRefusedWhenBackendDown(t *testing.T, b testBackend) {
	ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
	ra.s.SyncOnce(context.Background()) // a sees b: two replicas
	l := seriesLimit(50)
	if got := ra.request(l, hashes(0, 30)...); len(got) != 30 {
		t.Fatalf("a admitted %d of 30", len(got))
	}
	b.SetDown(true)
	if got := ra.request(l, hashes(30, 50)...); len(got) != 20 {
		t.Fatalf("a admitted %d of 20 while down", len(got))
	}
	if got := rb.request(l, hashes(1000, 1020)...); len(got) != 20 {
		t.Fatalf("b admitted %d of 20 new series while down", len(got))
	}
	// a's 20 series reach b: never refused because b could not ask.
	if got := rb.request(l, hashes(30, 50)...); len(got) != 20 {
		t.Fatalf("b refused %d series admitted by a while the backend was down", 20-len(got))
	}
	// The fail-open bound: b holds 40, and takes new ones up to 2 x 50.
	if got := rb.request(l, hashes(2000, 2100)...); len(got) != 60 {
		t.Fatalf("b admitted %d brand-new series while down; want 60 (up to 2 x 50 held by b)", len(got))
	}
	b.SetDown(false)
	time.Sleep(1100 * time.Millisecond) // past the backoff after failures
	for _, r := range []*replica{ra, rb} {
		r.s.Flush(context.Background())
		r.s.SyncOnce(context.Background())
	}
	// The union: a's 50, b's 20 + 60 of its own.
	for _, r := range []*replica{ra, rb} {
		r.s.SyncOnce(context.Background())
	}
	if na, nb := ra.enf.SeriesCount(tn), rb.enf.SeriesCount(tn); na != nb || na != 130 {
		t.Fatalf("after recovery a counts %d, b %d; want both 130 (the union)", na, nb)
	}
	// Every series admitted anywhere passes everywhere; nothing new fits.
	all := append(append(hashes(0, 50), hashes(1000, 1020)...), hashes(2000, 2060)...)
	for i, r := range []*replica{ra, rb} {
		if got := r.request(l, all...); len(got) != len(all) {
			t.Errorf("replica %d passes %d of the %d admitted series", i, len(got), len(all))
		}
		if got := r.request(l, hashes(3000, 3001)...); len(got) != 0 {
			t.Errorf("replica %d admitted a new series over the limit", i)
		}
	}
}

// TestBackendLostData: a backend restarted empty is refilled, so that a replica
// starting afterwards knows every series.
func TestBackendLostData(t *testing.T) {
	t.Parallel()
	backends(t, testBackendLostData)
}

func testBackendLostData(t *testing.T, b testBackend) {
	ra := newReplica(t, b, "a")
	l := seriesLimit(10)
	ra.request(l, hashes(0, 10)...)
	b.Reset()
	ra.s.SyncOnce(context.Background())
	rc := newReplica(t, b, "c")
	if got := rc.request(l, hashes(0, 11)...); len(got) != 10 {
		t.Fatalf("new replica admitted %d of 10 existing + 1 new; want the 10", len(got))
	}
	if n := rc.enf.SeriesCount(tn); n != 10 {
		t.Fatalf("new replica counts %d series after the backend lost its data; want 10", n)
	}
}

func TestLimitsReachOtherReplicas(t *testing.T) {
	t.Parallel()
	backends(t, testLimitsReachOtherReplicas)
}

func testLimitsReachOtherReplicas(t *testing.T, b testBackend) {
	ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rb.s.Run(ctx)
	time.Sleep(50 * time.Millisecond) // let the watcher subscribe
	if _, err := ra.reg.Set(tn, json.RawMessage(`{"max_series": 123}`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rb.reg.For(tn).MaxSeries != 123 {
		if time.Now().After(deadline) {
			t.Fatalf("b still has max_series %d 5s after a set 123", rb.reg.For(tn).MaxSeries)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := ra.reg.Delete(tn); err != nil {
		t.Fatal(err)
	}
	rb.s.SyncOnce(context.Background())
	if got := rb.reg.For(tn).MaxSeries; got != limits.Default().MaxSeries {
		t.Fatalf("b max_series %d after a deleted the override", got)
	}
	b.SetDown(true)
	if _, err := ra.reg.Set(tn, json.RawMessage(`{"max_series": 5}`)); err == nil {
		t.Fatal("Set succeeded while the shared store was down: other replicas would never see it")
	}
}

func TestUsageMergedOnce(t *testing.T) {
	t.Parallel()
	backends(t, testUsageMergedOnce)
}

func testUsageMergedOnce(t *testing.T, b testBackend) {
	ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
	read := func(r *replica, n int) {
		for range n {
			r.usage.Record(tn, "query", url.Values{"query": {"up"}}, http.Header{}, time.Now())
		}
		r.usage.Flush()
	}
	read(ra, 3)
	read(rb, 4)
	for range 3 { // repeated rounds must not count again
		ra.s.SyncOnce(context.Background())
		rb.s.SyncOnce(context.Background())
	}
	for i, r := range []*replica{ra, rb} {
		d, ok := r.view.MetricDetail(tn, nil, "up")
		if !ok {
			t.Fatalf("replica %d: no usage of up", i)
		}
		if d.Queries != 7 {
			t.Errorf("replica %d reports %d queries of up; want 3 + 4 = 7", i, d.Queries)
		}
	}
}

func TestSketchesConverge(t *testing.T) {
	t.Parallel()
	backends(t, testSketchesConverge)
}

func testSketchesConverge(t *testing.T, b testBackend) {
	ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
	observe := func(r *replica, from, to int) {
		for i := from; i < to; i++ {
			lbs := []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: fmt.Sprint(i)}}
			r.tracker.Observe(tn, "m", lbs, uint64(i)*0x9e3779b97f4a7c15+1)
		}
		r.tracker.Refresh()
	}
	observe(ra, 0, 600)
	observe(rb, 400, 1000) // 200 in common
	for range 3 {
		ra.s.SyncOnce(context.Background())
		rb.s.SyncOnce(context.Background())
	}
	sa, _ := ra.tracker.Tenant(tn)
	sb, _ := rb.tracker.Tenant(tn)
	if sa.ActiveSeries != sb.ActiveSeries || sa.ActiveSeries < 990 || sa.ActiveSeries > 1010 {
		t.Fatalf("estimates a=%d b=%d; want equal and about 1000 (the union, not 1200)", sa.ActiveSeries, sb.ActiveSeries)
	}
	// Steady state: nothing left to publish.
	before := len(ra.s.published)
	idx, _ := b.SketchIndex(context.Background(), "a")
	ra.s.SyncOnce(context.Background())
	idx2, _ := b.SketchIndex(context.Background(), "a")
	for n, d := range idx {
		if idx2[n] != d {
			t.Errorf("bucket %s republished without a change", n)
		}
	}
	if before == 0 {
		t.Fatal("nothing published")
	}
}

// observeAndSync gives both replicas some estimates and query usage and syncs.
func observeAndSync(rs ...*replica) {
	for i, r := range rs {
		lbs := []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "i", Value: fmt.Sprint(i)}}
		r.tracker.Observe(tn, "m", lbs, uint64(i)+1)
		r.tracker.Refresh()
		r.usage.Record(tn, "query", url.Values{"query": {"m"}}, http.Header{}, time.Now())
		r.usage.Flush()
	}
	for range 2 {
		for _, r := range rs {
			r.s.SyncOnce(context.Background())
		}
	}
}

// TestBucketExpiry: churn buckets, the tenant's and the metrics', stay in Redis for
// the whole churn window; the other levels only for the estimation window.
func TestBucketExpiry(t *testing.T) {
	t.Parallel()
	s := &Syncer{o: Options{SketchWindow: time.Hour, ChurnWindow: 24 * time.Hour}}
	start := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		level cardinality.Level
		want  time.Duration
	}{
		{cardinality.LevelSeries, time.Hour},
		{cardinality.LevelChurn, 24 * time.Hour},
		{cardinality.LevelMetricChurn, 24 * time.Hour},
	} {
		b := &cardinality.Bucket{Level: c.level, Start: start, Width: 10 * time.Minute}
		if got := s.bucketExpiry(b); !got.Equal(start.Add(10*time.Minute + c.want)) {
			t.Errorf("%s: expires %s, want %s after the bucket", c.level, got, c.want)
		}
	}
}

// fakeSelectors stands in for series usage: what it exports, what it got.
type fakeSelectors struct {
	mu     sync.Mutex
	own    []byte
	remote map[string][]byte
}

func (f *fakeSelectors) ExportShared() ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.own, nil
}

func (f *fakeSelectors) ReplaceRemote(blobs map[string][]byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.remote = blobs
	return nil
}

func TestSelectorsShared(t *testing.T) {
	t.Parallel()
	backends(t, testSelectorsShared)
}

func testSelectorsShared(t *testing.T, b testBackend) {
	sels := map[string]*fakeSelectors{"a": {own: []byte(`"a's"`)}, "b": {own: []byte(`"b's"`)}}
	syncers := map[string]*Syncer{}
	for id, f := range sels {
		s, err := NewSyncer(Options{
			Backend: b, Replica: id, Timeout: time.Second, SyncInterval: time.Second,
			Enforcer: limits.NewEnforcer(limits.EnforcerOptions{Window: time.Hour}), Selectors: f,
		})
		if err != nil {
			t.Fatal(err)
		}
		syncers[id] = s
	}
	for range 2 {
		syncers["a"].SyncOnce(context.Background())
		syncers["b"].SyncOnce(context.Background())
	}
	for id, want := range map[string]string{"a": `"b's"`, "b": `"a's"`} {
		f := sels[id]
		f.mu.Lock()
		got := f.remote
		f.mu.Unlock()
		if len(got) != 1 || string(got[map[string]string{"a": "b", "b": "a"}[id]]) != want {
			t.Errorf("replica %s got %q, want the other's %s only", id, got, want)
		}
	}
	// A changed export reaches the other replica at the next round.
	sels["a"].mu.Lock()
	sels["a"].own = []byte(`"a's, new"`)
	sels["a"].mu.Unlock()
	syncers["a"].SyncOnce(context.Background())
	syncers["b"].SyncOnce(context.Background())
	sels["b"].mu.Lock()
	defer sels["b"].mu.Unlock()
	if got := string(sels["b"].remote["a"]); got != `"a's, new"` {
		t.Errorf("b got %s after a changed", got)
	}
}

// TestSharedMembershipPerMetric: max_series_per_metric is counted in the shared
// membership too, a series offered twice in one request counts once, and a
// series of the previous generation is admitted again whatever the limits.
func TestSharedMembershipPerMetric(t *testing.T) {
	t.Parallel()
	backends(t, testSharedMembershipPerMetric)
}

func testSharedMembershipPerMetric(t *testing.T, b testBackend) {
	ctx := context.Background()
	const gen = 1000
	cands := func(metric string, from, to int, dup bool) []limits.Candidate {
		var out []limits.Candidate
		for _, h := range hashes(from, to) {
			out = append(out, limits.Candidate{Hash: h, Metric: metric})
			if dup {
				out = append(out, limits.Candidate{Hash: h, Metric: metric})
			}
		}
		return out
	}
	admitted := func(cs []limits.Candidate) (n int) {
		for _, c := range cs {
			if c.Reason == "" {
				n++
			}
		}
		return n
	}
	expire := time.Now().Add(time.Hour)
	a := cands("a", 0, 30, true)
	active, err := b.AdmitSeries(ctx, tn, gen-1, 25, 10, false, a, expire)
	if err != nil {
		t.Fatal(err)
	}
	if got := admitted(a); got != 20 || active != 10 || a[len(a)-1].Reason != limits.ReasonMaxSeriesPerMetric {
		t.Fatalf("30 series of a, each offered twice, per-metric limit 10: %d admitted offers (want the 10 series twice, 20), %d active (want 10), last reason %q", got, active, a[len(a)-1].Reason)
	}
	m := cands("b", 100, 120, false)
	if active, err = b.AdmitSeries(ctx, tn, gen-1, 25, 10, false, m, expire); err != nil {
		t.Fatal(err)
	}
	if got := admitted(m); got != 10 || active != 20 {
		t.Fatalf("20 series of b: %d admitted, %d active; want 10 and 20", got, active)
	}
	// The next generation: the 20 of gen-1 still count; seen again, they pass
	// even with a limit now lower than their number.
	again := append(cands("a", 0, 10, false), cands("b", 100, 110, false)...)
	if active, err = b.AdmitSeries(ctx, tn, gen, 5, 2, false, again, expire); err != nil {
		t.Fatal(err)
	}
	if got := admitted(again); got != 20 || active != 20 {
		t.Fatalf("the 20 series of the previous generation: %d admitted, %d active; want 20 and 20", got, active)
	}
	counts, err := b.SeriesCounts(ctx, gen, []tenant.ID{tn, tenant.MustParse("8")})
	if err != nil {
		t.Fatal(err)
	}
	if counts[0] != 20 || counts[1] != 0 {
		t.Fatalf("counts %v; want [20 0]", counts)
	}
	// Forced: recorded whatever the limits.
	f := cands("c", 200, 210, false)
	if active, err = b.AdmitSeries(ctx, tn, gen, 5, 2, true, f, expire); err != nil {
		t.Fatal(err)
	}
	if got := admitted(f); got != 10 || active != 30 {
		t.Fatalf("forced: %d admitted, %d active; want 10 and 30", got, active)
	}
}

// observeMetric has r observe n series of metric name.
func observeMetric(r *replica, name string, n int) {
	for i := range n {
		lbs := []prompb.Label{{Name: "__name__", Value: name}, {Name: "i", Value: fmt.Sprint(i)}}
		r.tracker.Observe(tn, name, lbs, xxhashOf(name, i))
	}
	r.tracker.Refresh()
}

func xxhashOf(name string, i int) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range []byte(fmt.Sprintf("%s/%d", name, i)) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

// sharedMetrics lists the metrics in the buckets replica shared.
func sharedMetrics(t *testing.T, b Backend, replica string) map[string]bool {
	t.Helper()
	ctx := context.Background()
	idx, err := b.SketchIndex(ctx, replica)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(idx))
	for n := range idx {
		names = append(names, n)
	}
	datas, err := b.GetSketches(ctx, replica, names)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, data := range datas {
		bk, err := cardinality.DecodeBucket(data)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range bk.Metrics {
			out[m.Name] = true
		}
	}
	return out
}

func metricSeries(t *testing.T, r *replica, name string) int64 {
	t.Helper()
	m, ok := r.tracker.Metric(tn, name)
	if !ok {
		return 0
	}
	return m.Series
}

// TestSketchesSharedOnceEach: a replica shares only what it observed itself, so
// that a metric's sketches travel once (from the replica that owns it), yet
// every replica sees every metric; a replica restarted with its ID takes its
// own back, and one started later sees everything.
func TestSketchesSharedOnceEach(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, b testBackend) {
		ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
		observeMetric(ra, "ma", 300)
		observeMetric(rb, "mb", 200)
		for range 2 {
			ra.s.SyncOnce(context.Background())
			rb.s.SyncOnce(context.Background())
		}
		for _, r := range []*replica{ra, rb} {
			if a, b := metricSeries(t, r, "ma"), metricSeries(t, r, "mb"); a != 300 || b != 200 {
				t.Fatalf("a replica sees ma=%d mb=%d; want 300 and 200", a, b)
			}
		}
		if got := sharedMetrics(t, b, "a"); !got["ma"] || got["mb"] {
			t.Errorf("replica a shared metrics %v; want ma only", got)
		}
		if got := sharedMetrics(t, b, "b"); !got["mb"] || got["ma"] {
			t.Errorf("replica b shared metrics %v; want mb only", got)
		}

		// a restarts with its ID and empty state: it takes back what it shared,
		// and shares it again.
		ra2 := newReplica(t, b, "a")
		if n := metricSeries(t, ra2, "ma"); n != 300 {
			t.Errorf("restarted replica sees ma=%d; want its own 300 back", n)
		}
		observeMetric(ra2, "ma2", 10)
		ra2.s.SyncOnce(context.Background())
		if got := sharedMetrics(t, b, "a"); !got["ma"] || !got["ma2"] {
			t.Errorf("restarted replica a shares %v; want ma and ma2", got)
		}
		rc := newReplica(t, b, "c")
		rc.s.SyncOnce(context.Background())
		if a, b := metricSeries(t, rc, "ma"), metricSeries(t, rc, "mb"); a != 300 || b != 200 {
			t.Errorf("a replica started later sees ma=%d mb=%d; want 300 and 200", a, b)
		}
	})
}

// TestSketchesOfAGoneReplicaAdopted: what a replica that is gone shared is taken
// over by one survivor, so that replicas started after it still see it.
func TestSketchesOfAGoneReplicaAdopted(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	newAt := func(id string) *replica {
		r := newReplica(t, b, id)
		r.s.now = clock
		return r
	}
	ra, rb, rz := newAt("a"), newAt("b"), newAt("z")
	observeMetric(rz, "mz", 250)
	for _, r := range []*replica{ra, rb, rz} {
		r.s.SyncOnce(context.Background())
	}
	for _, r := range []*replica{ra, rb} {
		r.s.SyncOnce(context.Background())
	}
	// z stops for good; a and b see it gone.
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	for range 2 {
		ra.s.SyncOnce(context.Background())
		rb.s.SyncOnce(context.Background())
	}
	if got := sharedMetrics(t, b, "a"); !got["mz"] {
		t.Errorf("survivor a shares %v; want mz, adopted from the gone replica", got)
	}
	if got := sharedMetrics(t, b, "b"); got["mz"] {
		t.Errorf("survivor b shares %v; only one survivor adopts", got)
	}
	rc := newAt("c")
	rc.s.SyncOnce(context.Background())
	if n := metricSeries(t, rc, "mz"); n != 250 {
		t.Errorf("a replica started after z was gone sees mz=%d; want 250", n)
	}
}

// TestGobBucketsStillMerged: during a rolling upgrade, replicas of earlier
// versions share their buckets in gob; they are merged all the same.
func TestGobBucketsStillMerged(t *testing.T) {
	t.Parallel()
	b := NewMemory()
	ctx := context.Background()
	rold, ra := newReplica(t, b, "old"), newReplica(t, b, "a")
	observeMetric(rold, "mold", 120)
	rold.s.SyncOnce(ctx)
	// Rewrite what "old" shared the way an earlier version wrote it.
	idx, err := b.SketchIndex(ctx, "old")
	if err != nil || len(idx) == 0 {
		t.Fatalf("index of old: %v, %v", idx, err)
	}
	names := slices.Collect(maps.Keys(idx))
	datas, err := b.GetSketches(ctx, "old", names)
	if err != nil {
		t.Fatal(err)
	}
	var put []Blob
	for i, data := range datas {
		bk, err := cardinality.DecodeBucket(data)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&bk); err != nil {
			t.Fatal(err)
		}
		put = append(put, Blob{Name: names[i], Digest: idx[names[i]] + 1, Data: buf.Bytes(), ExpireAt: time.Now().Add(time.Hour)})
	}
	if err := b.PutSketches(ctx, "old", put, nil, time.Hour); err != nil {
		t.Fatal(err)
	}
	ra.s.SyncOnce(ctx)
	if n := metricSeries(t, ra, "mold"); n != 120 {
		t.Errorf("a sees mold=%d from gob buckets; want 120", n)
	}
}

// countingBackend counts the sketch buckets fetched.
type countingBackend struct {
	Backend
	mu      sync.Mutex
	fetched map[string]int
}

func (c *countingBackend) GetSketches(ctx context.Context, replica string, names []string) ([][]byte, error) {
	c.mu.Lock()
	for _, n := range names {
		c.fetched[replica+"/"+n]++
	}
	c.mu.Unlock()
	return c.Backend.GetSketches(ctx, replica, names)
}

// TestUnreadableBucketFetchedOnce: a bucket another replica shared that cannot
// be merged (here damaged; also one a later version wrote) is fetched again
// only once it changes, not at every exchange.
func TestUnreadableBucketFetchedOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := &countingBackend{Backend: NewMemory(), fetched: map[string]int{}}
	rx, ra := newReplica(t, b, "x"), newReplica(t, b, "a")
	observeMetric(rx, "mx", 40)
	rx.s.SyncOnce(ctx)
	put := func(digest uint64, data []byte) {
		t.Helper()
		blob := Blob{Name: "7:1|series|0", Digest: digest, Data: data, ExpireAt: time.Now().Add(time.Hour)}
		if err := b.PutSketches(ctx, "x", []Blob{blob}, nil, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	put(1, []byte("not a bucket"))
	for range 3 {
		ra.s.SyncOnce(ctx)
	}
	if n := b.fetched["x/7:1|series|0"]; n != 1 {
		t.Errorf("the damaged bucket was fetched %d times in 3 exchanges; want 1", n)
	}
	if n := metricSeries(t, ra, "mx"); n != 40 {
		t.Errorf("a sees mx=%d; want 40 from x's readable buckets", n)
	}
	put(2, []byte("still not a bucket"))
	ra.s.SyncOnce(ctx)
	if n := b.fetched["x/7:1|series|0"]; n != 2 {
		t.Errorf("the changed bucket was fetched %d times in all; want 2", n)
	}
}
