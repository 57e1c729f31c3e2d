package queryaudit

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"
)

const dashboardQuery = `histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{job="api", handler!~"/health|/metrics"}[5m])))`

// BenchmarkExtract is the parse and walk a read costs the background goroutine
// when the query is not in the cache.
func BenchmarkExtract(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Extract(dashboardQuery); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecord is what the proxy pays on the request goroutine per read: a few
// header lookups and a channel send. A consumer drains the queue as Run would,
// minus the processing, so that the benchmark measures the request side only.
func BenchmarkRecord(b *testing.B) {
	r := NewRecorder(RecorderConfig{QueueSize: 1 << 16}, nil, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.events:
			}
		}
	}()
	form := url.Values{"query": {dashboardQuery}, "start": {"1700000000"}, "end": {"1700003600"}, "step": {"15"}}
	h := http.Header{}
	h.Set("User-Agent", "Grafana/11.2.0")
	h.Set("X-Dashboard-Uid", "abc123")
	h.Set("X-Dashboard-Title", "API latency")
	h.Set("X-Panel-Id", "4")
	h.Set("X-Panel-Title", "p99")
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		r.Record(t1, "query_range", form, h, now)
	}
	b.StopTimer()
	cancel()
	<-done
}

// BenchmarkProcess is the background cost of one repeated dashboard read: a cache
// hit, resolution and aggregation under the lock.
func BenchmarkProcess(b *testing.B) {
	r := NewRecorder(RecorderConfig{}, nil, nil, nil)
	ev := usageEvent{tenant: t1, kind: readQuery, query: dashboardQuery, src: Source{Kind: "grafana", DashboardUID: "abc"}, at: time.Now()}
	r.process(ev)
	b.ReportAllocs()
	for b.Loop() {
		r.process(ev)
	}
}
