package web

import "time"

// SeriesUsage is which series of a metric the queries select: from one series
// bucket, matched against the selectors the queries used.
type SeriesUsage struct {
	ActiveSeries  int64
	Selected      int64
	NeverSelected int64
	// AllSelected: more distinct selectors than are kept, so every series
	// counts as selected.
	AllSelected bool
	// Complete: the figures are from a complete bucket; otherwise from the
	// current one, which has seen only part of the series yet.
	Complete bool
	// SelectorsChanged: selectors were recorded (or expired) during the
	// bucket; series seen before a new selector count as not selected by it.
	SelectorsChanged bool
	// Explaining are label values only never-selected series carry, most
	// series first.
	Explaining []ValueExplain
	Selectors  []string
	// Queries and Since: the selectors come from Queries reads since Since.
	Queries uint64
	Since   time.Time
}

// ValueExplain is a label value only never-selected series carry.
type ValueExplain struct {
	Label, Value string
	Series       int64
}

type seriesUsageView struct {
	SeriesUsage
	SelectedPct, NeverPct float64
}

// QueryNoun is "query" or "queries" after Queries.
func (v *seriesUsageView) QueryNoun() string {
	if v.Queries == 1 {
		return "query"
	}
	return "queries"
}

func newSeriesUsageView(su *SeriesUsage) *seriesUsageView {
	if su == nil {
		return nil
	}
	v := &seriesUsageView{SeriesUsage: *su}
	if su.ActiveSeries > 0 {
		v.SelectedPct = round1(float64(su.Selected) / float64(su.ActiveSeries) * 100)
		v.NeverPct = round1(100 - v.SelectedPct)
	}
	return v
}
