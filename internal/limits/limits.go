// Package limits holds cardguard's per-tenant limits: the model (defaults plus
// per-tenant overrides), the decisions taken on the ingestion hot path with stable
// reason IDs, the accounting of every discarded sample, the limits API and the
// persistence of the overrides made through it.
//
// The pieces:
//
//   - Limits is one flat struct decoded from YAML (config file) or JSON (API). An
//     override is partial: it is decoded on top of a copy of the defaults.
//   - Registry answers For(tenant) without locks and takes changes from the config file
//     (Reload), the API (Set, Replace, Delete) and other replicas (Apply).
//   - Enforcer keeps the per-tenant state the decisions need: a token bucket for the
//     ingestion rate (AllowSamples, once per request) and an exact membership set of
//     the series seen in the window (Admitter.Admit, once per series), and accounts
//     every discarded sample (RecordDiscard).
//   - CheckLabels checks the label limits of one series; it keeps no state.
//   - API serves /limits and /limits/{tenant}.
package limits

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Mode says whether limits act on traffic or only report what they would do.
type Mode string

const (
	// ModeEnforce drops or rejects what is over a limit.
	ModeEnforce Mode = "enforce"
	// ModeDryRun forwards everything and counts what would have been dropped.
	ModeDryRun Mode = "dry_run"
)

// OnLimit says how a remote-write request with series over a series or label limit is
// answered. Either way the other series of the request are forwarded.
type OnLimit string

const (
	// OnLimitDrop drops the offending series and answers 2xx, like vmagent.
	OnLimitDrop OnLimit = "drop"
	// OnLimitReject drops the offending series and answers 400 naming the limit, like
	// Mimir. Prometheus then drops the whole batch on its side.
	OnLimitReject OnLimit = "reject"
)

// GuardAction is what the label guard does with a label over max_values_per_label.
type GuardAction string

const (
	// GuardAggregate folds series over the limit into one series per metric and
	// remaining labels, whose label has the value LabelGuard.OverflowValue, and
	// aggregates them (counters: the sum of their increases) so that sums, rates
	// and quantiles stay true. The default.
	GuardAggregate GuardAction = "aggregate"
	// GuardOverflowValue replaces the label's value by LabelGuard.OverflowValue
	// and forwards the series as they are: series that then share their labels
	// interleave their samples in one series, which corrupts counters.
	GuardOverflowValue GuardAction = "overflow_value"
	// GuardDropLabel removes the label from the series, with the same effect on
	// counters as GuardOverflowValue.
	GuardDropLabel GuardAction = "drop_label"
	// GuardDropSeries drops the series.
	GuardDropSeries GuardAction = "drop_series"
)

// DefaultGuardOverflowValue is the default LabelGuard.OverflowValue.
const DefaultGuardOverflowValue = "__cardguard_overflow__"

// LabelGuard bounds the number of distinct values a label may take per metric. It is
// the policy internal/guard applies; the zero value is off. It is a plain value: the
// guard only reads it.
type LabelGuard struct {
	// MaxValuesPerLabel is the number of distinct values a label of one metric may
	// take in the window; 0 turns the guard off.
	MaxValuesPerLabel int `yaml:"max_values_per_label" json:"max_values_per_label"`
	// Action is aggregate (the default), overflow_value, drop_label or drop_series.
	Action GuardAction `yaml:"action" json:"action"`
	// OverflowValue replaces values over the limit when Action is aggregate or
	// overflow_value.
	OverflowValue string `yaml:"overflow_value" json:"overflow_value"`
	// ExemptLabels are label names the guard never touches.
	ExemptLabels []string `yaml:"exempt_labels" json:"exempt_labels"`
	// ExemptMetrics are metric names the guard never touches.
	ExemptMetrics []string `yaml:"exempt_metrics" json:"exempt_metrics"`
}

