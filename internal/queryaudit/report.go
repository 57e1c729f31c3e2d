package queryaudit

import (
	"cmp"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/common/model"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Estimator gives the cardinality side of the usage report. Implementations must
// be safe for concurrent use; the returned maps are only read.
type Estimator interface {
	// MetricSeries estimates active series per metric name.
	MetricSeries(t tenant.ID) map[string]int64
	// LabelValueCounts estimates distinct values per label name of one metric.
	LabelValueCounts(t tenant.ID, metric string) map[string]int64
}

// SavingsEstimate explains the savings figures; it is part of every report.
const SavingsEstimate = "Dropping the metric saves its series estimate S. " +
	"Dropping the unused labels L of a metric with S series leaves about " +
	"max(largest distinct value count among the kept labels, S / product of the distinct value counts of L) series, " +
	"capped at S; the saving is S minus that. The division assumes the dropped labels vary independently of the kept ones, " +
	"so it is an upper bound when a dropped label follows a kept one (pod and instance); " +
	"the maximum is a floor because series differing in a kept label stay apart. " +
	"Labels are unused when no query in the window named them; queries counted in allLabelsQueries return or compare " +
	"the metric's series with all their labels, and their results change if any label is dropped."

// SeriesSavedByDroppingLabels estimates how many of a metric's series disappear
// when the labels in drop are removed from it; distinct holds distinct value counts
// per label name. See SavingsEstimate.
func SeriesSavedByDroppingLabels(series int64, distinct map[string]int64, drop []string) int64 {
	if series <= 0 || len(drop) == 0 {
		return 0
	}
	product := 1.0
	for _, l := range drop {
		product *= float64(max(distinct[l], 1))
	}
	var maxKept int64 = 1
	for l, n := range distinct {
		if l != model.MetricNameLabel && !slices.Contains(drop, l) {
			maxKept = max(maxKept, n)
		}
	}
	remaining := max(float64(maxKept), math.Ceil(float64(series)/product))
	if remaining >= float64(series) {
		return 0
	}
	return series - int64(remaining)
}

// Window is the period a report covers: whole UTC days up to now.
type Window struct {
	From          time.Time `json:"from"`
	To            time.Time `json:"to"`
	RetentionDays int       `json:"retentionDays"`
}

// TenantTotals are a tenant's read counts in the window.
type TenantTotals struct {
	Queries         uint64 `json:"queries"`
	UnparsedQueries uint64 `json:"unparsedQueries"`
	// UnresolvedReads are reads with a selector without a metric name that
	// could not be credited to the metrics it selects (more of them than
	// RecorderConfig.MaxResolvedNames, or none known yet): they may read
	// metrics that look unread.
	UnresolvedReads uint64 `json:"unresolvedReads"`
	DroppedEvents   uint64 `json:"droppedEvents"`
	// OverflowReads are the reads in the window of metrics not kept, past
	// MaxMetricsPerTenant (MetricsOverflow counts those metrics ever).
	OverflowReads   uint64 `json:"overflowReads"`
	MetricsOverflow uint64 `json:"metricsOverflow"`
}

// MetricsReport is the answer of GET /usage/tenants/{tenant}/metrics.
type MetricsReport struct {
	Tenant             string         `json:"tenant"`
	Window             Window         `json:"window"`
	Filter             string         `json:"filter"`
	Sort               string         `json:"sort"`
	Order              string         `json:"order"`
	Limit              int            `json:"limit"`
	Offset             int            `json:"offset"`
	Total              int            `json:"total"`
	RarelyQueriedBelow uint64         `json:"rarelyQueriedBelow"`
	Totals             TenantTotals   `json:"totals"`
	SavingsEstimate    string         `json:"savingsEstimate"`
	Metrics            []MetricReport `json:"metrics"`
}

// MetricReport is one metric in MetricsReport.
type MetricReport struct {
	Metric           string        `json:"metric"`
	SeriesEstimate   int64         `json:"seriesEstimate"`
	Queries          uint64        `json:"queries"`
	LastQueried      *time.Time    `json:"lastQueried"`
	Sources          int           `json:"sources"`
	AllLabelsQueries uint64        `json:"allLabelsQueries"`
	UnusedLabels     []UnusedLabel `json:"unusedLabels"`
	// SeriesSavedByDroppingUnusedLabels and SeriesSavedByDroppingMetric follow
	// SavingsEstimate.
	SeriesSavedByDroppingUnusedLabels int64 `json:"seriesSavedByDroppingUnusedLabels"`
	SeriesSavedByDroppingMetric       int64 `json:"seriesSavedByDroppingMetric"`
}

// UnusedLabel is a label of a metric that no query in the window used.
type UnusedLabel struct {
	Label          string `json:"label"`
	DistinctValues int64  `json:"distinctValues"`
}

// MetricDetail is the answer of GET /usage/tenants/{tenant}/metrics/{metric}.
type MetricDetail struct {
	Tenant                            string         `json:"tenant"`
	Metric                            string         `json:"metric"`
	Window                            Window         `json:"window"`
	SeriesEstimate                    int64          `json:"seriesEstimate"`
	Queries                           uint64         `json:"queries"`
	LastQueried                       *time.Time     `json:"lastQueried"`
	AllLabelsQueries                  uint64         `json:"allLabelsQueries"`
	Labels                            []LabelDetail  `json:"labels"`
	LabelsOverflow                    uint64         `json:"labelsOverflow"`
	UnusedLabels                      []UnusedLabel  `json:"unusedLabels"`
	Sources                           []SourceDetail `json:"sources"`
	SourcesOverflow                   uint64         `json:"sourcesOverflow"`
	SeriesSavedByDroppingUnusedLabels int64          `json:"seriesSavedByDroppingUnusedLabels"`
	SeriesSavedByDroppingMetric       int64          `json:"seriesSavedByDroppingMetric"`
	SavingsEstimate                   string         `json:"savingsEstimate"`
	// Checked lists every source of usage asked about the metric and what each
	// said: the metric is unused only when none says "used" or "unknown".
	Checked []SourceCheck `json:"checked"`
}

// LabelDetail is how queries used one label of a metric. DistinctValues is the
// cardinality estimate, 0 when unknown.
type LabelDetail struct {
	Label          string     `json:"label"`
	Uses           []string   `json:"uses"`
	Queries        uint64     `json:"queries"`
	LastUsed       *time.Time `json:"lastUsed"`
	DistinctValues int64      `json:"distinctValues"`
}

// SourceDetail is who read a metric, how often and when last.
type SourceDetail struct {
	Source
	Queries     uint64     `json:"queries"`
	LastQueried *time.Time `json:"lastQueried"`
}

// metricView is a copy of one metric's usage inside the window, taken under the
// lock so that reports can be built without holding it.
type metricView struct {
	queries, allLabels uint64
	last               int64
	labels             map[string]labelView
	labelsOverflow     uint64
	sourceCount        int
	sources            []SourceDetail // only when asked for
	sourcesOverflow    uint64
}

type labelView struct {
	uses    LabelUse
	queries uint64
	last    int64
}

type tenantView struct {
	window  Window
	totals  TenantTotals
	metrics map[string]*metricView
}

// Totals returns t's totals in the retention window (MetricsReport's), at
// the cost of the totals only: the series usage asks for them with every
// report of one metric.
func (r *Recorder) Totals(t tenant.ID) TenantTotals {
	r.foldDrops()
	from := r.windowStart(r.cfg.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	tu := r.tenants[t]
	if tu == nil {
		return TenantTotals{}
	}
	return tu.totals(from)
}

// totals sums tu's counts from day from on; r.mu held.
func (tu *tenantUsage) totals(from int32) TenantTotals {
	return TenantTotals{
		Queries: tu.queries.sum(from), UnparsedQueries: tu.unparsed.sum(from), UnresolvedReads: tu.unresolved.sum(from),
		DroppedEvents: tu.dropped.sum(from), OverflowReads: tu.overflowed.sum(from), MetricsOverflow: tu.metricsOverflow,
	}
}

// view copies t's usage in the window ending now. withSources copies the sources
// too (detail only).
func (r *Recorder) view(t tenant.ID, withSources bool) tenantView {
	r.foldDrops()
	now := r.cfg.Now()
	from := r.windowStart(now)
	fromMs := dayStart(from).UnixMilli()
	v := tenantView{
		window:  Window{From: dayStart(from), To: now.UTC(), RetentionDays: int(r.cfg.retentionDays())},
		metrics: make(map[string]*metricView),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	tu := r.tenants[t]
	if tu == nil {
		return v
	}
	v.totals = tu.totals(from)
	for name, mu := range tu.metrics {
		q := mu.queries.sum(from)
		if q == 0 {
			continue
		}
		mv := &metricView{
			queries: q, allLabels: mu.allLabels.sum(from), last: mu.last,
			labels: make(map[string]labelView, len(mu.labels)), labelsOverflow: mu.labelsOverflow,
			sourcesOverflow: mu.sourcesOverflow,
		}
		for l, lu := range mu.labels {
			lv := labelView{queries: lu.queries.sum(from)}
			if lv.queries == 0 {
				continue
			}
			for i := range numUses {
				if lu.last[i] >= fromMs {
					lv.uses |= 1 << i
					lv.last = max(lv.last, lu.last[i])
				}
			}
			mv.labels[l] = lv
		}
		for s, su := range mu.sources {
			if n := su.queries.sum(from); n > 0 {
				mv.sourceCount++
				if withSources {
					mv.sources = append(mv.sources, SourceDetail{Source: s, Queries: n, LastQueried: msTime(su.last)})
				}
			}
		}
		v.metrics[name] = mv
	}
	return v
}

func msTime(ms int64) *time.Time {
	if ms <= 0 {
		return nil
	}
	t := time.UnixMilli(ms).UTC()
	return &t
}

// Routes mounts the usage report API on router; the caller mounts router under
// /api/cardguard/v1. requireTenant guards every route (the admin or the tenant's
// own token); it may be nil in tests. est may be nil: series estimates are 0 then.
func (r *Recorder) Routes(router chi.Router, est Estimator, requireTenant func(http.Handler) http.Handler) {
	g := router
	if requireTenant != nil {
		g = router.With(requireTenant)
	}
	g.Get("/usage/tenants/{tenant}/metrics", func(w http.ResponseWriter, req *http.Request) { r.serveMetrics(w, req, est) })
	g.Get("/usage/tenants/{tenant}/metrics/{metric}", func(w http.ResponseWriter, req *http.Request) { r.serveMetric(w, req, est) })
	g.Get("/usage/tenants/{tenant}/metric_names_stats", func(w http.ResponseWriter, req *http.Request) { r.serveMetricNamesStats(w, req, est) })
	g.Get("/usage/tenants/{tenant}/top_queries", r.serveTopQueries)
}

// MetricsReport builds the metrics report; filter is "unused", "rarely" or "all";
// sortBy is "series", "queries", "last" or "name"; order is "desc" or "asc".
// rarelyBelow 0 takes RecorderConfig.RarelyQueriedBelow.
func (r *Recorder) MetricsReport(t tenant.ID, est Estimator, filter, sortBy, order string, rarelyBelow uint64, limit, offset int) MetricsReport {
	if rarelyBelow == 0 {
		rarelyBelow = r.cfg.RarelyQueriedBelow
	}
	v := r.view(t, false)
	series := metricSeries(est, t)
	rep := MetricsReport{
		Tenant: t.String(), Window: v.window, Filter: filter, Sort: sortBy, Order: order,
		Limit: limit, Offset: offset, RarelyQueriedBelow: rarelyBelow, Totals: v.totals,
		SavingsEstimate: SavingsEstimate, Metrics: []MetricReport{},
	}
	names := make(map[string]struct{}, len(series)+len(v.metrics))
	for n := range series {
		names[n] = struct{}{}
	}
	for n := range v.metrics {
		names[n] = struct{}{}
	}
	var all []MetricReport
	for n := range names {
		m := MetricReport{Metric: n, SeriesEstimate: series[n], UnusedLabels: []UnusedLabel{}}
		if mv := v.metrics[n]; mv != nil {
			m.Queries, m.AllLabelsQueries, m.Sources = mv.queries, mv.allLabels, mv.sourceCount
			m.LastQueried = msTime(mv.last)
		}
		switch filter {
		case "unused":
			if m.Queries > 0 {
				continue
			}
		case "rarely":
			if m.Queries == 0 || m.Queries >= rarelyBelow {
				continue
			}
		}
		all = append(all, m)
	}
	slices.SortFunc(all, func(a, b MetricReport) int {
		var c int
		switch sortBy {
		case "series":
			c = cmp.Compare(a.SeriesEstimate, b.SeriesEstimate)
		case "queries":
			c = cmp.Compare(a.Queries, b.Queries)
		case "last":
			c = cmp.Compare(timeMs(a.LastQueried), timeMs(b.LastQueried))
		}
		if order == "desc" {
			c = -c
		}
		if c == 0 {
			c = strings.Compare(a.Metric, b.Metric)
		}
		return c
	})
	rep.Total = len(all)
	page := all[min(offset, len(all)):min(offset+limit, len(all))]
	for i := range page {
		m := &page[i]
		m.SeriesSavedByDroppingMetric = m.SeriesEstimate
		var used map[string]labelView
		if mv := v.metrics[m.Metric]; mv != nil {
			used = mv.labels
		}
		distinct := labelValueCounts(est, t, m.Metric)
		m.UnusedLabels, m.SeriesSavedByDroppingUnusedLabels = unusedLabels(m.SeriesEstimate, distinct, used)
	}
	rep.Metrics = append(rep.Metrics, page...)
	return rep
}

// MetricDetail builds the usage detail of one metric; ok is false when neither
// usage nor the estimator knows the metric.
func (r *Recorder) MetricDetail(t tenant.ID, est Estimator, metric string) (MetricDetail, bool) {
	v := r.view(t, true)
	series, seen := metricSeries(est, t)[metric]
	mv := v.metrics[metric]
	if mv == nil && !seen {
		return MetricDetail{}, false
	}
	if mv == nil {
		mv = &metricView{}
	}
	distinct := labelValueCounts(est, t, metric)
	d := MetricDetail{
		Tenant: t.String(), Metric: metric, Window: v.window, SeriesEstimate: series,
		Queries: mv.queries, LastQueried: msTime(mv.last), AllLabelsQueries: mv.allLabels,
		Labels: []LabelDetail{}, LabelsOverflow: mv.labelsOverflow, Sources: mv.sources,
		SourcesOverflow: mv.sourcesOverflow, SeriesSavedByDroppingMetric: series,
		SavingsEstimate: SavingsEstimate, Checked: r.checks(t, metric, mv.queries),
	}
	for _, l := range slices.Sorted(maps.Keys(mv.labels)) {
		lv := mv.labels[l]
		d.Labels = append(d.Labels, LabelDetail{
			Label: l, Uses: lv.uses.Strings(), Queries: lv.queries, LastUsed: msTime(lv.last), DistinctValues: distinct[l],
		})
	}
	d.UnusedLabels, d.SeriesSavedByDroppingUnusedLabels = unusedLabels(series, distinct, mv.labels)
	if d.Sources == nil {
		d.Sources = []SourceDetail{}
	}
	slices.SortFunc(d.Sources, func(a, b SourceDetail) int {
		if c := cmp.Compare(b.Queries, a.Queries); c != 0 {
			return c
		}
		return compareSources(a.Source, b.Source)
	})
	return d, true
}

// unusedLabels lists the labels the estimator knows for a metric that no query
// used, largest first, and the series dropping them would save.
func unusedLabels(series int64, distinct map[string]int64, used map[string]labelView) ([]UnusedLabel, int64) {
	out := []UnusedLabel{}
	var drop []string
	for l, n := range distinct {
		if _, ok := used[l]; ok || l == model.MetricNameLabel {
			continue
		}
		out = append(out, UnusedLabel{Label: l, DistinctValues: n})
		drop = append(drop, l)
	}
	slices.SortFunc(out, func(a, b UnusedLabel) int {
		if c := cmp.Compare(b.DistinctValues, a.DistinctValues); c != 0 {
			return c
		}
		return strings.Compare(a.Label, b.Label)
	})
	return out, SeriesSavedByDroppingLabels(series, distinct, drop)
}

func metricSeries(est Estimator, t tenant.ID) map[string]int64 {
	if est == nil {
		return nil
	}
	return est.MetricSeries(t)
}

func labelValueCounts(est Estimator, t tenant.ID, metric string) map[string]int64 {
	if est == nil {
		return nil
	}
	return est.LabelValueCounts(t, metric)
}

func timeMs(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixMilli()
}

func (r *Recorder) serveMetrics(w http.ResponseWriter, req *http.Request, est Estimator) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := req.URL.Query()
	filter := cmp.Or(q.Get("filter"), "all")
	if filter != "unused" && filter != "rarely" && filter != "all" {
		writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("filter %q must be unused, rarely or all", clipString(filter, 32)))
		return
	}
	sortBy := cmp.Or(q.Get("sort"), "series")
	if sortBy != "series" && sortBy != "queries" && sortBy != "last" && sortBy != "name" {
		writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("sort %q must be series, queries, last or name", clipString(sortBy, 32)))
		return
	}
	order := cmp.Or(q.Get("order"), "desc")
	if order != "asc" && order != "desc" {
		writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("order %q must be asc or desc", clipString(order, 32)))
		return
	}
	const maxLimit = 1000
	limit, err := intParam(q, "limit", 100, 1, maxLimit)
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	offset, err := intParam(q, "offset", 0, 0, math.MaxInt32)
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	rarely, err := intParam(q, "rarely_below", 0, 1, math.MaxInt32)
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeUsageJSON(w, r.MetricsReport(t, est, filter, sortBy, order, uint64(rarely), limit, offset))
}

