package adaptive

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Error is an error with the HTTP status it maps to.
type Error struct {
	Status int
	Msg    string
	// Refusal lists the readers a rule would break (409).
	Refusal *Refusal
}

func (e *Error) Error() string { return e.Msg }

func errf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, args...)}
}

// Refusal is why a rule is not applied: the readers it would break.
type Refusal struct {
	Metric string   `json:"metric"`
	Labels []string `json:"labels,omitempty"`
	// Readers are the queries, dashboards, rules and assets that use what the
	// rule removes.
	Readers []Ref    `json:"readers"`
	Sources []string `json:"sources"`
	Message string   `json:"message"`
}

// RuleSpec is the rule to preview or apply; zero fields take the current
// recommendation's. Segment, a value of the segment label, scopes the rule to
// the series that carry it; empty: the whole metric.
type RuleSpec struct {
	Kind    string   `json:"kind"`
	Labels  []string `json:"labels,omitempty"`
	Match   string   `json:"match,omitempty"`
	Segment string   `json:"segment,omitempty"`
}

// resolve completes spec from the recommendation and validates it.
func (e *Engine) resolve(ctx context.Context, t tenant.ID, metric string, spec RuleSpec) (RuleSpec, Estimate, error) {
	if metric == "" || len(metric) > 256 {
		return spec, Estimate{}, errf(http.StatusBadRequest, "bad metric name: empty or longer than 256 bytes")
	}
	var est Estimate
	sc, err := e.scope(spec.Segment)
	if err != nil {
		return spec, est, err
	}
	if err := conflict(e.Applied(t), metric, spec.Kind, spec.Segment); err != nil {
		return spec, est, err
	}
	if spec.Kind == "" || (spec.Kind == KindAggregate && len(spec.Labels) == 0) || (spec.Kind == KindDropSeries && spec.Match == "") {
		rec, ok := e.cached(t, metric, spec.Kind)
		if !ok {
			rec, ok = e.find(ctx, t, metric, spec.Kind)
		}
		if !ok {
			return spec, est, errf(http.StatusNotFound, "no recommendation for metric %q of tenant %s; name the rule (kind, labels) to apply one anyway", clip(metric, 64), t)
		}
		spec = RuleSpec{Kind: rec.Kind, Labels: rec.Labels, Match: rec.Match, Segment: spec.Segment}
		est = rec.Estimate
		if !sc.whole() {
			est = e.segmentEstimate(ctx, t, rec, sc, e.computed(t), nil)
		}
	}
	switch spec.Kind {
	case KindDrop:
		spec.Labels, spec.Match = nil, ""
	case KindAggregate:
		spec.Match = ""
		if len(spec.Labels) == 0 {
			return spec, est, errf(http.StatusBadRequest, "aggregate needs the labels to remove")
		}
		if len(spec.Labels) > 64 {
			return spec, est, errf(http.StatusBadRequest, "%d labels: at most 64", len(spec.Labels))
		}
		for _, l := range spec.Labels {
			if !labelNameRE.MatchString(l) {
				return spec, est, errf(http.StatusBadRequest, "label %q: not a label name", clip(l, 64))
			}
			if why, never := e.neverRemoved(l); never {
				return spec, est, errf(http.StatusBadRequest, "label %q is never aggregated away: %s", l, why)
			}
		}
		spec.Labels = slices.Compact(slices.Sorted(slices.Values(spec.Labels)))
	case KindDropSeries:
		ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(spec.Match)
		if err != nil {
			return spec, est, errf(http.StatusBadRequest, "match %q: %v", clip(spec.Match, 100), err)
		}
		if !selectsOnly(ms, metric) {
			return spec, est, errf(http.StatusBadRequest, "match %q must select series of %q only, with one more matcher", clip(spec.Match, 100), clip(metric, 64))
		}
		if _, _, err := scopeMatch(spec.Match, sc); err != nil {
			return spec, est, errf(http.StatusBadRequest, "%v", err)
		}
	default:
		return spec, est, errf(http.StatusBadRequest, "kind %q: want %s, %s or %s", clip(spec.Kind, 32), KindDrop, KindAggregate, KindDropSeries)
	}
	return spec, est, nil
}

func selectsOnly(ms []*labels.Matcher, metric string) bool {
	name := false
	for _, m := range ms {
		if m.Name == model.MetricNameLabel {
			name = m.Type == labels.MatchEqual && m.Value == metric
		}
	}
	return name && len(ms) >= 2
}