// Limits are the limits of one tenant. For every numeric limit 0 means unlimited.
//
// A *Limits handed out by Registry.For is shared and must not be modified; copy it
// (Clone) to derive another.
type Limits struct {
	// MaxSeries is the number of distinct series the tenant may have in the window.
	MaxSeries int `yaml:"max_series" json:"max_series"`
	// MaxSeriesPerMetric is the number of distinct series one metric name of the
	// tenant may have in the window.
	MaxSeriesPerMetric int `yaml:"max_series_per_metric" json:"max_series_per_metric"`
	// IngestionRate is the sustained number of samples per second.
	IngestionRate float64 `yaml:"ingestion_rate" json:"ingestion_rate"`
	// IngestionBurst is the token bucket size in samples; 0 means one second of
	// IngestionRate (at least 1).
	IngestionBurst int `yaml:"ingestion_burst" json:"ingestion_burst"`
	// MaxLabelsPerSeries counts labels including __name__.
	MaxLabelsPerSeries int `yaml:"max_labels_per_series" json:"max_labels_per_series"`
	// MaxLabelNameLength is in bytes.
	MaxLabelNameLength int `yaml:"max_label_name_length" json:"max_label_name_length"`
	// MaxLabelValueLength is in bytes.
	MaxLabelValueLength int `yaml:"max_label_value_length" json:"max_label_value_length"`
	// MaxRequestBytes bounds the compressed remote-write body.
	MaxRequestBytes int64 `yaml:"max_request_bytes" json:"max_request_bytes"`
	// Mode is enforce or dry_run.
	Mode Mode `yaml:"mode" json:"mode"`
	// OnLimit is drop or reject.
	OnLimit OnLimit `yaml:"on_limit" json:"on_limit"`
	// LabelGuard is the per-label value limit.
	LabelGuard LabelGuard `yaml:"label_guard" json:"label_guard"`
	// Aggregation says what happens to series that relabel rules make equal.
	Aggregation Aggregation `yaml:"aggregation" json:"aggregation"`

	// Read limits (read.go), enforced by internal/readpath.

	// MaxConcurrentQueries is the number of the tenant's queries forwarded at once;
	// as many more wait in a queue, and the rest get 429.
	MaxConcurrentQueries int `yaml:"max_concurrent_queries" json:"max_concurrent_queries"`
	// QueryRate is the sustained number of queries per second.
	QueryRate float64 `yaml:"query_rate" json:"query_rate"`
	// QueryBurst is the query token bucket size; 0 means one second of QueryRate
	// (at least 1).
	QueryBurst int `yaml:"query_burst" json:"query_burst"`
	// MaxQueryLength bounds end - start of a query (plus its longest range selector).
	MaxQueryLength model.Duration `yaml:"max_query_length" json:"max_query_length"`
	// MaxQueryLookback bounds how far back from now a query may read.
	MaxQueryLookback model.Duration `yaml:"max_query_lookback" json:"max_query_lookback"`
	// MaxSeriesPerQuery bounds the series a query's selectors may select, as
	// estimated from cardguard's sketches before the query runs.
	MaxSeriesPerQuery int `yaml:"max_series_per_query" json:"max_series_per_query"`
	// BlockedQueries are refused, exactly as written or by regex.
	BlockedQueries []BlockedQuery `yaml:"blocked_queries" json:"blocked_queries"`
}

// OnCollision is what happens when relabel rules turn distinct series into one.
type OnCollision string

const (
	// CollisionAggregate aggregates the colliding series into one with the
	// semantics of their type. The default.
	CollisionAggregate OnCollision = "aggregate"
	// CollisionKeep forwards them as they are: their samples interleave in one
	// series, which corrupts counters.
	CollisionKeep OnCollision = "keep"
)

// Aggregation is how folded series are aggregated.
type Aggregation struct {
	// OnCollision is aggregate or keep.
	OnCollision OnCollision `yaml:"on_collision" json:"on_collision"`
	// GaugeOutput combines the folded values of a gauge: sum (default), min,
	// max, avg, count or last.
	GaugeOutput string `yaml:"gauge_output" json:"gauge_output"`
}

// Default returns the built-in defaults: the label limits of VictoriaMetrics
// (40 labels, 256-byte names, 4096-byte values), VictoriaMetrics' default
// -maxInsertRequestSize of 32 MiB, no series or rate limit, mode enforce, on_limit drop,
// the label guard off with action aggregate and overflow value
// DefaultGuardOverflowValue, and colliding series aggregated, gauges summed.
func Default() Limits {
	return Limits{
		MaxLabelsPerSeries:  40,
		MaxLabelNameLength:  256,
		MaxLabelValueLength: 4096,
		MaxRequestBytes:     32 << 20,
		Mode:                ModeEnforce,
		OnLimit:             OnLimitDrop,
		LabelGuard: LabelGuard{
			Action:        GuardAggregate,
			OverflowValue: DefaultGuardOverflowValue,
		},
		Aggregation: Aggregation{OnCollision: CollisionAggregate, GaugeOutput: "sum"},
	}
}

