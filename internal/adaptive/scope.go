package adaptive

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MethodWithheld: no estimate for one segment. The cardinality sketches and
// the series usage count the whole metric's series, not a segment's; only
// VictoriaMetrics can count those, and it did not (down, or past
// max_upstream_estimates). The preview measures the segment exactly.
const MethodWithheld = "withheld"

// maxSegmentEstimates bounds the segment estimates kept between refreshes.
const maxSegmentEstimates = 10000

// segEstKey is one recommendation scoped to one segment, of the list computed
// at computed: a new list asks again.
type segEstKey struct {
	t                              tenant.ID
	segment, metric, kind, removes string
	computed                       time.Time
}

// scope is the Scope of segment value seg, or an error (400) when no segment
// label is configured or the value is not one.
func (e *Engine) scope(seg string) (Scope, error) {
	if seg == "" {
		return Scope{}, nil
	}
	if e.o.Config.SegmentLabel == "" {
		return Scope{}, errf(http.StatusBadRequest, "segment=%q: no adaptive.segment_label is configured", clip(seg, 64))
	}
	if len(seg) > 128 {
		return Scope{}, errf(http.StatusBadRequest, "segment %q: longer than 128 bytes", clip(seg, 64))
	}
	return Scope{Label: e.o.Config.SegmentLabel, Value: seg}, nil
}

// SegmentRecommendations returns t's recommendations for the series of one
// segment value (Recommendations, with seg empty): those of the metrics that
// carry the value, each rule scoped to the segment's series, its estimate
// counted for them only. A metric whose rule for the segment is applied
// already is left out. The evidence stays the metric's: who reads which
// labels is not known per segment.
func (e *Engine) SegmentRecommendations(ctx context.Context, t tenant.ID, seg string, refresh bool) (*List, error) {
	sc, err := e.scope(seg)
	if err != nil {
		return nil, err
	}
	l := e.Recommendations(ctx, t, refresh)
	if sc.whole() {
		return l, nil
	}
	out := *l
	out.Segment = seg
	out.Items = []Recommendation{}
	out.SeriesSaveable = 0
	applied := e.Applied(t)
	asked := 0
	for _, r := range l.Items {
		if !slices.Contains(r.Segments, seg) || slices.ContainsFunc(applied, func(a Applied) bool {
			return a.Metric == r.Metric && a.Segment == seg && a.Kind == r.Kind
		}) {
			continue
		}
		sr, err := e.scoped(ctx, t, r, sc, l.Computed, &asked)
		if err != nil {
			continue
		}
		out.Items = append(out.Items, sr)
		out.SeriesSaveable += sr.SeriesSaved
	}
	slices.SortStableFunc(out.Items, func(a, b Recommendation) int {
		if c := cmp.Compare(b.SeriesSaved, a.SeriesSaved); c != 0 {
			return c
		}
		return strings.Compare(a.Metric, b.Metric)
	})
	return &out, nil
}

// scoped is r for the series of sc only: its rule, its estimate and its
// preview. asked counts the upstream estimates made for this list, bounded by
// max_upstream_estimates; nil: unbounded (one recommendation being applied).
func (e *Engine) scoped(ctx context.Context, t tenant.ID, r Recommendation, sc Scope, computed time.Time, asked *int) (Recommendation, error) {
	rec := r
	rec.Segment = sc.Value
	rule, text, err := ruleFor(r.Metric, r.Kind, r.Labels, r.Match, sc)
	if err != nil {
		return rec, err
	}
	rec.Rule, rec.RuleText = rule, text
	rec.Estimate = e.segmentEstimate(ctx, t, r, sc, computed, asked)
	rec.SeriesSaved = rec.Estimate.Saved
	rec.Preview = e.previewOf(t, r.Metric, r.Kind, sc.Value, r.Labels, r.Match)
	rec.Reason = r.Reason + "; scoped to the series with " + sc.String()
	return rec, nil
}

// segmentEstimate is what r's rule saves on the series of sc, counted by
// VictoriaMetrics, or withheld: the sketches cannot tell one segment's series
// from the others'.
func (e *Engine) segmentEstimate(ctx context.Context, t tenant.ID, r Recommendation, sc Scope, computed time.Time, asked *int) Estimate {
	k := segEstKey{t: t, segment: sc.Value, metric: r.Metric, kind: r.Kind, removes: strings.Join(r.Labels, ",") + r.Match, computed: computed}
	e.mu.Lock()
	est, ok := e.segEst[k]
	e.mu.Unlock()
	if ok {
		return est
	}
	withheld := func(why string) Estimate {
		return Estimate{Method: MethodWithheld, Detail: "no estimate for the series with " + sc.String() +
			": the cardinality sketches count the whole metric's series, not one segment's; " + why + "; preview the rule to measure it"}
	}
	switch {
	case e.o.Counter == nil:
		return withheld("no upstream to count them")
	case r.Kind == KindDropSeries:
		return withheld("the series usage that found the unselected series counts the whole metric")
	case asked != nil && *asked >= e.o.Config.MaxUpstreamEstimates:
		return withheld("not counted upstream (max_upstream_estimates per list)")
	}
	if asked != nil {
		*asked++
	}
	cctx, cancel := context.WithTimeout(ctx, e.o.Config.UpstreamTimeout)
	est, err := upstreamEstimate(cctx, e.o.Counter, t, r.Metric, sc, r.Labels, r.Kind == KindDrop)
	cancel()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return withheld("the request went away")
		}
		est = withheld("the upstream could not count: " + clip(err.Error(), 200))
	} else {
		est.Detail = fmt.Sprintf("VictoriaMetrics counted the series with %s of the cardinality window, before and after the rule", sc)
	}
	e.mu.Lock()
	if len(e.segEst) >= maxSegmentEstimates {
		clear(e.segEst)
	}
	e.segEst[k] = est
	e.mu.Unlock()
	return est
}

// conflict says why a rule of kind (any, if empty) for metric and segment
// (the whole metric, if empty) cannot join rules: the same rule is applied,
// or a whole-metric rule and a segment's rule would both act on the
// segment's series. Rules of other segments are independent.
func conflict(rules []Applied, metric, kind, segment string) *Error {
	for _, a := range rules {
		if a.Metric != metric {
			continue
		}
		switch {
		case a.Segment == segment && (kind == "" || a.Kind == kind):
			what := fmt.Sprintf("%q", clip(metric, 64))
			if segment != "" {
				what += " with " + a.scope().String()
			}
			return errf(http.StatusConflict, "a %s rule for %s is already applied; revert it first", a.Kind, what)
		case a.Segment == "" && segment != "":
			return errf(http.StatusConflict, "a %s rule for the whole of %q is applied: it acts on every segment's series already; revert it before applying a rule to one segment",
				a.Kind, clip(metric, 64))
		case a.Segment != "" && segment == "":
			return errf(http.StatusConflict, "a %s rule for the series of %q with %s is applied: revert the rules of its segments before applying a rule to the whole metric",
				a.Kind, clip(metric, 64), a.scope())
		}
	}
	return nil
}
