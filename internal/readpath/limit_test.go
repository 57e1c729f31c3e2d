package readpath

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

type fixedLimits map[tenant.ID]*limits.Limits

func (f fixedLimits) For(t tenant.ID) *limits.Limits {
	if l := f[t]; l != nil {
		return l
	}
	d := limits.Default()
	return &d
}

// fakeSketches: metric -> series, metric -> label -> distinct values.
type fakeSketches struct {
	series map[string]int64
	labels map[string]map[string]int64
}

func (f fakeSketches) MetricSeries(_ tenant.ID, m string) (int64, bool) {
	n, ok := f.series[m]
	return n, ok
}

func (f fakeSketches) LabelValueCount(_ tenant.ID, m, l string) (int64, bool) {
	ls, ok := f.labels[m]
	if !ok {
		return 0, false
	}
	return ls[l], true
}

func (f fakeSketches) EachMetric(_ tenant.ID, fn func(string, int64) bool) {
	for m, n := range f.series {
		if !fn(m, n) {
			return
		}
	}
}

func limitsWith(mut func(*limits.Limits)) *limits.Limits {
	l := limits.Default()
	mut(&l)
	if err := l.Validate(); err != nil {
		panic(err)
	}
	return &l
}

var (
	tA = tenant.MustParse("1")
	tB = tenant.MustParse("2")
)

// TestLimiterIsolation: tenant A holds its only slot and fills its queue; its next
// query is refused at once, and tenant B, with the same limits, is admitted at
// once: no tenant ever waits for another's slots or tokens.
func TestLimiterIsolation(t *testing.T) {
	t.Parallel()
	l := limitsWith(func(l *limits.Limits) { l.MaxConcurrentQueries = 1; l.QueryRate = 1000 })
	lim := newLimiter(fixedLimits{tA: l, tB: l}, nil, prometheus.NewRegistry(), time.Now)
	lim.queueWait = time.Hour
	q := queryArgs{endpoint: "query", exprs: []string{"up"}, form: url.Values{}}
	releaseA, r := lim.admit(context.Background(), tA, q)
	if r != nil {
		t.Fatal(r.msg)
	}
	queued := make(chan *refusal)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _, r := lim.admit(ctx, tA, q); queued <- r }()
	for { // the second query of A is in the queue
		if _, waiting := lim.InFlight(tA); waiting == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	_, r = lim.admit(context.Background(), tA, q)
	if r == nil || r.status != 429 || r.reason != limits.ReasonMaxConcurrentQueries || r.retryAfter != time.Second {
		t.Fatalf("A over its slot and queue: %+v", r)
	}
	releaseB, r := lim.admit(context.Background(), tB, q)
	if r != nil {
		t.Fatalf("B refused while A is at its limit: %s", r.msg)
	}
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("refusing A and admitting B took %v", d)
	}
	releaseB()
	releaseA()
	if r := <-queued; r != nil {
		t.Errorf("A's queued query was refused after the slot freed: %s", r.msg)
	}
	cancel()
	if enf, _ := lim.Refusals(tA); enf[limits.ReasonMaxConcurrentQueries] != 1 {
		t.Errorf("refusals of A: %v", enf)
	}
	if enf, _ := lim.Refusals(tB); len(enf) != 0 {
		t.Errorf("refusals of B: %v", enf)
	}
}

