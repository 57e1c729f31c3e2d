package main

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/web"
)

// The dashboard keeps one hour of rejections, sampled every 15 s.
const (
	uiHistoryInterval = 15 * time.Second
	uiHistoryPoints   = 240
)

// dashboard is the web UI and the history it samples; the app starts the sampler
// with its other loops.
type dashboard struct {
	handler *web.UI
	history *web.History
}

// newDashboard builds the dashboard over a's parts. Its data routes need the admin
// token when auth is on: the overview lists every tenant, so a tenant token must
// not see it (tenants read their own numbers through the JSON API).
func newDashboard(a *app) (*dashboard, error) {
	src := uiSource{a}
	d := &dashboard{history: web.NewHistory(src, uiHistoryInterval, uiHistoryPoints)}
	var err error
	d.handler, err = web.New(web.Options{
		Base:      "/ui",
		LimitsAPI: "/api/cardguard/v1/limits",
		Tenants:   src,
		Metrics:   src,
		Limits:    src,
		Costs:     src,
		Adaptive:  adaptiveUI{a.adaptive.engine},
		History:   d.history,
		Protect:   a.auth.RequireAdmin,
	})
	return d, err
}

// mountUI serves the dashboard under /ui and sends / there.
func (a *app) mountUI(r chi.Router) {
	toUI := func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) }
	r.Get("/", toUI)
	r.Get("/ui", toUI)
	r.Handle("/ui/*", http.StripPrefix("/ui", a.ui.handler))
}

// uiSource adapts the tracker, the limits, the guard and the query usage to the
// dashboard's interfaces. It is safe for concurrent use, as they are.
type uiSource struct{ a *app }

func (s uiSource) Tenants() []web.TenantRow {
	seen := map[tenant.ID]bool{}
	held := s.a.folds.Held()
	var out []web.TenantRow
	for _, ts := range s.a.tracker.Tenants() {
		row := web.TenantRow{
			Tenant: ts.Tenant, Overflow: ts.Overflow, ActiveSeries: ts.ActiveSeries,
			Churn: ts.Churn, Metrics: ts.Metrics,
		}
		if id, err := tenant.Parse(ts.Tenant); err == nil && !ts.Overflow {
			s.fillLimits(&row, id)
			row.Aggregated = s.aggregated(held, id)
			seen[id] = true
		}
		out = append(out, row)
	}
	// Tenants with limits but no traffic in the window still get a row, so that
	// their limits can be reached from the overview.
	for id := range s.a.registry.Overrides() {
		if !seen[id] {
			row := web.TenantRow{Tenant: id.String()}
			s.fillLimits(&row, id)
			row.Aggregated = s.aggregated(held, id)
			out = append(out, row)
		}
	}
	return out
}

// aggregated is tenant id's aggregation now, from held (Aggregator.Held): the
// dashboard shows a fold as soon as it happens, not at the next flush.
func (s uiSource) aggregated(held map[tenant.ID]aggregate.SeriesCount, id tenant.ID) web.Aggregated {
	c := held[id]
	return web.Aggregated{InputSeries: c.Inputs, OutputSeries: c.Outputs, Collisions: s.a.claims.Collisions(id)}
}

// uiMaxAggregations bounds the output series one metric page lists; the
// aggregations API lists more.
const uiMaxAggregations = 100

// fillAggregations lists metric name's aggregations in force now.
func (s uiSource) fillAggregations(d *web.MetricDetail, t tenant.ID, name string) {
	all := s.a.folds.Snapshot(t, name, 0)
	for i, ag := range all {
		d.AggregatedInputs += int64(ag.Inputs)
		if i < uiMaxAggregations {
			d.Aggregations = append(d.Aggregations, web.AggregationRow{
				Series: ag.Series, Kind: ag.Kind, Output: ag.Output, Source: ag.Source, Inputs: ag.Inputs,
			})
		}
	}
	d.AggregationsMore = max(len(all)-uiMaxAggregations, 0)
	for _, u := range s.a.streams.Usage(t, name) {
		d.Rules = append(d.Rules, web.RuleAggregationRow{
			Rule: u.Rule, Interval: u.Interval, Outputs: strings.Join(u.Outputs, ", "),
			InputSeries: u.InputSeries, OutputSeries: u.OutputSeries, DryRun: u.DryRun, Incomplete: u.Incomplete,
		})
	}
}

