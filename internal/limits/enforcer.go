package limits

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/tenant"
)

// EnforcerOptions configure an Enforcer. Zero values take the documented defaults.
type EnforcerOptions struct {
	// Registerer receives the enforcer's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Logger receives the sampled discard lines; nil discards them.
	Logger *slog.Logger
	// Now is the clock (default time.Now). Window rotation and log sampling use it;
	// AllowSamples takes its time as an argument.
	Now func() time.Time
	// Window is how long a series stays active without samples: membership keeps two
	// generations of Window each, so a series expires between one and two windows
	// after its last sample. Default 1h.
	Window time.Duration
	// MaxTenants caps the tenants with their own state (default 10,000). Tenants
	// beyond it share one overflow state: their rate and series limits then apply to
	// all of them together, and cardguard_limits_tenant_overflow_total counts it.
	MaxTenants int
	// MaxMetricsPerTenant caps the metric names tracked per tenant (default 50,000).
	// New series of metrics beyond it are still counted against max_series but not
	// against max_series_per_metric; cardguard_limits_metric_overflow_total counts them.
	MaxMetricsPerTenant int
	// MaxTenantLabels caps distinct tenant label values on cardguard's own metrics
	// (default 1,000); later tenants are labelled "other".
	MaxTenantLabels int
	// LogInterval is the least time between two discard log lines for one tenant and
	// reason (default 10s); the line carries the samples discarded since the last one.
	LogInterval time.Duration
}

// OverflowTenantLabel is the tenant label value of tenants beyond
// EnforcerOptions.MaxTenantLabels.
const OverflowTenantLabel = "other"

// Enforcer keeps the per-tenant state behind the rate and series limits and accounts
// discarded samples. It is safe for concurrent use. It retains nothing passed to it
// beyond a call except clones of metric names.
type Enforcer struct {
	now         func() time.Time
	window      int64 // nanoseconds
	logInterval int64 // nanoseconds
	maxTenants  int
	maxMetrics  int
	maxLabels   int
	logger      *slog.Logger

	share    SeriesSharing                              // nil: this replica alone; set by ShareSeries before use
	tenants  atomic.Pointer[map[tenant.ID]*tenantState] // copy on write
	mu       sync.Mutex                                 // serialises tenant creation
	labelled int                                        // tenants with their own label; guarded by mu
	overflow *tenantState

	discarded       *prometheus.CounterVec
	dryRunDiscarded *prometheus.CounterVec
	tenantOverflow  prometheus.Counter
	metricOverflow  prometheus.Counter
}

// NewEnforcer returns an Enforcer with no tenant state yet.
func NewEnforcer(o EnforcerOptions) *Enforcer {
	e := &Enforcer{
		now:         o.Now,
		window:      int64(o.Window),
		logInterval: int64(o.LogInterval),
		maxTenants:  o.MaxTenants,
		maxMetrics:  o.MaxMetricsPerTenant,
		maxLabels:   o.MaxTenantLabels,
		logger:      o.Logger,
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.window <= 0 {
		e.window = int64(time.Hour)
	}
	if e.logInterval <= 0 {
		e.logInterval = int64(10 * time.Second)
	}
	if e.maxTenants <= 0 {
		e.maxTenants = 10_000
	}
	if e.maxMetrics <= 0 {
		e.maxMetrics = 50_000
	}
	if e.maxLabels <= 0 {
		e.maxLabels = 1_000
	}
	if e.logger == nil {
		e.logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(o.Registerer)
	e.discarded = f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardguard_discarded_samples_total",
		Help: "Samples dropped before reaching VictoriaMetrics, by tenant and reason.",
	}, []string{"tenant", "reason"})
	e.dryRunDiscarded = f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardguard_dry_run_discarded_samples_total",
		Help: "Samples a limit in dry_run mode would have dropped; they were forwarded.",
	}, []string{"tenant", "reason"})
	e.tenantOverflow = f.NewCounter(prometheus.CounterOpts{
		Name: "cardguard_limits_tenant_overflow_total",
		Help: "Calls for tenants beyond the tenant cap, handled in one shared overflow state.",
	})
	e.metricOverflow = f.NewCounter(prometheus.CounterOpts{
		Name: "cardguard_limits_metric_overflow_total",
		Help: "New series of metric names beyond the per-tenant metric cap, not checked against max_series_per_metric.",
	})
	if o.Registerer != nil {
		o.Registerer.MustRegister(newCollector(e))
	}
	e.overflow = e.newTenantState(tenant.ID{}, OverflowTenantLabel)
	m := make(map[tenant.ID]*tenantState)
	e.tenants.Store(&m)
	return e
}

