package queryaudit

import (
	"slices"
	"strings"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MetricUsage is what the reads of the retention window did with one metric:
// the counts, the labels they used and how, and who asked. It is a copy; the
// caller may keep it.
type MetricUsage struct {
	Queries          uint64
	LastQueried      int64 // Unix ms
	AllLabelsQueries uint64
	Labels           []LabelDetail
	// LabelsOverflow counts label uses that were not recorded (over
	// MaxLabelsPerMetric): the labels used are then not all known.
	LabelsOverflow uint64
	Sources        []SourceDetail
}

// Usage returns the usage of every metric t read in the retention window, the
// window and t's totals in it (unparsed and dropped reads). Metrics not read
// in it are absent.
func (r *Recorder) Usage(t tenant.ID) (Window, TenantTotals, map[string]MetricUsage) {
	v := r.view(t, true)
	out := make(map[string]MetricUsage, len(v.metrics))
	for name, mv := range v.metrics {
		mu := MetricUsage{
			Queries: mv.queries, LastQueried: mv.last, AllLabelsQueries: mv.allLabels,
			LabelsOverflow: mv.labelsOverflow, Sources: mv.sources,
		}
		for l, lv := range mv.labels {
			mu.Labels = append(mu.Labels, LabelDetail{Label: l, Uses: lv.uses.Strings(), Queries: lv.queries, LastUsed: msTime(lv.last)})
		}
		slices.SortFunc(mu.Labels, func(a, b LabelDetail) int { return strings.Compare(a.Label, b.Label) })
		out[name] = mu
	}
	return v.window, v.totals, out
}
