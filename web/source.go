package web

import (
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Tenants lists every tenant the dashboard shows on the overview. Implementations
// must be safe for concurrent use; the returned slice is the caller's.
type Tenants interface {
	Tenants() []TenantRow
}

// Metrics is the per-tenant cardinality and query usage. Implementations must be
// safe for concurrent use; what they return is the caller's.
type Metrics interface {
	// TenantMetrics returns every tracked metric of t, in any order, and the
	// tenant's totals; ok is false when t is unknown.
	TenantMetrics(t tenant.ID) (list MetricList, ok bool)
	// Metric returns one metric of t; ok is false when neither the estimates nor the
	// query usage know it.
	Metric(t tenant.ID, name string) (m MetricDetail, ok bool)
}

// Limits gives a tenant's effective limits with the usage against each.
// Implementations must be safe for concurrent use.
type Limits interface {
	Limits(t tenant.ID) LimitsView
}

// TenantRow is one tenant on the overview.
type TenantRow struct {
	Tenant   string
	Overflow bool // the bucket of tenants over the tracking cap
	// ActiveSeries is the estimate of distinct series in the window; MaxSeries the
	// limit, 0 for none.
	ActiveSeries int64
	MaxSeries    int
	// AdmittedSeries, when HasAdmitted, is the exact count of series the series
	// limiter let through in the window; it is what MaxSeries caps, while
	// ActiveSeries counts every series sent, rejected ones included.
	AdmittedSeries int64
	HasAdmitted    bool
	Churn          float64
	Metrics        int
	// IngestionRate is accepted samples per second; IngestionLimit 0 means none.
	IngestionRate  float64
	IngestionLimit float64
	DryRun         bool
	// Discarded and DryRunDiscarded are samples by reason since start.
	Discarded       map[string]int64
	DryRunDiscarded map[string]int64
	Aggregated      Aggregated
}

// Aggregated is what relabel rules and the label guard fold together in one
// tenant now: InputSeries aggregated into OutputSeries.
type Aggregated struct {
	InputSeries  int64
	OutputSeries int64
	// Collisions counts the output series that relabel rules made distinct
	// input series collide in, since start.
	Collisions uint64
}

// MetricList is every metric of one tenant.
type MetricList struct {
	Tenant       TenantRow
	WindowLabel  string // what "series" counts, e.g. "1h"
	QueryWindow  int    // days of query usage behind Queries and LastQueried
	QueryTotals  uint64
	UnparsedRead uint64
	Rows         []MetricRow
}

// MetricRow is one metric on the tenant page.
type MetricRow struct {
	Name     string
	Overflow bool
	Series   int64
	// Churn is daily series over window series; HasChurn is false where the
	// estimates do not give it per metric.
	Churn       float64
	HasChurn    bool
	Queries     uint64
	LastQueried time.Time // zero: never queried in the query window
	// NeverSelected are the series no recorded selector selects, when
	// HasSeriesUsage (seriesusage.go).
	NeverSelected  int64
	HasSeriesUsage bool
}

// MetricDetail is one metric's page.
type MetricDetail struct {
	Tenant           string
	Name             string
	Overflow         bool
	Series           int64
	Tracked          bool // the estimates know the metric
	Queries          uint64
	LastQueried      time.Time
	AllLabelsQueries uint64 // queries that return or compare whole series
	QueryWindow      int
	Labels           []LabelRow
	// SavedByDroppingUnused estimates the series saved by dropping every label no
	// query used; SavingsNote says how it is computed.
	SavedByDroppingUnused int64
	SavingsNote           string
	Sources               []SourceRow
	SourcesOverflow       uint64
	// Aggregations are the metric's output series being aggregated now, the
	// largest first; AggregationsMore counts those left out of the list, and
	// AggregatedInputs is the input series of all of them.
	Aggregations     []AggregationRow
	AggregationsMore int
	AggregatedInputs int64
	// Rules are the tenant's stream aggregation rules that take series of the
	// metric in the window (in dry run: would take).
	Rules []RuleAggregationRow
	// SeriesUsage is which series the queries select; nil: not known.
	SeriesUsage *SeriesUsage
}

// RuleAggregationRow is one stream aggregation rule's use on one metric.
type RuleAggregationRow struct {
	Rule         string // its name, or its position in the tenant's list
	Interval     string
	Outputs      string // the rule's outputs, comma-separated
	InputSeries  int
	OutputSeries int
	DryRun       bool // counted only: the tenant is in dry run
	Incomplete   bool // the count hit its cap
}

// AggregationRow is one output series into which aggregation folds the
// samples of several input series.
type AggregationRow struct {
	Series string // name{label="value",...}
	Kind   string // counter or gauge
	Output string // total for counters; sum, min, max, avg, count or last for gauges
	Source string // what folded the inputs: relabel or label_guard
	Inputs int
}

// LabelRow is one label of a metric.
type LabelRow struct {
	Name   string
	Values int64   // distinct values in the window
	Share  float64 // Values / series, at most 1
	// Uses says how queries used the label ("matcher", "by", ...); empty when
	// no query did.
	Uses     []string
	Queries  uint64
	LastUsed time.Time
	Guard    *GuardState // nil when the label guard is not acting on it
}

// GuardState is the label guard on one (metric, label) pair.
type GuardState struct {
	AdmittedValues int
	Rejected       uint64
	Since          time.Time
}

// SourceRow is who read a metric.
type SourceRow struct {
	Who         string // dashboard / panel, rule or user, in words
	Queries     uint64
	LastQueried time.Time
}

// LimitsView is one tenant's limits page.
type LimitsView struct {
	Tenant string
	DryRun bool
	Fields []LimitField
	// OverrideError is set when the stored API override no longer applies.
	OverrideError string
}

// LimitField is one limit. Path is its name in the limits API ("max_series",
// "label_guard.action"), which is also the field named by the API's errors.
type LimitField struct {
	Path  string
	Help  string
	Kind  FieldKind
	Value string   // effective value as typed in the form; lists comma-separated
	Enum  []string // choices for KindEnum
	// Source is where the effective value comes from: "default", "file" or "api".
	Source string
	// Usage, when HasUsage, is measured against Limit (0 meaning unlimited), in
	// UsageUnit.
	HasUsage  bool
	Usage     float64
	Limit     float64
	UsageUnit string
	UsageNote string
	// Discarded counts samples dropped for this limit since start.
	Discarded       int64
	DryRunDiscarded int64
}

// FieldKind is how a limit is typed and sent in a JSON merge patch.
type FieldKind string

// Kinds of limits.
const (
	KindInt    FieldKind = "int"
	KindFloat  FieldKind = "float"
	KindEnum   FieldKind = "enum"
	KindString FieldKind = "string"
	KindList   FieldKind = "list"
	// KindJSON is a value typed as JSON, for lists of objects (blocked_queries).
	KindJSON FieldKind = "json"
)
