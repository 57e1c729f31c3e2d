package queryaudit

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MetricNamer lists the metric names seen for a tenant. The Recorder resolves
// selectors without an exact metric name ({__name__=~"node_.*"}, {job="api"})
// against it. Implementations must be safe for concurrent use; the Recorder calls
// it from its background goroutine only and does not modify or keep the slice.
type MetricNamer interface {
	MetricNames(t tenant.ID) []string
}

// RecorderConfig bounds what the Recorder keeps. Zero values take the defaults
// documented on each field.
type RecorderConfig struct {
	// QueueSize is the number of reads waiting to be processed; more are dropped
	// and counted. Default 4096.
	QueueSize int
	// Retention is how long usage counts are kept, rounded up to whole UTC days.
	// Default 30 days.
	Retention time.Duration
	// MaxTenants caps tracked tenants. Default 1000.
	MaxTenants int
	// MaxMetricsPerTenant caps tracked metric names per tenant. Default 20000.
	MaxMetricsPerTenant int
	// MaxSourcesPerMetric caps distinct sources (dashboard panel, rule, user
	// agent) kept per metric. Default 50.
	MaxSourcesPerMetric int
	// MaxLabelsPerMetric caps label names kept per metric. Default 100.
	MaxLabelsPerMetric int
	// MaxResolvedNames caps how many known metric names one selector without an
	// exact name may be credited to; a wider selector ({job="api"} over thousands
	// of metrics) is counted as unresolved instead. Default 1000.
	MaxResolvedNames int
	// MaxQueryBytes: longer queries are counted as unparsed without parsing.
	// Default 64 KiB.
	MaxQueryBytes int
	// MaxNameBytes: metric and label names longer than this are not recorded
	// (counted as overflow kind "long_name"). Default 256, cardguard's own
	// max_label_name_length default: a name no write may carry needs no usage
	// entry, and real metric names stay far below it. Without it, each query
	// naming a made-up 64 KiB metric kept 64 KiB in memory and on disk.
	MaxNameBytes int
	// MaxSnapshotBytes caps the saved snapshot (SaveFile); over it, the metrics
	// queried longest ago are left out until it fits. Default 64 MiB.
	MaxSnapshotBytes int
	// RarelyQueriedBelow: a metric queried fewer times than this in the retention
	// window is reported as rarely queried. Default 10.
	RarelyQueriedBelow uint64
	// Now returns the current time; tests set it. Default time.Now.
	Now func() time.Time
}