func (r *Recorder) serveMetric(w http.ResponseWriter, req *http.Request, est Estimator) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	metric, err := url.PathUnescape(chi.URLParam(req, "metric"))
	if err != nil || metric == "" {
		writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("invalid metric name %q", clipString(chi.URLParam(req, "metric"), 128)))
		return
	}
	d, ok := r.MetricDetail(t, est, metric)
	if !ok {
		writeUsageError(w, http.StatusNotFound, fmt.Sprintf("metric %q is neither queried nor seen for tenant %s", clipString(metric, 128), t))
		return
	}
	writeUsageJSON(w, d)
}

// metricNamesStats has the shape of VictoriaMetrics' /api/v1/status/metric_names_stats
// (app/vmselect/stats/metric_names_usage_response.qtpl, v1.150.0).
type metricNamesStats struct {
	Status                         string                   `json:"status"`
	StatsCollectedSince            int64                    `json:"statsCollectedSince"`
	StatsCollectedRecordsTotal     int                      `json:"statsCollectedRecordsTotal"`
	TrackerMemoryMaxSizeBytes      uint64                   `json:"trackerMemoryMaxSizeBytes"`
	TrackerCurrentMemoryUsageBytes uint64                   `json:"trackerCurrentMemoryUsageBytes"`
	Records                        []metricNamesStatsRecord `json:"records"`
}

