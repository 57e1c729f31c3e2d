package adaptive

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Preview states.
const (
	// PreviewWaiting: the preview started mid-bucket. The pipeline observes
	// each series once per cardinality bucket, so a series already seen in
	// the current bucket would be missed: counting starts with the next one.
	PreviewWaiting = "waiting"
	// PreviewMeasuring: counting the series of one whole bucket.
	PreviewMeasuring = "measuring"
	// PreviewDone: the bucket is over; the counts are final.
	PreviewDone = "done"
)

// Preview is a rule in dry run: the distinct series of one whole cardinality
// bucket that it would take in and give out, counted exactly.
type Preview struct {
	Metric string   `json:"metric"`
	Kind   string   `json:"kind"`
	Labels []string `json:"labels,omitempty"`
	Match  string   `json:"match,omitempty"`
	// Segment: the preview counts the series with this value of the segment
	// label only.
	Segment string `json:"segment,omitempty"`
	State   string `json:"state"`
	// Started is when the preview was asked for; MeasuredFrom and MeasuredTo
	// bound the bucket counted (approximately: the bucket turns when the
	// cardinality tracker rotates).
	Started      time.Time `json:"started"`
	MeasuredFrom time.Time `json:"measuredFrom,omitzero"`
	MeasuredTo   time.Time `json:"measuredTo,omitzero"`
	SeriesIn     int64     `json:"seriesIn"`
	SeriesOut    int64     `json:"seriesOut"`
	SeriesSaved  int64     `json:"seriesSaved"`
	// Truncated: more series came than the preview may hold; the counts are
	// lower bounds.
	Truncated bool `json:"truncated,omitempty"`
	// Replica says the counts are this replica's: with several replicas, each
	// measures the series it receives (or owns).
	Replica string `json:"replica,omitempty"`
}

// Previewer runs previews. It is a series observer for the pipeline: Observe
// is called once per series per cardinality bucket, after relabeling. With no
// preview running, Observe costs one atomic load, and one map lookup with
// some: it never walks the previews of other metrics. At most MaxPreviews run
// at once. Safe for concurrent use.
type Previewer struct {
	epoch     func() int64
	maxSeries int
	now       func() time.Time

	active atomic.Pointer[previewSet] // replaced, never changed
	mu     sync.Mutex                 // serialises changes of active
}

// MaxPreviews caps the previews running on one replica: each holds up to
// preview_max_series series until its bucket is over.
const MaxPreviews = 1000

// previewSet is the running previews, and the same by tenant and metric for
// Observe.
type previewSet struct {
	runs []*previewRun
	by   map[readerKey][]*previewRun
}

func newPreviewSet(runs []*previewRun) *previewSet {
	s := &previewSet{runs: runs, by: make(map[readerKey][]*previewRun, len(runs))}
	for _, r := range runs {
		k := readerKey{r.t, r.metric}
		s.by[k] = append(s.by[k], r)
	}
	return s
}

// running returns how many previews run.
func (pv *Previewer) running() int {
	if s := pv.active.Load(); s != nil {
		return len(s.runs)
	}
	return 0
}

type previewRun struct {
	t      tenant.ID
	metric string
	drop   map[string]bool   // aggregate: labels removed
	match  []*labels.Matcher // the series counted (drop_series, a segment); nil: all
	kind   string
	seg    string

	mu      sync.Mutex
	p       Preview
	start   int64 // epoch when started
	measure int64 // epoch counted; 0 before
	in, out map[uint64]struct{}
}

// NewPreviewer returns a Previewer on the pipeline's bucket clock; maxSeries
// caps the input series each preview holds (and as many outputs).
func NewPreviewer(epoch func() int64, maxSeries int, now func() time.Time) *Previewer {
	if now == nil {
		now = time.Now
	}
	return &Previewer{epoch: epoch, maxSeries: maxSeries, now: now}
}

// start begins a preview of the rule; it replaces any running one of the same
// tenant, metric, kind and segment. match selects the series counted: those
// drop_series drops, or a segment's (with its matcher). The returned run is
// read through snapshot; nil when MaxPreviews run already.
func (pv *Previewer) start(t tenant.ID, metric, kind, seg string, drop []string, match []*labels.Matcher, matchText string) *previewRun {
	r := &previewRun{t: t, metric: metric, kind: kind, seg: seg, match: match, start: pv.epoch(),
		in: make(map[uint64]struct{}), out: make(map[uint64]struct{})}
	if len(drop) > 0 {
		r.drop = make(map[string]bool, len(drop))
		for _, l := range drop {
			r.drop[l] = true
		}
	}
	r.p = Preview{Metric: metric, Kind: kind, Labels: slices.Clone(drop), Match: matchText, Segment: seg, State: PreviewWaiting, Started: pv.now().UTC()}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	var runs []*previewRun
	if cur := pv.active.Load(); cur != nil {
		for _, x := range cur.runs {
			if x.t != t || x.metric != metric || x.kind != kind || x.seg != seg {
				runs = append(runs, x)
			}
		}
	}
	if len(runs) >= MaxPreviews {
		return nil
	}
	runs = append(runs, r)
	pv.active.Store(newPreviewSet(runs))
	return r
}

