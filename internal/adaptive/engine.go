package adaptive

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/model"

	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/seriesusage"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Recommendation kinds.
const (
	KindDrop       = "drop"
	KindAggregate  = "aggregate"
	KindDropSeries = "drop_series"
)

// Config is the adaptive section of the config file.
type Config struct {
	// Refresh is how often every tenant's recommendations are recomputed.
	// Default 10m.
	Refresh time.Duration `yaml:"refresh"`
	// SegmentLabel, e.g. team, splits recommendations by its values: a
	// segment's recommendation, estimate, preview and rule are for its
	// series only (scope.go). It is never aggregated away.
	SegmentLabel string `yaml:"segment_label"`
	// PreviewMaxSeries caps the input series one preview counts (and as many
	// outputs). Default 200000.
	PreviewMaxSeries int `yaml:"preview_max_series"`
	// MaxUpstreamEstimates caps the metrics per tenant and refresh whose savings
	// VictoriaMetrics counts (two queries each); the others are estimated from
	// the sketches. Default 50.
	MaxUpstreamEstimates int `yaml:"max_upstream_estimates"`
	// UpstreamTimeout bounds each of those queries. Default 10s.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
}

// WithDefaults fills the zero fields.
func (c Config) WithDefaults() Config {
	if c.Refresh <= 0 {
		c.Refresh = 10 * time.Minute
	}
	if c.PreviewMaxSeries <= 0 {
		c.PreviewMaxSeries = 200000
	}
	if c.MaxUpstreamEstimates <= 0 {
		c.MaxUpstreamEstimates = 50
	}
	if c.UpstreamTimeout <= 0 {
		c.UpstreamTimeout = 10 * time.Second
	}
	return c
}

// Validate checks the section.
func (c Config) Validate() error {
	if c.Refresh < 0 || c.PreviewMaxSeries < 0 || c.MaxUpstreamEstimates < 0 || c.UpstreamTimeout < 0 {
		return errors.New("adaptive: refresh, preview_max_series, max_upstream_estimates and upstream_timeout must not be negative")
	}
	if c.SegmentLabel != "" && !labelNameRE.MatchString(c.SegmentLabel) {
		return fmt.Errorf("adaptive.segment_label %q: not a label name", clip(c.SegmentLabel, 64))
	}
	return nil
}

// Series is what the cardinality tracker knows of a tenant's series.
type Series interface {
	MetricNames(t tenant.ID) []string
	MetricSeries(t tenant.ID, metric string) (int64, bool)
	LabelValues(t tenant.ID, metric string) map[string]int64
}

// Options wire an Engine.
type Options struct {
	Config  Config
	Series  Series
	Tenants func() []tenant.ID
	// Counter may be nil: every estimate is then the sketches'.
	Counter Counter
	// SeriesUsage may be nil: no drop_series recommendations then.
	SeriesUsage SeriesUsage
	Sources     []Source
	Store       Store
	// Epoch is the pipeline's cardinality bucket (the tracker's Epoch).
	Epoch func() int64
	// Replica names this replica in previews; empty without shared state.
	Replica string
	// OnChange is called after the applied rules changed (here or, after
	// Reload, on another replica): recompile the relabel rules.
	OnChange func()
	Logger   *slog.Logger
	Now      func() time.Time
}

// Engine computes recommendations, runs previews, and applies and reverts
// rules. Safe for concurrent use.
type Engine struct {
	o        Options
	preview  *Previewer
	segments *segments
	log      *slog.Logger

	mu       sync.Mutex
	state    map[tenant.ID]*tenantState
	exempt   map[tenant.ID]compiledExemptions
	lists    map[tenant.ID]*List
	previews map[previewKey]*previewRun
	segEst   map[segEstKey]Estimate // scope.go
	raw      map[string][]byte      // the store's content, as last loaded
	// flights are the refreshes asked for and running, one per tenant at
	// most: callers that ask meanwhile wait for it (Recommendations).
	flights map[tenant.ID]*flight

	outside outsideBook // outside.go

	brokenMu sync.Mutex
	applied  map[tenant.ID]map[string][]Applied // copy for OnRead, under brokenMu
	broken   map[readerKey]*Broken
}

