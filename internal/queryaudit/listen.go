package queryaudit

import (
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Read is one read the Recorder attributed, as handed to a ReadListener. It and
// everything it refers to are immutable and may be kept.
type Read struct {
	Tenant tenant.ID
	// Query is the PromQL or MetricsQL expression, or the match[] selectors
	// joined with " or " for series, labels, label values and export reads.
	Query  string
	Source Source
	At     time.Time
	// Extraction is what the query selects, as parsed: every selector with its
	// label uses (and, where the parser gives them, its matchers).
	Extraction Extraction
	// Metrics is the resolved use per metric name: the exact names of the
	// selectors, and the known names a selector without an exact name can match.
	Metrics map[string]MetricUse
}

// MetricUse is what one read does with one metric.
type MetricUse struct {
	// Labels maps each label the read uses to how.
	Labels map[string]LabelUse
	// AllLabels: every label of the series reaches the result.
	AllLabels bool
}

// ReadListener learns of every read the Recorder attributes: a parsed read
// VictoriaMetrics answered 2xx. OnRead runs on the Recorder's goroutine, one
// read at a time, and must not block.
type ReadListener interface {
	OnRead(r *Read)
}

// AddListener adds l to the listeners told of each attributed read. Call it
// before Run.
func (r *Recorder) AddListener(l ReadListener) {
	r.listeners = append(r.listeners, l)
}

func (r *Recorder) notify(ev usageEvent, ex Extraction, uses map[string]*metricRead) {
	if len(r.listeners) == 0 {
		return
	}
	rd := &Read{Tenant: ev.tenant, Query: ev.query, Source: ev.src.clipped(), At: ev.at, Extraction: ex,
		Metrics: make(map[string]MetricUse, len(uses))}
	if ev.kind != readQuery {
		rd.Query = joinMatches(ev.matches)
	}
	for name, mr := range uses {
		rd.Metrics[name] = MetricUse{Labels: mr.labels, AllLabels: mr.all}
	}
	for _, l := range r.listeners {
		l.OnRead(rd)
	}
}

func joinMatches(ms []string) string {
	n := 0
	for _, m := range ms {
		n += len(m) + 4
	}
	b := make([]byte, 0, n)
	for i, m := range ms {
		if i > 0 {
			b = append(b, " or "...)
		}
		b = append(b, m...)
	}
	return string(b)
}
