package adaptive

import (
	"slices"
	"strings"
	"sync"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

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