// tenantState is everything the enforcer keeps for one tenant.
type tenantState struct {
	id     tenant.ID
	label  string
	rate   rateState
	series seriesSet

	discards   [numReasons][2]atomic.Int64 // [reason][dryRun]
	counters   [numReasons][2]atomic.Pointer[counterRef]
	lastLog    [numReasons][2]atomic.Int64 // unix nanoseconds
	suppressed [numReasons][2]atomic.Int64 // samples since the last log line
}

type counterRef struct{ c prometheus.Counter }

func (e *Enforcer) newTenantState(t tenant.ID, label string) *tenantState {
	st := &tenantState{id: t, label: label}
	st.series.init(e.maxMetrics, e.metricOverflow)
	return st
}

// tenant returns t's state, creating it on first use.
func (e *Enforcer) tenant(t tenant.ID) *tenantState {
	m := *e.tenants.Load()
	if st := m[t]; st != nil {
		return st
	}
	if len(m) >= e.maxTenants {
		e.tenantOverflow.Inc()
		return e.overflow
	}
	return e.addTenant(t)
}

func (e *Enforcer) addTenant(t tenant.ID) *tenantState {
	e.mu.Lock()
	defer e.mu.Unlock()
	m := *e.tenants.Load()
	if st := m[t]; st != nil {
		return st
	}
	if len(m) >= e.maxTenants {
		e.tenantOverflow.Inc()
		return e.overflow
	}
	label := OverflowTenantLabel
	if e.labelled < e.maxLabels {
		label = t.String()
		e.labelled++
	}
	st := e.newTenantState(t, label)
	nm := make(map[tenant.ID]*tenantState, len(m)+1)
	for k, v := range m {
		nm[k] = v
	}
	nm[t] = st
	e.tenants.Store(&nm)
	return st
}

// lookup returns t's state or nil, never creating it.
func (e *Enforcer) lookup(t tenant.ID) *tenantState {
	return (*e.tenants.Load())[t]
}

func (e *Enforcer) epoch() int64 { return e.now().UnixNano() / e.window }

// AdmitSeries decides whether a series may be written, by its hash (computed once by
// the caller over the full label set) and its metric name (retained only as a clone).
// A series already admitted in the window always passes, whatever the limits now
// say. A new series is admitted while the tenant is under max_series and its metric
// under max_series_per_metric; otherwise the reason is returned and the series is not
// remembered, so each later sample of it is refused again.
//
// The decision is the same in dry_run mode: the caller forwards the series anyway and
// records the reason as "would drop". With neither series limit set nothing is
// tracked and every series passes; setting a limit later starts from an empty window.
//
// AdmitSeries reads the clock and looks the tenant up on every call; a request's
// series are cheaper through Admitter, which also asks the shared membership
// about all of a request's new series at once.
func (e *Enforcer) AdmitSeries(t tenant.ID, l *Limits, metric string, seriesHash uint64) Reason {
	return e.Admitter(t, l, e.now()).Admit(metric, seriesHash)
}

// Admitter is AdmitSeries bound to one tenant, one *Limits and one point in time:
// what a remote-write request needs for its series. It is a small value, safe for
// concurrent use, and valid as long as the Enforcer.
type Admitter struct {
	set   *seriesSet // nil: no series limit, everything passes
	t     tenant.ID
	l     *Limits
	epoch int64
	share SeriesSharing
}