// Clone returns a deep copy: decoding into the copy never changes l.
func (l Limits) Clone() Limits {
	c := l
	c.LabelGuard.ExemptLabels = slices.Clone(l.LabelGuard.ExemptLabels)
	c.LabelGuard.ExemptMetrics = slices.Clone(l.LabelGuard.ExemptMetrics)
	c.BlockedQueries = slices.Clone(l.BlockedQueries)
	return c
}

// DryRun reports whether decisions are only counted.
func (l *Limits) DryRun() bool { return l.Mode == ModeDryRun }

// Burst is the effective token bucket size in samples.
func (l *Limits) Burst() float64 {
	if l.IngestionBurst > 0 {
		return float64(l.IngestionBurst)
	}
	return math.Max(1, math.Ceil(l.IngestionRate))
}

// FieldError is a problem with one field of a limits document.
type FieldError struct {
	// Field is the snake_case name as written in YAML or JSON, e.g.
	// "label_guard.action".
	Field string
	// Reason says what is wrong, with the value.
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate returns a *FieldError for the first invalid field, in declaration order.
func (l *Limits) Validate() error {
	nonNeg := []struct {
		name string
		v    int64
	}{
		{"max_series", int64(l.MaxSeries)},
		{"max_series_per_metric", int64(l.MaxSeriesPerMetric)},
	}
	for _, f := range nonNeg {
		if f.v < 0 {
			return fieldErr(f.name, "must be 0 (unlimited) or positive, got %d", f.v)
		}
	}
	if math.IsNaN(l.IngestionRate) || math.IsInf(l.IngestionRate, 0) || l.IngestionRate < 0 {
		return fieldErr("ingestion_rate", "must be 0 (unlimited) or a positive number of samples per second, got %v", l.IngestionRate)
	}
	nonNeg = []struct {
		name string
		v    int64
	}{
		{"ingestion_burst", int64(l.IngestionBurst)},
		{"max_labels_per_series", int64(l.MaxLabelsPerSeries)},
		{"max_label_name_length", int64(l.MaxLabelNameLength)},
		{"max_label_value_length", int64(l.MaxLabelValueLength)},
		{"max_request_bytes", l.MaxRequestBytes},
	}
	for _, f := range nonNeg {
		if f.v < 0 {
			return fieldErr(f.name, "must be 0 (unlimited) or positive, got %d", f.v)
		}
	}
	switch l.Mode {
	case ModeEnforce, ModeDryRun:
	default:
		return fieldErr("mode", "must be %q or %q, got %q", ModeEnforce, ModeDryRun, truncate(string(l.Mode)))
	}
	switch l.OnLimit {
	case OnLimitDrop, OnLimitReject:
	default:
		return fieldErr("on_limit", "must be %q or %q, got %q", OnLimitDrop, OnLimitReject, truncate(string(l.OnLimit)))
	}
	if err := l.LabelGuard.validate(l.MaxLabelValueLength); err != nil {
		return err
	}
	switch l.Aggregation.OnCollision {
	case "", CollisionAggregate, CollisionKeep:
	default:
		return fieldErr("aggregation.on_collision", "must be %q or %q, got %q", CollisionAggregate, CollisionKeep, truncate(string(l.Aggregation.OnCollision)))
	}
	switch l.Aggregation.GaugeOutput {
	case "", "sum", "min", "max", "avg", "count", "last":
	default:
		return fieldErr("aggregation.gauge_output", "must be sum, min, max, avg, count or last, got %q", truncate(l.Aggregation.GaugeOutput))
	}
	return l.validateRead()
}

// AggregatesCollisions reports whether series that relabel rules make equal are
// aggregated.
func (l *Limits) AggregatesCollisions() bool {
	return l.Aggregation.OnCollision != CollisionKeep
}

func (g *LabelGuard) validate(maxValueLen int) error {
	if g.MaxValuesPerLabel < 0 {
		return fieldErr("label_guard.max_values_per_label", "must be 0 (off) or positive, got %d", g.MaxValuesPerLabel)
	}
	if !utf8.ValidString(g.OverflowValue) {
		return fieldErr("label_guard.overflow_value", "must be valid UTF-8, got %q", truncate(g.OverflowValue))
	}
	switch g.Action {
	case GuardAggregate, GuardOverflowValue:
		if g.OverflowValue == "" {
			return fieldErr("label_guard.overflow_value", "must not be empty with action %q", g.Action)
		}
		if maxValueLen > 0 && len(g.OverflowValue) > maxValueLen {
			return fieldErr("label_guard.overflow_value", "is %d bytes, longer than max_label_value_length %d", len(g.OverflowValue), maxValueLen)
		}
	case GuardDropLabel, GuardDropSeries:
	default:
		return fieldErr("label_guard.action", "must be %q, %q, %q or %q, got %q",
			GuardAggregate, GuardOverflowValue, GuardDropLabel, GuardDropSeries, truncate(string(g.Action)))
	}
	for i, n := range g.ExemptLabels {
		if n == "" {
			return fieldErr(fmt.Sprintf("label_guard.exempt_labels[%d]", i), "must not be empty")
		}
	}
	for i, n := range g.ExemptMetrics {
		if n == "" {
			return fieldErr(fmt.Sprintf("label_guard.exempt_metrics[%d]", i), "must not be empty")
		}
	}
	return nil
}

// DecodeYAML decodes a YAML limits document on top of a copy of base, strictly:
// unknown keys are errors. It validates the result. Empty input returns base.
func DecodeYAML(base Limits, data []byte) (Limits, error) {
	l := base.Clone()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&l); err != nil && !errors.Is(err, io.EOF) {
		return Limits{}, fmt.Errorf("decode limits: %w", err)
	}
	if err := l.Validate(); err != nil {
		return Limits{}, err
	}
	return l, nil
}

