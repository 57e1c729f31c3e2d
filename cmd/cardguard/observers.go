package main

import (
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/tenant"
)

// seriesObserver sees each series the pipeline forwards once per cardinality
// series bucket, after relabeling and before the guard, as the tracker does.
type seriesObserver interface {
	Observe(t tenant.ID, metric string, labels []prompb.Label, seriesHash uint64)
}

// observers is the pipeline's Observer: the cardinality tracker first, then
// every other observer, all on the tracker's period. A series observed in a
// bucket is not observed again until the next one, so an observer that starts
// mid-bucket sees every series only from the next bucket on. The others see
// a series only when the tracker finds it new in its bucket: the pipeline's
// cache skips most repeats, but not those of series that relabeling makes
// equal or that miss a full cache, and the others count series.
type observers struct {
	tracker *cardinality.Tracker
	more    []seriesObserver
}

func (o *observers) Observe(t tenant.ID, metric string, labels []prompb.Label, seriesHash uint64) {
	if !o.tracker.ObserveFirst(t, metric, labels, seriesHash) {
		return
	}
	for _, x := range o.more {
		x.Observe(t, metric, labels, seriesHash)
	}
}

func (o *observers) Epoch() int64 { return o.tracker.Epoch() }
