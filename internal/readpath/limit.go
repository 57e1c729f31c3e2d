package readpath

import (
	"context"
	"math"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// LimitSource gives a tenant's effective limits (limits.Registry). The result is
// shared and only read.
type LimitSource interface {
	For(t tenant.ID) *limits.Limits
}

// DefaultQueueWait is how long a query waits in its tenant's queue for one of the
// tenant's max_concurrent_queries slots before it gets 429.
const DefaultQueueWait = 10 * time.Second

// maxLimitTenants caps the tenants with their own read-limit state; later tenants
// share one state, as in the write path's Enforcer.
const maxLimitTenants = 10_000

// Limiter enforces the read limits of limits.Limits on one replica: per tenant a
// bounded queue in front of max_concurrent_queries slots, a query_rate token bucket,
// and the checks that need only the request (blocked_queries, max_query_length,
// max_query_lookback, max_series_per_query). Every tenant has its own slots, queue
// and bucket, and nothing on the way takes a lock another tenant's queries hold for
// longer than a map lookup: one tenant at its limits does not slow another down.
// It is safe for concurrent use.
type Limiter struct {
	src       LimitSource
	est       *estimator
	now       func() time.Time
	queueWait time.Duration

	mu       sync.Mutex // serialises tenant creation
	tenants  atomic.Pointer[map[tenant.ID]*readTenant]
	overflow *readTenant
	labels   *tenant.Labeler

	refused, dryRun *prometheus.CounterVec
}

// readTenant is one tenant's read-limit state.
type readTenant struct {
	label  string
	gate   atomic.Pointer[gate]
	bucket bucket
	// refusals per read reason: [reason][0 enforced, 1 dry run]
	refusals [6][2]atomic.Int64
	counters [6][2]atomic.Pointer[counterRef]
}

type counterRef struct{ c prometheus.Counter }

// gate is a tenant's slots and queue for one value of max_concurrent_queries; a
// change of the limit installs a new gate, and queries release the gate they took.
type gate struct {
	slots   chan struct{}
	waiting atomic.Int32
	size    int
}

func newLimiter(src LimitSource, sk SeriesSketches, reg prometheus.Registerer, now func() time.Time) *Limiter {
	f := promauto.With(reg)
	l := &Limiter{
		src:       src,
		est:       newEstimator(sk),
		now:       now,
		queueWait: DefaultQueueWait,
		labels:    tenant.NewLabeler(tenant.DefaultLabelCap),
		refused: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_refused_queries_total",
			Help: "Queries refused by a read limit, by tenant and reason.",
		}, []string{"tenant", "reason"}),
		dryRun: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_dry_run_refused_queries_total",
			Help: "Queries a read limit in dry_run mode would have refused; they were forwarded.",
		}, []string{"tenant", "reason"}),
	}
	l.overflow = &readTenant{label: "other"}
	m := map[tenant.ID]*readTenant{}
	l.tenants.Store(&m)
	return l
}

