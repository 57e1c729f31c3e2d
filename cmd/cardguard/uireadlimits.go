package main

import (
	"encoding/json"
	"strconv"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/web"
)

// readLimitDefs are the read limits on the Limits page.
func readLimitDefs() []limitDef {
	return []limitDef{
		{"max_concurrent_queries", "queries forwarded at once; as many more wait, then 429", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxConcurrentQueries) }},
		{"query_rate", "sustained queries per second; over it, 429", web.KindFloat, nil, func(l *limits.Limits) string { return strconv.FormatFloat(l.QueryRate, 'f', -1, 64) }},
		{"query_burst", "token bucket size in queries; 0 is one second of the rate", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.QueryBurst) }},
		{"max_query_length", "longest time range of a query (30d, 12h); 0s is unlimited", web.KindString, nil, func(l *limits.Limits) string { return l.MaxQueryLength.String() }},
		{"max_query_lookback", "how far back a query may read (30d, 12h); 0s is unlimited", web.KindString, nil, func(l *limits.Limits) string { return l.MaxQueryLookback.String() }},
		{"max_series_per_query", "series a query may select, estimated before it runs", web.KindInt, nil, func(l *limits.Limits) string { return intStr(l.MaxSeriesPerQuery) }},
		{"blocked_queries", `JSON list of {"pattern": ..., "regex": true|false}`, web.KindJSON, nil, func(l *limits.Limits) string {
			if len(l.BlockedQueries) == 0 {
				return "[]"
			}
			b, _ := json.Marshal(l.BlockedQueries)
			return string(b)
		}},
	}
}

// readUsageFor shows, beside a read limit, the queries it refused since start and
// what a query-concurrency limit is measured against.
func (s uiSource) readUsageFor(f *web.LimitField, t tenant.ID, l *limits.Limits) {
	lim := s.a.proxy.Limiter()
	if lim == nil {
		return
	}
	enf, dry := lim.Refusals(t)
	var n, d int64
	for _, r := range limits.ReadReasons() {
		if r.Field() == f.Path {
			n, d = n+enf[r], d+dry[r]
		}
	}
	if f.Path == "max_concurrent_queries" {
		running, waiting := lim.InFlight(t)
		f.HasUsage, f.Limit, f.Usage = true, float64(l.MaxConcurrentQueries), float64(running)
		if waiting > 0 {
			f.UsageNote = strconv.Itoa(waiting) + " waiting"
		}
	}
	note := ""
	if n > 0 {
		note = strconv.FormatInt(n, 10) + " queries refused since start"
	}
	if d > 0 {
		if note != "" {
			note += "; "
		}
		note += strconv.FormatInt(d, 10) + " would be refused (dry run)"
	}
	if note != "" {
		if f.UsageNote != "" {
			f.UsageNote += "; "
		}
		f.UsageNote += note
	}
}

// CostlyQueries serves the tenant page's "Costly queries" panel from the top
// queries of the query usage recorder.
func (s uiSource) CostlyQueries(t tenant.ID, n int) web.CostlyQueries {
	top := s.a.usage.TopQueries(t, n)
	out := web.CostlyQueries{Since: "since start (entries idle for " + top.MaxLifetime + " are forgotten)"}
	row := func(e queryaudit.TopQueryEntry, name string) web.CostRow {
		return web.CostRow{Name: name, Count: e.Count, Errors: e.Errors, SumSeconds: e.SumDurationSeconds,
			AvgSeconds: e.AvgDurationSeconds, SeriesFetched: e.SumSeriesFetched}
	}
	for _, e := range top.TopSourcesBySumDuration {
		r := row(e, "unknown client")
		if e.Source != nil {
			r.Name, r.Kind = sourceWords(*e.Source), e.Source.Kind
		}
		out.Sources = append(out.Sources, r)
	}
	for _, e := range top.TopBySumDuration {
		out.Queries = append(out.Queries, row(e, e.Query))
	}
	return out
}