func TestLimiterDecisions(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	sk := fakeSketches{
		series: map[string]int64{"big": 100_000, "small": 100},
		labels: map[string]map[string]int64{"big": {"instance": 100, "job": 10}, "small": {"job": 10}},
	}
	day := model.Duration(24 * time.Hour)
	tests := []struct {
		name     string
		lim      *limits.Limits
		endpoint string
		form     url.Values
		status   int
		reason   limits.Reason
		msg      string
	}{
		{"no limits", limitsWith(func(*limits.Limits) {}), "query", url.Values{"query": {`{__name__=~".+"}`}}, 0, "", ""},
		{"series over", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 50_000 }), "query",
			url.Values{"query": {`{__name__=~".+"}`}}, 422, limits.ReasonMaxSeriesPerQuery, "about 100100 series"},
		{"series narrowed", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 50_000 }), "query_range",
			url.Values{"query": {`rate(big{instance="a"}[5m])`}, "start": {"1699990000"}, "end": {"1700000000"}}, 0, "", ""},
		{"series over in match[]", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 50_000 }), "series",
			url.Values{"match[]": {`big`}}, 422, limits.ReasonMaxSeriesPerQuery, "max_series_per_query"},
		{"labels not checked for series", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 50_000 }), "labels",
			url.Values{"match[]": {`big`}}, 0, "", ""},
		{"unparsable passes to VictoriaMetrics", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 1 }), "query",
			url.Values{"query": {`sum(`}}, 0, "", ""},
		{"blocked exact", limitsWith(func(l *limits.Limits) { l.BlockedQueries = []limits.BlockedQuery{{Pattern: "up"}} }), "query",
			url.Values{"query": {"up"}}, 422, limits.ReasonBlockedQuery, "blocked_queries"},
		{"blocked regex", limitsWith(func(l *limits.Limits) {
			l.BlockedQueries = []limits.BlockedQuery{{Pattern: `.*__name__=~"\.\+".*`, Regex: true}}
		}), "query", url.Values{"query": {`count({__name__=~".+"})`}}, 422, limits.ReasonBlockedQuery, ""},
		{"range too long", limitsWith(func(l *limits.Limits) { l.MaxQueryLength = day }), "query_range",
			url.Values{"query": {"up"}, "start": {"1699800000"}, "end": {"1700000000"}, "step": {"60"}}, 422, limits.ReasonMaxQueryLength, "max_query_length"},
		{"range of exactly a day, start aligned to step", limitsWith(func(l *limits.Limits) { l.MaxQueryLength = day }), "query_range",
			url.Values{"query": {"up"}, "start": {"1699913580"}, "end": {"1700000000"}, "step": {"60"}}, 0, "", ""},
		{"instant with a long range selector", limitsWith(func(l *limits.Limits) { l.MaxQueryLength = day }), "query",
			url.Values{"query": {"rate(up[2d])"}}, 422, limits.ReasonMaxQueryLength, "query length 48h0m0s"},
		{"subquery reach", limitsWith(func(l *limits.Limits) { l.MaxQueryLookback = day }), "query",
			url.Values{"query": {"max_over_time(rate(up[5m])[20h:1m] offset 5h)"}}, 422, limits.ReasonMaxQueryLookback, "max_query_lookback"},
		{"lookback", limitsWith(func(l *limits.Limits) { l.MaxQueryLookback = day }), "query_range",
			url.Values{"query": {"up"}, "start": {"1699000000"}, "end": {"1699100000"}}, 422, limits.ReasonMaxQueryLookback, ""},
		{"lookback of series", limitsWith(func(l *limits.Limits) { l.MaxQueryLookback = day }), "series",
			url.Values{"match[]": {"up"}, "start": {"2023-11-01T00:00:00Z"}}, 422, limits.ReasonMaxQueryLookback, ""},
		{"lookback ok", limitsWith(func(l *limits.Limits) { l.MaxQueryLookback = day }), "query",
			url.Values{"query": {"rate(up[1h])"}, "time": {"1699990000"}}, 0, "", ""},
		{"dry run refuses nothing", limitsWith(func(l *limits.Limits) { l.MaxSeriesPerQuery = 1; l.Mode = limits.ModeDryRun }), "query",
			url.Values{"query": {"big"}}, 0, "", ""},
	}
	for _, tt := range tests {
		lim := newLimiter(fixedLimits{tA: tt.lim}, sk, prometheus.NewRegistry(), func() time.Time { return now })
		q := queryArgs{endpoint: tt.endpoint, exprs: exprsOf(tt.endpoint, tt.form), form: tt.form}
		release, r := lim.admit(context.Background(), tA, q)
		release()
		switch {
		case tt.status == 0 && r != nil:
			t.Errorf("%s: refused: %s", tt.name, r.msg)
		case tt.status != 0 && r == nil:
			t.Errorf("%s: admitted", tt.name)
		case r != nil && (r.status != tt.status || r.reason != tt.reason || !strings.Contains(r.msg, tt.msg) || r.errorType != "execution"):
			t.Errorf("%s: %+v", tt.name, r)
		}
	}
}