// flight is one running refresh of a tenant's recommendations; l is set
// before done is closed.
type flight struct {
	done chan struct{}
	l    *List
}

type previewKey struct {
	t                     tenant.ID
	metric, kind, segment string
}

// New returns an Engine with the rules and exemptions of o.Store loaded.
func New(o Options) (*Engine, error) {
	o.Config = o.Config.WithDefaults()
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OnChange == nil {
		o.OnChange = func() {}
	}
	if o.Tenants == nil {
		o.Tenants = func() []tenant.ID { return nil }
	}
	e := &Engine{
		o:        o,
		preview:  NewPreviewer(o.Epoch, o.Config.PreviewMaxSeries, o.Now),
		segments: newSegments(o.Config.SegmentLabel, o.Epoch),
		log:      o.Logger,
		lists:    make(map[tenant.ID]*List),
		previews: make(map[previewKey]*previewRun),
		segEst:   make(map[segEstKey]Estimate),
		flights:  make(map[tenant.ID]*flight),
		broken:   make(map[readerKey]*Broken),
	}
	if _, err := e.load(); err != nil {
		return nil, err
	}
	return e, nil
}

// SegmentLabel is the configured segment label, or "".
func (e *Engine) SegmentLabel() string { return e.o.Config.SegmentLabel }

// AddSource adds a source of evidence; call it before serving.
func (e *Engine) AddSource(s Source) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.o.Sources = append(e.o.Sources, s)
}

// load reads the store into the engine; changed is false when the store
// holds what was loaded last.
func (e *Engine) load() (changed bool, err error) {
	m, err := e.o.Store.Load()
	if err != nil {
		return false, fmt.Errorf("adaptive rules: %w", err)
	}
	e.mu.Lock()
	same := e.raw != nil && maps.EqualFunc(m, e.raw, bytes.Equal)
	e.mu.Unlock()
	if same {
		return false, nil
	}
	st := make(map[tenant.ID]*tenantState, len(m))
	ex := make(map[tenant.ID]compiledExemptions, len(m))
	for k, v := range m {
		t, err := tenant.Parse(k)
		if err != nil {
			e.log.Warn("adaptive rules: skipping a bad tenant key", "key", clip(k, 64), "err", err)
			continue
		}
		var ts tenantState
		if err := json.Unmarshal(v, &ts); err != nil {
			e.log.Warn("adaptive rules: skipping a tenant that does not decode", "tenant", t, "err", err)
			continue
		}
		c, err := ts.Exemptions.compile()
		if err != nil {
			e.log.Warn("adaptive rules: exemptions do not compile", "tenant", t, "err", err)
		}
		st[t], ex[t] = &ts, c
	}
	e.mu.Lock()
	e.state, e.exempt, e.raw = st, ex, m
	e.lists = make(map[tenant.ID]*List)
	e.mu.Unlock()
	e.publishApplied()
	return true, nil
}

// Reload re-reads the store (another replica may have changed it) and
// recompiles the rules when it changed.
func (e *Engine) Reload() error {
	changed, err := e.load()
	if err != nil || !changed {
		return err
	}
	e.o.OnChange()
	return nil
}

func (e *Engine) publishApplied() {
	e.mu.Lock()
	m := make(map[tenant.ID]map[string][]Applied, len(e.state))
	for t, ts := range e.state {
		for _, a := range ts.Rules {
			if m[t] == nil {
				m[t] = make(map[string][]Applied)
			}
			if a.Kind == KindDropSeries {
				// Parsed once here: OnRead matches every read against it.
				_, a.matchers, _ = scopeMatch(a.Match, a.scope())
			}
			m[t][a.Metric] = append(m[t][a.Metric], a)
		}
	}
	e.mu.Unlock()
	e.brokenMu.Lock()
	e.applied = m
	e.brokenMu.Unlock()
}

