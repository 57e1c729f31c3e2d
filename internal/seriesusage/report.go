package seriesusage

import (
	"cmp"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Report is the series usage of one metric. Its figures come from one series
// bucket (Bucket): the last complete one when there is one, else the current
// one, which has seen only part of the series yet.
type Report struct {
	Tenant string `json:"tenant"`
	Metric string `json:"metric"`
	// ActiveSeries are the series of the bucket; Selected those at least one
	// recorded selector selects; NeverSelected the others.
	ActiveSeries  int64 `json:"active_series"`
	Selected      int64 `json:"selected"`
	NeverSelected int64 `json:"never_selected"`
	// AllSelected: the cap on selectors (of the metric, or without a name of
	// the tenant) was reached, so the metric counts as all series selected.
	AllSelected bool `json:"all_selected"`
	// SelectorOverflow counts the selectors refused at the cap.
	SelectorOverflow uint64 `json:"selector_overflow"`
	// Explaining are the label values that occur only in never-selected
	// series, with how many such series carry each, sorted by Series desc.
	Explaining []ValueExplain `json:"explaining"`
	// Selectors are the recorded selectors that can select this metric's
	// series, normalised: the metric's own and those without a name.
	Selectors []string `json:"selectors"`
	Coverage  Coverage `json:"coverage"`
	Bucket    Bucket   `json:"bucket"`
	// Current is the current bucket when Bucket is the last complete one.
	Current *Bucket `json:"current,omitempty"`
}

// ValueExplain is a label value only never-selected series carry.
type ValueExplain struct {
	Label  string `json:"label"`
	Value  string `json:"value"`
	Series int64  `json:"series"`
}

// Coverage says what the selectors stand for: they were recorded from Since
// on (the oldest live one), from Queries reads. A series seen before a query
// ran is not known to be selected by it until the next bucket.
type Coverage struct {
	Since     time.Time `json:"since,omitzero"`
	Queries   uint64    `json:"queries"`
	Selectors int       `json:"selectors"`
	// RecordingSince is when this replica started recording selectors, kept
	// across restarts by the snapshot (SaveFile, LoadFile).
	RecordingSince time.Time `json:"recording_since"`
	// Retention is how long an unused selector is kept.
	Retention string `json:"retention"`
	// UnparsedReads and DroppedReads are the tenant's reads in the retention
	// whose selectors are unknown (no parser read them; the usage recorder's
	// queue was full). When not 0, some never-selected series may be
	// selected by them.
	UnparsedReads uint64 `json:"unparsed_reads"`
	DroppedReads  uint64 `json:"dropped_reads"`
}

// Bucket is what one series bucket saw of a metric. A bucket lasts from one
// rotation of the cardinality tracker to the next: End - Start is the bucket
// width, or a multiple of it when the tracker's refresh is slower.
type Bucket struct {
	Start         time.Time `json:"start"`
	End           time.Time `json:"end"`
	Complete      bool      `json:"complete"`
	ActiveSeries  int64     `json:"active_series"`
	Selected      int64     `json:"selected"`
	NeverSelected int64     `json:"never_selected"`
	// SelectorsChanged: selectors were added or expired during the bucket,
	// so its series were matched against two different sets of selectors.
	SelectorsChanged bool `json:"selectors_changed"`
	// LabelsOverflow: the metric had more labels than are tracked; the labels
	// past the cap explain nothing. OverflowLabels are the labels with more
	// values than are tracked (capped list), which explain nothing either.
	LabelsOverflow bool     `json:"labels_overflow"`
	OverflowLabels []string `json:"overflow_labels"`
}

// MetricSummary is one metric of a tenant summary.
type MetricSummary struct {
	Metric        string `json:"metric"`
	ActiveSeries  int64  `json:"active_series"`
	Selected      int64  `json:"selected"`
	NeverSelected int64  `json:"never_selected"`
	AllSelected   bool   `json:"all_selected"`
	Selectors     int    `json:"selectors"`
	Complete      bool   `json:"complete"` // from a complete bucket
}

// Summary is the series usage of every metric of a tenant, by never-selected
// series, most first.
type Summary struct {
	Tenant  string          `json:"tenant"`
	Metrics []MetricSummary `json:"metrics"`
	Total   int             `json:"total"`
	// Overflow counts what was not tracked, for all tenants: tenants and
	// metrics past their caps, metric names too long, label values and
	// selectors past their caps.
	Overflow map[string]uint64 `json:"overflow"`
	// Selectors without a metric name recorded for the tenant.
	NamelessSelectors int `json:"nameless_selectors"`
}

// Report returns the series usage of metric for tenant t; false when neither
// its series nor selectors for it are known.
func (b *Book) Report(t tenant.ID, metric string) (Report, bool) {
	tb := b.tenant(t, false)
	if tb == nil {
		return Report{}, false
	}
	mb := b.metric(tb, metric, false)
	if mb == nil {
		return Report{}, false
	}
	now := b.cfg.Now()
	rep := Report{Tenant: t.String(), Metric: metric, Explaining: []ValueExplain{}, Selectors: []string{},
		Coverage: Coverage{RecordingSince: b.start.UTC(), Retention: b.cfg.Retention.String()}}
	b.selectorsOf(tb, mb, now, &rep)
	if b.cfg.Unseen != nil {
		rep.Coverage.UnparsedReads, rep.Coverage.DroppedReads = b.cfg.Unseen(t)
	}

	main, cur, explain := b.buckets(mb, true)
	rep.Bucket = main
	if main.Complete && cur.ActiveSeries > 0 {
		rep.Current = &cur
	}
	rep.ActiveSeries, rep.Selected, rep.NeverSelected = main.ActiveSeries, main.Selected, main.NeverSelected
	if len(explain) > b.cfg.MaxExplaining {
		explain = explain[:b.cfg.MaxExplaining]
	}
	rep.Explaining = append(rep.Explaining, explain...)
	return rep, true
}

// selectorsOf fills in the selectors of mb and of tb without a name that can
// select mb's series.
func (b *Book) selectorsOf(tb *tenantBook, mb *metricBook, now time.Time, rep *Report) {
	cutoff := now.Add(-b.cfg.Retention)
	b.selMu.Lock()
	defer b.selMu.Unlock()
	// A set read through this replica and others is listed once; its reads
	// add up.
	add := func(prefix string, set *selectorSet) {
		if !set.last.After(cutoff) {
			return
		}
		rep.Coverage.Queries += set.reads
		if rep.Coverage.Since.IsZero() || set.first.Before(rep.Coverage.Since) {
			rep.Coverage.Since = set.first.UTC()
		}
		if s := prefix + set.key; !slices.Contains(rep.Selectors, s) {
			rep.Selectors = append(rep.Selectors, s)
			rep.Coverage.Selectors++
		}
	}
	for _, s := range []*store{&mb.sets, &mb.remote} {
		for _, set := range s.sets {
			add(mb.name, set)
		}
	}
	for _, s := range []*store{&tb.namelessSets, &tb.namelessRemote} {
		for _, set := range s.sets {
			if nameSetMatches(set, mb.name) {
				add("", set)
			}
		}
	}
	for _, s := range []*store{&mb.sets, &mb.remote, &tb.namelessSets, &tb.namelessRemote} {
		if s.overflow > 0 && s.overflowLast.After(cutoff) {
			rep.AllSelected = true
			rep.SelectorOverflow += s.overflow
		}
	}
	slices.Sort(rep.Selectors)
}

func nameSetMatches(set *selectorSet, name string) bool {
	for _, m := range set.ms {
		if m.Name == "__name__" && !m.Matches(name) {
			return false
		}
	}
	return true
}

// buckets returns the bucket the figures come from and the current one, and
// with explain the explaining values of the first, sorted.
func (b *Book) buckets(mb *metricBook, explain bool) (main, cur Bucket, values []ValueExplain) {
	now := b.cfg.Epoch()
	mb.mu.Lock()
	defer mb.mu.Unlock()
	last := b.lastComplete(now)
	var complete, current *window
	completeEnd := now
	if mb.cur.epoch == now {
		current = &mb.cur
	}
	switch {
	case last < 0:
	case mb.cur.epoch == last && mb.cur.series > 0:
		complete = &mb.cur
	case mb.prev.epoch == last && mb.prev.series > 0:
		complete, completeEnd = &mb.prev, mb.cur.epoch
	}
	cur = b.bucket(current, now, now+1, false)
	main, from := cur, current
	if complete != nil {
		main, from = b.bucket(complete, complete.epoch, completeEnd, true), complete
	}
	if explain {
		values = explainValues(from)
	}
	return main, cur, values
}

// bucket reports w, the bucket from epoch to end (exclusive).
func (b *Book) bucket(w *window, epoch, end int64, complete bool) Bucket {
	width := int64(b.cfg.BucketWidth)
	bk := Bucket{Start: time.Unix(0, epoch*width).UTC(), End: time.Unix(0, end*width).UTC(),
		Complete: complete, OverflowLabels: []string{}}
	if w == nil {
		return bk
	}
	bk.ActiveSeries, bk.Selected, bk.NeverSelected = w.series, w.selected, w.series-w.selected
	bk.SelectorsChanged, bk.LabelsOverflow = w.changed, w.labelsOverflow
	for _, lv := range w.labels {
		if !lv.complete {
			bk.OverflowLabels = append(bk.OverflowLabels, lv.name)
		}
	}
	slices.Sort(bk.OverflowLabels)
	if len(bk.OverflowLabels) > 20 {
		bk.OverflowLabels = bk.OverflowLabels[:20]
	}
	return bk
}

// explainValues lists the values w saw only in never-selected series.
func explainValues(w *window) []ValueExplain {
	if w == nil {
		return nil
	}
	var out []ValueExplain
	for _, lv := range w.labels {
		if !lv.complete {
			continue
		}
		for v, vc := range lv.values {
			if !vc.selected && vc.unselected > 0 {
				out = append(out, ValueExplain{Label: lv.name, Value: v, Series: vc.unselected})
			}
		}
	}
	slices.SortFunc(out, func(a, b ValueExplain) int {
		if c := cmp.Compare(b.Series, a.Series); c != 0 {
			return c
		}
		if c := strings.Compare(a.Label, b.Label); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	return out
}

// Summary returns the series usage of every metric of tenant t, most
// never-selected series first, at most limit metrics (all when limit <= 0).
func (b *Book) Summary(t tenant.ID, limit int) Summary {
	sum := Summary{Tenant: t.String(), Metrics: []MetricSummary{}, Overflow: map[string]uint64{
		"tenants": b.overflow.tenants.Load(), "metrics": b.overflow.metrics.Load(),
		"long_names": b.overflow.longNames.Load(), "label_values": b.overflow.values.Load(),
		"selectors": b.overflow.selectors.Load(),
	}}
	tb := b.tenant(t, false)
	if tb == nil {
		return sum
	}
	tb.mu.RLock()
	mbs := make([]*metricBook, 0, len(tb.metrics))
	for _, mb := range tb.metrics {
		mbs = append(mbs, mb)
	}
	tb.mu.RUnlock()
	now := b.cfg.Now()
	cutoff := now.Add(-b.cfg.Retention)
	b.selMu.Lock()
	type sel struct {
		n   int
		all bool
	}
	sels := make(map[*metricBook]sel, len(mbs))
	overflowing := func(ss ...*store) bool {
		for _, s := range ss {
			if s.overflow > 0 && s.overflowLast.After(cutoff) {
				return true
			}
		}
		return false
	}
	live := func(ss ...*store) int {
		var keys []string
		for _, s := range ss {
			for _, set := range s.sets {
				if set.last.After(cutoff) && !slices.Contains(keys, set.key) {
					keys = append(keys, set.key)
				}
			}
		}
		return len(keys)
	}
	namelessAll := overflowing(&tb.namelessSets, &tb.namelessRemote)
	sum.NamelessSelectors = live(&tb.namelessSets, &tb.namelessRemote)
	for _, mb := range mbs {
		sels[mb] = sel{n: live(&mb.sets, &mb.remote), all: namelessAll || overflowing(&mb.sets, &mb.remote)}
	}
	b.selMu.Unlock()
	for _, mb := range mbs {
		main, _, _ := b.buckets(mb, false)
		s := sels[mb]
		sum.Metrics = append(sum.Metrics, MetricSummary{Metric: mb.name, ActiveSeries: main.ActiveSeries,
			Selected: main.Selected, NeverSelected: main.NeverSelected, AllSelected: s.all, Selectors: s.n,
			Complete: main.Complete})
	}
	slices.SortFunc(sum.Metrics, func(a, b MetricSummary) int {
		if c := cmp.Compare(b.NeverSelected, a.NeverSelected); c != 0 {
			return c
		}
		return strings.Compare(a.Metric, b.Metric)
	})
	sum.Total = len(sum.Metrics)
	if limit > 0 && len(sum.Metrics) > limit {
		sum.Metrics = sum.Metrics[:limit]
	}
	return sum
}

// Routes mounts the series usage API on router, which the caller mounts under
// /api/cardguard/v1. requireTenant guards every route (the admin or the
// tenant's own token); it may be nil in tests.
func (b *Book) Routes(router chi.Router, requireTenant func(http.Handler) http.Handler) {
	g := router
	if requireTenant != nil {
		g = router.With(requireTenant)
	}
	g.Get("/usage/tenants/{tenant}/metrics/{metric}/series", b.serveReport)
	g.Get("/usage/tenants/{tenant}/series", b.serveSummary)
}

func (b *Book) serveReport(w http.ResponseWriter, req *http.Request) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		queryaudit.WriteUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	metric, err := url.PathUnescape(chi.URLParam(req, "metric"))
	if err != nil || metric == "" {
		queryaudit.WriteUsageError(w, http.StatusBadRequest, fmt.Sprintf("invalid metric name %q", clip(chi.URLParam(req, "metric"), 128)))
		return
	}
	rep, ok := b.Report(t, metric)
	if !ok {
		queryaudit.WriteUsageError(w, http.StatusNotFound, fmt.Sprintf("metric %q has neither series nor selectors recorded for tenant %s", clip(metric, 128), t))
		return
	}
	queryaudit.WriteUsageJSON(w, rep)
}

const maxSummaryLimit = 100000

func (b *Book) serveSummary(w http.ResponseWriter, req *http.Request) {
	t, err := tenant.Parse(chi.URLParam(req, "tenant"))
	if err != nil {
		queryaudit.WriteUsageError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit := 0
	if s := req.URL.Query().Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxSummaryLimit {
			queryaudit.WriteUsageError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: must be an integer from 1 to %d", clip(s, 32), maxSummaryLimit))
			return
		}
	}
	queryaudit.WriteUsageJSON(w, b.Summary(t, limit))
}

// clip cuts s to at most max bytes on a rune boundary, marking the cut.
func clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	for max > 0 && !utf8.RuneStart(s[max]) {
		max--
	}
	return s[:max] + "..."
}
