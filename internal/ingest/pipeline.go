package ingest

import (
	"fmt"
	"hash/maphash"
	"net/http"
	"slices"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/aggregate"
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

// Folder aggregates the series that relabel rules or the label guard fold
// together (internal/aggregate).
type Folder interface {
	// Has reports whether the output series with key h is being aggregated.
	Has(t tenant.ID, h uint64) bool
	Add(t tenant.ID, in *aggregate.Input) error
}

// Claimer tells which series relabel rules made collide (aggregate.Claims).
type Claimer interface {
	Epoch(t tenant.ID, now time.Time) uint16
	Claim(t tenant.ID, out, in uint64, now time.Time) (unique bool, prev uint64)
}

// Stages are the per-series steps of the pipeline, in the order they run:
// relabel → label limits → observe → guard → series limits → fold, then the
// tenant's stream aggregation rules over what is left to forward. A nil member
// is skipped; without Limits no limit applies; without Folder and Claims nothing
// is aggregated.
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
	Folder   Folder
	Claims   Claimer
	Streams  StreamAggregator
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
	folds     []fold  // series to aggregate instead of forwarding
	samples   []prompb.Sample
	// Series whose admission the shared membership decides, all at once after
	// the loop: cands[i] is pending[i]'s question.
	pending []pendingAdmission
	cands   []limits.Candidate
	streams streamScratch
}

// requestEntry is a series' cache entry while its request is processed.
type requestEntry struct {
	cacheEntry
	raw       uint64 // the series' key: see seriesKey
	known     bool   // the cache had an entry
	reordered bool   // the labels came unsorted and were sorted
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

// reset empties the scratch space for the next request. Label sets are not
// cleared: they point into the decompressed request of the same pooled context,
// which stays allocated anyway (putCtx clears them when it lets that go).
func (s *seriesScratch) reset() {
	s.buf, s.buf2, s.arena = s.buf[:0], s.buf2[:0], s.arena[:0]
	s.discards = s.discards[:0]
	s.relabeled = s.relabeled[:0]
	s.entries = s.entries[:0]
	s.folds = s.folds[:0]
	s.samples = s.samples[:0]
	s.pending, s.cands = s.pending[:0], s.cands[:0]
}

// pendingAdmission is where a series waiting for its admission went: out is
// its index among the forwarded series, fold among the folds (-1: not there).
type pendingAdmission struct {
	out, fold int
	samples   int
}

// release drops s's memory and with it every reference into the request's
// buffers.
func (s *seriesScratch) release() { *s = seriesScratch{} }

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
	// decided is what the stages kept of a part routed here to be decided,
	// encoded, when modified (see route).
	decided []byte
}

// settleAdmissions applies the shared membership's verdicts on the request's
// new series: refused ones leave the forwarded series and the folds (in dry run
// they stay, counted as would-drop). It returns the new number of forwarded
// series.
func settleAdmissions(sc *seriesScratch, tss []series, kept int, dry bool, res *result, firstEnforced *limits.Reason) int {
	dropOut, dropFold := -1, -1 // first index removed, or -1
	for i := range sc.cands {
		r := sc.cands[i].Reason
		if r == "" {
			continue
		}
		p := &sc.pending[i]
		sc.addDiscard(r, dry, p.samples)
		if dry {
			continue
		}
		res.modified = true
		if *firstEnforced == "" {
			*firstEnforced = r
		}
		switch {
		case p.out >= 0:
			tss[p.out].Samples = -1 // removed below
			res.forwardSeries--
			res.forwardSamples -= p.samples
			if dropOut < 0 {
				dropOut = p.out
			}
		case p.fold >= 0:
			sc.folds[p.fold].s.Samples = -1
			if dropFold < 0 {
				dropFold = p.fold
			}
		}
	}
	if dropOut >= 0 {
		n := dropOut
		for j := dropOut; j < kept; j++ {
			if tss[j].Samples >= 0 {
				tss[n] = tss[j]
				n++
			}
		}
		kept = n
	}
	if dropFold >= 0 {
		sc.folds = slices.DeleteFunc(sc.folds, func(f fold) bool { return f.s.Samples < 0 })
	}
	return kept
}

// seriesKey is what the series cache knows a series by: the hash of its label
// fields as received when they come first in the series (as every client writes
// them), which costs one hash over bytes already in memory; otherwise the hash of
// the series hash's input. Both are 64-bit hashes of the series' labels, and a
// collision between two keys is taken as impossible: the hash is seeded at random
// per process, so a client cannot search offline for two of its series whose
// keys collide, to have one pass on the other's cached decisions (an unseeded
// 64-bit hash gives up a pair in about 2^32 tries).
func seriesKey(s *series, hashBuf *[]byte, seed maphash.Seed) uint64 {
	if s.rest != 0 {
		return maphash.Bytes(seed, s.raw[s.msg:s.rest])
	}
	*hashBuf = appendSeriesBytes((*hashBuf)[:0], s.Labels)
	return maphash.Bytes(seed, *hashBuf)
}