// Rules returns the relabel rules applied per tenant, in the order applied.
func (e *Engine) Rules() map[tenant.ID][]relabel.Config {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[tenant.ID][]relabel.Config, len(e.state))
	for t, ts := range e.state {
		// Drops first: a drop_series rule may match a label an aggregation
		// applied later removes.
		for _, a := range ts.Rules {
			if a.Kind != KindAggregate {
				out[t] = append(out[t], a.Rule)
			}
		}
		for _, a := range ts.Rules {
			if a.Kind == KindAggregate {
				out[t] = append(out[t], a.Rule)
			}
		}
	}
	return out
}

// Run finishes previews and refreshes recommendations until ctx is done.
func (e *Engine) Run(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := e.o.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		e.preview.tick()
		if now := e.o.Now(); now.Sub(last) >= e.o.Config.Refresh {
			last = now
			for _, t := range e.o.Tenants() {
				if ctx.Err() != nil {
					return
				}
				e.refresh(ctx, t)
			}
		}
	}
}

// List is a tenant's recommendations, largest saving first.
type List struct {
	Tenant   string           `json:"tenant"`
	Computed time.Time        `json:"computed"`
	Sources  []SourceCheck    `json:"sources"`
	Items    []Recommendation `json:"recommendations"`
	// Withheld are metrics that would save series but are left alone, and why.
	Withheld []Withheld `json:"withheld"`
	// Exempted counts metrics skipped by an exemption.
	Exempted       int   `json:"exempted"`
	SeriesSaveable int64 `json:"seriesSaveable"`
	// Segment is the segment value the list is scoped to, if any.
	Segment string `json:"segment,omitempty"`
}

// Withheld is a metric no rule is recommended for although it has series.
type Withheld struct {
	Metric string `json:"metric"`
	Series int64  `json:"series"`
	Reason string `json:"reason"`
	// Labels and Estimate, for an aggregation that would save nothing.
	Labels   []string  `json:"labels,omitempty"`
	Estimate *Estimate `json:"estimate,omitempty"`
}

// SourceCheck is one source as consulted for a metric or a tenant.
type SourceCheck struct {
	Name string `json:"name"`
	SourceStatus
	// Used: the source saw the metric read (per metric only).
	Used  bool      `json:"used"`
	Reads uint64    `json:"reads,omitempty"`
	Last  time.Time `json:"last,omitzero"`
}

// Recommendation is one rule proposed for one metric.
type Recommendation struct {
	Metric string `json:"metric"`
	Kind   string `json:"kind"`
	// Labels are aggregated away (aggregate).
	Labels []string `json:"labels,omitempty"`
	// Match selects the series dropped (drop_series).
	Match    string         `json:"match,omitempty"`
	Rule     relabel.Config `json:"rule"`
	RuleText string         `json:"ruleText"`
	// Series is the metric's active series (sketch estimate).
	Series      int64    `json:"series"`
	SeriesSaved int64    `json:"seriesSaved"`
	Estimate    Estimate `json:"estimate"`
	// Preview is the latest measured preview of this rule, if any.
	Preview *Preview `json:"preview,omitempty"`
	// Segments are the values of the segment label seen on the metric.
	Segments []string `json:"segments,omitempty"`
	// Segment, when set, scopes the recommendation to the series with that
	// value of the segment label: its rule, estimate and preview
	// (SegmentRecommendations). The evidence stays the whole metric's.
	Segment  string   `json:"segment,omitempty"`
	Evidence Evidence `json:"evidence"`
	Reason   string   `json:"reason"`
}

// Evidence is why a recommendation is safe: the sources checked and what
// each label is used for.
type Evidence struct {
	Sources  []SourceCheck `json:"sources"`
	Reads    uint64        `json:"reads"`
	LastRead time.Time     `json:"lastRead,omitzero"`
	Labels   []LabelRow    `json:"labels"`
	Readers  []Ref         `json:"readers,omitempty"`
	Notes    []string      `json:"notes,omitempty"`
}

// LabelRow is one label of the metric: kept or removed, and why.
type LabelRow struct {
	Label          string `json:"label"`
	DistinctValues int64  `json:"distinctValues"`
	Kept           bool   `json:"kept"`
	Why            string `json:"why"`
	LabelEvidence
	Sources []string `json:"sources,omitempty"`
}