func (l *Limiter) tenant(t tenant.ID) *readTenant {
	if st := (*l.tenants.Load())[t]; st != nil {
		return st
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	m := *l.tenants.Load()
	if st := m[t]; st != nil {
		return st
	}
	if len(m) >= maxLimitTenants {
		return l.overflow
	}
	st := &readTenant{label: l.labels.Label(t)}
	nm := make(map[tenant.ID]*readTenant, len(m)+1)
	for k, v := range m {
		nm[k] = v
	}
	nm[t] = st
	l.tenants.Store(&nm)
	return st
}

// refusal is a query the limits refuse: the answer and the reason.
type refusal struct {
	status     int
	errorType  string
	reason     limits.Reason
	msg        string
	retryAfter time.Duration
}

// queryArgs is what the checks read from one request.
type queryArgs struct {
	endpoint string
	exprs    []string // query=, or match[] values
	form     url.Values
}

// admit applies t's read limits to one request. It returns a release function to
// call when the query is done (never nil) or the refusal to answer with. In dry run
// every decision is counted and nothing is refused.
func (l *Limiter) admit(ctx context.Context, t tenant.ID, q queryArgs) (func(), *refusal) {
	lim := l.src.For(t)
	if lim == nil || !lim.HasReadLimits() {
		return noop, nil
	}
	st := l.tenant(t)
	dry := lim.DryRun()
	now := l.now()
	refuse := func(r *refusal) bool {
		l.record(st, r.reason, dry)
		return !dry
	}
	for _, check := range []func() *refusal{
		func() *refusal { return checkBlocked(lim, q.exprs) },
		func() *refusal { return l.checkTime(lim, q, now) },
		func() *refusal { return checkRate(st, lim, now) },
		func() *refusal { return l.checkSeries(t, lim, q) },
	} {
		if r := check(); r != nil && refuse(r) {
			return noop, r
		}
	}
	if lim.MaxConcurrentQueries <= 0 {
		return noop, nil
	}
	g := st.gateFor(lim.MaxConcurrentQueries)
	if dry {
		select {
		case g.slots <- struct{}{}:
			return func() { <-g.slots }, nil
		default:
			l.record(st, limits.ReasonMaxConcurrentQueries, true)
			return noop, nil
		}
	}
	if ok := g.acquire(ctx, l.queueWait); !ok {
		r := &refusal{status: 429, errorType: "too_many_requests", reason: limits.ReasonMaxConcurrentQueries,
			msg: limits.ReasonMaxConcurrentQueries.Message(lim), retryAfter: time.Second}
		l.record(st, r.reason, false)
		return noop, r
	}
	return func() { <-g.slots }, nil
}

func noop() {}

func (st *readTenant) gateFor(n int) *gate {
	g := st.gate.Load()
	if g != nil && g.size == n {
		return g
	}
	ng := &gate{slots: make(chan struct{}, n), size: n}
	if st.gate.CompareAndSwap(g, ng) {
		return ng
	}
	return st.gate.Load() // a concurrent change won; its size is as current as ours
}

// acquire takes a slot, waiting in the queue (as many places as slots) up to wait.
func (g *gate) acquire(ctx context.Context, wait time.Duration) bool {
	select {
	case g.slots <- struct{}{}:
		return true
	default:
	}
	if int(g.waiting.Add(1)) > g.size {
		g.waiting.Add(-1)
		return false
	}
	defer g.waiting.Add(-1)
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case g.slots <- struct{}{}:
		return true
	case <-timer.C:
		return false
	case <-ctx.Done():
		return false
	}
}

func (l *Limiter) record(st *readTenant, r limits.Reason, dry bool) {
	i := limits.ReadReasonIndex(r)
	d := 0
	vec := l.refused
	if dry {
		d, vec = 1, l.dryRun
	}
	st.refusals[i][d].Add(1)
	ref := st.counters[i][d].Load()
	if ref == nil {
		ref = &counterRef{vec.WithLabelValues(st.label, string(r))}
		st.counters[i][d].Store(ref)
	}
	ref.c.Inc()
}

// Refusals returns the tenant's refused queries by reason since start, enforced and
// in dry run; reasons without refusals are left out.
func (l *Limiter) Refusals(t tenant.ID) (enforced, dryRun map[limits.Reason]int64) {
	enforced, dryRun = map[limits.Reason]int64{}, map[limits.Reason]int64{}
	st := (*l.tenants.Load())[t]
	if st == nil {
		return enforced, dryRun
	}
	for i, r := range limits.ReadReasons() {
		if n := st.refusals[i][0].Load(); n > 0 {
			enforced[r] = n
		}
		if n := st.refusals[i][1].Load(); n > 0 {
			dryRun[r] = n
		}
	}
	return enforced, dryRun
}

// InFlight returns how many of the tenant's queries hold a max_concurrent_queries
// slot now, and how many wait for one.
func (l *Limiter) InFlight(t tenant.ID) (running, waiting int) {
	st := (*l.tenants.Load())[t]
	if st == nil {
		return 0, 0
	}
	g := st.gate.Load()
	if g == nil {
		return 0, 0
	}
	return len(g.slots), int(g.waiting.Load())
}

func checkBlocked(lim *limits.Limits, exprs []string) *refusal {
	for i := range lim.BlockedQueries {
		b := &lim.BlockedQueries[i]
		for _, q := range exprs {
			if b.Matches(q) {
				return &refusal{status: 422, errorType: "execution", reason: limits.ReasonBlockedQuery,
					msg: limits.ReasonBlockedQuery.Message(lim)}
			}
		}
	}
	return nil
}

// bucket is a query token bucket; it starts full.
type bucket struct {
	mu     sync.Mutex
	tokens float64
	last   int64
	filled bool
}

func checkRate(st *readTenant, lim *limits.Limits, now time.Time) *refusal {
	if lim.QueryRate <= 0 {
		return nil
	}
	ok, wait := st.bucket.take(lim.QueryRate, lim.QueryBurstSize(), now.UnixNano())
	if ok {
		return nil
	}
	return &refusal{status: 429, errorType: "too_many_requests", reason: limits.ReasonQueryRateLimited,
		msg: limits.ReasonQueryRateLimited.Message(lim), retryAfter: wait}
}