func (c RecorderConfig) withDefaults() RecorderConfig {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.QueueSize, 4096)
	def(&c.MaxTenants, 1000)
	def(&c.MaxMetricsPerTenant, 20000)
	def(&c.MaxSourcesPerMetric, 50)
	def(&c.MaxLabelsPerMetric, 100)
	def(&c.MaxResolvedNames, 1000)
	def(&c.MaxQueryBytes, 64<<10)
	def(&c.MaxNameBytes, 256)
	def(&c.MaxSnapshotBytes, 64<<20)
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.RarelyQueriedBelow == 0 {
		c.RarelyQueriedBelow = 10
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// retentionDays is the window length in whole UTC days.
func (c RecorderConfig) retentionDays() int32 {
	return int32((c.Retention + 24*time.Hour - 1) / (24 * time.Hour))
}

// Source is who asked for a query, from request headers. Headers can be forged by
// clients: a Source is attribution, never authorisation. Source is comparable.
type Source struct {
	// Kind is "alert" (Grafana alert rule headers), "vmalert" (vmalert's request
	// shape, see isVMAlert), "grafana" (dashboard, panel or user headers),
	// "client" (User-Agent only) or "unknown".
	Kind           string `json:"kind"`
	DashboardUID   string `json:"dashboardUid,omitempty"`
	DashboardTitle string `json:"dashboardTitle,omitempty"`
	PanelID        string `json:"panelId,omitempty"`
	PanelTitle     string `json:"panelTitle,omitempty"`
	User           string `json:"user,omitempty"`
	RuleUID        string `json:"ruleUid,omitempty"`
	RuleName       string `json:"ruleName,omitempty"`
	RuleFolder     string `json:"ruleFolder,omitempty"`
	// RuleGroup is the vmalert rule group, from X-Rule-Group, a header the
	// group's `headers` list sets: vmalert names neither group nor rule itself.
	RuleGroup string `json:"ruleGroup,omitempty"`
	UserAgent string `json:"userAgent,omitempty"`
}

// maxSourceField bounds each Source string; a User-Agent is cut to this length.
const maxSourceField = 128

// sourceFromHeader reads the attribution headers. It runs on the request path: map
// lookups with canonical keys only, no allocation. The strings are clipped and
// cloned later, in the background, when they are kept.
func sourceFromHeader(h http.Header) Source {
	get := func(k string) string {
		if v := h[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	ua := get("User-Agent")
	if isVMAlert(ua, get("Content-Type")) {
		// Not "client": the Go client's default User-Agent says nothing.
		s := Source{Kind: "vmalert", RuleGroup: get("X-Rule-Group"), RuleName: get("X-Rule-Name")}
		if !strings.HasPrefix(ua, goClientAgent) {
			s.UserAgent = ua
		}
		return s
	}
	s := Source{
		RuleUID:    get("X-Rule-Uid"),
		RuleName:   get("X-Rule-Name"),
		RuleFolder: get("X-Rule-Folder"),
	}
	if s.RuleUID != "" || s.RuleName != "" || get("Fromalert") != "" {
		s.Kind = "alert"
		return s
	}
	s = Source{
		DashboardUID:   get("X-Dashboard-Uid"),
		DashboardTitle: get("X-Dashboard-Title"),
		PanelID:        get("X-Panel-Id"),
		PanelTitle:     get("X-Panel-Title"),
		User:           get("X-Grafana-User"),
	}
	if s != (Source{}) {
		s.Kind = "grafana"
		return s
	}
	if ua != "" {
		return Source{Kind: "client", UserAgent: ua}
	}
	return Source{Kind: "unknown"}
}

// goClientAgent starts the User-Agent Go's net/http client sends when the
// caller sets none.
const goClientAgent = "Go-http-client/"

// isVMAlert tells a vmalert rule evaluation by its request shape
// (app/vmalert/datasource, v1.150): a POST with the query in the URL and no
// body, under "Content-Type: application/json", from Go's http.Client with no
// User-Agent of its own. Grafana and Prometheus clients post forms and name
// themselves. A group's `headers` may set "User-Agent: vmalert...", which
// counts too.
func isVMAlert(ua, contentType string) bool {
	if strings.HasPrefix(ua, "vmalert") {
		return true
	}
	return strings.HasPrefix(ua, goClientAgent) && contentType == "application/json"
}

// keep returns s with every field clipped and copied, safe to retain.
func (s Source) keep() Source {
	f := func(v string) string { return strings.Clone(clipString(v, maxSourceField)) }
	return Source{
		Kind: s.Kind, DashboardUID: f(s.DashboardUID), DashboardTitle: f(s.DashboardTitle),
		PanelID: f(s.PanelID), PanelTitle: f(s.PanelTitle), User: f(s.User),
		RuleUID: f(s.RuleUID), RuleName: f(s.RuleName), RuleFolder: f(s.RuleFolder),
		RuleGroup: f(s.RuleGroup), UserAgent: f(s.UserAgent),
	}
}

func (s Source) clipped() Source {
	f := func(v string) string { return clipString(v, maxSourceField) }
	return Source{
		Kind: s.Kind, DashboardUID: f(s.DashboardUID), DashboardTitle: f(s.DashboardTitle),
		PanelID: f(s.PanelID), PanelTitle: f(s.PanelTitle), User: f(s.User),
		RuleUID: f(s.RuleUID), RuleName: f(s.RuleName), RuleFolder: f(s.RuleFolder),
		RuleGroup: f(s.RuleGroup), UserAgent: f(s.UserAgent),
	}
}

type readKind uint8

const (
	readQuery       readKind = iota // PromQL in query=
	readSeries                      // match[] returning whole series: series, export, federate
	readLabels                      // match[] returning label names
	readLabelValues                 // match[] returning the values of one label
)

// usageEvent is one read, copied off the request. Its strings are immutable Go
// strings from url.Values and http.Header, never reused buffers.
type usageEvent struct {
	tenant  tenant.ID
	kind    readKind
	query   string
	matches []string
	label   string // readLabelValues
	src     Source
	at      time.Time
	cost    *Cost // set by RecordCost: attribute the read's cost; usage only on 2xx
}

// Recorder aggregates which metrics and labels each tenant's queries read, and who
// asked. Record is safe for concurrent use and cheap enough for the request path;
// the work happens in Run. All methods are safe for concurrent use.
type Recorder struct {
	cfg    RecorderConfig
	names  MetricNamer
	logger *slog.Logger
	events chan usageEvent
	m      recorderMetrics

	mu              sync.Mutex
	tenants         map[tenant.ID]*tenantUsage
	tenantsOverflow uint64
	since           time.Time // when the oldest data held was collected

	dropMu       sync.Mutex
	pendingDrops map[tenant.ID]uint64
	hasDrops     atomic.Bool

	cacheMu    sync.Mutex
	cache      map[string]cachedExtraction
	cacheBytes int

	costs costBook // cost.go

	listeners []ReadListener // listen.go

	checkers checkers // checks.go: other sources of usage, for MetricDetail
}

type cachedExtraction struct {
	ex  Extraction
	err error
}

// maxCacheBytes bounds the parsed-query cache (keys are whole query strings).
// Dashboards repeat the same queries every refresh, so most parses are hits.
const maxCacheBytes = 8 << 20

type recorderMetrics struct {
	recorded, unparsed, dropped, ignored prometheus.Counter
	overflow                             *prometheus.CounterVec
	unresolved                           *prometheus.CounterVec
}

// NewRecorder returns a Recorder. names may be nil: selectors without an exact
// metric name are then credited only when their regex is a plain list of names
// (a|b). A selector with no name matcher at all ({type="free"}) is credited only
// to the metrics carrying its labels, which needs names to implement
// LabelValueCount(tenant, metric, label) (int64, bool) as cardinality.Tracker does. reg may be nil. Call Run to process what Record queues.
func NewRecorder(cfg RecorderConfig, names MetricNamer, reg prometheus.Registerer, logger *slog.Logger) *Recorder {
	return newRecorder(cfg, names, reg, logger, true)
}

// newRecorder is NewRecorder; without queue, the Recorder takes no reads
// (Record), only merges: the queue is some 1 MB (QueueSize events), which
// ReplaceWith allocated at every sync of every replica.
func newRecorder(cfg RecorderConfig, names MetricNamer, reg prometheus.Registerer, logger *slog.Logger, queue bool) *Recorder {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	queueSize := 0
	if queue {
		queueSize = cfg.QueueSize
	}
	r := &Recorder{
		cfg:          cfg,
		names:        names,
		logger:       logger,
		events:       make(chan usageEvent, queueSize),
		tenants:      make(map[tenant.ID]*tenantUsage),
		since:        cfg.Now(),
		pendingDrops: make(map[tenant.ID]uint64),
		cache:        make(map[string]cachedExtraction),
	}
	f := promauto.With(reg)
	events := f.NewCounterVec(prometheus.CounterOpts{
		Name: "cardguard_query_usage_events_total",
		Help: "Reads seen by query usage recording, by result: recorded, unparsed (neither the MetricsQL nor the PromQL parser could read the query), dropped (queue full) or ignored (tenant cap).",
	}, []string{"result"})
	r.m = recorderMetrics{
		recorded: events.WithLabelValues("recorded"),
		unparsed: events.WithLabelValues("unparsed"),
		dropped:  events.WithLabelValues("dropped"),
		ignored:  events.WithLabelValues("ignored"),
		overflow: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_query_usage_overflow_total",
			Help: "Usage entries not tracked because a cap was reached, by kind: tenant, metric, label, source, long_name (a metric or label name over the length cap).",
		}, []string{"kind"}),
		unresolved: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_query_usage_unresolved_selectors_total",
			Help: "Selectors without an exact metric name that were credited to no metric, by reason: too_wide (matches more names than the cap), no_names (no metric names known), no_labels (a selector without a name, and the labels of known metrics unknown).",
		}, []string{"reason"}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cardguard_query_usage_queue_length",
		Help: "Reads waiting to be processed by query usage recording.",
	}, func() float64 { return float64(len(r.events)) })
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cardguard_query_usage_tracked_tenants",
		Help: "Tenants with query usage held in memory.",
	}, func() float64 {
		r.mu.Lock()
		defer r.mu.Unlock()
		return float64(len(r.tenants))
	})
	for _, k := range []string{"tenant", "metric", "label", "source", "long_name"} {
		r.m.overflow.WithLabelValues(k)
	}
	return r
}