// merged is the evidence of every source for one metric.
type merged struct {
	checks    []SourceCheck
	used      bool // a source that knows labels saw it read
	blind     []string
	all       bool
	allBy     []string
	labels    map[string]LabelEvidence
	labelSrc  map[string][]string
	refs      []Ref
	notSummed []Ref
	reads     uint64
	last      time.Time
	allSrcsOK bool
}

func (e *Engine) sources() []Source {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.o.Sources)
}

type sourceAnswer struct {
	name string
	ev   map[string]MetricEvidence
	st   SourceStatus
}

func (e *Engine) gather(t tenant.ID) []sourceAnswer {
	var out []sourceAnswer
	for _, s := range e.sources() {
		ev, st := s.Evidence(t)
		out = append(out, sourceAnswer{name: s.Name(), ev: ev, st: st})
	}
	return out
}

func merge(answers []sourceAnswer, metric string) merged {
	m := merged{labels: map[string]LabelEvidence{}, labelSrc: map[string][]string{}, allSrcsOK: true}
	for _, a := range answers {
		ev, ok := a.ev[metric]
		used := ok && ev.used()
		m.checks = append(m.checks, SourceCheck{Name: a.name, SourceStatus: a.st, Used: used, Reads: ev.Reads, Last: ev.Last})
		if !a.st.OK {
			m.allSrcsOK = false
		}
		if !used {
			continue
		}
		m.reads += ev.Reads
		if ev.Last.After(m.last) {
			m.last = ev.Last
		}
		m.refs = append(m.refs, ev.Refs...)
		m.notSummed = append(m.notSummed, ev.NotSummed...)
		if !ev.LabelsKnown {
			m.blind = append(m.blind, a.name)
			continue
		}
		m.used = true
		if ev.AllLabels {
			m.all = true
			m.allBy = append(m.allBy, a.name)
		}
		for l, le := range ev.Labels {
			cur := m.labels[l]
			cur.Uses = union(cur.Uses, le.Uses)
			if le.Last.After(cur.Last) {
				cur.Last = le.Last
			}
			cur.Who = append(cur.Who, le.Who...)
			m.labels[l] = cur
			m.labelSrc[l] = append(m.labelSrc[l], a.name)
		}
	}
	return m
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, x := range b {
		if !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}

// neverRemoved are the labels no aggregation takes away: the metric name, and
// le, without which histogram buckets are meaningless.
func (e *Engine) neverRemoved(l string) (string, bool) {
	switch {
	case l == model.MetricNameLabel:
		return "the metric name", true
	case l == model.BucketLabel:
		return "histogram bucket bound", true
	case l == "__overflow__":
		return "cardinality overflow entry", true
	case e.o.Config.SegmentLabel != "" && l == e.o.Config.SegmentLabel:
		return "segment label", true
	}
	return "", false
}

// refresh recomputes t's recommendations.
func (e *Engine) refresh(ctx context.Context, t tenant.ID) *List {
	answers := e.gather(t)
	e.mu.Lock()
	ex := e.exempt[t]
	appliedTo := map[string]map[string]bool{}
	if ts := e.state[t]; ts != nil {
		for _, a := range ts.Rules {
			if a.Segment != "" {
				// A segment's rule leaves the other segments' series to
				// recommend (SegmentRecommendations).
				continue
			}
			if appliedTo[a.Metric] == nil {
				appliedTo[a.Metric] = map[string]bool{}
			}
			appliedTo[a.Metric][a.Kind] = true
		}
	}
	e.mu.Unlock()
	l := &List{Tenant: t.String(), Computed: e.o.Now().UTC(), Items: []Recommendation{}, Withheld: []Withheld{}}
	for _, a := range answers {
		l.Sources = append(l.Sources, SourceCheck{Name: a.name, SourceStatus: a.st})
	}
	type candidate struct {
		rec      Recommendation
		distinct map[string]int64
	}
	var cands []candidate
	metrics := e.o.Series.MetricNames(t)
	for _, metric := range metrics {
		if appliedTo[metric][KindDrop] {
			continue
		}
		if _, ok := ex.match(metric); ok {
			l.Exempted++
			continue
		}
		series, _ := e.o.Series.MetricSeries(t, metric)
		if series <= 0 {
			continue
		}
		distinct := e.o.Series.LabelValues(t, metric)
		m := merge(answers, metric)
		var own time.Time
		if o, ok := e.o.Counter.(OwnReads); ok {
			own = o.LastRead(t, metric)
		}
		outside := e.outside.check(t, metric, answers, own, querySince(answers))
		rec := Recommendation{Metric: metric, Series: series}
		rec.Evidence = Evidence{Sources: m.checks, Reads: m.reads, LastRead: m.last, Readers: dedupRefs(m.refs, 10)}
		if m.used && !outside.IsZero() {
			l.Withheld = append(l.Withheld, Withheld{Metric: metric, Series: series, Reason: fmt.Sprintf(
				"VictoriaMetrics saw it read at %s, later than every read through cardguard: a reader that bypasses cardguard uses labels and series nobody can name; neither aggregated nor any series dropped",
				outside.UTC().Format(time.RFC3339))})
			continue
		}
		if !appliedTo[metric][KindDropSeries] {
			if ds, ok := e.dropSeries(t, metric, m, rec); ok {
				cands = append(cands, candidate{ds, distinct})
			}
		}
		if appliedTo[metric][KindAggregate] {
			continue
		}
		switch {
		case !m.used && len(m.blind) > 0:
			l.Withheld = append(l.Withheld, Withheld{Metric: metric, Series: series, Reason: fmt.Sprintf(
				"%s report the metric read, but no query through cardguard and no asset accounts for it: someone cardguard cannot see reads it, with labels unknown; neither dropped nor aggregated",
				strings.Join(m.blind, ", "))})
			continue
		case !m.used && !m.allSrcsOK:
			l.Withheld = append(l.Withheld, Withheld{Metric: metric, Series: series, Reason: "no source saw it read, but " +
				strings.Join(failed(m.checks), ", ") + " could not answer: an unused claim needs every source"})
			continue
		case !m.used:
			rec.Kind = KindDrop
			rec.Reason = "nothing reads the metric (checked: " + strings.Join(names(m.checks), ", ") + ")"
		case m.all:
			continue // keep: a read gets every label
		case len(m.notSummed) > 0:
			r := m.notSummed[0]
			l.Withheld = append(l.Withheld, Withheld{Metric: metric, Series: series, Reason: fmt.Sprintf(
				"%d reads combine its series other than by summing them first, so aggregating any label away changes their answers; e.g. %s %s: %s",
				len(m.notSummed), r.Kind, r.Name, clip(r.Query, 200))})
			continue
		default:
			rec.Kind = KindAggregate
			for lbl := range distinct {
				if _, never := e.neverRemoved(lbl); never {
					continue
				}
				if _, usedL := m.labels[lbl]; !usedL {
					rec.Labels = append(rec.Labels, lbl)
				}
			}
			slices.Sort(rec.Labels)
			if len(rec.Labels) == 0 {
				continue
			}
			rec.Reason = "no read uses " + strings.Join(rec.Labels, ", ") + " (checked: " + strings.Join(names(m.checks), ", ") + ")"
		}
		rec.Evidence.Labels = e.labelRows(distinct, m, rec.Labels, rec.Kind)
		if m.all {
			rec.Evidence.Notes = append(rec.Evidence.Notes, "read with all labels by "+strings.Join(m.allBy, ", "))
		}
		if len(m.blind) > 0 {
			rec.Evidence.Notes = append(rec.Evidence.Notes, strings.Join(m.blind, ", ")+" also report reads, accounted for by the sources that know the labels")
		}
		if !m.allSrcsOK {
			rec.Evidence.Notes = append(rec.Evidence.Notes, "could not answer in full: "+strings.Join(failed(m.checks), "; "))
		}
		rec.Estimate = sketchEstimate(series, distinct, rec.Labels, nil)
		if rec.Kind == KindDrop {
			rec.Estimate = Estimate{Method: MethodSketch, Series: series, Saved: series, Formula: series, Detail: "cardinality sketch of the metric's series (HyperLogLog, about 1%); dropping a metric saves all of them"}
		}
		if rec.Estimate.Saved <= 0 && rec.Kind == KindDrop {
			continue
		}
		rec.Rule, rec.RuleText, _ = ruleFor(metric, rec.Kind, rec.Labels, "", Scope{})
		cands = append(cands, candidate{rec, distinct})
	}
	// VictoriaMetrics counts what the sketches can only guess, for the largest
	// aggregations. Drops need no count: the sketch of a metric's series is
	// its count, and a query would make the metric look read upstream.
	slices.SortFunc(cands, func(a, b candidate) int { return cmp.Compare(b.rec.Estimate.Saved, a.rec.Estimate.Saved) })
	asked := 0
	for i := range cands {
		c := &cands[i]
		if c.rec.Kind != KindAggregate {
			continue
		}
		if asked >= e.o.Config.MaxUpstreamEstimates || e.o.Counter == nil {
			c.rec.Estimate.Detail += "; not counted upstream (max_upstream_estimates per refresh)"
			continue
		}
		asked++
		cctx, cancel := context.WithTimeout(ctx, e.o.Config.UpstreamTimeout)
		est, err := upstreamEstimate(cctx, e.o.Counter, t, c.rec.Metric, Scope{}, c.rec.Labels, false)
		cancel()
		if err != nil {
			c.rec.Estimate = sketchEstimate(c.rec.Series, c.distinct, c.rec.Labels, err)
			continue
		}
		est.Formula = c.rec.Estimate.Formula
		c.rec.Estimate = est
	}
	for _, c := range cands {
		rec := c.rec
		rec.SeriesSaved = rec.Estimate.Saved
		if rec.SeriesSaved <= 0 {
			est := rec.Estimate
			l.Withheld = append(l.Withheld, Withheld{Metric: rec.Metric, Series: rec.Series, Labels: rec.Labels, Estimate: &est,
				Reason: fmt.Sprintf("aggregating away %s saves nothing: %d series before, %d after (%s estimate; the independence formula would say %d saved)",
					strings.Join(rec.Labels, ", "), est.Series, est.After, est.Method, est.Formula)})
			continue
		}
		rec.Segments = e.segments.values(t, rec.Metric)
		rec.Preview = e.previewOf(t, rec.Metric, rec.Kind, "", rec.Labels, rec.Match)
		l.Items = append(l.Items, rec)
		l.SeriesSaveable += rec.SeriesSaved
	}
	slices.SortStableFunc(l.Items, func(a, b Recommendation) int {
		if c := cmp.Compare(b.SeriesSaved, a.SeriesSaved); c != 0 {
			return c
		}
		return strings.Compare(a.Metric, b.Metric)
	})
	slices.SortFunc(l.Withheld, func(a, b Withheld) int { return cmp.Compare(b.Series, a.Series) })
	e.mu.Lock()
	if len(metrics) > 0 || e.state[t] != nil {
		// A tenant with no series and no rules has an empty list, computed
		// for nothing: keeping it would let requests for made-up tenants
		// grow the map without bound.
		e.lists[t] = l
	}
	e.mu.Unlock()
	return l
}

func (e *Engine) labelRows(distinct map[string]int64, m merged, removed []string, kind string) []LabelRow {
	var rows []LabelRow
	for _, lbl := range slices.Sorted(maps.Keys(distinct)) {
		if lbl == model.MetricNameLabel {
			continue
		}
		row := LabelRow{Label: lbl, DistinctValues: distinct[lbl], LabelEvidence: m.labels[lbl], Sources: m.labelSrc[lbl]}
		row.Who = dedupRefs(row.Who, 5)
		switch {
		case kind == KindDrop:
			row.Why = "the metric is dropped"
		case slices.Contains(removed, lbl):
			row.Why = "no read uses it"
		default:
			row.Kept = true
			if why, never := e.neverRemoved(lbl); never {
				row.Why = "never removed: " + why
			} else {
				row.Why = "used (" + strings.Join(row.Uses, ", ") + ") per " + strings.Join(row.Sources, ", ")
			}
		}
		rows = append(rows, row)
	}
	return rows
}

func failed(cs []SourceCheck) []string {
	var out []string
	for _, c := range cs {
		if !c.OK {
			out = append(out, c.Name+" ("+c.Detail+")")
		}
	}
	return out
}

func names(cs []SourceCheck) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	if len(out) == 0 {
		return []string{"no source"}
	}
	return out
}

