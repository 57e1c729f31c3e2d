package ingest

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/tenant"
)

// Observer records a series for cardinality estimation. Implementations must not
// retain labels beyond the call without cloning them.
type Observer interface {
	Observe(t tenant.ID, metric string, labels []prompb.Label, seriesHash uint64)
	// Epoch numbers the current dedup period: observing a series again within it
	// changes nothing.
	Epoch() int64
}

// RuleSource gives the compiled relabel rules of a tenant (global rules first,
// then the tenant's own), or nil for none.
type RuleSource interface {
	RulesFor(t tenant.ID) *relabel.Rules
}

// LimitSource gives a tenant's effective limits; the result is shared and
// read-only.
type LimitSource interface {
	For(t tenant.ID) *limits.Limits
}

// Enforcer keeps the state behind rate and series limits and counts discards.
type Enforcer interface {
	AllowSamples(t tenant.ID, l *limits.Limits, n int, now time.Time) (ok bool, retryAfter time.Duration)
	Admitter(t tenant.ID, l *limits.Limits, now time.Time) limits.Admitter
	Generation(now time.Time) int64
	RecordDiscard(t tenant.ID, r limits.Reason, samples int, dryRun bool)
}

// Guard is the automatic high-cardinality label guard, bound once per request.
type Guard interface {
	Checker(t tenant.ID, p *limits.LabelGuard, now time.Time, dryRun bool) guard.Checker
}

// Stages are the per-series steps of the pipeline, in the order they run:
// relabel → label limits → observe → guard → series limits. A nil member is
// skipped; without Limits no limit applies.
//
// Cardinality is observed after relabeling and before the guard and the series
// limits: the estimates show what clients try to write, which is what an operator
// needs to see while a guard or a limit is holding an explosion back.
type Stages struct {
	Rules    RuleSource
	Observer Observer
	Guard    Guard
	Limits   LimitSource
	Enforcer Enforcer
}

func (s *Stages) requestLimit(t tenant.ID) int64 {
	if s.Limits == nil {
		return 0
	}
	return s.Limits.For(t).MaxRequestBytes
}

// seriesScratch holds per-request working memory for the series loop.
type seriesScratch struct {
	buf      []prompb.Label // output of the stage that ran last
	buf2     []prompb.Label
	arena    []prompb.Label // rewritten label sets that will be forwarded
	hashBuf  []byte
	discards []discard
	// relabeled counts series changed per action in this request; counters are
	// updated once per request, not once per series.
	relabeled []actionCount
	entries   []requestEntry
	order     []int32 // entries grouped by cache shard
}

// requestEntry is a series' cache entry while its request is processed.
type requestEntry struct {
	cacheEntry
	raw   uint64 // hash of the labels as received
	sum   uint64 // cache key
	known bool   // the cache had an entry
}

type actionCount struct {
	action string
	n      int
}

func (s *seriesScratch) addRelabeled(action string) {
	for i := range s.relabeled {
		if s.relabeled[i].action == action {
			s.relabeled[i].n++
			return
		}
	}
	s.relabeled = append(s.relabeled, actionCount{action: action, n: 1})
}

type discard struct {
	reason  limits.Reason
	dryRun  bool
	samples int
	series  int
}

func (s *seriesScratch) reset() {
	clear(s.buf)
	clear(s.buf2)
	clear(s.arena)
	s.buf, s.buf2, s.arena = s.buf[:0], s.buf2[:0], s.arena[:0]
	s.discards = s.discards[:0]
	s.relabeled = s.relabeled[:0]
	clear(s.entries)
	s.entries = s.entries[:0]
}

func (s *seriesScratch) addDiscard(r limits.Reason, dryRun bool, samples int) {
	for i := range s.discards {
		if d := &s.discards[i]; d.reason == r && d.dryRun == dryRun {
			d.samples += samples
			d.series++
			return
		}
	}
	s.discards = append(s.discards, discard{reason: r, dryRun: dryRun, samples: samples, series: 1})
}