// Record queues one read for usage accounting. endpoint is the Prometheus API
// endpoint after /api/v1/ ("query", "series", "label/job/values", "export",
// "federate", ...); form holds URL and POST form values. It never blocks: when the
// queue is full the read is dropped and counted. Record keeps the query strings
// and a few header values, never form or header themselves. The read path calls it
// only once VictoriaMetrics answered 2xx: a query it refused read nothing.
func (r *Recorder) Record(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time) {
	r.record(t, endpoint, form, header, at, nil)
}

func (r *Recorder) record(t tenant.ID, endpoint string, form url.Values, header http.Header, at time.Time, cost *Cost) {
	ev := usageEvent{tenant: t, at: at, cost: cost}
	switch {
	case endpoint == "query" || endpoint == "query_range" || endpoint == "query_exemplars":
		ev.kind = readQuery
		if ev.query = form.Get("query"); ev.query == "" {
			return
		}
	case endpoint == "series" || endpoint == "export" || endpoint == "federate" || strings.HasPrefix(endpoint, "export/"):
		ev.kind = readSeries
	case endpoint == "labels" || endpoint == "label_values":
		// "label_values" is the proxy's metric name for label/<name>/values: the
		// label name is not known then, only the selectors are credited.
		ev.kind = readLabels
	case strings.HasPrefix(endpoint, "label/") && strings.HasSuffix(endpoint, "/values") && len(endpoint) > len("label//values"):
		ev.kind = readLabelValues
		ev.label = endpoint[len("label/") : len(endpoint)-len("/values")]
	default:
		return
	}
	if ev.kind != readQuery {
		m := form["match[]"]
		if len(m) == 0 && cost == nil {
			return // selects no series: nothing to credit
		}
		ev.matches = slices.Clone(m) // the caller may change form afterwards
	}
	ev.src = sourceFromHeader(header)
	select {
	case r.events <- ev:
	default:
		r.m.dropped.Inc()
		r.dropMu.Lock()
		if _, ok := r.pendingDrops[t]; ok || len(r.pendingDrops) < r.cfg.MaxTenants {
			r.pendingDrops[t]++
		}
		r.dropMu.Unlock()
		r.hasDrops.Store(true)
	}
}

// Run processes queued reads until ctx is done, and expires old usage hourly.
func (r *Recorder) Run(ctx context.Context) {
	tick := time.NewTicker(time.Hour)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-r.events:
			r.process(ev)
		case <-tick.C:
			r.expire()
			r.costs.expire(r.cfg.Now().Add(-costIdle).UnixMilli())
		}
	}
}

// Flush processes every read queued so far on the calling goroutine and returns
// when the queue is empty. Tests call it instead of Run.
func (r *Recorder) Flush() {
	for {
		select {
		case ev := <-r.events:
			r.process(ev)
		default:
			r.foldDrops()
			return
		}
	}
}

