package readpath

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/upstream"
)

func benchSketches() fakeSketches {
	sk := fakeSketches{series: map[string]int64{}, labels: map[string]map[string]int64{}}
	sk.series["http_requests_total"] = 50_000
	sk.labels["http_requests_total"] = map[string]int64{"job": 20, "instance": 500, "code": 8}
	return sk
}

func allReadLimits() *limits.Limits {
	return limitsWith(func(l *limits.Limits) {
		l.MaxConcurrentQueries, l.QueryRate, l.MaxSeriesPerQuery = 64, 1e9, 100_000
		l.MaxQueryLength, l.MaxQueryLookback = model.Duration(31*24*time.Hour), model.Duration(31*24*time.Hour)
		l.BlockedQueries = []limits.BlockedQuery{{Pattern: `.*\{__name__=~"\.[*+]"\}.*`, Regex: true}}
	})
}

// BenchmarkAdmit is the read limits' decision for one query_range with every read
// limit set: what each query pays before it is forwarded.
func BenchmarkAdmit(b *testing.B) {
	lim := newLimiter(fixedLimits{tA: allReadLimits()}, benchSketches(), prometheus.NewRegistry(), time.Now)
	now := time.Now()
	form := url.Values{
		"query": {`sum by (code) (rate(http_requests_total{job="api"}[5m]))`},
		"start": {formatUnix(now.Add(-6 * time.Hour))}, "end": {formatUnix(now)}, "step": {"60"},
	}
	q := queryArgs{endpoint: "query_range", exprs: form["query"], form: form}
	b.ReportAllocs()
	for b.Loop() {
		release, r := lim.admit(context.Background(), tA, q)
		if r != nil {
			b.Fatal(r.msg)
		}
		release()
	}
}

func formatUnix(t time.Time) string { return time.Unix(t.Unix(), 0).UTC().Format(time.RFC3339) }

// BenchmarkServeQuery is one query_range through the proxy to a fake
// VictoriaMetrics, without read limits and cost recording, and with both, side by
// side in one run: the difference is the per-query cost they add.
func BenchmarkServeQuery(b *testing.B) {
	answer := []byte(`{"status":"success","isPartial":false,"data":{"resultType":"matrix","result":[{"metric":{"code":"200"},"values":[[1700000000,"1"],[1700000060,"2"]]}]},"stats":{"seriesFetched": "20","executionTimeMsec":1}}`)
	vm := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	b.Cleanup(vm.Close)
	s, err := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: vm.URL})
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	target := "/x?" + url.Values{
		"query": {`sum by (code) (rate(http_requests_total{job="api"}[5m]))`},
		"start": {formatUnix(now.Add(-6 * time.Hour))}, "end": {formatUnix(now)}, "step": {"60"},
	}.Encode()
	for _, bc := range []struct {
		name string
		cfg  Config
		rec  UsageRecorder
	}{
		{"plain", Config{}, nil},
		{"limits+costs", Config{Limits: fixedLimits{tA: allReadLimits()}, Sketches: benchSketches()},
			queryaudit.NewRecorder(queryaudit.RecorderConfig{QueueSize: 1 << 20}, nil, nil, nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			p := New(bc.cfg, s, bc.rec, prometheus.NewRegistry(), discardLogger())
			req := httptest.NewRequest("GET", target, nil)
			req.Header.Set("X-Dashboard-Uid", "abc")
			b.ReportAllocs()
			for b.Loop() {
				w := httptest.NewRecorder()
				p.ServeTenant(w, req, tA, false, "api/v1/query_range")
				if w.Code != 200 {
					b.Fatal(w.Code, w.Body)
				}
			}
		})
	}
}