// result is what the series loop decided for one request.
type result struct {
	received       int // samples in the request
	forwardSeries  int
	forwardSamples int
	modified       bool  // a series was dropped or rewritten: re-encode
	verdict        error // nil → 204; or the 4xx to answer after forwarding the rest
}

// process runs the stages over every series, filtering b.series in place.
// Validation errors reject the whole request before anything is forwarded; limit
// decisions drop single series and let the rest through.
func (h *Handler) process(t tenant.ID, tl string, b *batch, sc *seriesScratch) (result, error) {
	var res result
	tss := b.series
	now := h.now()
	// Validate everything first: a request with one bad series is refused whole and
	// leaves no trace in estimates or limits. Series validated before (same labels,
	// same hash) are not validated again.
	sc.entries = slices.Grow(sc.entries[:0], len(tss))[:len(tss)]
	for i := range tss {
		labels := tss[i].Labels
		sortIfNeeded(labels)
		e := &sc.entries[i]
		e.raw = hashLabels(labels, &sc.hashBuf)
		e.known = false
		res.received += tss[i].Samples
	}
	if h.cache != nil {
		h.cache.getAll(t, sc.entries, &sc.order, now)
	}
	for i := range tss {
		e := &sc.entries[i]
		if !e.known {
			if _, err := validateSeries(tss[i].Labels); err != nil {
				return res, err
			}
			e.cacheEntry = cacheEntry{}
		}
	}
	st := &h.stages
	var lim *limits.Limits
	dry := false
	if st.Limits != nil {
		lim = st.Limits.For(t)
		dry = lim.DryRun()
	}
	var (
		admit     limits.Admitter
		admitting bool   // a series limit is on: admissions are tracked
		admitGen  uint32 // limiter generation + 1
	)
	if lim != nil && st.Enforcer != nil {
		admit = st.Enforcer.Admitter(t, lim, now)
		admitting = lim.MaxSeries > 0 || lim.MaxSeriesPerMetric > 0
		admitGen = uint32(st.Enforcer.Generation(now) + 1)
		if ok, retry := st.Enforcer.AllowSamples(t, lim, res.received, now); !ok {
			st.Enforcer.RecordDiscard(t, limits.ReasonRateLimited, res.received, dry)
			if !dry {
				return res, &statusError{
					status:     http.StatusTooManyRequests,
					msg:        limits.ReasonRateLimited.Message(lim),
					retryAfter: retry,
				}
			}
		}
	}
	var (
		guarded  bool
		checker  guard.Checker
		guardGen uint32
	)
	if lim != nil && st.Guard != nil && lim.LabelGuard.MaxValuesPerLabel > 0 {
		guarded = true
		// lim is a shared snapshot that is never modified, so the pointer stays
		// valid for the request.
		checker = st.Guard.Checker(t, &lim.LabelGuard, now, dry)
		guardGen = uint32(checker.Window() + 1)
	}
	var rules *relabel.Rules
	if st.Rules != nil {
		rules = st.Rules.RulesFor(t)
	}
	var observed uint32
	if st.Observer != nil {
		observed = uint32(st.Observer.Epoch() + 1)
	}

	kept := 0
	var firstEnforced limits.Reason
	for i := range tss {
		ts := &tss[i]
		e := &sc.entries[i]
		before := e.cacheEntry
		if e.rules != rules {
			// Relabel outcomes were for other rules; with new rules the series may
			// map to other labels, so nothing decided downstream holds either.
			e.cacheEntry = cacheEntry{rules: rules}
		}
		labels := ts.Labels
		metric := metricName(labels)
		rewritten, guardRewrote := false, false
		drop := limits.Reason("")
		hash := e.raw

		if rules != nil {
			switch e.relabel {
			case relabelUnchanged:
			case relabelDropped:
				drop = limits.ReasonRelabelDrop
				sc.addRelabeled("drop")
			default:
				out, keep, changed := rules.Apply(labels, sc.buf[:0])
				sc.buf = out[:0]
				switch {
				case !keep:
					e.relabel = relabelDropped
					drop = limits.ReasonRelabelDrop
					sc.addRelabeled("drop")
				case changed:
					sc.addRelabeled("rewrite")
					if e.relabel != relabelChanged {
						e.relabel, e.relHash = relabelChanged, hashLabels(out, &sc.hashBuf)
					}
					if !dry {
						labels, rewritten, hash = out, true, e.relHash
						if metric = metricName(labels); metric == "" {
							drop = limits.ReasonInvalidSeries
						}
					}
				default:
					e.relabel = relabelUnchanged
				}
			}
		}
		if drop == "" && lim != nil {
			drop = limits.CheckLabels(lim, labels)
		}
		if drop == "" {
			if st.Observer != nil && e.observed != observed {
				st.Observer.Observe(t, metric, labels, hash)
				e.observed = observed
			}
			if guarded && e.guarded != guardGen {
				out, gr := checker.Check(metric, labels, sc.buf2[:0])
				switch gr.Outcome {
				case guard.Pass:
					e.guarded = guardGen
				case guard.Drop:
					drop = limits.ReasonLabelGuard
				case guard.Rewritten:
					sc.addRelabeled(string(gr.Action))
					if !dry {
						sc.buf2 = out[:0]
						labels, rewritten, guardRewrote = out, true, true
						hash = hashLabels(labels, &sc.hashBuf)
					}
				}
			}
		}
		if drop == "" && admitting && e.admitted != admitGen {
			// A series the guard rewrote is admitted under the hash of its
			// rewritten labels, which depends on the guard's state: not remembered.
			if drop = admit.Admit(metric, hash); drop == "" && !guardRewrote {
				e.admitted = admitGen
			}
		}
		if dry {
			// Stage decisions in dry run are taken on the labels as received; they
			// must not stand for the relabeled ones once the tenant enforces.
			e.observed, e.guarded, e.admitted = before.observed, before.guarded, before.admitted
		}
		if h.cache != nil && (!e.known || e.cacheEntry != before) {
			h.cache.put(cacheKey{t, e.raw}, e.cacheEntry, now)
		}
		if drop != "" {
			sc.addDiscard(drop, dry, ts.Samples)
			if !dry {
				res.modified = true
				if firstEnforced == "" {
					firstEnforced = drop
				}
				continue
			}
		}
		if rewritten {
			// The stage buffers are reused for the next series: keep a copy.
			start := len(sc.arena)
			sc.arena = append(sc.arena, labels...)
			labels = sc.arena[start:len(sc.arena):len(sc.arena)]
			res.modified = true
		}
		tss[kept] = *ts
		tss[kept].Labels = labels
		tss[kept].rewritten = rewritten
		kept++
		res.forwardSeries++
		res.forwardSamples += ts.Samples
	}
	if res.modified {
		clear(tss[kept:])
		b.series = tss[:kept]
	}
	for _, rc := range sc.relabeled {
		h.metrics.relabeled(tl, rc.action, dry, rc.n)
	}
	for _, d := range sc.discards {
		if st.Enforcer != nil {
			st.Enforcer.RecordDiscard(t, d.reason, d.samples, d.dryRun)
		}
	}
	if firstEnforced != "" && lim != nil && lim.OnLimit == limits.OnLimitReject {
		res.verdict = errorf(http.StatusBadRequest, "%s; %s", dropSummary(sc.discards), firstEnforced.Message(lim))
	}
	return res, nil
}

func dropSummary(ds []discard) string {
	series, samples := 0, 0
	for _, d := range ds {
		if !d.dryRun {
			series += d.series
			samples += d.samples
		}
	}
	return fmt.Sprintf("%d series (%d samples) of this request were not written", series, samples)
}