// process parses one read, resolves its selectors to metric names and adds it to
// the tenant's usage.
func (r *Recorder) process(ev usageEvent) {
	if r.hasDrops.Load() {
		r.foldDrops()
	}
	var (
		ex         Extraction
		err        error
		uses       map[string]*metricRead
		unresolved bool
	)
	if ev.kind == readQuery || len(ev.matches) > 0 {
		ex, err = r.extract(ev)
	}
	if err == nil {
		uses, unresolved = r.resolve(ev, ex)
	}
	if ev.cost != nil {
		r.addCost(ev, uses)
		if ev.cost.Status/100 != 2 || (ev.kind != readQuery && len(ev.matches) == 0) {
			return // VictoriaMetrics refused it, or it selects no series: nothing was read
		}
	}

	if err == nil {
		// Runs after the unlock below: a listener may call back into r.
		defer r.notify(ev, ex, uses)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tu := r.tenant(ev.tenant)
	if tu == nil {
		r.m.ignored.Inc()
		return
	}
	day := dayOf(ev.at)
	ms := ev.at.UnixMilli()
	tu.queries.add(day, 1)
	if ev.at.Before(r.since) {
		r.since = ev.at
	}
	if err != nil {
		tu.unparsed.add(day, 1)
		r.m.unparsed.Inc()
		r.logger.Debug("query usage: unparsed read", "tenant", ev.tenant.String(), "err", err)
		return
	}
	r.m.recorded.Inc()
	if unresolved {
		tu.unresolved.add(day, 1)
	}
	src := ev.src.clipped()
	// Sorted, so that which metrics a cap keeps out does not depend on map order.
	overflowed := false
	defer func() {
		if overflowed {
			tu.overflowed.add(day, 1)
		}
	}()
	for _, name := range slices.Sorted(maps.Keys(uses)) {
		mr := uses[name]
		before := tu.metricsOverflow
		mu := r.metric(tu, name)
		if mu == nil {
			overflowed = overflowed || tu.metricsOverflow != before
			continue
		}
		mu.queries.add(day, 1)
		mu.last = max(mu.last, ms)
		if mr.all {
			mu.allLabels.add(day, 1)
		}
		for _, l := range slices.Sorted(maps.Keys(mr.labels)) {
			how := mr.labels[l]
			lu := r.label(mu, l)
			if lu == nil {
				continue
			}
			lu.queries.add(day, 1)
			for i := range numUses {
				if how&(1<<i) != 0 {
					lu.last[i] = max(lu.last[i], ms)
				}
			}
		}
		if su := r.source(mu, src); su != nil {
			su.queries.add(day, 1)
			su.last = max(su.last, ms)
		}
	}
}

// metricRead is what one read does with one metric.
type metricRead struct {
	labels map[string]LabelUse
	all    bool
}

func (r *Recorder) extract(ev usageEvent) (Extraction, error) {
	var key string
	if ev.kind == readQuery {
		if len(ev.query) > r.cfg.MaxQueryBytes {
			return Extraction{}, errQueryTooLong{len(ev.query), r.cfg.MaxQueryBytes}
		}
		key = ev.query
	} else {
		key = "match[]\x00" + strings.Join(ev.matches, "\x00")
		if len(key) > r.cfg.MaxQueryBytes {
			return Extraction{}, errQueryTooLong{len(key), r.cfg.MaxQueryBytes}
		}
	}
	r.cacheMu.Lock()
	c, ok := r.cache[key]
	r.cacheMu.Unlock()
	if ok {
		return c.ex, c.err
	}
	if ev.kind == readQuery {
		c.ex, c.err = Extract(ev.query)
	} else {
		c.ex, c.err = ExtractSelectors(ev.matches)
	}
	r.cacheMu.Lock()
	if r.cacheBytes+len(key) > maxCacheBytes {
		clear(r.cache)
		r.cacheBytes = 0
	}
	if _, dup := r.cache[key]; !dup {
		r.cache[key] = c
		r.cacheBytes += len(key)
	}
	r.cacheMu.Unlock()
	return c.ex, c.err
}

type errQueryTooLong struct{ n, max int }

func (e errQueryTooLong) Error() string {
	return fmt.Sprintf("query of %d bytes is longer than the limit of %d bytes (MaxQueryBytes)", e.n, e.max)
}

// resolve turns the selectors of one read into per-metric label uses. The
// Extraction may be shared through the cache and is not modified. unresolved
// is true when a selector without a name could not be credited to the
// metrics it may select (ResolveNames gave a reason): the read may then read
// metrics its uses do not name.
func (r *Recorder) resolve(ev usageEvent, ex Extraction) (_ map[string]*metricRead, unresolved bool) {
	out := make(map[string]*metricRead)
	var known []string
	var knownLoaded bool
	for i := range ex.Selectors {
		s := &ex.Selectors[i]
		var names []string
		if s.Name != "" {
			names = []string{s.Name}
		} else {
			if !knownLoaded && r.names != nil {
				known, knownLoaded = r.names.MetricNames(ev.tenant), true
			}
			var reason string
			names, reason = r.resolveMatchers(ev.tenant, s, known)
			unresolved = unresolved || reason != ""
			if names == nil {
				continue
			}
		}
		for _, n := range names {
			mr := out[n]
			if mr == nil {
				mr = &metricRead{labels: make(map[string]LabelUse, len(s.Labels)+1)}
				out[n] = mr
			}
			for l, how := range s.Labels {
				mr.labels[l] |= how
			}
			mr.all = mr.all || s.AllLabels || ev.kind == readSeries
			if ev.kind == readLabelValues && ev.label != model.MetricNameLabel {
				mr.labels[ev.label] |= UseValues
			}
		}
	}
	return out, unresolved
}

// resolveMatchers resolves a selector without an exact name with ResolveNames
// and counts why when nothing can be credited.
func (r *Recorder) resolveMatchers(t tenant.ID, s *Selector, known []string) ([]string, string) {
	lc, _ := r.names.(LabelCounter)
	names, reason := ResolveNames(t, s, known, lc, r.cfg.MaxResolvedNames)
	if reason != "" {
		r.m.unresolved.WithLabelValues(reason).Inc()
	}
	return names, reason
}

// ResolveNames returns the known names a selector without an exact name can
// select: those all its name matchers accept and, when lc can tell (it may be
// nil), that carry every label the selector requires. With no names known, it
// returns the plain names of an alternation regex. More than maxNames names
// (0: no cap) credit none. When it returns nil, reason says why: "no_names",
// "no_labels" ({type="free"} with nothing to tell which metrics have type) or
// "too_wide"; a selector that matches no known name gives nil and "".
func ResolveNames(t tenant.ID, s *Selector, known []string, lc LabelCounter, maxNames int) (names []string, reason string) {
	ms := s.NameMatchers
	if maxNames <= 0 {
		maxNames = int(^uint(0) >> 1)
	}
	if known == nil {
		if len(ms) == 1 {
			if set := ms[0].SetMatches(); len(set) > 0 && len(set) <= maxNames {
				return set, ""
			}
		}
		return nil, "no_names"
	}
	if lc == nil && len(ms) == 0 && len(s.RequiredLabels) > 0 {
		// {type="free"} matches some metrics, and which ones cannot be told:
		// crediting every metric would hide the unused ones.
		return nil, "no_labels"
	}
	var out []string
	for _, n := range known {
		if !matchesAll(ms, n) || (lc != nil && !hasLabels(lc, t, n, s.RequiredLabels)) {
			continue
		}
		if len(out) == maxNames {
			return nil, "too_wide"
		}
		out = append(out, n)
	}
	return out, ""
}

// LabelCounter is implemented by a MetricNamer that also knows the labels of each
// metric (cardinality.Tracker does). known false means it cannot tell.
type LabelCounter interface {
	LabelValueCount(t tenant.ID, metric, label string) (n int64, known bool)
}

func matchesAll(ms []*labels.Matcher, name string) bool {
	for _, m := range ms {
		if !m.Matches(name) {
			return false
		}
	}
	return true
}

// hasLabels tells whether metric may carry every label in required; a label the
// counter cannot tell about may be there.
func hasLabels(lc LabelCounter, t tenant.ID, metric string, required []string) bool {
	for _, l := range required {
		if n, known := lc.LabelValueCount(t, metric, l); known && n == 0 {
			return false
		}
	}
	return true
}

// foldDrops moves drop counts taken on the request path into tenant usage.
func (r *Recorder) foldDrops() {
	if !r.hasDrops.Swap(false) {
		return
	}
	r.dropMu.Lock()
	drops := r.pendingDrops
	r.pendingDrops = make(map[tenant.ID]uint64)
	r.dropMu.Unlock()
	day := dayOf(r.cfg.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	for t, n := range drops {
		if tu := r.tenant(t); tu != nil {
			tu.dropped.add(day, n)
		}
	}
}

// tenantUsage is one tenant's usage. Guarded by Recorder.mu.
type tenantUsage struct {
	queries, unparsed, dropped dailyCounts
	// unresolved counts the reads with a selector without a name that could
	// not be credited to the metrics it selects (resolve); overflowed the
	// reads of metrics left out at the cap of metrics (metric), by day, so
	// that they leave the totals with the retention.
	unresolved      dailyCounts
	overflowed      dailyCounts
	metrics         map[string]*metricUsage
	metricsOverflow uint64
}

type metricUsage struct {
	queries         dailyCounts
	last            int64 // Unix ms of the last read
	allLabels       dailyCounts
	labels          map[string]*labelUsage
	labelsOverflow  uint64
	sources         map[Source]*sourceUsage
	sourcesOverflow uint64
}

type labelUsage struct {
	queries dailyCounts
	last    [numUses]int64 // Unix ms of the last use of each kind, 0 for never
}

type sourceUsage struct {
	queries dailyCounts
	last    int64
}

// tenant returns the usage of t, creating it under the cap; nil over the cap.
func (r *Recorder) tenant(t tenant.ID) *tenantUsage {
	if tu, ok := r.tenants[t]; ok {
		return tu
	}
	if len(r.tenants) >= r.cfg.MaxTenants {
		r.tenantsOverflow++
		r.m.overflow.WithLabelValues("tenant").Inc()
		return nil
	}
	tu := &tenantUsage{metrics: make(map[string]*metricUsage)}
	r.tenants[t] = tu
	return tu
}

func (r *Recorder) metric(tu *tenantUsage, name string) *metricUsage {
	if mu, ok := tu.metrics[name]; ok {
		return mu
	}
	if len(name) > r.cfg.MaxNameBytes {
		r.m.overflow.WithLabelValues("long_name").Inc()
		return nil
	}
	if len(tu.metrics) >= r.cfg.MaxMetricsPerTenant {
		tu.metricsOverflow++
		r.m.overflow.WithLabelValues("metric").Inc()
		return nil
	}
	mu := &metricUsage{labels: make(map[string]*labelUsage), sources: make(map[Source]*sourceUsage)}
	tu.metrics[strings.Clone(name)] = mu
	return mu
}

func (r *Recorder) label(mu *metricUsage, name string) *labelUsage {
	if lu, ok := mu.labels[name]; ok {
		return lu
	}
	if len(name) > r.cfg.MaxNameBytes {
		r.m.overflow.WithLabelValues("long_name").Inc()
		return nil
	}
	if len(mu.labels) >= r.cfg.MaxLabelsPerMetric {
		mu.labelsOverflow++
		r.m.overflow.WithLabelValues("label").Inc()
		return nil
	}
	lu := &labelUsage{}
	mu.labels[strings.Clone(name)] = lu
	return lu
}

func (r *Recorder) source(mu *metricUsage, s Source) *sourceUsage {
	if su, ok := mu.sources[s]; ok {
		return su
	}
	if len(mu.sources) >= r.cfg.MaxSourcesPerMetric {
		mu.sourcesOverflow++
		r.m.overflow.WithLabelValues("source").Inc()
		return nil
	}
	su := &sourceUsage{}
	mu.sources[s.keep()] = su
	return su
}

// windowStart is the first UTC day inside the retention window ending today.
func (r *Recorder) windowStart(now time.Time) int32 {
	return dayOf(now) - r.cfg.retentionDays() + 1
}

// expire drops counts older than the retention window, and entries left empty.
func (r *Recorder) expire() {
	r.foldDrops()
	now := r.cfg.Now()
	from := r.windowStart(now)
	r.mu.Lock()
	defer r.mu.Unlock()
	if start := dayStart(from); r.since.Before(start) {
		r.since = start
	}
	for t, tu := range r.tenants {
		tu.queries.expire(from)
		tu.unparsed.expire(from)
		tu.unresolved.expire(from)
		tu.overflowed.expire(from)
		tu.dropped.expire(from)
		for name, mu := range tu.metrics {
			mu.queries.expire(from)
			mu.allLabels.expire(from)
			for l, lu := range mu.labels {
				if lu.queries.expire(from); len(lu.queries) == 0 {
					delete(mu.labels, l)
				}
			}
			for s, su := range mu.sources {
				if su.queries.expire(from); len(su.queries) == 0 {
					delete(mu.sources, s)
				}
			}
			if len(mu.queries) == 0 {
				delete(tu.metrics, name)
			}
		}
		if len(tu.metrics) == 0 && len(tu.queries) == 0 && len(tu.unparsed) == 0 && len(tu.unresolved) == 0 && len(tu.overflowed) == 0 && len(tu.dropped) == 0 {
			delete(r.tenants, t)
		}
	}
}

// DayCount is a count on one UTC day, numbered in days since 1970-01-01.
type DayCount struct {
	Day int32  `json:"day"`
	N   uint64 `json:"n"`
}

// dailyCounts holds counts by day in ascending order of day, a handful of entries
// for a retention of weeks.
type dailyCounts []DayCount

func (d *dailyCounts) add(day int32, n uint64) {
	s := *d
	if k := len(s); k > 0 && s[k-1].Day == day {
		s[k-1].N += n
		return
	}
	i, found := slices.BinarySearchFunc(s, day, func(c DayCount, day int32) int { return int(c.Day - day) })
	if found {
		s[i].N += n
		return
	}
	*d = slices.Insert(s, i, DayCount{Day: day, N: n})
}

// sum counts the days from `from` on.
func (d dailyCounts) sum(from int32) uint64 {
	var n uint64
	for _, c := range d {
		if c.Day >= from {
			n += c.N
		}
	}
	return n
}

func (d *dailyCounts) expire(from int32) {
	s := *d
	i := 0
	for i < len(s) && s[i].Day < from {
		i++
	}
	if i > 0 {
		*d = slices.Clone(s[i:])
	}
}

func dayOf(t time.Time) int32 { return int32(t.Unix() / 86400) }

func dayStart(day int32) time.Time { return time.Unix(int64(day)*86400, 0).UTC() }

// Snapshot is the serialisable state of a Recorder, for files and for merging the
// usage seen by several replicas. Counts are per UTC day so that merged counts
// still expire on time; timestamps are Unix milliseconds.
type Snapshot struct {
	Version         int              `json:"version"`
	Since           int64            `json:"since"`
	TenantsOverflow uint64           `json:"tenantsOverflow,omitempty"`
	Tenants         []TenantSnapshot `json:"tenants"`
}

// snapshotVersion changes when Snapshot changes incompatibly.
const snapshotVersion = 1

// TenantSnapshot is one tenant's usage.
type TenantSnapshot struct {
	Tenant     tenant.ID  `json:"tenant"`
	Queries    []DayCount `json:"queries,omitempty"`
	Unparsed   []DayCount `json:"unparsed,omitempty"`
	Unresolved []DayCount `json:"unresolved,omitempty"`
	// Overflowed are reads of metrics not kept (the cap of metrics, or the
	// snapshot's size).
	Overflowed      []DayCount       `json:"overflowed,omitempty"`
	Dropped         []DayCount       `json:"dropped,omitempty"`
	MetricsOverflow uint64           `json:"metricsOverflow,omitempty"`
	Metrics         []MetricSnapshot `json:"metrics,omitempty"`
}

// MetricSnapshot is one metric's usage.
type MetricSnapshot struct {
	Name            string           `json:"name"`
	Queries         []DayCount       `json:"queries"`
	LastQueried     int64            `json:"lastQueried"`
	AllLabels       []DayCount       `json:"allLabels,omitempty"`
	Labels          []LabelSnapshot  `json:"labels,omitempty"`
	LabelsOverflow  uint64           `json:"labelsOverflow,omitempty"`
	Sources         []SourceSnapshot `json:"sources,omitempty"`
	SourcesOverflow uint64           `json:"sourcesOverflow,omitempty"`
}

// LabelSnapshot is one label's usage on a metric; LastUsed is keyed by use
// ("matcher", "grouping", "join", "function", "values").
type LabelSnapshot struct {
	Name     string           `json:"name"`
	Queries  []DayCount       `json:"queries"`
	LastUsed map[string]int64 `json:"lastUsed"`
}

// SourceSnapshot is one source's reads of a metric.
type SourceSnapshot struct {
	Source      Source     `json:"source"`
	Queries     []DayCount `json:"queries"`
	LastQueried int64      `json:"lastQueried"`
}

// Export returns a copy of the state inside the retention window, sorted so that
// equal states export equally.
func (r *Recorder) Export() Snapshot {
	r.expire()
	r.mu.Lock()
	defer r.mu.Unlock()
	snap := Snapshot{Version: snapshotVersion, Since: r.since.UnixMilli(), TenantsOverflow: r.tenantsOverflow}
	for t, tu := range r.tenants {
		ts := TenantSnapshot{
			Tenant: t, Queries: slices.Clone(tu.queries), Unparsed: slices.Clone(tu.unparsed),
			Unresolved: slices.Clone(tu.unresolved), Overflowed: slices.Clone(tu.overflowed),
			Dropped: slices.Clone(tu.dropped), MetricsOverflow: tu.metricsOverflow,
		}
		for name, mu := range tu.metrics {
			ms := MetricSnapshot{
				Name: name, Queries: slices.Clone(mu.queries), LastQueried: mu.last,
				AllLabels: slices.Clone(mu.allLabels), LabelsOverflow: mu.labelsOverflow,
				SourcesOverflow: mu.sourcesOverflow,
			}
			for l, lu := range mu.labels {
				ls := LabelSnapshot{Name: l, Queries: slices.Clone(lu.queries), LastUsed: make(map[string]int64)}
				for i, name := range LabelUse(1<<numUses - 1).Strings() {
					if lu.last[i] != 0 {
						ls.LastUsed[name] = lu.last[i]
					}
				}
				ms.Labels = append(ms.Labels, ls)
			}
			slices.SortFunc(ms.Labels, func(a, b LabelSnapshot) int { return strings.Compare(a.Name, b.Name) })
			for s, su := range mu.sources {
				ms.Sources = append(ms.Sources, SourceSnapshot{Source: s, Queries: slices.Clone(su.queries), LastQueried: su.last})
			}
			slices.SortFunc(ms.Sources, func(a, b SourceSnapshot) int { return compareSources(a.Source, b.Source) })
			ts.Metrics = append(ts.Metrics, ms)
		}
		slices.SortFunc(ts.Metrics, func(a, b MetricSnapshot) int { return strings.Compare(a.Name, b.Name) })
		snap.Tenants = append(snap.Tenants, ts)
	}
	slices.SortFunc(snap.Tenants, func(a, b TenantSnapshot) int {
		if a.Tenant.AccountID != b.Tenant.AccountID {
			return cmp.Compare(a.Tenant.AccountID, b.Tenant.AccountID)
		}
		return cmp.Compare(a.Tenant.ProjectID, b.Tenant.ProjectID)
	})
	return snap
}

// Merge adds a snapshot to the state: daily counts are summed (replicas see
// disjoint reads), last times take the later one, caps apply as for new reads.
// Counts outside the retention window are dropped.
func (r *Recorder) Merge(s Snapshot) error {
	if s.Version != snapshotVersion {
		return fmt.Errorf("unsupported query usage snapshot version %d, want %d", s.Version, snapshotVersion)
	}
	from := r.windowStart(r.cfg.Now())
	addDays := func(dst *dailyCounts, src []DayCount) {
		for _, c := range src {
			if c.Day >= from {
				dst.add(c.Day, c.N)
			}
		}
	}
	useIndex := make(map[string]int, numUses)
	for i, name := range LabelUse(1<<numUses - 1).Strings() {
		useIndex[name] = i
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if since := time.UnixMilli(s.Since); s.Since != 0 && since.Before(r.since) {
		r.since = since
	}
	r.tenantsOverflow += s.TenantsOverflow
	for i := range s.Tenants {
		ts := &s.Tenants[i]
		tu := r.tenant(ts.Tenant)
		if tu == nil {
			continue
		}
		addDays(&tu.queries, ts.Queries)
		addDays(&tu.unparsed, ts.Unparsed)
		addDays(&tu.unresolved, ts.Unresolved)
		addDays(&tu.overflowed, ts.Overflowed)
		addDays(&tu.dropped, ts.Dropped)
		tu.metricsOverflow += ts.MetricsOverflow
		for j := range ts.Metrics {
			msn := &ts.Metrics[j]
			if dailyCounts(msn.Queries).sum(from) == 0 {
				continue
			}
			before := tu.metricsOverflow
			mu := r.metric(tu, msn.Name)
			if mu == nil {
				if tu.metricsOverflow != before {
					addDays(&tu.overflowed, msn.Queries)
				}
				continue
			}
			addDays(&mu.queries, msn.Queries)
			addDays(&mu.allLabels, msn.AllLabels)
			mu.last = max(mu.last, msn.LastQueried)
			mu.labelsOverflow += msn.LabelsOverflow
			mu.sourcesOverflow += msn.SourcesOverflow
			for _, ls := range msn.Labels {
				if dailyCounts(ls.Queries).sum(from) == 0 || ls.Name == "" || ls.Name == model.MetricNameLabel {
					continue
				}
				lu := r.label(mu, ls.Name)
				if lu == nil {
					continue
				}
				addDays(&lu.queries, ls.Queries)
				for use, at := range ls.LastUsed {
					if k, ok := useIndex[use]; ok {
						lu.last[k] = max(lu.last[k], at)
					}
				}
			}
			for _, ss := range msn.Sources {
				if dailyCounts(ss.Queries).sum(from) == 0 {
					continue
				}
				su := r.source(mu, ss.Source.clipped())
				if su == nil {
					continue
				}
				addDays(&su.queries, ss.Queries)
				su.last = max(su.last, ss.LastQueried)
			}
		}
	}
	return nil
}

// ReplaceWith replaces the whole state by the merge of snaps. It is the hook for
// a read-only view of the usage of several replicas: rebuilt from every replica's
// Export, it is never recorded into (their counts are summed, so merging into a
// recording Recorder would count reads again at every rebuild). Readers see the
// old state or the new one, never a mix. On error nothing changes.
func (r *Recorder) ReplaceWith(snaps ...Snapshot) error {
	tmp := newRecorder(r.cfg, r.names, nil, r.logger, false)
	tmp.since = r.cfg.Now()
	for _, s := range snaps {
		if err := tmp.Merge(s); err != nil {
			return err
		}
	}
	r.mu.Lock()
	r.tenants, r.tenantsOverflow, r.since = tmp.tenants, tmp.tenantsOverflow, tmp.since
	r.mu.Unlock()
	return nil
}

// SaveFile writes the state to path atomically: a temporary file in the same
// directory, synced, then renamed over path.
func (r *Recorder) SaveFile(path string) error {
	snap := r.Export()
	data, err := json.Marshal(snap)
	if err != nil {
		return fmt.Errorf("cannot encode query usage: %w", err)
	}
	for dropped := 0; len(data) > r.cfg.MaxSnapshotBytes; {
		n := snap.dropOldest()
		if n == 0 {
			return fmt.Errorf("cannot save query usage: %d bytes without any metric, over the cap of %d bytes (MaxSnapshotBytes)", len(data), r.cfg.MaxSnapshotBytes)
		}
		dropped += n
		if data, err = json.Marshal(snap); err != nil {
			return fmt.Errorf("cannot encode query usage: %w", err)
		}
		if len(data) <= r.cfg.MaxSnapshotBytes {
			r.logger.Warn("query usage snapshot over its size cap: left out the metrics queried longest ago",
				"metrics_left_out", dropped, "bytes", len(data), "cap_bytes", r.cfg.MaxSnapshotBytes)
		}
	}
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("cannot save query usage: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("cannot save query usage to %q: %w", path, err)
	}
	return nil
}

// LoadFile merges the state saved in path into the Recorder; call it once at
// start-up. A missing file is an error wrapping fs.ErrNotExist.
func (r *Recorder) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("cannot load query usage: %w", err)
	}
	var s Snapshot
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("cannot decode query usage from %q: %w", path, err)
	}
	if err := r.Merge(s); err != nil {
		return fmt.Errorf("cannot load query usage from %q: %w", path, err)
	}
	return nil
}

