package queryaudit

import (
	"sync/atomic"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Verdicts of a SourceCheck.
const (
	VerdictUsed    = "used"
	VerdictUnused  = "unused"
	VerdictUnknown = "unknown"
)

// SourceCheck is what one source of usage says about one metric: the reads
// through cardguard ("queries"), the dashboards and rule files ("assets"), or
// VictoriaMetrics' own count of reads ("victoriametrics"), which also sees
// reads that bypass cardguard.
type SourceCheck struct {
	Source string `json:"source"`
	// Available is false when the source could not be asked (VictoriaMetrics
	// does not track its stats, no assets are configured); Reason says why.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// Verdict is "used", "unused", or "unknown" when the source cannot tell
	// (unavailable, or its list of names is incomplete).
	Verdict string `json:"verdict"`
	// Detail is the source's evidence: the assets naming the metric, the
	// number of reads VictoriaMetrics counted.
	Detail any `json:"detail,omitempty"`
}

// MetricChecker is another source of usage, asked by MetricDetail. It must be
// safe for concurrent use and answer quickly (no network call).
type MetricChecker interface {
	CheckMetric(t tenant.ID, metric string) SourceCheck
}

// checkers are the MetricCheckers MetricDetail asks.
type checkers struct {
	p atomic.Pointer[[]MetricChecker]
}

// SetCheckers sets the other sources of usage MetricDetail reports beside the
// reads through cardguard. Safe to call while reports are served.
func (r *Recorder) SetCheckers(cs ...MetricChecker) {
	r.checkers.p.Store(&cs)
}

// checks asks every source about metric; the reads through cardguard come
// first.
func (r *Recorder) checks(t tenant.ID, metric string, queries uint64) []SourceCheck {
	own := SourceCheck{Source: "queries", Available: true, Verdict: VerdictUnused, Detail: map[string]uint64{"queries": queries}}
	if queries > 0 {
		own.Verdict = VerdictUsed
	}
	out := []SourceCheck{own}
	if cs := r.checkers.p.Load(); cs != nil {
		for _, c := range *cs {
			out = append(out, c.CheckMetric(t, metric))
		}
	}
	return out
}
