package ingest

import (
	"context"
	"encoding/binary"
	"hash/maphash"
	"math"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// fold is a series that is aggregated instead of forwarded.
type fold struct {
	s      series         // a copy: the batch is filtered in place
	labels []prompb.Label // output labels, in the scratch arena
	key    uint64         // output series key
	in     uint64         // input series key (seriesKey)
	seed   uint64         // see aggregate.Input.Seed
	metric string
	source aggregate.Source
}

// foldDecision says whether a series that passed every stage is aggregated, and
// under which output key:
//   - one the label guard rewrote with its aggregate action always is: the
//     overflow value makes it share its labels with the other folded series;
//   - with folding on, any other series claims its output once per claims epoch
//     and is aggregated when another input claimed the same output, or the
//     output is aggregated already.
//
// A series that claimed its output alone remembers the epoch in its cache entry.
func (h *Handler) foldDecision(t tenant.ID, e *requestEntry, labels []prompb.Label, guardRewrote, guardAggregate, folding bool, epoch uint16, buf *[]byte, now time.Time) (by aggregate.Source, key, seed uint64) {
	switch {
	case guardRewrote && guardAggregate:
	case guardRewrote, !folding, e.folded == epoch:
		return 0, 0, 0
	}
	key = h.outputKey(labels, buf)
	if guardRewrote {
		return aggregate.SourceGuard, key, 0
	}
	if h.stages.Folder.Has(t, key) {
		return aggregate.SourceRelabel, key, 0
	}
	unique, prev := h.stages.Claims.Claim(t, key, e.raw, now)
	if !unique {
		return aggregate.SourceRelabel, key, prev
	}
	e.folded = epoch
	return 0, 0, 0
}

// outputKey is what aggregation knows an output series by. Seeded, like
// seriesKey: a client cannot search offline for two label sets whose output
// keys collide and so have them aggregated as one.
func (h *Handler) outputKey(labels []prompb.Label, buf *[]byte) uint64 {
	*buf = appendSeriesBytes((*buf)[:0], labels)
	return maphash.Bytes(h.keySeed, *buf)
}

// DryRecorder counts what aggregation would do for tenants in dry run
// (aggregate.DryRun).
type DryRecorder interface {
	Record(t tenant.ID, out, in uint64, byGuard bool, now time.Time)
}

// addFolds hands the folded series to the aggregator. A series it cannot take
// (its state is full) is dropped and counted: forwarding it would interleave its
// samples with the other inputs'.
func (h *Handler) addFolds(t tenant.ID, b *batch, sc *seriesScratch, lim *limits.Limits) {
	var gauge aggregate.GaugeOutput
	if lim != nil {
		gauge = aggregate.GaugeOutput(lim.Aggregation.GaugeOutput)
	}
	for i := range sc.folds {
		f := &sc.folds[i]
		sc.samples = appendSamples(sc.samples[:0], b, &f.s)
		err := h.stages.Folder.Add(t, &aggregate.Input{
			Labels: f.labels, Hash: f.key, Metric: f.metric, Key: f.in, Seed: f.seed,
			Kind: h.kindOf(t, f.metric), Gauge: gauge, Source: f.source,
			Samples: sc.samples,
		})
		if err != nil {
			sc.addDiscard(limits.ReasonAggregationLimit, false, int(f.s.Samples))
			continue
		}
		h.metrics.samplesFolded.WithLabelValues(h.metrics.tenants.Label(t)).Add(float64(len(sc.samples)))
	}
}

// appendSamples appends the samples of s, which the scan checked, to dst.
func appendSamples(dst []prompb.Sample, b *batch, s *series) []prompb.Sample {
	if s.raw == nil {
		return append(dst, b.wr.Timeseries[s.idx].Samples...)
	}
	raw := s.raw
	for i := int(s.msg); i < len(raw); {
		f, err := nextField(raw, i)
		if err != nil {
			break
		}
		if f.num == 2 && f.wt == wtLen {
			dst = append(dst, decodeSample(raw[f.start:f.end]))
		}
		i = f.end
	}
	return dst
}

// decodeSample reads a Sample message that checkSample accepted.
func decodeSample(src []byte) prompb.Sample {
	var s prompb.Sample
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			break
		}
		switch {
		case f.num == 1 && f.wt == wtI64:
			s.Value = math.Float64frombits(binary.LittleEndian.Uint64(src[f.start:f.end]))
		case f.num == 2 && f.wt == wtVarint:
			v, _ := uvarint(src[f.start:f.end])
			s.Timestamp = int64(v)
		}
		i = f.end
	}
	return s
}

// Write sends aggregated series of tenant t to VictoriaMetrics, the way the
// rest of the tenant's writes go: it is the aggregator's sink.
func (h *Handler) Write(ctx context.Context, t tenant.ID, series []prompb.TimeSeries) error {
	wr := prompb.WriteRequest{Timeseries: series}
	body := snappy.Encode(nil, wr.MarshalProtobuf(nil))
	if err := h.fwd.forward(ctx, h.scheme.WriteURL(t), body, "cardguard-aggregate"); err != nil {
		h.metrics.upstreamErrors.Inc()
		return err
	}
	n := 0
	for i := range series {
		n += len(series[i].Samples)
	}
	h.metrics.samplesForwarded.WithLabelValues(h.metrics.tenants.Label(t)).Add(float64(n))
	return nil
}

// TypeSource remembers metric types from remote-write metadata
// (aggregate.Types).
type TypeSource interface {
	Learn(t tenant.ID, family string, typ prompb.MetricType)
	KindOf(t tenant.ID, metric string) aggregate.Kind
}

func (h *Handler) kindOf(t tenant.ID, metric string) aggregate.Kind {
	if h.cfg.Types != nil {
		return h.cfg.Types.KindOf(t, metric)
	}
	return aggregate.KindOf(metric)
}

// learnTypes hands the metadata of b to the type source, which aggregation asks
// how a folded metric's series combine.
func (h *Handler) learnTypes(t tenant.ID, b *batch) {
	b.eachMetadata(func(_ []byte, family string, typ prompb.MetricType) {
		h.cfg.Types.Learn(t, family, typ)
	})
}

// eachMetadata calls f for every metadata entry of b, with the entry's field as
// received (nil for a decoded request), its family and its type.
func (b *batch) eachMetadata(f func(raw []byte, family string, typ prompb.MetricType)) {
	if b.wr != nil {
		for i := range b.wr.Metadata {
			md := &b.wr.Metadata[i]
			f(nil, md.MetricFamilyName, md.Type)
		}
		return
	}
	for _, o := range b.others {
		for i := 0; i < len(o); {
			fl, err := nextField(o, i)
			if err != nil {
				break
			}
			if fl.num == 3 && fl.wt == wtLen {
				family, typ := parseMetadata(o[fl.start:fl.end])
				f(o[i:fl.end], family, typ)
			}
			i = fl.end
		}
	}
}

// parseMetadata reads MetricMetadata { MetricType type = 1; string
// metric_family_name = 2; ... } that the scan checked.
func parseMetadata(src []byte) (family string, typ prompb.MetricType) {
	for i := 0; i < len(src); {
		fl, err := nextField(src, i)
		if err != nil {
			break
		}
		switch {
		case fl.num == 1 && fl.wt == wtVarint:
			v, _ := uvarint(src[fl.start:fl.end])
			typ = prompb.MetricType(v)
		case fl.num == 2 && fl.wt == wtLen:
			family = string(src[fl.start:fl.end])
		}
		i = fl.end
	}
	return family, typ
}
