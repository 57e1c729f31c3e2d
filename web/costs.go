package web

import (
	"strconv"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Costs gives what a tenant's queries cost, for the "Costly queries" panel of the
// tenant page. Optional: without it the panel is left out. Implementations must
// be safe for concurrent use.
type Costs interface {
	CostlyQueries(t tenant.ID, n int) CostlyQueries
}

// CostlyQueries are a tenant's most expensive sources (Grafana dashboards and
// panels, alert rules, clients) and query texts, by time spent, most first.
type CostlyQueries struct {
	Sources []CostRow
	Queries []CostRow
	// Since says how far back the figures go, e.g. "since start".
	Since string
}

// CostRow is one source or query text and what its queries cost.
type CostRow struct {
	Name          string // the source as text, or the query
	Kind          string // source kind: grafana, alert, client, unknown; "" for a query
	Count, Errors uint64
	SumSeconds    float64 // cardguard's measured latency, summed
	AvgSeconds    float64
	SeriesFetched uint64 // VictoriaMetrics' stats.seriesFetched, summed
}

// costlyRows is how many sources and queries the panel shows.
const costlyRows = 10

func (u *UI) costly(t tenant.ID) *CostlyQueries {
	if u.o.Costs == nil {
		return nil
	}
	c := u.o.Costs.CostlyQueries(t, costlyRows)
	return &c
}

// SumText is SumSeconds for the page.
func (c CostRow) SumText() string { return fmtSeconds(c.SumSeconds) }

// AvgText is AvgSeconds for the page.
func (c CostRow) AvgText() string { return fmtSeconds(c.AvgSeconds) }

func fmtSeconds(s float64) string {
	switch {
	case s >= 100:
		return strconv.FormatFloat(s, 'f', 0, 64) + " s"
	case s >= 1:
		return strconv.FormatFloat(s, 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms"
}
