// Package adaptive recommends, previews, applies and reverts reductions of a
// tenant's metrics: drop a metric nothing reads, or aggregate away the labels
// no reader uses. A recommendation is safe by construction: it keeps every
// label any source of evidence (queries through cardguard, dashboards and rule
// files, VictoriaMetrics' own metric name statistics) saw used, and it is
// withheld when a source says the metric is read in a way the others cannot
// explain. Before a rule is applied, it runs in dry run on live traffic and the
// series it would save are counted exactly.
package adaptive

import (
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Source is one kind of evidence of what reads a tenant's metrics.
// Implementations must be safe for concurrent use; the maps returned are the
// caller's.
type Source interface {
	// Name identifies the source in evidence ("queries", "assets", "metric_names_stats").
	Name() string
	// Evidence returns what the source knows of each metric it saw read, and
	// whether it could answer.
	Evidence(t tenant.ID) (map[string]MetricEvidence, SourceStatus)
}

// SourceStatus says whether a source answered and what it covers.
type SourceStatus struct {
	// OK is false when the source could not answer (upstream down, not
	// configured upstream): an "unused" claim cannot rest on it.
	OK bool `json:"ok"`
	// Since is the start of what the source covers (zero: unknown).
	Since time.Time `json:"since,omitzero"`
	// Detail explains a failure or the coverage.
	Detail string `json:"detail,omitempty"`
}

// MetricEvidence is what one source knows of how one metric is read.
type MetricEvidence struct {
	// Reads counts the reads the source saw (0 when it only knows the metric is used).
	Reads uint64
	// Last is the last read the source saw (zero: unknown).
	Last time.Time
	// LabelsKnown is true when the source knows which labels the reads use:
	// Labels and AllLabels are then complete. A source that only counts reads
	// (metric_names_stats) says false.
	LabelsKnown bool
	// AllLabels: some read gets the series with every label (rate(m[5m]),
	// an export, a vector match on all labels); no label may go.
	AllLabels bool
	// Labels maps each label used to how and by whom.
	Labels map[string]LabelEvidence
	// Refs are the readers: queries, dashboard panels, rules, users.
	Refs []Ref
	// NotSummed are reads that combine the metric's series other than by
	// summing them first (count, avg, max, max_over_time, x > 0 …): their
	// answers change when series are aggregated, whatever labels they name.
	// Ref.Name says why.
	NotSummed []Ref
}

// LabelEvidence is how one label of a metric is used.
type LabelEvidence struct {
	// Uses: matcher, grouping, join, function, values.
	Uses []string  `json:"uses"`
	Last time.Time `json:"last,omitzero"`
	// Who are the readers known to use the label (may be empty when the source
	// only keeps who reads the metric).
	Who []Ref `json:"who,omitempty"`
}

// Ref names a reader: a dashboard panel, a rule, a user, a client, or a query.
type Ref struct {
	// Kind: "dashboard", "rule", "user", "client", "query", "asset".
	Kind  string    `json:"kind"`
	Name  string    `json:"name"`
	Query string    `json:"query,omitempty"`
	Last  time.Time `json:"last,omitzero"`
}

// used says whether the evidence shows any read.
func (e MetricEvidence) used() bool {
	return e.Reads > 0 || !e.Last.IsZero() || e.AllLabels || len(e.Labels) > 0 || len(e.Refs) > 0
}