// StartPreview runs the rule for metric in dry run over the next whole
// cardinality bucket. Only admins may start one (it holds memory).
func (e *Engine) StartPreview(ctx context.Context, t tenant.ID, metric string, spec RuleSpec) (Preview, error) {
	spec, _, err := e.resolve(ctx, t, metric, spec)
	if err != nil {
		return Preview{}, err
	}
	sc, _ := e.scope(spec.Segment)
	var match []*labels.Matcher
	if spec.Kind == KindDropSeries {
		_, match, _ = scopeMatch(spec.Match, sc)
	} else if !sc.whole() {
		match = []*labels.Matcher{sc.matcher()}
	}
	r := e.preview.start(t, metric, spec.Kind, spec.Segment, spec.Labels, match, spec.Match)
	if r == nil {
		return Preview{}, errf(http.StatusConflict, "%d previews are running on this replica, the most it runs at once: start this one when some are done (each takes one to two cardinality buckets)", MaxPreviews)
	}
	if e.o.Replica != "" {
		r.p.Replica = e.o.Replica
	}
	e.mu.Lock()
	if len(e.previews) >= 10000 {
		clear(e.previews)
	}
	e.previews[previewKey{t, metric, spec.Kind, spec.Segment}] = r
	e.mu.Unlock()
	return r.snapshot(e.preview), nil
}

// PreviewOf returns the latest preview of metric's rule of kind, for one
// segment value (or, empty, the whole metric).
func (e *Engine) PreviewOf(t tenant.ID, metric, kind, segment string) (Preview, bool) {
	e.mu.Lock()
	r := e.previews[previewKey{t, metric, kind, segment}]
	e.mu.Unlock()
	if r == nil {
		return Preview{}, false
	}
	return r.snapshot(e.preview), true
}

// previewOf is the preview of exactly this rule, or nil.
func (e *Engine) previewOf(t tenant.ID, metric, kind, segment string, lbls []string, match string) *Preview {
	p, ok := e.PreviewOf(t, metric, kind, segment)
	if !ok || !slices.Equal(p.Labels, lbls) || p.Match != match {
		return nil
	}
	return &p
}

// readersOf lists who uses what spec removes from metric, per every source.
func (e *Engine) readersOf(t tenant.ID, metric string, spec RuleSpec) (*Refusal, error) {
	m := merge(e.gather(t), metric)
	ref := &Refusal{Metric: metric}
	switch spec.Kind {
	case KindDropSeries:
		sc, err := e.scope(spec.Segment)
		if err != nil {
			return nil, err
		}
		_, drop, err := scopeMatch(spec.Match, sc)
		if err != nil {
			return nil, err
		}
		ref.Readers, ref.Sources = e.seriesReaders(t, metric, drop, m)
		if len(ref.Readers) > 0 {
			ref.Message = fmt.Sprintf("reads may select series of %s that %s drops", metric, spec.Match)
		}
	case KindDrop:
		if m.used || len(m.blind) > 0 {
			ref.Readers = m.refs
			for _, c := range m.checks {
				if c.Used {
					ref.Sources = append(ref.Sources, c.Name)
				}
			}
			ref.Message = fmt.Sprintf("%s is read (%d reads per %s): dropping it breaks those reads", metric, m.reads, strings.Join(ref.Sources, ", "))
		}
	case KindAggregate:
		for _, l := range spec.Labels {
			if le, ok := m.labels[l]; ok {
				ref.Labels = append(ref.Labels, l)
				ref.Readers = append(ref.Readers, le.Who...)
				ref.Sources = union(ref.Sources, m.labelSrc[l])
			}
		}
		if m.all {
			ref.Sources = union(ref.Sources, m.allBy)
			ref.Readers = append(ref.Readers, m.refs...)
			ref.Message = metric + " is read with all its labels: "
		}
		if len(m.notSummed) > 0 {
			ref.Readers = append(ref.Readers, m.notSummed...)
			ref.Message += metric + " is read by queries that combine its series other than by a sum: "
		}
		if len(m.blind) > 0 && !m.used {
			ref.Sources = union(ref.Sources, m.blind)
			ref.Message = metric + " is read by someone cardguard cannot see, with labels unknown: "
		}
		if len(ref.Labels) > 0 {
			ref.Message += "labels " + strings.Join(ref.Labels, ", ") + " are used by readers; "
			if len(ref.Readers) == 0 {
				// Who used each label is known for live reads only; name who
				// reads the metric.
				ref.Readers = m.refs
			}
		}
		if ref.Message != "" {
			ref.Message += "removing them changes what those reads answer"
		}
	}
	if ref.Message == "" {
		return nil, nil
	}
	ref.Readers = dedupRefs(ref.Readers, 50)
	if ref.Readers == nil {
		ref.Readers = []Ref{}
	}
	return ref, nil
}