func (s uiSource) fillLimits(row *web.TenantRow, id tenant.ID) {
	l := s.a.registry.For(id)
	row.MaxSeries = l.MaxSeries
	if l.MaxSeries > 0 || l.MaxSeriesPerMetric > 0 {
		row.AdmittedSeries, row.HasAdmitted = int64(s.a.enforcer.SeriesCount(id)), true
	}
	row.IngestionLimit = l.IngestionRate
	row.DryRun = l.DryRun()
	row.IngestionRate = s.a.enforcer.IngestionRate(id)
	enf, dry := s.a.enforcer.Discards(id)
	row.Discarded, row.DryRunDiscarded = reasonMap(enf), reasonMap(dry)
}

func reasonMap(m map[limits.Reason]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for r, n := range m {
		out[string(r)] = n
	}
	return out
}

func (s uiSource) TenantMetrics(t tenant.ID) (web.MetricList, bool) {
	sum, ok := s.a.tracker.Tenant(t)
	if !ok {
		return web.MetricList{}, false
	}
	// Without an estimator the report costs one pass over the queried metrics.
	rep := s.a.usageReports().MetricsReport(t, nil, "all", "name", "asc", 0, math.MaxInt32, 0)
	type use struct {
		n    uint64
		last *time.Time
	}
	used := make(map[string]use, len(rep.Metrics))
	for _, m := range rep.Metrics {
		used[m.Metric] = use{m.Queries, m.LastQueried}
	}
	ms := s.a.tracker.TopMetrics(t, math.MaxInt, 0)
	list := web.MetricList{
		Tenant: web.TenantRow{
			Tenant: sum.Tenant, ActiveSeries: sum.ActiveSeries, Churn: sum.Churn, Metrics: sum.Metrics,
		},
		WindowLabel:  fmtWindow(s.a.cfg.Cardinality.Window),
		QueryWindow:  rep.Window.RetentionDays,
		QueryTotals:  rep.Totals.Queries,
		UnparsedRead: rep.Totals.UnparsedQueries,
		Rows:         make([]web.MetricRow, 0, len(ms)),
	}
	list.Tenant.Aggregated = s.aggregated(s.a.folds.Held(), t)
	never := s.neverSelected(t)
	for _, m := range ms {
		row := web.MetricRow{Name: m.Name, Overflow: m.Overflow, Series: m.Series, Churn: m.Churn, HasChurn: m.Churn > 0}
		row.NeverSelected, row.HasSeriesUsage = never[m.Name]
		if u, ok := used[m.Name]; ok {
			row.Queries = u.n
			if u.last != nil {
				row.LastQueried = *u.last
			}
		}
		list.Rows = append(list.Rows, row)
	}
	return list, true
}

func fmtWindow(d time.Duration) string {
	if d == 0 {
		d = time.Hour
	}
	if d%time.Hour == 0 {
		return strconv.Itoa(int(d/time.Hour)) + " h"
	}
	return d.String()
}

func (s uiSource) Metric(t tenant.ID, name string) (web.MetricDetail, bool) {
	ms, tracked := s.a.tracker.Metric(t, name)
	d, used := s.a.usageReports().MetricDetail(t, usageEstimates{s.a.tracker}, name)
	if !tracked && !used {
		return web.MetricDetail{}, false
	}
	out := web.MetricDetail{
		Tenant: t.String(), Name: name, Overflow: ms.Overflow, Series: ms.Series, Tracked: tracked,
		Queries: d.Queries, AllLabelsQueries: d.AllLabelsQueries, QueryWindow: d.Window.RetentionDays,
		SavedByDroppingUnused: d.SeriesSavedByDroppingUnusedLabels,
		SavingsNote:           queryaudit.SavingsEstimate,
		SourcesOverflow:       d.SourcesOverflow,
	}
	if !tracked {
		out.Series = d.SeriesEstimate
	}
	s.fillAggregations(&out, t, name)
	out.SeriesUsage = s.seriesUsage(t, name)
	if d.LastQueried != nil {
		out.LastQueried = *d.LastQueried
	}
	guarded := map[string]*web.GuardState{}
	for _, g := range s.a.guard.Guarded(t) {
		if g.Metric == name {
			guarded[g.Label] = &web.GuardState{AdmittedValues: g.AdmittedValues, Rejected: g.Rejected, Since: g.Since}
		}
	}
	uses := make(map[string]queryaudit.LabelDetail, len(d.Labels))
	for _, l := range d.Labels {
		uses[l.Label] = l
	}
	add := func(name string, values int64, share float64) {
		row := web.LabelRow{Name: name, Values: values, Share: share, Guard: guarded[name]}
		if u, ok := uses[name]; ok {
			row.Uses, row.Queries = u.Uses, u.Queries
			if u.LastUsed != nil {
				row.LastUsed = *u.LastUsed
			}
		}
		out.Labels = append(out.Labels, row)
	}
	for _, l := range ms.Labels {
		add(l.Name, l.Values, l.Share)
		delete(uses, l.Name)
	}
	// Labels queries name that the metric does not have (yet, or any more).
	for _, l := range d.Labels {
		if _, ok := uses[l.Label]; ok {
			add(l.Label, l.DistinctValues, 0)
		}
	}
	for _, src := range d.Sources {
		row := web.SourceRow{Who: sourceWords(src.Source), Queries: src.Queries}
		if src.LastQueried != nil {
			row.LastQueried = *src.LastQueried
		}
		out.Sources = append(out.Sources, row)
	}
	return out, true
}

