package ingest

import (
	"slices"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// StreamAggregator runs a tenant's stream aggregation rules (vmagent's
// -streamAggr.config, internal/streamrules) over the series about to be
// forwarded, on their labels as forwarded: after relabel rules and the label
// guard, as vmagent applies -remoteWrite.streamAggr.config after relabeling.
type StreamAggregator interface {
	// Has reports whether t has rules; it is asked once per request, so that
	// tenants without rules pay nothing more.
	Has(t tenant.ID) bool
	// Push hands series to t's rules and returns matched, resized to
	// len(series), with 1 for each series a rule took. It copies what it keeps.
	Push(t tenant.ID, series []prompb.TimeSeries, matched []uint32) []uint32
}

// streamScratch is the per-request memory of the stream aggregation step.
type streamScratch struct {
	series  []prompb.TimeSeries
	labels  []prompb.Label
	samples []prompb.Sample
	ends    []int32 // per series: end of its labels and of its samples, in pairs
	matched []uint32
}

func (s *streamScratch) reset() {
	clear(s.series) // they point into the request
	s.series, s.labels, s.samples, s.ends = s.series[:0], s.labels[:0], s.samples[:0], s.ends[:0]
}

// streamAggregate pushes the series to forward, tss, to t's rules in one batch
// and removes those a rule took (filtering tss in place): they reach
// VictoriaMetrics as the rules' aggregates. It returns how many are left.
func (h *Handler) streamAggregate(t tenant.ID, b *batch, tss []series, sc *streamScratch, res *result) (int, error) {
	if err := sc.build(b, tss); err != nil {
		return 0, err
	}
	sc.matched = h.stages.Streams.Push(t, sc.series, sc.matched)
	kept := 0
	for i := range tss {
		if sc.matched[i] != 0 {
			res.forwardSeries--
			res.forwardSamples -= int(tss[i].Samples)
			res.modified = true
			continue
		}
		tss[kept] = tss[i]
		kept++
	}
	return kept, nil
}

// StreamObserver is a StreamAggregator that can count what its rules would
// take without taking it, for tenants in dry run.
type StreamObserver interface {
	Observe(t tenant.ID, series []prompb.TimeSeries)
}

// streamObserve hands the series to forward to t's rules to be counted only.
func (h *Handler) streamObserve(t tenant.ID, b *batch, tss []series, sc *streamScratch) error {
	o, ok := h.stages.Streams.(StreamObserver)
	if !ok {
		return nil
	}
	if err := sc.build(b, tss); err != nil {
		return err
	}
	o.Observe(t, sc.series)
	return nil
}

// build decodes the labels (as forwarded) and samples of tss into sc.series.
func (sc *streamScratch) build(b *batch, tss []series) error {
	sc.reset()
	for i := range tss {
		ts := &tss[i]
		if err := b.parseLabels(ts); err != nil {
			return err
		}
		if ts.out == outMasked {
			sc.labels = maskLabels(ts.Labels, ts.mask, sc.labels)
		} else {
			sc.labels = append(sc.labels, ts.Labels...)
		}
		sc.samples = appendSamples(sc.samples, b, ts)
		sc.ends = append(sc.ends, int32(len(sc.labels)), int32(len(sc.samples)))
	}
	// The arenas are complete: slice them now that they no longer move.
	sc.series = slices.Grow(sc.series, len(tss))[:len(tss)]
	var l0, s0 int32
	for i := range tss {
		l1, s1 := sc.ends[2*i], sc.ends[2*i+1]
		sc.series[i] = prompb.TimeSeries{Labels: sc.labels[l0:l1:l1], Samples: sc.samples[s0:s1:s1]}
		l0, s0 = l1, s1
	}
	return nil
}