// Apply enforces the rule for metric: by names who applies it. Without force,
// a rule that removes what a recorded reader uses is refused (409).
func (e *Engine) Apply(ctx context.Context, t tenant.ID, metric string, spec RuleSpec, by string, force bool) (Applied, error) {
	spec, est, err := e.resolve(ctx, t, metric, spec)
	if err != nil {
		return Applied{}, err
	}
	refusal, _ := e.readersOf(t, metric, spec)
	if refusal != nil && !force {
		return Applied{}, &Error{Status: http.StatusConflict, Msg: refusal.Message + " (apply with force=true to override)", Refusal: refusal}
	}
	sc, _ := e.scope(spec.Segment)
	rule, _, err := ruleFor(metric, spec.Kind, spec.Labels, spec.Match, sc)
	if err != nil {
		return Applied{}, errf(http.StatusBadRequest, "%v", err)
	}
	if _, err := relabel.Compile([]relabel.Config{rule}); err != nil {
		return Applied{}, errf(http.StatusBadRequest, "rule does not compile: %v", err)
	}
	a := Applied{Metric: metric, Kind: spec.Kind, Labels: spec.Labels, Match: spec.Match, Segment: sc.Value, Rule: rule,
		AppliedBy: by, AppliedAt: e.o.Now().UTC(), Estimate: est, Preview: e.previewOf(t, metric, spec.Kind, spec.Segment, spec.Labels, spec.Match)}
	if !sc.whole() {
		a.SegmentLabel = sc.Label
	}
	if refusal != nil {
		a.Forced, a.Overrode = true, refusal.Readers
	}
	e.mu.Lock()
	ts := e.stateOf(t)
	if err := conflict(ts.Rules, metric, spec.Kind, spec.Segment); err != nil {
		e.mu.Unlock()
		return Applied{}, err
	}
	if len(ts.Rules) >= 10000 {
		e.mu.Unlock()
		return Applied{}, errf(http.StatusConflict, "tenant %s has 10000 applied rules: revert some first", t)
	}
	next := *ts
	next.Rules = append(slices.Clone(ts.Rules), a)
	err = e.saveLocked(t, &next)
	e.mu.Unlock()
	if err != nil {
		return Applied{}, errf(http.StatusServiceUnavailable, "cannot store the rule: %v", err)
	}
	e.changed(t)
	return a, nil
}

// Revert removes metric's applied rule (of kind, if set) for one segment
// value, or with segment empty, the whole metric's: a segment's rule is
// reverted by naming its segment.
func (e *Engine) Revert(t tenant.ID, metric, kind, segment string) (Applied, error) {
	e.mu.Lock()
	ts := e.stateOf(t)
	i := slices.IndexFunc(ts.Rules, func(a Applied) bool {
		return a.Metric == metric && a.Segment == segment && (kind == "" || a.Kind == kind)
	})
	if i < 0 {
		var segs []string
		for _, a := range ts.Rules {
			if a.Metric == metric && a.Segment != "" && segment == "" {
				segs = append(segs, a.Segment)
			}
		}
		e.mu.Unlock()
		if len(segs) > 0 {
			return Applied{}, errf(http.StatusNotFound, "no rule applied to the whole of %q of tenant %s; its segments %s have rules: name one with segment=",
				clip(metric, 64), t, clip(strings.Join(segs, ", "), 200))
		}
		if segment != "" {
			return Applied{}, errf(http.StatusNotFound, "no rule applied to %q with segment %q of tenant %s", clip(metric, 64), clip(segment, 64), t)
		}
		return Applied{}, errf(http.StatusNotFound, "no rule applied to %q of tenant %s", clip(metric, 64), t)
	}
	gone := ts.Rules[i]
	next := *ts
	next.Rules = slices.Delete(slices.Clone(ts.Rules), i, i+1)
	err := e.saveLocked(t, &next)
	if err == nil {
		delete(e.lists, t) // the metric may be recommended again
	}
	e.mu.Unlock()
	if err != nil {
		return Applied{}, errf(http.StatusServiceUnavailable, "cannot store the change: %v", err)
	}
	e.changed(t)
	return gone, nil
}

// Applied returns t's rules in force, oldest first.
func (e *Engine) Applied(t tenant.ID) []Applied {
	e.mu.Lock()
	defer e.mu.Unlock()
	if ts := e.state[t]; ts != nil {
		return slices.Clone(ts.Rules)
	}
	return []Applied{}
}