// sourceWords names who sent a query: "dashboard Checkout (abc) / panel Requests
// (7) · user alice", "alert rule High errors in Team", a user agent, or "unknown".
func sourceWords(s queryaudit.Source) string {
	var parts []string
	both := func(title, id string) string {
		switch {
		case title != "" && id != "":
			return title + " (" + id + ")"
		case title != "":
			return title
		}
		return id
	}
	switch s.Kind {
	case "alert":
		p := "alert rule " + both(s.RuleName, s.RuleUID)
		if s.RuleFolder != "" {
			p += " in " + s.RuleFolder
		}
		parts = append(parts, p)
	case "vmalert":
		p := "vmalert"
		if s.RuleGroup != "" {
			p += " group " + s.RuleGroup
		}
		if s.RuleName != "" {
			p += " rule " + s.RuleName
		}
		parts = append(parts, p)
	case "grafana":
		if d := both(s.DashboardTitle, s.DashboardUID); d != "" {
			parts = append(parts, "dashboard "+d)
		}
		if p := both(s.PanelTitle, s.PanelID); p != "" {
			parts = append(parts, "panel "+p)
		}
		if s.User != "" {
			parts = append(parts, "user "+s.User)
		}
	case "client":
		parts = append(parts, s.UserAgent)
	}
	if len(parts) == 0 {
		return "unknown client"
	}
	return strings.Join(parts, " / ")
}

// limitDef describes one field of limits.Limits for the form.
type limitDef struct {
	path string
	help string
	kind web.FieldKind
	enum []string
	get  func(*limits.Limits) string
}

func intStr[T int | int64](v T) string { return strconv.FormatInt(int64(v), 10) }

func limitDefs() []limitDef {
	return append([]limitDef{
		{"max_series", "distinct series of the tenant in the window", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxSeries) }},
		{"max_series_per_metric", "distinct series of one metric in the window", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxSeriesPerMetric) }},
		{"ingestion_rate", "sustained samples per second", web.KindFloat, nil, func(l *limits.Limits) string { return strconv.FormatFloat(l.IngestionRate, 'f', -1, 64) }},
		{"ingestion_burst", "token bucket size in samples; 0 is one second of the rate", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.IngestionBurst) }},
		{"max_labels_per_series", "labels per series, __name__ included", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxLabelsPerSeries) }},
		{"max_label_name_length", "bytes", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxLabelNameLength) }},
		{"max_label_value_length", "bytes", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxLabelValueLength) }},
		{"max_request_bytes", "compressed remote-write body", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxRequestBytes) }},
		{"mode", "dry_run only counts what would be dropped", web.KindEnum, []string{string(limits.ModeEnforce), string(limits.ModeDryRun)}, func(l *limits.Limits) string { return string(l.Mode) }},
		{"on_limit", "reject answers 400 naming the limit; drop answers 2xx", web.KindEnum, []string{string(limits.OnLimitDrop), string(limits.OnLimitReject)}, func(l *limits.Limits) string { return string(l.OnLimit) }},
		{"label_guard.max_values_per_label", "distinct values a label of one metric may take; 0 turns the guard off", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.LabelGuard.MaxValuesPerLabel) }},
		{"label_guard.action", "what happens to values over the limit: aggregate folds them into one aggregated series; overflow_value and drop_label forward the folded series side by side, which corrupts counters (every rate() and increase() of the metric); drop_series drops them", web.KindEnum, []string{string(limits.GuardAggregate), string(limits.GuardOverflowValue), string(limits.GuardDropLabel), string(limits.GuardDropSeries)}, func(l *limits.Limits) string { return string(l.LabelGuard.Action) }},
		{"label_guard.overflow_value", "replacement value with aggregate and overflow_value", web.KindString, nil, func(l *limits.Limits) string { return l.LabelGuard.OverflowValue }},
		{"label_guard.exempt_labels", "comma-separated label names the guard never touches", web.KindList, nil, func(l *limits.Limits) string { return strings.Join(l.LabelGuard.ExemptLabels, ", ") }},
		{"label_guard.exempt_metrics", "comma-separated metric names the guard never touches", web.KindList, nil, func(l *limits.Limits) string { return strings.Join(l.LabelGuard.ExemptMetrics, ", ") }},
		{"aggregation.on_collision", "series relabel rules make equal: aggregate them; keep forwards them side by side, which corrupts counters", web.KindEnum, []string{string(limits.CollisionAggregate), string(limits.CollisionKeep)}, func(l *limits.Limits) string { return string(l.Aggregation.OnCollision) }},
		{"aggregation.gauge_output", "how folded gauges combine per interval", web.KindEnum, []string{"sum", "min", "max", "avg", "count", "last"}, func(l *limits.Limits) string { return l.Aggregation.GaugeOutput }},
	}, readLimitDefs()...)
}

