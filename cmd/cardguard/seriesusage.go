package main

import (
	"context"
	"time"

	"github.com/cardguard/cardguard/internal/seriesusage"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/web"
)

// newSeriesUsage builds the series usage book: it learns the selectors of
// every read from the usage recorder and matches them against every series
// the pipeline observes, on the tracker's buckets. Call it after the usage
// recorder and the tracker exist and before ingest.New.
func (a *app) newSeriesUsage() error {
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
		Unseen: func(t tenant.ID) (uint64, uint64) {
			// This replica's reads: the ones its book has seen or not.
			// Asked with every report of one metric: the totals only, not
			// the report of every metric of t.
			tot := a.usage.Totals(t)
			return tot.UnparsedQueries, tot.DroppedEvents
		},
	})
	if err := a.seriesUsage.Register(a.reg); err != nil {
		return err
	}
	a.usage.AddListener(a.seriesUsage)
	a.observers.more = append(a.observers.more, a.seriesUsage)
	return nil
}

// runSeriesUsage forgets expired selectors and idle metrics until ctx ends.
func (a *app) runSeriesUsage(ctx context.Context) {
	a.seriesUsage.Run(ctx, time.Minute)
}

// neverSelected maps each metric of t with series usage to its never-selected
// series.
func (s uiSource) neverSelected(t tenant.ID) map[string]int64 {
	sum := s.a.seriesUsage.Summary(t, 0)
	out := make(map[string]int64, len(sum.Metrics))
	for _, m := range sum.Metrics {
		if m.ActiveSeries > 0 {
			out[m.Metric] = m.NeverSelected
		}
	}
	return out
}

// seriesUsage is the metric page's view of the series report; nil when the
// metric has no series in the reported bucket.
func (s uiSource) seriesUsage(t tenant.ID, name string) *web.SeriesUsage {
	rep, ok := s.a.seriesUsage.Report(t, name)
	if !ok || rep.ActiveSeries == 0 {
		return nil
	}
	su := &web.SeriesUsage{
		ActiveSeries: rep.ActiveSeries, Selected: rep.Selected, NeverSelected: rep.NeverSelected,
		AllSelected: rep.AllSelected, Complete: rep.Bucket.Complete, SelectorsChanged: rep.Bucket.SelectorsChanged,
		Selectors: rep.Selectors,
		Queries:   rep.Coverage.Queries, Since: rep.Coverage.Since,
	}
	for _, x := range rep.Explaining {
		su.Explaining = append(su.Explaining, web.ValueExplain{Label: x.Label, Value: x.Value, Series: x.Series})
	}
	return su
}