// Exemptions returns t's exemptions.
func (e *Engine) Exemptions(t tenant.ID) Exemptions {
	e.mu.Lock()
	defer e.mu.Unlock()
	x := Exemptions{Exact: []string{}, Prefix: []string{}, Regex: []string{}}
	if ts := e.state[t]; ts != nil {
		x.Exact = append(x.Exact, ts.Exemptions.Exact...)
		x.Prefix = append(x.Prefix, ts.Exemptions.Prefix...)
		x.Regex = append(x.Regex, ts.Exemptions.Regex...)
	}
	return x
}

// SetExemptions replaces t's exemptions.
func (e *Engine) SetExemptions(t tenant.ID, x Exemptions) error {
	c, err := x.compile()
	if err != nil {
		return errf(http.StatusBadRequest, "%v", err)
	}
	e.mu.Lock()
	next := *e.stateOf(t)
	next.Exemptions = x
	err = e.saveLocked(t, &next)
	if err == nil {
		e.exempt[t] = c
		delete(e.lists, t)
	}
	e.mu.Unlock()
	if err != nil {
		return errf(http.StatusServiceUnavailable, "cannot store the exemptions: %v", err)
	}
	return nil
}

// stateOf returns t's state; e.mu held.
func (e *Engine) stateOf(t tenant.ID) *tenantState {
	if ts := e.state[t]; ts != nil {
		return ts
	}
	return &tenantState{}
}

// saveLocked stores next as t's state and makes it current; e.mu held.
func (e *Engine) saveLocked(t tenant.ID, next *tenantState) error {
	b, err := json.Marshal(next)
	if err != nil {
		return err
	}
	if len(next.Rules) == 0 && len(next.Exemptions.Exact)+len(next.Exemptions.Prefix)+len(next.Exemptions.Regex) == 0 {
		b = nil
	}
	if err := e.o.Store.Save(t.String(), b); err != nil {
		return err
	}
	e.state[t] = next
	return nil
}

// changed drops what the change made stale: the applied metrics'
// recommendations (the others stand until the next refresh), and publishes
// the rules.
func (e *Engine) changed(t tenant.ID) {
	e.mu.Lock()
	if l := e.lists[t]; l != nil {
		applied := map[string]bool{}
		for _, a := range e.stateOf(t).Rules {
			if a.Segment == "" {
				applied[a.Metric] = true
			}
		}
		next := *l
		next.Items = slices.DeleteFunc(slices.Clone(l.Items), func(r Recommendation) bool { return applied[r.Metric] })
		next.SeriesSaveable = 0
		for _, r := range next.Items {
			next.SeriesSaveable += r.SeriesSaved
		}
		e.lists[t] = &next
	}
	e.mu.Unlock()
	e.publishApplied()
	e.o.OnChange()
}

// Broken counts the reads of a metric that use what an applied rule removed.
type Broken struct {
	Count uint64       `json:"count"`
	Last  time.Time    `json:"last"`
	Reads []BrokenRead `json:"reads"`
}

// BrokenRead is one read broken by a rule.
type BrokenRead struct {
	Reader Ref      `json:"reader"`
	Labels []string `json:"labels,omitempty"`
	Kind   string   `json:"kind"`
}

// Broken reads are kept for maxBrokenKeys metrics, maxBrokenReads each.
const (
	maxBrokenKeys  = 5000
	maxBrokenReads = 10
)

// OnRead implements queryaudit.ReadListener: a read that uses a label an
// applied rule removes, or reads a dropped metric, is counted broken_by_rule.
func (e *Engine) OnRead(rd *queryaudit.Read) {
	e.brokenMu.Lock()
	defer e.brokenMu.Unlock()
	byMetric := e.applied[rd.Tenant]
	if len(byMetric) == 0 {
		return
	}
	for name, mu := range rd.Metrics {
		for _, a := range byMetric[name] {
			br := BrokenRead{Kind: a.Kind}
			switch a.Kind {
			case KindDrop:
			case KindAggregate:
				for _, l := range a.Labels {
					if _, ok := mu.Labels[l]; ok {
						br.Labels = append(br.Labels, l)
					}
				}
				if len(br.Labels) == 0 {
					continue
				}
			case KindDropSeries:
				if !selectsDropped(rd.Extraction, name, a.matchers) {
					continue
				}
				for _, m := range a.matchers {
					if m.Name != model.MetricNameLabel {
						br.Labels = append(br.Labels, m.Name)
					}
				}
			default:
				continue
			}
			k := readerKey{rd.Tenant, name}
			b := e.broken[k]
			if b == nil {
				if len(e.broken) >= maxBrokenKeys {
					continue
				}
				b = &Broken{}
				e.broken[k] = b
			}
			b.Count++
			b.Last = rd.At.UTC()
			br.Reader = refOf(rd.Source)
			br.Reader.Query = clip(rd.Query, maxQueryBytes)
			br.Reader.Last = b.Last
			b.Reads = slices.DeleteFunc(b.Reads, func(x BrokenRead) bool { return x.Reader.Query == br.Reader.Query && x.Reader.Name == br.Reader.Name })
			b.Reads = slices.Insert(b.Reads, 0, br)
			if len(b.Reads) > maxBrokenReads {
				b.Reads = b.Reads[:maxBrokenReads]
			}
		}
	}
}