func (s uiSource) Limits(t tenant.ID) web.LimitsView {
	eff := s.a.registry.For(t)
	defaults := s.a.registry.Defaults()
	o, _ := s.a.registry.Override(t)
	var api map[string]any
	if len(o.API) > 0 && o.APIError == "" {
		_ = json.Unmarshal(o.API, &api) // stored by the registry: valid JSON
	}
	enf, dry := s.a.enforcer.Discards(t)
	v := web.LimitsView{Tenant: t.String(), DryRun: eff.DryRun(), OverrideError: o.APIError}
	for _, d := range limitDefs() {
		f := web.LimitField{Path: d.path, Help: d.help, Kind: d.kind, Enum: d.enum, Value: d.get(eff), Source: "default"}
		switch {
		case hasPath(api, d.path):
			f.Source = "api"
		case o.File != nil && d.get(o.File) != d.get(&defaults):
			f.Source = "file"
		}
		for _, r := range limits.Reasons() {
			if r.Field() == d.path {
				f.Discarded += enf[r]
				f.DryRunDiscarded += dry[r]
			}
		}
		s.usageFor(&f, t, eff)
		s.readUsageFor(&f, t, eff)
		v.Fields = append(v.Fields, f)
	}
	return v
}

// usageFor sets what a limit is measured against, where cardguard measures it.
func (s uiSource) usageFor(f *web.LimitField, t tenant.ID, l *limits.Limits) {
	switch f.Path {
	case "max_series":
		f.HasUsage, f.Limit = true, float64(l.MaxSeries)
		if n := s.a.enforcer.SeriesCount(t); l.MaxSeries > 0 || l.MaxSeriesPerMetric > 0 {
			f.Usage, f.UsageNote = float64(n), "exact count of the series limiter"
		} else if sum, ok := s.a.tracker.Tenant(t); ok {
			f.Usage, f.UsageNote = float64(sum.ActiveSeries), "estimate"
		}
	case "max_series_per_metric":
		if top := s.a.tracker.TopMetrics(t, 1, 0); len(top) == 1 {
			f.HasUsage, f.Limit = true, float64(l.MaxSeriesPerMetric)
			f.Usage, f.UsageNote = float64(top[0].Series), "largest metric: "+top[0].Name
		}
	case "ingestion_rate":
		f.HasUsage, f.Limit, f.UsageUnit = true, l.IngestionRate, "/s"
		f.Usage = math.Round(s.a.enforcer.IngestionRate(t)*10) / 10
	case "label_guard.max_values_per_label":
		if n := s.a.guard.GuardedCount(t); n > 0 {
			f.UsageNote = strconv.Itoa(n) + " labels of metrics are guarded now"
		}
	}
}

// hasPath reports whether the dotted path is set in a decoded JSON object.
func hasPath(m map[string]any, path string) bool {
	head, rest, nested := strings.Cut(path, ".")
	v, ok := m[head]
	if !ok || !nested {
		return ok
	}
	sub, _ := v.(map[string]any)
	return hasPath(sub, rest)
}