func dedupRefs(refs []Ref, n int) []Ref {
	var out []Ref
	for _, r := range refs {
		if !slices.ContainsFunc(out, func(x Ref) bool { return x.Kind == r.Kind && x.Name == r.Name && x.Query == r.Query }) {
			out = append(out, r)
		}
		if len(out) == n {
			break
		}
	}
	return out
}

// ruleFor is the relabel rule of a recommendation, and how it reads in a
// config file. For one segment (sc), its selector carries the segment's
// matcher: the rule takes the segment's series only.
func ruleFor(metric, kind string, drop []string, match string, sc Scope) (relabel.Config, string, error) {
	c := relabel.DefaultConfig()
	sel := scopedSelector(metric, sc)
	switch kind {
	case KindAggregate:
		quoted := make([]string, len(drop))
		for i, l := range drop {
			quoted[i] = regexp.QuoteMeta(l)
		}
		c.If = []string{sel}
		c.Action = relabel.LabelDrop
		c.Regex = strings.Join(quoted, "|")
		return c, fmt.Sprintf("- if: '%s'\n  action: labeldrop\n  regex: '%s'\n", sel, c.Regex), nil
	case KindDropSeries:
		scoped, _, err := scopeMatch(match, sc)
		if err != nil {
			return c, "", err
		}
		c.If = []string{scoped}
		c.Action = relabel.Drop
		return c, fmt.Sprintf("- if: '%s'\n  action: drop\n", scoped), nil
	}
	c.If = []string{sel}
	c.Action = relabel.Drop
	return c, fmt.Sprintf("- if: '%s'\n  action: drop\n", sel), nil
}

