package adaptive

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/cardguard/cardguard/internal/tenant"
)

// segments remembers the values of the segment label (team) seen on each
// metric, from the series the pipeline observes. Bounded: maxSegmentKeys
// metrics, maxSegmentValues values each. Safe for concurrent use.
type segments struct {
	label string
	epoch func() int64

	mu   sync.RWMutex
	seen map[readerKey]map[string]int64 // value -> last epoch
}

const (
	maxSegmentKeys   = 100000
	maxSegmentValues = 64
	// segmentEpochs: values not seen for this many buckets are forgotten.
	segmentEpochs = 12
)

func newSegments(label string, epoch func() int64) *segments {
	return &segments{label: label, epoch: epoch, seen: make(map[readerKey]map[string]int64)}
}

func (s *segments) observe(t tenant.ID, metric string, ls []prompb.Label) {
	if s.label == "" {
		return
	}
	v := ""
	for i := range ls {
		if ls[i].Name == s.label {
			v = ls[i].Value
			break
		}
	}
	if v == "" {
		return
	}
	e := s.epoch()
	k := readerKey{t, metric}
	s.mu.RLock()
	last, ok := s.seen[k][v]
	s.mu.RUnlock()
	if ok && last == e {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.seen[k]
	if vs == nil {
		if len(s.seen) >= maxSegmentKeys {
			return
		}
		vs = make(map[string]int64)
		// Label strings may point into the request buffer: copy them.
		s.seen[readerKey{t, strings.Clone(clip(metric, 256))}] = vs
	}
	if _, ok := vs[v]; !ok && len(vs) >= maxSegmentValues {
		return
	}
	vs[strings.Clone(clip(v, 128))] = e
}

func (s *segments) values(t tenant.ID, metric string) []string {
	if s.label == "" {
		return nil
	}
	e := s.epoch()
	s.mu.Lock()
	defer s.mu.Unlock()
	vs := s.seen[readerKey{t, metric}]
	var out []string
	for v, last := range vs {
		if e-last > segmentEpochs {
			delete(vs, v)
			continue
		}
		out = append(out, v)
	}
	slices.Sort(out)
	return out
}

// Observe implements the pipeline's series observer: previews and segments.
func (e *Engine) Observe(t tenant.ID, metric string, ls []prompb.Label, seriesHash uint64) {
	e.preview.Observe(t, metric, ls, seriesHash)
	e.segments.observe(t, metric, ls)
}

// Scope narrows a rule, an estimate or a preview to the series of one
// segment: those with Label="Value". The zero Scope is the whole metric.
type Scope struct{ Label, Value string }

// whole says whether sc is the whole metric.
func (sc Scope) whole() bool { return sc.Value == "" }

// matcher is sc's equality matcher; nil for the whole metric.
func (sc Scope) matcher() *labels.Matcher {
	if sc.whole() {
		return nil
	}
	return labels.MustNewMatcher(labels.MatchEqual, sc.Label, sc.Value)
}

func (sc Scope) String() string {
	if sc.whole() {
		return "the whole metric"
	}
	return sc.Label + "=" + strconv.Quote(sc.Value)
}

// scopedSelector is {__name__="metric"}, or for one segment
// {__name__="metric",team="team-a"}, quoted for PromQL and MetricsQL.
func scopedSelector(metric string, sc Scope) string {
	if sc.whole() {
		return selector(metric)
	}
	return "{__name__=" + strconv.Quote(metric) + "," + sc.Label + "=" + strconv.Quote(sc.Value) + "}"
}

// scopeMatch adds sc's matcher to a drop_series selector. A selector that
// already names the segment label keeps it when it selects sc's value, and
// is refused otherwise: it would select no series of the segment.
func scopeMatch(match string, sc Scope) (string, []*labels.Matcher, error) {
	ms, err := parser.NewParser(parser.Options{}).ParseMetricSelector(match)
	if err != nil {
		return "", nil, err
	}
	if sc.whole() {
		return match, ms, nil
	}
	for _, m := range ms {
		if m.Name == sc.Label {
			if m.Type == labels.MatchEqual && m.Value == sc.Value {
				return match, ms, nil
			}
			return "", nil, fmt.Errorf("match %q names %s already and selects no series of %s", clip(match, 100), sc.Label, sc)
		}
	}
	ms = append(ms, sc.matcher())
	parts := make([]string, len(ms))
	for i, m := range ms {
		parts[i] = m.String()
	}
	return "{" + strings.Join(parts, ",") + "}", ms, nil
}