// metricNamesStatsRecord carries the last request time under both names
// VictoriaMetrics uses: its documentation says lastRequestTimestamp, its server
// writes lastQueryRequestTimestamp. Timestamps are Unix seconds, 0 for never.
// queryRequestsCount counts queries that read the metric in the window, where
// VictoriaMetrics counts series fetched.
type metricNamesStatsRecord struct {
	MetricName                string `json:"metricName"`
	QueryRequestsCount        uint64 `json:"queryRequestsCount"`
	LastRequestTimestamp      int64  `json:"lastRequestTimestamp"`
	LastQueryRequestTimestamp int64  `json:"lastQueryRequestTimestamp"`
}

// serveMetricNamesStats answers like VictoriaMetrics: `limit` (default 1000),
// `le` (only metrics queried at most le times), `match_pattern` (unanchored regex
// on the name). Metrics the estimator knows but nobody queried have count 0, as
// VictoriaMetrics lists ingested names. Records are sorted by name.
func (r *Recorder) serveMetricNamesStats(w http.ResponseWriter, req *http.Request, est Estimator) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		writeUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	q := req.URL.Query()
	limit := 1000
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("cannot parse `limit` arg %q: %s", clipString(s, 32), err))
			return
		}
		if n > 0 {
			limit = n
		}
	}
	le := int64(-1)
	if s := q.Get("le"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("cannot parse `le` arg %q: %s", clipString(s, 32), err))
			return
		}
		le = n
	}
	var re *regexp.Regexp
	if s := q.Get("match_pattern"); s != "" {
		if re, err = regexp.Compile(s); err != nil {
			writeUsageError(w, http.StatusBadRequest, fmt.Sprintf("match_pattern=%q must be valid regex: %s", clipString(s, 128), err))
			return
		}
	}
	v := r.view(t, false)
	series := metricSeries(est, t)
	names := make(map[string]struct{}, len(series)+len(v.metrics))
	for n := range series {
		names[n] = struct{}{}
	}
	for n := range v.metrics {
		names[n] = struct{}{}
	}
	resp := metricNamesStats{
		Status:                     "success",
		StatsCollectedSince:        r.statsSince().Unix(),
		StatsCollectedRecordsTotal: len(names),
		Records:                    []metricNamesStatsRecord{},
	}
	for _, n := range slices.Sorted(maps.Keys(names)) {
		var rec metricNamesStatsRecord
		rec.MetricName = n
		if mv := v.metrics[n]; mv != nil {
			rec.QueryRequestsCount = mv.queries
			rec.LastRequestTimestamp = mv.last / 1000
			rec.LastQueryRequestTimestamp = rec.LastRequestTimestamp
		}
		if le >= 0 && rec.QueryRequestsCount > uint64(le) {
			continue
		}
		if re != nil && !re.MatchString(n) {
			continue
		}
		resp.Records = append(resp.Records, rec)
		if len(resp.Records) == limit {
			break
		}
	}
	writeUsageJSON(w, resp)
}