func TestLimiterRate(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	l := limitsWith(func(l *limits.Limits) { l.QueryRate = 0.5; l.QueryBurst = 2 })
	lim := newLimiter(fixedLimits{tA: l}, nil, prometheus.NewRegistry(), func() time.Time { return now })
	q := queryArgs{endpoint: "query", exprs: []string{"up"}, form: url.Values{}}
	for i := range 2 {
		if _, r := lim.admit(context.Background(), tA, q); r != nil {
			t.Fatalf("query %d within the burst refused: %s", i, r.msg)
		}
	}
	_, r := lim.admit(context.Background(), tA, q)
	if r == nil || r.status != 429 || r.reason != limits.ReasonQueryRateLimited || r.retryAfter != 2*time.Second {
		t.Fatalf("over the rate: %+v", r)
	}
	now = now.Add(2 * time.Second)
	if _, r := lim.admit(context.Background(), tA, q); r != nil {
		t.Errorf("after 2 s at 0.5/s: %s", r.msg)
	}
}

func TestEstimate(t *testing.T) {
	t.Parallel()
	sk := fakeSketches{
		series: map[string]int64{"a": 1000, "b": 500, "c": 10},
		labels: map[string]map[string]int64{"a": {"job": 10, "instance": 100}, "b": {"job": 5}, "c": {}},
	}
	e := newEstimator(sk)
	for _, tt := range []struct {
		q    string
		want int64
	}{
		{`a`, 1000},
		{`a{job="x"}`, 100},
		{`a{job="x", instance="y"}`, 1},
		{`a{job=~"x|y|z"}`, 300},
		{`a{job=~"x.*"}`, 1000}, // not a list of values: no narrowing
		{`a{job!="x"}`, 1000},
		{`a{missing="x"}`, 0},
		{`{job="x"}`, 200}, // a: 100, b: 100, c: none has job
		{`{__name__=~"a|b"}`, 1500},
		{`{__name__=~".+"}`, 1510},
		{`a or b{job="1"}`, 1100},
		{`{__name__="a" or __name__="c"}`, 1010},
		{`rate(a[5m]) / on(x) group_left b`, 1500},
		{`WITH (f = a{job="x"}) f + f`, 200},
		{`nope`, 0},
	} {
		n, over := e.estimate(tA, e.plans.get(tt.q), math.MaxInt64)
		if n != tt.want || over {
			t.Errorf("%s: %d (over %v), want %d", tt.q, n, over, tt.want)
		}
	}
	if n, over := e.estimate(tA, e.plans.get(`{__name__=~".+"}`), 1000); !over || n <= 1000 {
		t.Errorf("bounded estimate: %d %v", n, over)
	}
}

// TestProxyRefusalFormat: a refused query is answered in the Prometheus API error
// format with Retry-After where the client should come back, is counted, and
// never reaches VictoriaMetrics.
func TestProxyRefusalFormat(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	hits := 0
	vm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"success","data":{"resultType":"vector","result":[]},"stats":{"seriesFetched": "7","executionTimeMsec":3}}`))
	}))
	t.Cleanup(vm.Close)
	s, err := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: vm.URL})
	if err != nil {
		t.Fatal(err)
	}
	l := limitsWith(func(l *limits.Limits) {
		l.QueryRate = 1
		l.BlockedQueries = []limits.BlockedQuery{{Pattern: "blocked"}}
	})
	rec := &costs{}
	p := New(Config{Limits: fixedLimits{tA: l}}, s, rec, prometheus.NewRegistry(), discardLogger())
	do := func(q string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		p.ServeTenant(w, httptest.NewRequest("GET", "/x?query="+url.QueryEscape(q), nil), tA, false, "api/v1/query")
		return w
	}
	if w := do("blocked"); w.Code != 422 || !strings.Contains(w.Body.String(), `"errorType":"execution"`) ||
		!strings.Contains(w.Body.String(), `"status":"error"`) || !strings.Contains(w.Body.String(), `"error":"the query is blocked`) {
		t.Errorf("blocked: %d %s", w.Code, w.Body)
	}
	if w := do("up"); w.Code != 200 {
		t.Errorf("first: %d %s", w.Code, w.Body)
	}
	w := do("up")
	if w.Code != 429 || w.Header().Get("Retry-After") != "1" || !strings.Contains(w.Body.String(), `"errorType":"too_many_requests"`) ||
		!strings.Contains(w.Body.String(), "query_rate") {
		t.Errorf("over the rate: %d %v %s", w.Code, w.Header(), w.Body)
	}
	if hits != 1 {
		t.Errorf("VictoriaMetrics saw %d queries, want only the admitted one", hits)
	}
	if len(rec.got) != 1 || rec.got[0].SeriesFetched != 7 || rec.got[0].ExecMsec != 3 || rec.got[0].Status != 200 {
		t.Errorf("recorded costs: %+v", rec.got)
	}
}