// Admitter returns the Admitter of tenant t with limits l at now.
func (e *Enforcer) Admitter(t tenant.ID, l *Limits, now time.Time) Admitter {
	if l == nil || (l.MaxSeries <= 0 && l.MaxSeriesPerMetric <= 0) {
		return Admitter{}
	}
	st := e.tenant(t)
	return Admitter{set: &st.series, t: st.id, l: l, epoch: now.UnixNano() / e.window, share: e.share}
}

// Admit is AdmitSeries for the Admitter's tenant, limits and time: Defer, then
// Resolve of the one series when deferred.
func (a Admitter) Admit(metric string, seriesHash uint64) Reason {
	r, deferred := a.Defer(metric, seriesHash)
	if !deferred {
		return r
	}
	c := []Candidate{{Hash: seriesHash, Metric: metric}}
	a.Resolve(c)
	return c[0].Reason
}

// Defer decides at once about a series this replica knows, or that it may
// decide alone. Otherwise (a series new here while the membership is shared) it
// reports deferred: the caller collects such series as Candidates and passes
// them to Resolve, which asks the shared membership about all of them in one
// exchange.
func (a Admitter) Defer(metric string, seriesHash uint64) (r Reason, deferred bool) {
	if a.set == nil {
		return "", false
	}
	return a.set.admit(a.epoch, a.l, metric, seriesHash, a.share)
}

// Candidate is a series Defer deferred; Resolve sets its Reason ("" admitted).
type Candidate struct {
	Hash   uint64
	Metric string
	Reason Reason
}

// Resolve decides about the deferred series of one request.
func (a Admitter) Resolve(cands []Candidate) {
	if len(cands) == 0 || a.set == nil {
		return
	}
	if a.share == nil {
		for i := range cands {
			cands[i].Reason, _ = a.set.admit(a.epoch, a.l, cands[i].Metric, cands[i].Hash, nil)
		}
		return
	}
	for i := range cands {
		if a.set.maxMetricsReached(cands[i].Metric) {
			// Counted in the metric overflow here: not limited per metric.
			cands[i].Metric = ""
		}
	}
	n, err := a.share.AdmitShared(a.t, a.l, a.epoch, cands)
	if err == nil {
		a.set.shared.Store(sharedCount{gen: a.epoch, n: n})
	}
	a.set.settle(a.epoch, a.l, cands, err == nil, a.share)
}

// SeriesSharing connects the series membership of replicas that enforce the same
// limits, so that a series admitted by one replica is never refused by another
// (invariant 4) and max_series holds across them. The shared membership is the
// authority: a replica decides alone only about series it admitted or saw
// admitted itself, and asks AdmitShared about the others. Implementations must
// be safe for concurrent use.
type SeriesSharing interface {
	// AdmitShared decides, atomically against the shared membership, about
	// series new to this replica in generation gen: a series the membership holds
	// in gen or gen-1 is admitted (and recorded in gen), a new one is admitted
	// and recorded while t is under l's limits, else its Reason is set. Metric ""
	// is counted against max_series only. It returns t's active series after the
	// decisions, or an error when the membership could not be asked within a
	// short, bounded time; the Enforcer then decides alone, failing open.
	AdmitShared(t tenant.ID, l *Limits, gen int64, cands []Candidate) (active int64, err error)
	// Pending says that refreshes (series of the previous generation seen again)
	// or admissions made while AdmitShared failed are waiting in
	// DrainAdmissions. It must not block.
	Pending()
	// FailOpenFactor bounds the admissions made while AdmitShared fails: a
	// series is then admitted as long as this replica holds fewer than
	// FailOpenFactor times the limit, because it may have been admitted
	// elsewhere and a series is never refused because the others could not be
	// asked. 1 when every series has one owner replica (the total then stays
	// under Replicas x limit), the number of replicas otherwise.
	FailOpenFactor() int
}