// Recommendations returns t's list, recomputed when older than the refresh
// interval or when refresh is set. A refresh queries VictoriaMetrics (two
// queries per aggregation, max_upstream_estimates of them) and any tenant
// token may ask for one: while one of t runs, callers wait for its list
// instead of starting another. The list returned is shared: read-only.
func (e *Engine) Recommendations(ctx context.Context, t tenant.ID, refresh bool) *List {
	e.mu.Lock()
	l := e.lists[t]
	if l == nil || refresh || e.o.Now().Sub(l.Computed) >= e.o.Config.Refresh {
		f := e.flights[t]
		if f != nil {
			e.mu.Unlock()
			select {
			case <-f.done:
				return f.l
			case <-ctx.Done():
				if l != nil {
					return l
				}
				return &List{Tenant: t.String(), Items: []Recommendation{}, Withheld: []Withheld{}}
			}
		}
		f = &flight{done: make(chan struct{})}
		e.flights[t] = f
		e.mu.Unlock()
		defer func() {
			e.mu.Lock()
			delete(e.flights, t)
			e.mu.Unlock()
			close(f.done)
		}()
		f.l = e.refresh(ctx, t)
		return f.l
	}
	e.mu.Unlock()
	// Previews and segments move on between refreshes.
	out := *l
	out.Items = slices.Clone(l.Items)
	for i := range out.Items {
		r := &out.Items[i]
		r.Preview = e.previewOf(t, r.Metric, r.Kind, "", r.Labels, r.Match)
		r.Segments = e.segments.values(t, r.Metric)
	}
	return &out
}

