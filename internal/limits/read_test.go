package limits

import (
	"errors"
	"testing"
	"time"
)

func TestReadLimitsDecode(t *testing.T) {
	t.Parallel()
	y := []byte("max_concurrent_queries: 4\nquery_rate: 2.5\nmax_query_length: 30d\nmax_query_lookback: 1w\nmax_series_per_query: 100000\n" +
		"blocked_queries:\n  - pattern: 'up'\n  - pattern: '.*__name__=~\"\\.\\+\".*'\n    regex: true\n")
	l, err := DecodeYAML(Default(), y)
	if err != nil {
		t.Fatal(err)
	}
	if l.MaxConcurrentQueries != 4 || l.QueryRate != 2.5 || Duration(l.MaxQueryLength) != 30*24*time.Hour ||
		Duration(l.MaxQueryLookback) != 7*24*time.Hour || l.MaxSeriesPerQuery != 100000 || len(l.BlockedQueries) != 2 {
		t.Fatalf("decoded %+v", l)
	}
	if l.QueryBurstSize() != 3 {
		t.Errorf("burst = %v, want 3", l.QueryBurstSize())
	}
	for q, want := range map[string]bool{"up": true, "up ": false, `{__name__=~".+"}`: true, `sum({__name__=~".+"})`: true, "x": false} {
		blocked := false
		for i := range l.BlockedQueries {
			blocked = blocked || l.BlockedQueries[i].Matches(q)
		}
		if blocked != want {
			t.Errorf("%q blocked = %v, want %v", q, blocked, want)
		}
	}
	j, err := DecodeJSON(l, []byte(`{"max_query_length": "2h", "query_burst": 10}`))
	if err != nil {
		t.Fatal(err)
	}
	if Duration(j.MaxQueryLength) != 2*time.Hour || j.QueryBurstSize() != 10 || !j.HasReadLimits() {
		t.Errorf("json decoded %+v", j)
	}
	if d := Default(); d.HasReadLimits() {
		t.Error("the defaults set a read limit")
	}
}

func TestReadLimitsValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ body, field string }{
		{`{"max_concurrent_queries": -1}`, "max_concurrent_queries"},
		{`{"query_rate": -1}`, "query_rate"},
		{`{"query_burst": -1}`, "query_burst"},
		{`{"max_series_per_query": -5}`, "max_series_per_query"},
		{`{"blocked_queries": [{"pattern": ""}]}`, "blocked_queries[0].pattern"},
		{`{"blocked_queries": [{"pattern": "up"}, {"pattern": "(", "regex": true}]}`, "blocked_queries[1].pattern"},
	} {
		_, err := DecodeJSON(Default(), []byte(tt.body))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tt.field {
			t.Errorf("%s: err %v, want a field error on %s", tt.body, err, tt.field)
		}
	}
	if _, err := DecodeJSON(Default(), []byte(`{"max_query_length": "soon"}`)); err == nil {
		t.Error("an invalid duration was accepted")
	}
}

func TestReadReasons(t *testing.T) {
	t.Parallel()
	l := Default()
	l.QueryRate, l.MaxSeriesPerQuery = 5, 1000
	seen := map[Reason]bool{}
	for i, r := range ReadReasons() {
		if seen[r] || ReadReasonIndex(r) != i || reasonIndex(r) >= 0 {
			t.Errorf("%s: duplicate or also a write reason", r)
		}
		seen[r] = true
		if r.Field() == "" || r.Message(&l) == "discarded: "+string(r) {
			t.Errorf("%s: no field or message", r)
		}
	}
	if got := ReasonQueryRateLimited.Message(&l); got != "per-tenant query rate limit of 5 queries/s with burst 5 reached (query_rate, query_burst); ask the operator to raise it with the limits API" {
		t.Errorf("message %q", got)
	}
}