// DecodeJSON decodes a JSON limits object on top of a copy of base, strictly: unknown
// fields, trailing data and anything but an object are errors, reported as
// *FieldError where a field is known. It validates the result.
func DecodeJSON(base Limits, data []byte) (Limits, error) {
	l := base.Clone()
	if err := decodeJSONStrict(data, &l); err != nil {
		return Limits{}, err
	}
	if err := l.Validate(); err != nil {
		return Limits{}, err
	}
	return l, nil
}

func decodeJSONStrict(data []byte, v any) error {
	if t := bytes.TrimSpace(data); len(t) == 0 || t[0] != '{' {
		return &FieldError{Field: "", Reason: "want a JSON object"}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonFieldError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{Reason: "unexpected data after the JSON object"}
	}
	return nil
}

// jsonFieldError turns encoding/json errors into *FieldError so that the API can name
// the field.
func jsonFieldError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return &FieldError{Field: te.Field, Reason: fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return &FieldError{Field: strings.Trim(name, `"`), Reason: "unknown field"}
	}
	return &FieldError{Reason: "invalid JSON: " + err.Error()}
}

// Config is the limits section of the config file:
//
//	defaults:
//	  max_series: 100000
//	overrides:
//	  "1:0":
//	    max_series: 500000
//
// Unknown keys are errors wherever they are, whatever the outer decoder's settings;
// each override is decoded on top of the decoded defaults.
type Config struct {
	Defaults  Limits
	Overrides map[tenant.ID]Limits
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (c *Config) UnmarshalYAML(n *yaml.Node) error {
	var raw struct {
		Defaults  yaml.Node               `yaml:"defaults"`
		Overrides map[tenant.ID]yaml.Node `yaml:"overrides"`
	}
	if err := strictNode(n, &raw); err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	def := Default()
	if raw.Defaults.Kind != 0 {
		if err := strictNode(&raw.Defaults, &def); err != nil {
			return fmt.Errorf("limits.defaults: %w", err)
		}
	}
	if err := def.Validate(); err != nil {
		return fmt.Errorf("limits.defaults.%w", err)
	}
	c.Defaults = def
	c.Overrides = make(map[tenant.ID]Limits, len(raw.Overrides))
	for t, node := range raw.Overrides {
		l := def.Clone()
		if node.Kind != 0 {
			if err := strictNode(&node, &l); err != nil {
				return fmt.Errorf("limits.overrides[%s]: %w", t, err)
			}
		}
		if err := l.Validate(); err != nil {
			return fmt.Errorf("limits.overrides[%s].%w", t, err)
		}
		c.Overrides[t] = l
	}
	return nil
}

// strictNode decodes n with unknown keys as errors: yaml.Node.Decode cannot be made
// strict, so the node is encoded again and read back by a strict decoder. This is
// config loading, never the hot path.
func strictNode(n *yaml.Node, v any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}

func truncate(s string) string {
	const max = 64
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