// dropOldest removes about a quarter of the metrics of s, those queried longest
// ago (at least one), counting them as overflow; it returns how many it removed.
func (s *Snapshot) dropOldest() int {
	var lasts []int64
	for _, ts := range s.Tenants {
		for _, m := range ts.Metrics {
			lasts = append(lasts, m.LastQueried)
		}
	}
	if len(lasts) == 0 {
		return 0
	}
	slices.Sort(lasts)
	cut := lasts[len(lasts)/4]
	n := 0
	for i := range s.Tenants {
		ts := &s.Tenants[i]
		kept := ts.Metrics[:0]
		for _, m := range ts.Metrics {
			if m.LastQueried <= cut {
				n++
				ts.MetricsOverflow++
				// Its reads are forgotten at the next start: they count
				// as reads of a metric not kept.
				for _, c := range m.Queries {
					(*dailyCounts)(&ts.Overflowed).add(c.Day, c.N)
				}
				continue
			}
			kept = append(kept, m)
		}
		ts.Metrics = kept
	}
	return n
}

func compareSources(a, b Source) int {
	for _, p := range [][2]string{
		{a.Kind, b.Kind}, {a.DashboardUID, b.DashboardUID}, {a.DashboardTitle, b.DashboardTitle},
		{a.PanelID, b.PanelID}, {a.PanelTitle, b.PanelTitle}, {a.User, b.User},
		{a.RuleUID, b.RuleUID}, {a.RuleName, b.RuleName}, {a.RuleFolder, b.RuleFolder},
		{a.RuleGroup, b.RuleGroup}, {a.UserAgent, b.UserAgent},
	} {
		if c := strings.Compare(p[0], p[1]); c != 0 {
			return c
		}
	}
	return 0
}