func (b *bucket) take(rate, burst float64, now int64) (bool, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case !b.filled:
		b.tokens, b.last, b.filled = burst, now, true
	case now > b.last:
		b.tokens = math.Min(burst, b.tokens+float64(now-b.last)/1e9*rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	secs := math.Max(1, math.Ceil((1-b.tokens)/rate))
	return false, min(time.Duration(secs)*time.Second, limits.MaxRetryAfter)
}

// checkTime applies max_query_length and max_query_lookback. Time arguments that do
// not parse are left to VictoriaMetrics to refuse.
func (l *Limiter) checkTime(lim *limits.Limits, q queryArgs, now time.Time) *refusal {
	if lim.MaxQueryLength <= 0 && lim.MaxQueryLookback <= 0 {
		return nil
	}
	step := parseStep(q.form.Get("step"))
	var reach time.Duration // the longest range selector or subquery, offsets included
	if q.endpoint == "query" || q.endpoint == "query_range" {
		for _, e := range q.exprs {
			if p := l.est.plans.get(e); p.err == nil {
				reach = max(reach, p.reach(step))
			}
		}
	}
	start, hasStart := parseTime(q.form.Get("start"))
	end, hasEnd := parseTime(q.form.Get("end"))
	if !hasEnd {
		end = now
	}
	switch q.endpoint {
	case "query":
		if at, ok := parseTime(q.form.Get("time")); ok {
			start, end = at, at
		} else {
			start, end = now, now
		}
		hasStart = true
	case "query_range":
	default:
		reach = 0
	}
	// Grafana aligns start down to a multiple of step and computes "now" before
	// cardguard does: one step and a minute of slack keep "last 7 days" inside a
	// 7d limit.
	slack := time.Minute + step
	if lim.MaxQueryLength > 0 && hasStart {
		if length := end.Sub(start) + reach; length > limits.Duration(lim.MaxQueryLength)+slack {
			return &refusal{status: 422, errorType: "execution", reason: limits.ReasonMaxQueryLength,
				msg: "query length " + fmtDur(length) + ": " + limits.ReasonMaxQueryLength.Message(lim)}
		}
	}
	if lim.MaxQueryLookback > 0 && hasStart {
		from := start.Add(-reach)
		if back := now.Sub(from); back > limits.Duration(lim.MaxQueryLookback)+slack {
			return &refusal{status: 422, errorType: "execution", reason: limits.ReasonMaxQueryLookback,
				msg: "query reads data from " + fmtDur(back) + " ago: " + limits.ReasonMaxQueryLookback.Message(lim)}
		}
	}
	return nil
}

func (l *Limiter) checkSeries(t tenant.ID, lim *limits.Limits, q queryArgs) *refusal {
	if lim.MaxSeriesPerQuery <= 0 {
		return nil
	}
	switch q.endpoint {
	case "query", "query_range", "series", "export", "export/csv", "export/native", "federate":
	default:
		return nil
	}
	limit := int64(lim.MaxSeriesPerQuery)
	var total int64
	over := false
	for _, e := range q.exprs {
		p := l.est.plans.get(e)
		if p.err != nil {
			continue // VictoriaMetrics will say what is wrong with it
		}
		// Under the limit the sum stops as soon as it is over; a refusal (rare,
		// and behind query_rate) reports the whole estimate.
		bound := limit - total
		if over {
			bound = math.MaxInt64
		}
		n, o := l.est.estimate(t, p, bound)
		if o {
			n, _ = l.est.estimate(t, p, math.MaxInt64)
		}
		total += n
		over = over || total > limit
	}
	if !over {
		return nil
	}
	return &refusal{status: 422, errorType: "execution", reason: limits.ReasonMaxSeriesPerQuery,
		msg: "the query selects about " + strconv.FormatInt(total, 10) + " series by cardguard's estimate: " + limits.ReasonMaxSeriesPerQuery.Message(lim)}
}

// EstimateSeries returns the series the query's selectors select for tenant t, as
// the max_series_per_query check estimates them. ok is false for a query that does
// not parse.
func (l *Limiter) EstimateSeries(t tenant.ID, query string) (n int64, ok bool) {
	p := l.est.plans.get(query)
	if p.err != nil {
		return 0, false
	}
	n, _ = l.est.estimate(t, p, math.MaxInt64)
	return n, true
}

// parseTime reads a Prometheus API time: RFC 3339 or Unix seconds.
func parseTime(s string) (time.Time, bool) {
	if s == "" {
		return time.Time{}, false
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(frac*1e9)), true
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	return time.Time{}, false
}

// parseStep reads step= as seconds or a Prometheus duration; 0 when absent or bad.
func parseStep(s string) time.Duration {
	if s == "" {
		return 0
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && f < 1e10 {
		return time.Duration(f * float64(time.Second))
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d
	}
	return 0
}

func fmtDur(d time.Duration) string {
	return d.Truncate(time.Second).String()
}