// computed is when t's list was last computed, or zero.
func (e *Engine) computed(t tenant.ID) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.lists[t]; l != nil {
		return l.Computed
	}
	return time.Time{}
}

// cached returns the recommendation for metric (of kind, if set) of the list
// last computed, which the operator saw and previewed.
func (e *Engine) cached(t tenant.ID, metric, kind string) (Recommendation, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if l := e.lists[t]; l != nil {
		for _, r := range l.Items {
			if r.Metric == metric && (kind == "" || r.Kind == kind) {
				return r, true
			}
		}
	}
	return Recommendation{}, false
}

// find returns t's current recommendation for metric (of kind, if set).
func (e *Engine) find(ctx context.Context, t tenant.ID, metric, kind string) (Recommendation, bool) {
	for _, fresh := range []bool{false, true} {
		for _, r := range e.Recommendations(ctx, t, fresh).Items {
			if r.Metric == metric && (kind == "" || r.Kind == kind) {
				return r, true
			}
		}
	}
	return Recommendation{}, false
}

// SeriesUsage is the series-level usage of seriesusage.Book: which series of
// a metric no recorded selector selects, and the label values that explain them.
type SeriesUsage interface {
	Report(t tenant.ID, metric string) (seriesusage.Report, bool)
}

// dropSeries recommends dropping the series of metric that no recorded query
// selects, when one label value explains them (env="dev"). Only the queries
// through cardguard record selectors: a metric some other source reads
// (dashboards, rules, an unseen reader) gets no such recommendation. A read
// that gets every label (a series or export call, rate(m[5m])) does not
// stop it: its selectors are recorded like any other, and the series
// usage counts what they select.
func (e *Engine) dropSeries(t tenant.ID, metric string, m merged, base Recommendation) (Recommendation, bool) {
	if e.o.SeriesUsage == nil || !m.used {
		return Recommendation{}, false
	}
	for _, c := range m.checks {
		if c.Used && c.Name != "queries" && !slices.Contains(m.blind, c.Name) {
			return Recommendation{}, false
		}
	}
	rep, ok := e.o.SeriesUsage.Report(t, metric)
	if !ok || rep.AllSelected || !rep.Bucket.Complete || rep.NeverSelected <= 0 || len(rep.Explaining) == 0 || rep.Coverage.Queries == 0 {
		return Recommendation{}, false
	}
	if rep.Coverage.UnparsedReads > 0 || rep.Coverage.DroppedReads > 0 {
		// Reads whose selectors nobody knows may select the series.
		return Recommendation{}, false
	}
	ex := rep.Explaining[0]
	if ex.Label == model.MetricNameLabel || !labelNameRE.MatchString(ex.Label) || ex.Series <= 0 {
		return Recommendation{}, false
	}
	rec := base
	rec.Kind = KindDropSeries
	rec.Match = "{__name__=" + strconv.Quote(metric) + "," + ex.Label + "=" + strconv.Quote(ex.Value) + "}"
	rec.Rule, rec.RuleText, _ = ruleFor(metric, KindDropSeries, nil, rec.Match, Scope{})
	rec.Estimate = Estimate{Method: MethodSeriesUsage, Series: rep.ActiveSeries, After: rep.ActiveSeries - ex.Series, Saved: ex.Series, Formula: ex.Series,
		Detail: "series of the last complete bucket that no recorded selector selects and that carry " + ex.Label + "=" + strconv.Quote(ex.Value)}
	rec.Reason = fmt.Sprintf("%d of %d series carry %s=%q and none of the %d selectors recorded from %d queries selects them",
		ex.Series, rep.ActiveSeries, ex.Label, ex.Value, rep.Coverage.Selectors, rep.Coverage.Queries)
	rec.Evidence.Notes = append(slices.Clone(rec.Evidence.Notes),
		fmt.Sprintf("selectors recorded since %s; no read of the tenant went unparsed or dropped", rep.Coverage.RecordingSince.Format(time.RFC3339)))
	for i, sel := range rep.Selectors {
		if i == 10 {
			break
		}
		rec.Evidence.Notes = append(rec.Evidence.Notes, "selector: "+sel)
	}
	return rec, true
}

// querySince is the start of the queries source's retention: an outside read
// before it is forgotten like every other read.
func querySince(answers []sourceAnswer) time.Time {
	for _, a := range answers {
		if a.name == "queries" {
			return a.st.Since
		}
	}
	return time.Time{}
}
