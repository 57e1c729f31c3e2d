package limits

import (
	"fmt"
	"strconv"
)

// Reason is the stable ID of why samples were discarded (or would have been, in dry
// run). It is the reason label of cardguard_discarded_samples_total and appears in
// the API; never rename one.
type Reason string

// The reasons. The first seven are decided in this package; the last three by other
// stages of the ingestion pipeline, accounted here so that every drop is counted the
// same way.
const (
	ReasonRateLimited         Reason = "rate_limited"
	ReasonMaxSeries           Reason = "max_series"
	ReasonMaxSeriesPerMetric  Reason = "max_series_per_metric"
	ReasonMaxLabelsPerSeries  Reason = "max_labels_per_series"
	ReasonMaxLabelNameLength  Reason = "max_label_name_length"
	ReasonMaxLabelValueLength Reason = "max_label_value_length"
	ReasonMaxRequestSize      Reason = "max_request_size"
	ReasonLabelGuard          Reason = "label_guard"
	ReasonRelabelDrop         Reason = "relabel_drop"
	ReasonInvalidSeries       Reason = "invalid_series"
	ReasonAggregationLimit    Reason = "aggregation_limit"
)

// numReasons is the number of known reasons; reasonIndex maps each to 0..numReasons-1.
const numReasons = 11

// Reasons returns every known reason in a stable order.
func Reasons() []Reason {
	return []Reason{
		ReasonRateLimited, ReasonMaxSeries, ReasonMaxSeriesPerMetric, ReasonMaxLabelsPerSeries,
		ReasonMaxLabelNameLength, ReasonMaxLabelValueLength, ReasonMaxRequestSize,
		ReasonLabelGuard, ReasonRelabelDrop, ReasonInvalidSeries, ReasonAggregationLimit,
	}
}

func reasonIndex(r Reason) int {
	switch r {
	case ReasonRateLimited:
		return 0
	case ReasonMaxSeries:
		return 1
	case ReasonMaxSeriesPerMetric:
		return 2
	case ReasonMaxLabelsPerSeries:
		return 3
	case ReasonMaxLabelNameLength:
		return 4
	case ReasonMaxLabelValueLength:
		return 5
	case ReasonMaxRequestSize:
		return 6
	case ReasonLabelGuard:
		return 7
	case ReasonRelabelDrop:
		return 8
	case ReasonInvalidSeries:
		return 9
	case ReasonAggregationLimit:
		return 10
	}
	return -1
}

// Field returns the limits field an operator changes to avoid r, or "" when r is not
// about a limit (relabel_drop, invalid_series).
func (r Reason) Field() string {
	switch r {
	case ReasonRateLimited:
		return "ingestion_rate"
	case ReasonMaxRequestSize:
		return "max_request_bytes"
	case ReasonLabelGuard:
		return "label_guard.max_values_per_label"
	case ReasonRelabelDrop, ReasonInvalidSeries:
		return ""
	case ReasonAggregationLimit:
		return "aggregation.max_outputs"
	}
	if f, ok := readField(r); ok {
		return f
	}
	return string(r)
}

// Message explains r to the client that sent the data, naming the limit and its
// value in l. It allocates: use it for responses and logs, not per series.
func (r Reason) Message(l *Limits) string {
	const raise = "; raise it with the limits API"
	switch r {
	case ReasonRateLimited:
		return fmt.Sprintf("per-tenant ingestion rate limit of %s samples/s with burst %s reached (ingestion_rate, ingestion_burst)%s",
			strconv.FormatFloat(l.IngestionRate, 'f', -1, 64), strconv.FormatFloat(l.Burst(), 'f', -1, 64), raise)
	case ReasonMaxSeries:
		return fmt.Sprintf("per-tenant series limit of %d reached (max_series)%s", l.MaxSeries, raise)
	case ReasonMaxSeriesPerMetric:
		return fmt.Sprintf("per-metric series limit of %d reached (max_series_per_metric)%s", l.MaxSeriesPerMetric, raise)
	case ReasonMaxLabelsPerSeries:
		return fmt.Sprintf("series has more than %d labels (max_labels_per_series)%s", l.MaxLabelsPerSeries, raise)
	case ReasonMaxLabelNameLength:
		return fmt.Sprintf("label name longer than %d bytes (max_label_name_length)%s", l.MaxLabelNameLength, raise)
	case ReasonMaxLabelValueLength:
		return fmt.Sprintf("label value longer than %d bytes (max_label_value_length)%s", l.MaxLabelValueLength, raise)
	case ReasonMaxRequestSize:
		return fmt.Sprintf("request body larger than %d bytes (max_request_bytes)%s", l.MaxRequestBytes, raise)
	case ReasonLabelGuard:
		return fmt.Sprintf("label has more than %d distinct values for its metric (label_guard.max_values_per_label)%s",
			l.LabelGuard.MaxValuesPerLabel, raise)
	case ReasonRelabelDrop:
		return "series dropped by a relabeling rule"
	case ReasonInvalidSeries:
		return "invalid series: labels must be non-empty, sorted and unique, with __name__"
	case ReasonAggregationLimit:
		return "series folded by a relabel rule or the label guard could not be aggregated: the aggregation state is full (aggregation.max_outputs, aggregation.max_inputs)"
	}
	if m, ok := readMessage(r, l); ok {
		return m
	}
	return "discarded: " + string(r)
}