// Admission is one series admitted or refreshed in generation Gen (the window
// number, Unix time divided by the window), as the sharing side publishes it.
// Metric is "" for series counted in the tenant's metric overflow.
type Admission struct {
	Tenant tenant.ID
	Gen    int64
	Hash   uint64
	Metric string
}

// ShareSeries makes the Enforcer share its series membership through s. Call it
// once, before the Enforcer is used.
func (e *Enforcer) ShareSeries(s SeriesSharing) { e.share = s }

// Window returns the length of a membership generation.
func (e *Enforcer) Window() time.Duration { return time.Duration(e.window) }

// Generation returns the membership generation at now.
func (e *Enforcer) Generation(now time.Time) int64 { return now.UnixNano() / e.window }

// DrainAdmissions appends to dst the admissions and refreshes made since the last
// call (only recorded while sharing) and forgets them. complete is false when some
// were dropped because too many waited: the caller should then publish every
// series again (EachSeries). The Metric strings are shared and immutable.
func (e *Enforcer) DrainAdmissions(dst []Admission) (out []Admission, complete bool) {
	complete = true
	drain := func(st *tenantState) {
		dst = st.series.drain(st.id, dst)
		if st.series.pendingLost.Swap(false) {
			complete = false
		}
	}
	for _, st := range *e.tenants.Load() {
		drain(st)
	}
	drain(e.overflow)
	return dst, complete
}

// EachSeries calls fn for every active series of every tenant, with the generation
// it was last seen in. fn runs under a shard lock: it must not call the Enforcer.
func (e *Enforcer) EachSeries(fn func(Admission)) {
	epoch := e.epoch()
	for _, st := range *e.tenants.Load() {
		st.series.rotate(epoch)
		st.series.each(st.id, fn)
	}
}

// AddRemoteSeries records a series admitted elsewhere or before (a snapshot) in
// generation gen: it counts against t's limits from now on and always passes here.
// Generations before the previous one are ignored. metric is cloned when kept.
func (e *Enforcer) AddRemoteSeries(t tenant.ID, gen int64, metric string, seriesHash uint64) {
	e.tenant(t).series.addRemote(e.epoch(), gen, metric, seriesHash)
}

// SeriesCount returns the tenant's active series: those admitted in the current or
// the previous window. It is exact, and 0 for tenants without a series limit.
// While the membership is shared it is the shared count as last seen (see
// SetSharedCount), or this replica's own series when that is larger or unknown.
func (e *Enforcer) SeriesCount(t tenant.ID) int {
	st := e.lookup(t)
	if st == nil {
		return 0
	}
	epoch := e.epoch()
	st.series.rotate(epoch)
	n := st.series.count.Load()
	if sc := st.series.shared.Load(); e.share != nil && sc.gen == epoch {
		n = max(n, sc.n)
	}
	return int(n)
}

// SetSharedCount records t's active series in the shared membership in
// generation gen, as the sharing side read it.
func (e *Enforcer) SetSharedCount(t tenant.ID, gen, n int64) {
	if st := e.lookup(t); st != nil {
		st.series.shared.Store(sharedCount{gen: gen, n: n})
	}
}

// Tenants returns the tenants with their own state.
func (e *Enforcer) Tenants() []tenant.ID {
	m := *e.tenants.Load()
	out := make([]tenant.ID, 0, len(m))
	for t := range m {
		out = append(out, t)
	}
	return out
}

// MetricSeriesCount is SeriesCount for one metric name of the tenant.
func (e *Enforcer) MetricSeriesCount(t tenant.ID, metric string) int {
	st := e.lookup(t)
	if st == nil {
		return 0
	}
	st.series.rotate(e.epoch())
	return st.series.metricCount(metric)
}

// IngestionRate returns the tenant's accepted samples per second over about the last
// 10 seconds.
func (e *Enforcer) IngestionRate(t tenant.ID) float64 {
	st := e.lookup(t)
	if st == nil {
		return 0
	}
	return st.rate.perSecond(e.now().UnixNano())
}

