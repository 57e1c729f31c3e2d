package main

import (
	"context"
	"time"

	"github.com/cardguard/cardguard/internal/seriesusage"
)

// newSeriesUsage builds the series usage book: it learns the selectors of
// every read from the usage recorder and matches them against every series
// the pipeline observes, on the tracker's buckets. Call it after the usage
// recorder and the tracker exist and before ingest.New.
func (a *app) newSeriesUsage() {
	window := a.cfg.Cardinality.Window
	if window == 0 {
		window = time.Hour
	}
	a.seriesUsage = seriesusage.New(seriesusage.Config{
		Retention:             a.cfg.QueryAudit.Retention,
		MaxSelectorsPerMetric: a.cfg.QueryAudit.MaxSelectorsPerMetric,
		MaxNamelessPerTenant:  a.cfg.QueryAudit.MaxNamelessSelectors,
		MaxMetricsPerTenant:   a.cfg.QueryAudit.MaxMetricsPerTenant,
		MaxValues:             a.cfg.QueryAudit.MaxSeriesUsageValues,
		BucketWidth:           a.tracker.BucketWidth(),
		Epoch:                 a.tracker.Epoch,
		Window:                window,
	})
	a.usage.AddListener(a.seriesUsage)
	a.observers.more = append(a.observers.more, a.seriesUsage)
}

// runSeriesUsage forgets expired selectors and idle metrics until ctx ends.
func (a *app) runSeriesUsage(ctx context.Context) {
	a.seriesUsage.Run(ctx, time.Minute)
}