// Observe implements the pipeline's series observer.
func (pv *Previewer) Observe(t tenant.ID, metric string, ls []prompb.Label, seriesHash uint64) {
	s := pv.active.Load()
	if s == nil || len(s.runs) == 0 {
		return
	}
	runs := s.by[readerKey{t, metric}]
	if len(runs) == 0 {
		return
	}
	e := pv.epoch()
	for _, r := range runs {
		r.observe(pv, e, ls, seriesHash)
	}
}

func (r *previewRun) observe(pv *Previewer, e int64, ls []prompb.Label, h uint64) {
	if r.match != nil && !matches(r.match, ls) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.advance(pv, e) || r.p.State != PreviewMeasuring {
		return
	}
	if _, ok := r.in[h]; ok {
		return
	}
	if len(r.in) >= pv.maxSeries {
		r.p.Truncated = true
		return
	}
	r.in[h] = struct{}{}
	if r.kind == KindAggregate {
		r.out[outputHash(ls, r.drop)] = struct{}{}
	}
}

// advance moves the state to epoch e; false when the preview is over. r.mu held.
func (r *previewRun) advance(pv *Previewer, e int64) bool {
	switch r.p.State {
	case PreviewDone:
		return false
	case PreviewWaiting:
		if e > r.start {
			r.measure = e
			r.p.State = PreviewMeasuring
			r.p.MeasuredFrom = pv.now().UTC()
		}
	case PreviewMeasuring:
		if e > r.measure {
			r.finish(pv)
			return false
		}
	}
	return true
}

func (r *previewRun) finish(pv *Previewer) {
	r.p.State = PreviewDone
	r.p.MeasuredTo = pv.now().UTC()
	r.p.SeriesIn = int64(len(r.in))
	r.p.SeriesOut = int64(len(r.out))
	r.p.SeriesSaved = r.p.SeriesIn - r.p.SeriesOut
	r.in, r.out = nil, nil
}

// snapshot returns the preview as it stands, moving it on to the current
// bucket first.
func (r *previewRun) snapshot(pv *Previewer) Preview {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.advance(pv, pv.epoch())
	p := r.p
	if p.State != PreviewDone {
		p.SeriesIn, p.SeriesOut = int64(len(r.in)), int64(len(r.out))
		p.SeriesSaved = p.SeriesIn - p.SeriesOut
	}
	p.Labels = slices.Clone(p.Labels)
	return p
}

// tick ends the previews whose bucket is over and forgets them; it returns
// the finished ones.
func (pv *Previewer) tick() []*previewRun {
	cur := pv.active.Load()
	if cur == nil || len(cur.runs) == 0 {
		return nil
	}
	e := pv.epoch()
	var done []*previewRun
	for _, r := range cur.runs {
		r.mu.Lock()
		r.advance(pv, e)
		if r.p.State == PreviewDone {
			done = append(done, r)
		}
		r.mu.Unlock()
	}
	if len(done) == 0 {
		return nil
	}
	pv.mu.Lock()
	defer pv.mu.Unlock()
	var runs []*previewRun
	for _, x := range pv.active.Load().runs {
		if !slices.Contains(done, x) {
			runs = append(runs, x)
		}
	}
	pv.active.Store(newPreviewSet(runs))
	return done
}

// outputHash identifies the series ls becomes once the labels in drop are
// removed. It is independent of the labels' order.
func outputHash(ls []prompb.Label, drop map[string]bool) uint64 {
	var sum uint64
	var d xxhash.Digest
	for i := range ls {
		if drop[ls[i].Name] || ls[i].Value == "" {
			continue
		}
		d.Reset()
		_, _ = d.WriteString(ls[i].Name)
		_, _ = d.Write([]byte{0xff})
		_, _ = d.WriteString(ls[i].Value)
		sum += mix(d.Sum64())
	}
	return sum
}

// mix is a 64-bit finaliser (splitmix64): summing mixed hashes keeps
// distinct label sets apart.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func matches(ms []*labels.Matcher, ls []prompb.Label) bool {
	for _, m := range ms {
		v := ""
		for i := range ls {
			if ls[i].Name == m.Name {
				v = ls[i].Value
				break
			}
		}
		if !m.Matches(v) {
			return false
		}
	}
	return true
}