// statsSince is when the data behind the reports starts: the Recorder's start or
// the oldest loaded data, no earlier than the retention window.
func (r *Recorder) statsSince() time.Time {
	from := dayStart(r.windowStart(r.cfg.Now()))
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.since.Before(from) {
		return from
	}
	return r.since
}

func intParam(q url.Values, name string, def, lo, hi int) (int, error) {
	s := q.Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < lo || n > hi {
		return 0, fmt.Errorf("%s %q must be an integer from %d to %d", name, clipString(s, 32), lo, hi)
	}
	return n, nil
}

// usageError is the error body of every usage endpoint, in the Prometheus API
// shape that metric_names_stats clients expect.
type usageError struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType"`
	Error     string `json:"error"`
}

// WriteUsageError writes the error body every usage endpoint answers with,
// also those of the packages that serve usage reports of their own
// (internal/seriesusage): 404 is not_found, every other status bad_data.
func WriteUsageError(w http.ResponseWriter, status int, msg string) { writeUsageError(w, status, msg) }

func writeUsageError(w http.ResponseWriter, status int, msg string) {
	typ := "bad_data"
	if status == http.StatusNotFound {
		typ = "not_found"
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(usageError{Status: "error", ErrorType: typ, Error: msg})
}

// WriteUsageJSON writes v as every usage endpoint's 200 answer.
func WriteUsageJSON(w http.ResponseWriter, v any) { writeUsageJSON(w, v) }

func writeUsageJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