// RecordDiscard accounts samples of tenant t discarded for reason r, or that would
// have been in dry run: it adds to cardguard_discarded_samples_total{tenant,reason}
// (cardguard_dry_run_discarded_samples_total in dry run) and to the totals of the
// limits API, and logs at most one line per tenant and reason every LogInterval.
// Reasons outside Reasons() are counted on the metric only.
func (e *Enforcer) RecordDiscard(t tenant.ID, r Reason, samples int, dryRun bool) {
	if samples <= 0 {
		return
	}
	st := e.tenant(t)
	d := 0
	if dryRun {
		d = 1
	}
	i := reasonIndex(r)
	if i < 0 {
		e.vec(d).WithLabelValues(st.label, string(r)).Add(float64(samples))
		return
	}
	st.discards[i][d].Add(int64(samples))
	ref := st.counters[i][d].Load()
	if ref == nil {
		ref = &counterRef{e.vec(d).WithLabelValues(st.label, string(r))}
		st.counters[i][d].Store(ref) // a racing store holds the same counter
	}
	ref.c.Add(float64(samples))

	st.suppressed[i][d].Add(int64(samples))
	now := e.now().UnixNano()
	last := st.lastLog[i][d].Load()
	if now-last < e.logInterval || !st.lastLog[i][d].CompareAndSwap(last, now) {
		return
	}
	n := st.suppressed[i][d].Swap(0)
	msg := "samples discarded"
	if dryRun {
		msg = "samples would be discarded (dry run)"
	}
	e.logger.Warn(msg, "tenant", t.String(), "reason", string(r), "limit", r.Field(),
		"samples", n, "since", time.Duration(now-last).Truncate(time.Second).String())
}

func (e *Enforcer) vec(dryRun int) *prometheus.CounterVec {
	if dryRun == 1 {
		return e.dryRunDiscarded
	}
	return e.discarded
}

// Discards returns the tenant's discarded samples by reason since start, enforced
// and dry run. Reasons with no discards are left out.
func (e *Enforcer) Discards(t tenant.ID) (enforced, dryRun map[Reason]int64) {
	enforced, dryRun = map[Reason]int64{}, map[Reason]int64{}
	st := e.lookup(t)
	if st == nil {
		return enforced, dryRun
	}
	for i, r := range Reasons() {
		if n := st.discards[i][0].Load(); n > 0 {
			enforced[r] = n
		}
		if n := st.discards[i][1].Load(); n > 0 {
			dryRun[r] = n
		}
	}
	return enforced, dryRun
}

// collector exports per-tenant gauges computed at scrape time, so the hot path pays
// nothing for them.
type collector struct {
	e              *Enforcer
	trackedSeries  *prometheus.Desc
	trackedTenants *prometheus.Desc
}

func newCollector(e *Enforcer) collector {
	return collector{
		e: e,
		trackedSeries: prometheus.NewDesc("cardguard_limits_tracked_series",
			"Active series in the exact membership set, by tenant (only tenants with a series limit).",
			[]string{"tenant"}, nil),
		trackedTenants: prometheus.NewDesc("cardguard_limits_tracked_tenants",
			"Tenants with their own limits state.", nil, nil),
	}
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.trackedSeries
	ch <- c.trackedTenants
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := *c.e.tenants.Load()
	epoch := c.e.epoch()
	byLabel := make(map[string]int64)
	add := func(st *tenantState) {
		st.series.rotate(epoch)
		if n := st.series.count.Load(); n > 0 {
			byLabel[st.label] += n
		}
	}
	for _, st := range m {
		add(st)
	}
	add(c.e.overflow)
	for label, n := range byLabel {
		ch <- prometheus.MustNewConstMetric(c.trackedSeries, prometheus.GaugeValue, float64(n), label)
	}
	ch <- prometheus.MustNewConstMetric(c.trackedTenants, prometheus.GaugeValue, float64(len(m)))
}