// process runs the stages over every series, filtering b.series in place.
// Validation errors reject the whole request before anything is forwarded; limit
// decisions drop single series and let the rest through.
func (h *Handler) process(t tenant.ID, tl string, b *batch, sc *seriesScratch) (result, error) {
	var res result
	tss := b.series
	now := h.now()
	// Validate everything first: a request with one bad series is refused whole and
	// leaves no trace in estimates or limits. Series validated before (same key)
	// are not validated again.
	sc.entries = slices.Grow(sc.entries[:0], len(tss))[:len(tss)]
	// parse reads a series' labels when something needs them, sorted.
	parse := func(ts *series, e *requestEntry) error {
		if ts.parsed {
			return nil
		}
		if err := b.parseLabels(ts); err != nil {
			return err
		}
		e.reordered = sortIfNeeded(ts.Labels)
		return nil
	}
	for i := range tss {
		ts, e := &tss[i], &sc.entries[i]
		e.known, e.reordered = false, false
		if ts.rest == 0 {
			if err := parse(ts, e); err != nil {
				return res, err
			}
			// Labels decoded by lib/prompb come parsed, not yet sorted.
			e.reordered = sortIfNeeded(ts.Labels) || e.reordered
		}
		e.raw = seriesKey(ts, &sc.hashBuf, h.keySeed)
		res.received += int(ts.Samples)
	}
	if h.cache != nil {
		h.cache.getAll(t, sc.entries, &sc.order, now)
	}
	for i := range tss {
		ts, e := &tss[i], &sc.entries[i]
		if !e.known {
			if err := parse(ts, e); err != nil {
				return res, err
			}
			if _, err := validateSeries(ts.Labels); err != nil {
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
		admitGen  uint16 // limiter generation + 1
	)
	if lim != nil && st.Enforcer != nil {
		admit = st.Enforcer.Admitter(t, lim, now)
		admitting = lim.MaxSeries > 0 || lim.MaxSeriesPerMetric > 0
		admitGen = uint16(st.Enforcer.Generation(now) + 1)
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
		guardGen uint16
	)
	if lim != nil && st.Guard != nil && lim.LabelGuard.MaxValuesPerLabel > 0 {
		guarded = true
		// lim is a shared snapshot that is never modified, so the pointer stays
		// valid for the request.
		// The guard builds the labels it would write in dry run too, so that dry
		// run can count what aggregation would do; they are applied only when
		// the tenant enforces.
		checker = st.Guard.Checker(t, &lim.LabelGuard, now, false)
		guardGen = uint16(checker.Window() + 1)
	}
	var rules *relabel.Rules
	if st.Rules != nil {
		rules = st.Rules.RulesFor(t)
	}
	var rid uint32 // 0 (no cache) matches only entries made in this request
	if h.cache != nil {
		rid = h.cache.rulesID(rules)
	}
	var observed uint16
	if st.Observer != nil {
		observed = uint16(st.Observer.Epoch() + 1)
	}
	// Series that rules rewrite may collide with each other or with a series
	// the rules leave alone: with folding on, every series claims its output
	// once per claims epoch, and outputs with two inputs are aggregated.
	folding := rules != nil && !dry && st.Folder != nil && st.Claims != nil && (lim == nil || lim.AggregatesCollisions())
	var foldEpoch uint16
	if folding {
		foldEpoch = st.Claims.Epoch(t, now)
	}
	guardFolds := st.Folder != nil && lim != nil && lim.LabelGuard.Action == limits.GuardAggregate
	// Stream aggregation rules are not applied in dry run; what they would
	// take is counted.
	streams := st.Streams != nil && st.Streams.Has(t)

	kept := 0
	var firstEnforced limits.Reason
	for i := range tss {
		ts := &tss[i]
		e := &sc.entries[i]
		before := e.cacheEntry
		if e.relabel == relabelMasked && ts.rest == 0 {
			// A mask is by position in label fields that come first, which these
			// do not (only a key collision leads here).
			e.relabel = relabelUnknown
		}
		if e.rules != rid || e.relabel == relabelUnknown {
			// Relabel outcomes were for other rules; with new rules the series may
			// map to other labels, so nothing decided downstream holds either.
			if err := parse(ts, e); err != nil {
				return res, err
			}
			e.cacheEntry = cacheEntry{rules: rid}
			if rules == nil {
				e.relabel = relabelUnchanged
				e.setLabelStats(ts.Labels)
			}
		}
		// Fast path: a series whose every decision is known and still holds is
		// forwarded (or dropped) without its labels being read.
		if !dry && (e.relabel == relabelDropped ||
			((e.relabel == relabelUnchanged || e.relabel == relabelMasked) &&
				(lim == nil || e.withinLabelLimits(lim)) &&
				(st.Observer == nil || e.observed == observed) &&
				(!guarded || e.guarded == guardGen) &&
				(!admitting || e.admitted == admitGen) &&
				(!folding || e.folded == foldEpoch))) {
			if h.cache != nil && (!e.known || e.cacheEntry != before) {
				h.cache.put(cacheKey{t, e.raw}, e.cacheEntry, now)
			}
			out := outRaw
			switch e.relabel {
			case relabelDropped:
				sc.addRelabeled("drop")
				sc.addDiscard(limits.ReasonRelabelDrop, false, int(ts.Samples))
				res.modified = true
				if firstEnforced == "" {
					firstEnforced = limits.ReasonRelabelDrop
				}
				continue
			case relabelMasked:
				sc.addRelabeled("rewrite")
				out = outMasked
				res.modified = true
			}
			tss[kept] = *ts
			tss[kept].out, tss[kept].mask = out, e.mask
			kept++
			res.forwardSeries++
			res.forwardSamples += int(ts.Samples)
			continue
		}
		if err := parse(ts, e); err != nil {
			return res, err
		}
		labels := ts.Labels
		metric := metricName(labels)
		out, guardRewrote, guardAction := outRaw, false, limits.GuardAction("")
		drop := limits.Reason("")

		if e.relabel == relabelMasked && e.reordered {
			// A mask is by position in label fields as received, which these
			// sorted labels are not (only a key collision leads here).
			e.relabel = relabelChanged
		}
		if rules != nil {
			switch e.relabel {
			case relabelUnchanged:
			case relabelDropped:
				drop = limits.ReasonRelabelDrop
				sc.addRelabeled("drop")
			case relabelMasked:
				sc.addRelabeled("rewrite")
				if !dry {
					sc.buf = maskLabels(labels, e.mask, sc.buf[:0])
					labels, out = sc.buf, outMasked
					metric = metricName(labels)
				} else if h.cfg.DryRun != nil {
					sc.buf = maskLabels(labels, e.mask, sc.buf[:0])
					h.cfg.DryRun.Record(t, h.outputKey(sc.buf, &sc.hashBuf), e.raw, false, now)
				}
			default:
				relabeled, keep, changed := rules.Apply(labels, sc.buf[:0])
				if changed {
					// Built in sc.buf (grown if needed). Unchanged, it is the
					// series' own labels, which must never become scratch space.
					sc.buf = relabeled[:0]
				}
				switch {
				case !keep:
					e.relabel = relabelDropped
					drop = limits.ReasonRelabelDrop
					sc.addRelabeled("drop")
				case changed:
					sc.addRelabeled("rewrite")
					relabeledMetric := metricName(relabeled)
					if dry && h.cfg.DryRun != nil {
						h.cfg.DryRun.Record(t, h.outputKey(relabeled, &sc.hashBuf), e.raw, false, now)
					}
					if e.relabel != relabelChanged {
						e.relabel = relabelChanged
						// Removing labels from sorted label fields that come first
						// is remembered as a mask, so that the next time neither the
						// rules run nor the labels are read.
						if m, ok := removedMask(labels, relabeled); ok && ts.rest != 0 && !e.reordered && relabeledMetric != "" {
							e.relabel, e.mask = relabelMasked, m
							e.setLabelStats(relabeled)
						}
					}
					if !dry {
						labels, out, metric = relabeled, outLabels, relabeledMetric
						if e.relabel == relabelMasked {
							out = outMasked
						}
						if metric == "" {
							drop = limits.ReasonInvalidSeries
						}
					}
				default:
					e.relabel = relabelUnchanged
					e.setLabelStats(labels)
				}
			}
		}
		if drop == "" && lim != nil {
			drop = limits.CheckLabels(lim, labels)
		}
		// The series identity the stages share: the hash of the labels as
		// forwarded (in dry run, as received), computed only when a stage needs
		// it, which for a known series is once per period.
		var hash uint64
		if drop == "" && ((st.Observer != nil && e.observed != observed) || (admitting && e.admitted != admitGen)) {
			hash = hashLabels(labels, &sc.hashBuf)
		}
		if drop == "" {
			if st.Observer != nil && e.observed != observed {
				st.Observer.Observe(t, metric, labels, hash)
				e.observed = observed
			}
			if guarded && e.guarded != guardGen {
				g, gr := checker.Check(metric, labels, sc.buf2[:0])
				switch gr.Outcome {
				case guard.Pass:
					e.guarded = guardGen
				case guard.Drop:
					drop = limits.ReasonLabelGuard
				case guard.Rewritten:
					sc.addRelabeled(string(gr.Action))
					if !dry {
						sc.buf2 = g[:0]
						labels, out, guardRewrote, guardAction = g, outLabels, true, gr.Action
						hash = hashLabels(labels, &sc.hashBuf)
					} else if h.cfg.DryRun != nil && gr.Action == limits.GuardAggregate {
						h.cfg.DryRun.Record(t, h.outputKey(g, &sc.hashBuf), e.raw, true, now)
					}
				}
			}
		}
		pending := -1
		if drop == "" && admitting && e.admitted != admitGen {
			// A series the guard rewrote is admitted under the hash of its
			// rewritten labels, which depends on the guard's state: not remembered.
			// A series new to this replica is decided after the loop, with the
			// request's other new series, and remembered from its next request.
			var deferred bool
			if drop, deferred = admit.Defer(metric, hash); deferred {
				pending = len(sc.pending)
				sc.pending = append(sc.pending, pendingAdmission{out: -1, fold: -1, samples: int(ts.Samples)})
				sc.cands = append(sc.cands, limits.Candidate{Hash: hash, Metric: metric})
			} else if drop == "" && !guardRewrote {
				e.admitted = admitGen
			}
		}
		var foldBy aggregate.Source
		var foldKey, foldSeed uint64
		if drop == "" {
			foldBy, foldKey, foldSeed = h.foldDecision(t, e, labels, guardRewrote, guardFolds && guardAction == limits.GuardAggregate, folding, foldEpoch, &sc.hashBuf, now)
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
			sc.addDiscard(drop, dry, int(ts.Samples))
			if !dry {
				res.modified = true
				if firstEnforced == "" {
					firstEnforced = drop
				}
				continue
			}
		}
		if foldBy != 0 {
			// Aggregated instead of forwarded: the output series is written by
			// the aggregator at the end of its interval.
			start := len(sc.arena)
			sc.arena = append(sc.arena, labels...)
			sc.folds = append(sc.folds, fold{
				s: *ts, labels: sc.arena[start:len(sc.arena):len(sc.arena)],
				key: foldKey, in: e.raw, seed: foldSeed, metric: metric, source: foldBy,
			})
			if pending >= 0 {
				sc.pending[pending].fold = len(sc.folds) - 1
			}
			res.modified = true
			continue
		}
		if out != outRaw {
			res.modified = true
		}
		if out == outLabels {
			// The stage buffers are reused for the next series: keep a copy.
			start := len(sc.arena)
			sc.arena = append(sc.arena, labels...)
			labels = sc.arena[start:len(sc.arena):len(sc.arena)]
		}
		if pending >= 0 {
			sc.pending[pending].out = kept
		}
		tss[kept] = *ts
		tss[kept].out, tss[kept].mask = out, e.mask
		if out == outLabels {
			tss[kept].Labels = labels
		}
		kept++
		res.forwardSeries++
		res.forwardSamples += int(ts.Samples)
	}
	if len(sc.cands) > 0 {
		admit.Resolve(sc.cands)
		kept = settleAdmissions(sc, tss, kept, dry, &res, &firstEnforced)
	}
	if streams && kept > 0 && dry {
		if err := h.streamObserve(t, b, tss[:kept], &sc.streams); err != nil {
			return res, err
		}
	} else if streams && kept > 0 {
		var err error
		if kept, err = h.streamAggregate(t, b, tss[:kept], &sc.streams, &res); err != nil {
			return res, err
		}
	}
	if res.modified {
		b.series = tss[:kept]
	}
	if len(sc.folds) > 0 {
		h.addFolds(t, b, sc, lim)
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

// removedMask reports whether out is in with some labels removed and nothing
// else changed, and which ones (bit i for in[i]).
func removedMask(in, out []prompb.Label) (uint32, bool) {
	if len(in) > 32 || len(out) >= len(in) {
		return 0, false
	}
	var m uint32
	j := 0
	for i := range in {
		if j < len(out) && in[i] == out[j] {
			j++
			continue
		}
		m |= 1 << i
	}
	return m, j == len(out)
}

// maskLabels appends to dst the labels of in whose bit in m is clear.
func maskLabels(in []prompb.Label, m uint32, dst []prompb.Label) []prompb.Label {
	for i := range in {
		if m&(1<<i) == 0 {
			dst = append(dst, in[i])
		}
	}
	return dst
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
