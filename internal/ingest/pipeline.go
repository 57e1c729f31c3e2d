package ingest

import (
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Observer records a series for cardinality estimation. Implementations must not
// retain labels beyond the call without cloning them.
type Observer interface {
	Observe(t tenant.ID, metric string, labels []prompb.Label, seriesHash uint64)
}

// Stages are the per-series steps of the pipeline. A nil member is skipped.
type Stages struct {
	Observer Observer
}

func (s *Stages) requestLimit(tenant.ID) int64 { return 0 }

// seriesScratch holds per-request working memory for the series loop.
type seriesScratch struct {
	labels []prompb.Label
}

func (s *seriesScratch) reset() {
	clear(s.labels)
	s.labels = s.labels[:0]
}

// result is what the series loop decided for one request.
type result struct {
	received       int // samples in the request
	forwardSeries  int
	forwardSamples int
	modified       bool  // a series was dropped or rewritten: re-encode
	verdict        error // nil → 204; or the 4xx to answer after forwarding the rest
}

// process runs the stages over every series, filtering wr.Timeseries in place.
func (h *Handler) process(t tenant.ID, tl string, wr *prompb.WriteRequest, sc *seriesScratch) (result, error) {
	var res result
	tss := wr.Timeseries
	for i := range tss {
		ts := &tss[i]
		res.received += len(ts.Samples)
		metric, err := validateSeries(ts.Labels)
		if err != nil {
			return res, err
		}
		hash := hashLabels(ts.Labels)
		if h.stages.Observer != nil {
			h.stages.Observer.Observe(t, metric, ts.Labels, hash)
		}
		res.forwardSeries++
		res.forwardSamples += len(ts.Samples)
	}
	return res, nil
}
