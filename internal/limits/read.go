package limits

import (
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/prometheus/common/model"
)

// The read limits are fields of Limits like the write limits: the same defaults and
// overrides, API, dry run and reason IDs. internal/readpath enforces them.

// BlockedQuery is one entry of blocked_queries, in Mimir's shape: a query text that is
// refused exactly as written, or, with Regex, every query the anchored regular
// expression matches.
type BlockedQuery struct {
	Pattern string `yaml:"pattern" json:"pattern"`
	Regex   bool   `yaml:"regex,omitempty" json:"regex,omitempty"`

	re *regexp.Regexp // compiled by Validate; shared by copies, never modified
}

// Matches reports whether query is blocked by b.
func (b *BlockedQuery) Matches(query string) bool {
	if !b.Regex {
		return query == b.Pattern
	}
	re := b.re
	if re == nil { // a Limits built in code, never validated
		var err error
		if re, err = regexp.Compile("^(?:" + b.Pattern + ")$"); err != nil {
			return false
		}
	}
	return re.MatchString(query)
}

// Read-path reasons: why a query was refused (or would have been, in dry run).
// Stable IDs like the write reasons; they label cardguard_refused_queries_total.
const (
	ReasonMaxConcurrentQueries Reason = "max_concurrent_queries"
	ReasonQueryRateLimited     Reason = "query_rate_limited"
	ReasonMaxQueryLength       Reason = "max_query_length"
	ReasonMaxQueryLookback     Reason = "max_query_lookback"
	ReasonMaxSeriesPerQuery    Reason = "max_series_per_query"
	ReasonBlockedQuery         Reason = "blocked_query"
)

// ReadReasons returns every read-path reason in a stable order.
func ReadReasons() []Reason {
	return []Reason{
		ReasonMaxConcurrentQueries, ReasonQueryRateLimited, ReasonMaxQueryLength,
		ReasonMaxQueryLookback, ReasonMaxSeriesPerQuery, ReasonBlockedQuery,
	}
}

// ReadReasonIndex maps a read reason to 0..len(ReadReasons())-1, or -1.
func ReadReasonIndex(r Reason) int {
	for i, x := range ReadReasons() {
		if x == r {
			return i
		}
	}
	return -1
}

// QueryBurstSize is the effective query token bucket size.
func (l *Limits) QueryBurstSize() float64 {
	if l.QueryBurst > 0 {
		return float64(l.QueryBurst)
	}
	return max(1, float64(int64(l.QueryRate+0.999999)))
}

// HasReadLimits reports whether any read limit is set: the read path skips every
// check otherwise.
func (l *Limits) HasReadLimits() bool {
	return l.MaxConcurrentQueries > 0 || l.QueryRate > 0 || l.MaxQueryLength > 0 || l.MaxQueryLookback > 0 ||
		l.MaxSeriesPerQuery > 0 || len(l.BlockedQueries) > 0
}

func (l *Limits) validateRead() error {
	if l.MaxConcurrentQueries < 0 {
		return fieldErr("max_concurrent_queries", "must be 0 (unlimited) or positive, got %d", l.MaxConcurrentQueries)
	}
	if l.QueryRate != l.QueryRate || l.QueryRate < 0 || l.QueryRate > 1e9 {
		return fieldErr("query_rate", "must be 0 (unlimited) or a positive number of queries per second, got %v", l.QueryRate)
	}
	if l.QueryBurst < 0 {
		return fieldErr("query_burst", "must be 0 (one second of query_rate) or positive, got %d", l.QueryBurst)
	}
	if l.MaxQueryLength < 0 {
		return fieldErr("max_query_length", "must be 0 (unlimited) or positive, got %s", l.MaxQueryLength)
	}
	if l.MaxQueryLookback < 0 {
		return fieldErr("max_query_lookback", "must be 0 (unlimited) or positive, got %s", l.MaxQueryLookback)
	}
	if l.MaxSeriesPerQuery < 0 {
		return fieldErr("max_series_per_query", "must be 0 (unlimited) or positive, got %d", l.MaxSeriesPerQuery)
	}
	for i := range l.BlockedQueries {
		b := &l.BlockedQueries[i]
		field := fmt.Sprintf("blocked_queries[%d].pattern", i)
		if b.Pattern == "" {
			return fieldErr(field, "must not be empty")
		}
		if !b.Regex {
			continue
		}
		re, err := regexp.Compile("^(?:" + b.Pattern + ")$")
		if err != nil {
			return fieldErr(field, "invalid regex %q: %v", truncate(b.Pattern), err)
		}
		b.re = re
	}
	return nil
}

// readField is Reason.Field for the read reasons; ok is false for others.
func readField(r Reason) (string, bool) {
	switch r {
	case ReasonQueryRateLimited:
		return "query_rate", true
	case ReasonBlockedQuery:
		return "blocked_queries", true
	case ReasonMaxConcurrentQueries, ReasonMaxQueryLength, ReasonMaxQueryLookback, ReasonMaxSeriesPerQuery:
		return string(r), true
	}
	return "", false
}

// readMessage is Reason.Message for the read reasons; ok is false for others. The
// read path adds the figures of the query (its length, its estimate) itself.
func readMessage(r Reason, l *Limits) (string, bool) {
	const raise = "; ask the operator to raise it with the limits API"
	switch r {
	case ReasonMaxConcurrentQueries:
		return fmt.Sprintf("too many queries of this tenant at once: limit of %d running plus %d waiting reached (max_concurrent_queries)%s",
			l.MaxConcurrentQueries, l.MaxConcurrentQueries, raise), true
	case ReasonQueryRateLimited:
		return fmt.Sprintf("per-tenant query rate limit of %s queries/s with burst %s reached (query_rate, query_burst)%s",
			strconv.FormatFloat(l.QueryRate, 'f', -1, 64), strconv.FormatFloat(l.QueryBurstSize(), 'f', -1, 64), raise), true
	case ReasonMaxQueryLength:
		return fmt.Sprintf("the query time range exceeds the limit of %s (max_query_length)%s", durStr(l.MaxQueryLength), raise), true
	case ReasonMaxQueryLookback:
		return fmt.Sprintf("the query reaches further back than the limit of %s (max_query_lookback)%s", durStr(l.MaxQueryLookback), raise), true
	case ReasonMaxSeriesPerQuery:
		return fmt.Sprintf("the query would select more than the limit of %d series (max_series_per_query)%s", l.MaxSeriesPerQuery, raise), true
	case ReasonBlockedQuery:
		return "the query is blocked for this tenant by the operator (blocked_queries)", true
	}
	return "", false
}

func durStr(d model.Duration) string { return d.String() }

// Duration returns d as a time.Duration.
func Duration(d model.Duration) time.Duration { return time.Duration(d) }