// BrokenBy returns the reads of metric broken by rules (this replica's).
func (e *Engine) BrokenBy(t tenant.ID, metric string) Broken {
	e.brokenMu.Lock()
	defer e.brokenMu.Unlock()
	b := e.broken[readerKey{t, metric}]
	if b == nil {
		return Broken{Reads: []BrokenRead{}}
	}
	out := *b
	out.Reads = slices.Clone(b.Reads)
	return out
}

// BrokenAll returns every metric of t with broken reads.
func (e *Engine) BrokenAll(t tenant.ID) map[string]Broken {
	e.brokenMu.Lock()
	defer e.brokenMu.Unlock()
	out := map[string]Broken{}
	for k, b := range e.broken {
		if k.t == t {
			c := *b
			c.Reads = slices.Clone(b.Reads)
			out[k.metric] = c
		}
	}
	return out
}

// selectsDropped says whether a read may select series of metric that the
// drop_series matchers drop: some selector of the metric has a matcher set
// that every dropped series satisfies as far as the dropped labels go (the
// other labels' values are unknown: taken to match).
func selectsDropped(ex queryaudit.Extraction, metric string, drop []*labels.Matcher) bool {
	if len(drop) == 0 {
		return false
	}
	for _, sel := range ex.Selectors {
		if sel.Name != metric && (sel.Name != "" || !matchAll(sel.NameMatchers, metric)) {
			continue
		}
		if len(sel.MatcherSets) == 0 {
			return true
		}
		for _, set := range sel.MatcherSets {
			if admits(set, metric, drop) {
				return true
			}
		}
	}
	return false
}

func matchAll(ms []*labels.Matcher, v string) bool {
	for _, m := range ms {
		if !m.Matches(v) {
			return false
		}
	}
	return true
}

// admits says whether the matchers set may select a series of metric whose
// labels satisfy the equality matchers of drop.
func admits(set []*labels.Matcher, metric string, drop []*labels.Matcher) bool {
	for _, m := range set {
		if m.Name == model.MetricNameLabel {
			if !m.Matches(metric) {
				return false
			}
			continue
		}
		for _, d := range drop {
			if d.Name == m.Name && d.Type == labels.MatchEqual && !m.Matches(d.Value) {
				return false
			}
		}
	}
	return true
}

// seriesReaders lists the readers that may select series of metric the drop
// matchers drop: the selectors the series usage recorded, the expressions of
// the assets, and reads VictoriaMetrics counted that nobody accounts for.
func (e *Engine) seriesReaders(t tenant.ID, metric string, drop []*labels.Matcher, m merged) ([]Ref, []string) {
	var (
		refs    []Ref
		sources []string
	)
	p := parser.NewParser(parser.Options{})
	if e.o.SeriesUsage != nil {
		if rep, ok := e.o.SeriesUsage.Report(t, metric); ok {
			for _, sel := range rep.Selectors {
				ms, err := p.ParseMetricSelector(sel)
				if err == nil && !admits(ms, metric, drop) {
					continue
				}
				refs = append(refs, Ref{Kind: "query", Name: "recorded selector", Query: sel})
				sources = union(sources, []string{"queries"})
			}
			if rep.AllSelected {
				refs = append(refs, Ref{Kind: "query", Name: "more selectors than are kept: every series counts as selected"})
				sources = union(sources, []string{"queries"})
			}
		}
	}
	for _, r := range m.refs {
		if r.Query == "" || r.Kind == "victoriametrics" {
			continue
		}
		if ex, err := queryaudit.Extract(r.Query); err != nil || selectsDropped(ex, metric, drop) {
			refs = append(refs, r)
		}
	}
	if len(m.blind) > 0 && !m.used {
		sources = union(sources, m.blind)
		refs = append(refs, Ref{Kind: "victoriametrics", Name: "reads nobody cardguard sees accounts for"})
	}
	return dedupRefs(refs, 50), sources
}
