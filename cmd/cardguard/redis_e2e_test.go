package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// cluster is two cardguard replicas sharing one real Redis, in front of one real
// VictoriaMetrics: each replica is an app with its own data directory and HTTP
// server, as two pods would be.
type cluster struct {
	t     *testing.T
	vm    *vmtest.VM // the single node, or nil in front of a VictoriaMetrics cluster
	be    *backend
	redis *vmtest.Redis
	apps  [2]*app
	srvs  [2]*httptest.Server
	next  int
}

// newCluster is two replicas in front of a single node.
func newCluster(t *testing.T, limitsYAML string) *cluster {
	t.Helper()
	return newClusterOn(t, layoutSingle, limitsYAML)
}

// newClusterOn is two replicas in front of a VictoriaMetrics of the given layout.
func newClusterOn(t *testing.T, layout, limitsYAML string) *cluster {
	t.Helper()
	be := startBackend(t, layout)
	c := &cluster{t: t, vm: be.vm, be: be, redis: vmtest.StartRedis(t)}
	for i := range c.apps {
		cfg := defaultConfig()
		cfg.Upstream = be.upstream()
		multiTenant(limitsYAML)(&cfg)
		be.tenantLabel = cfg.Upstream.TenantLabel
		cfg.State = state.Config{Backend: state.BackendRedis, Redis: state.RedisConfig{
			Addr: c.redis.Addr, SyncInterval: 500 * time.Millisecond, Timeout: 250 * time.Millisecond,
		}}
		a, err := newApp(cfg, testOptions(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.stop)
		srv := httptest.NewServer(a.routes())
		t.Cleanup(srv.Close)
		a.ready.Store(true)
		c.apps[i], c.srvs[i] = a, srv
	}
	return c
}

// push sends one remote-write request to the next replica, round-robin.
func (c *cluster) push(tn string, series []prompb.TimeSeries) int {
	c.t.Helper()
	i := c.next % 2
	c.next++
	body := encodeWR(&prompb.WriteRequest{Timeseries: series})
	req, _ := http.NewRequest(http.MethodPost, c.srvs[i].URL+"/insert/"+tn+"/prometheus/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("push to replica %d: %v", i, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		c.t.Errorf("push to replica %d: %d %s", i, resp.StatusCode, b)
	}
	return resp.StatusCode
}

// pushAll sends series in requests of size, round-robin.
func (c *cluster) pushAll(tn string, series []prompb.TimeSeries, size int) {
	c.t.Helper()
	for i := 0; i < len(series); i += size {
		c.push(tn, series[i:min(len(series), i+size)])
	}
}

// syncAll runs a sync round on every replica, twice, so that each has what the
// other published.
func (c *cluster) syncAll() {
	for range 2 {
		for _, a := range c.apps {
			a.shared.syncer.SyncOnce(context.Background())
		}
	}
}

// tenantValue runs an instant query for tenant tn straight against
// VictoriaMetrics; -1 for an empty result.
func (c *cluster) tenantValue(tn, query string) float64 {
	c.t.Helper()
	c.be.flush()
	return c.be.scalar(tn, query)
}

func (c *cluster) getJSON(i int, path string, v any) {
	c.t.Helper()
	status, body := get(c.t, c.srvs[i].URL+path)
	if status != http.StatusOK {
		c.t.Fatalf("GET %s on replica %d: %d %s", path, i, status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		c.t.Fatalf("GET %s: %v", path, err)
	}
}

func (c *cluster) estimate(i int, tn string) int64 {
	c.t.Helper()
	var resp struct {
		Tenants []struct {
			Tenant       string `json:"tenant"`
			ActiveSeries int64  `json:"activeSeries"`
		} `json:"tenants"`
	}
	c.getJSON(i, "/api/cardguard/v1/cardinality/tenants", &resp)
	for _, ts := range resp.Tenants {
		if ts.Tenant == tn {
			return ts.ActiveSeries
		}
	}
	return 0
}

// TestRedisReplicasShareLimits: two replicas behind a round-robin balancer, in
// front of a single node and of a cluster, enforce one 1,000-series limit,
// existing series keep flowing through both, a limit set on one applies on the
// other within 5s, and both show the same estimates.
func TestRedisReplicasShareLimits(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testRedisReplicasShareLimits(t, newClusterOn(t, layout, "overrides:\n  \"1\":\n    max_series: 1000\n"))
		})
	}
}

func testRedisReplicasShareLimits(t *testing.T, c *cluster) {
	now := time.Now()
	t1 := now.Add(-90 * time.Second).UnixMilli()
	t2 := now.Add(-30 * time.Second).UnixMilli()

	// 3,000 distinct series in 30 requests of 100, alternating replicas.
	c.pushAll("1", genSeries("shared_m", 3000, t1), 100)
	// A second sample of every series, shifted by one request so that each series
	// now reaches the other replica.
	c.push("1", genSeries("shared_warmup", 1, t1))
	c.pushAll("1", genSeries("shared_m", 3000, t2), 100)

	series := c.tenantValue("1", `count(count_over_time(shared_m[5m]))`)
	samples := c.tenantValue("1", `sum(count_over_time(shared_m[5m]))`)
	t.Logf("VictoriaMetrics holds %.0f series and %.0f samples of tenant 1 (limit 1,000 across 2 replicas)", series, samples)
	// Requests answered one after the other are decided exactly (see package
	// state): the tolerance is 0. (The warm-up series came after the limit was
	// reached: refused.)
	if series != 1000 {
		t.Errorf("%.0f series in VictoriaMetrics; want exactly 1,000, not up to 2,000", series)
	}
	if samples != 2*series {
		t.Errorf("%.0f samples for %.0f series: an admitted series was refused on the other replica", samples, series)
	}
	if all := c.be.scalar("", `count(count_over_time(shared_m[5m]))`); all != series {
		t.Errorf("%.0f series of shared_m across tenants, %.0f in tenant 1: a replica wrote outside the tenant", all, series)
	}
	for i, a := range c.apps {
		if n := a.enforcer.SeriesCount(tenant.MustParse("1")); n != 1000 {
			t.Errorf("replica %d counts %d active series; want 1000", i, n)
		}
	}

	// A limit set through replica 0 applies on replica 1 within 5s.
	req, _ := http.NewRequest(http.MethodPatch, c.srvs[0].URL+"/api/cardguard/v1/limits/2", bytes.NewReader([]byte(`{"max_series": 50}`)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PATCH limits on replica 0: %d", resp.StatusCode)
	}
	set := time.Now()
	for {
		var v struct {
			Limits struct {
				MaxSeries int `json:"max_series"`
			} `json:"limits"`
		}
		c.getJSON(1, "/api/cardguard/v1/limits/2", &v)
		if v.Limits.MaxSeries == 50 {
			t.Logf("limit set on replica 0 applied on replica 1 after %s", time.Since(set).Round(time.Millisecond))
			break
		}
		if time.Since(set) > 5*time.Second {
			t.Fatalf("replica 1 still has max_series %d 5s after replica 0 set 50", v.Limits.MaxSeries)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.pushAll("2", genSeries("shared_t2", 120, t2), 10)
	if n := c.tenantValue("2", `count(count_over_time(shared_t2[5m]))`); n != 50 {
		t.Errorf("tenant 2 has %.0f series after its limit of 50 was set through the other replica", n)
	}

	// Both replicas show the same estimates: the union (3,001 series were
	// offered; estimation runs before the limits), not each replica's half.
	c.syncAll()
	e0, e1 := c.estimate(0, "1:0"), c.estimate(1, "1:0")
	t.Logf("estimates of tenant 1: replica 0 %d, replica 1 %d", e0, e1)
	if e0 != e1 || e0 < 2950 || e0 > 3050 {
		t.Errorf("estimates %d and %d; want equal and about 3,001 (HLL, 0.81%% standard error)", e0, e1)
	}
}

// TestRedisOutage: Redis stopped mid-run fails no write and loses nothing;
// restarted empty, the replicas publish their state again and converge.
func TestRedisOutage(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testRedisOutage(t, newClusterOn(t, layout, "overrides:\n  \"1\":\n    max_series: 1000\n"))
		})
	}
}

func testRedisOutage(t *testing.T, c *cluster) {
	now := time.Now()
	t1 := now.Add(-90 * time.Second).UnixMilli()
	t2 := now.Add(-60 * time.Second).UnixMilli()
	t3 := now.Add(-30 * time.Second).UnixMilli()
	c.pushAll("1", genSeries("outage_m", 200, t1), 20)

	c.redis.Stop()
	// Existing series through the other replica, and new ones: all must pass.
	c.push("1", genSeries("outage_warmup", 1, t2))
	c.pushAll("1", genSeries("outage_m", 500, t2), 20)
	for i := range c.apps {
		var errs float64
		for _, op := range []string{"series_admit", "series_publish", "presence"} {
			errs += metricValue(t, &env{t: t, srv: c.srvs[i]}, "cardguard_state_sync_errors_total", map[string]string{"op": op})
		}
		if errs == 0 {
			t.Errorf("replica %d counted no state sync errors while Redis was down", i)
		}
	}
	series := c.tenantValue("1", `count(count_over_time(outage_m[5m]))`)
	samples := c.tenantValue("1", `sum(count_over_time(outage_m[5m]))`)
	if series != 500 || samples != 700 {
		t.Errorf("with Redis down: %.0f series, %.0f samples in VictoriaMetrics; want 500 and 700", series, samples)
	}

	c.redis.Start() // empty: no persistence
	c.pushAll("1", genSeries("outage_m", 500, t3), 20)
	time.Sleep(1200 * time.Millisecond) // past the backoff after failures
	c.syncAll()
	c.syncAll()
	n0, n1 := c.apps[0].enforcer.SeriesCount(tenant.MustParse("1")), c.apps[1].enforcer.SeriesCount(tenant.MustParse("1"))
	t.Logf("after Redis came back: replica 0 counts %d series, replica 1 %d", n0, n1)
	if n0 != 501 || n1 != 501 {
		t.Errorf("after Redis came back the replicas count %d and %d series; want both 501", n0, n1)
	}
	if samples := c.tenantValue("1", `sum(count_over_time(outage_m[5m]))`); samples != 1200 {
		t.Errorf("%.0f samples in VictoriaMetrics; want 1,200: nothing may be lost", samples)
	}
	e0, e1 := c.estimate(0, "1:0"), c.estimate(1, "1:0")
	if e0 != e1 {
		t.Errorf("estimates differ after Redis came back: %d and %d", e0, e1)
	}
}

// TestStateConfig: the state section is strict (a typo is an error, not a
// silently unshared replica) and validated before anything starts.
func TestStateConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, wantErr string
	}{
		{"default is memory", "", ""},
		{"redis", "state:\n  backend: redis\n  redis:\n    addr: redis:6379\n    sync_interval: 1s\n    timeout: 50ms\n", ""},
		{"typo", "state:\n  backend: redis\n  redis:\n    adr: redis:6379\n", "field adr not found"},
		{"no addr", "state:\n  backend: redis\n", "state.redis.addr is required"},
		{"bad backend", "state:\n  backend: etcd\n", `state.backend "etcd"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := t.TempDir() + "/c.yml"
			if err := os.WriteFile(p, []byte(tt.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := loadConfig(p)
			if err == nil {
				err = cfg.validate()
			}
			if tt.wantErr == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// BenchmarkIngestState compares remote-write throughput with the memory state
// and with Redis, in-process against a fake upstream: requests of 1,000 series
// of a tenant with a series limit, either all known (steady) or with 10 new
// series each (churn, where a replica reads the log and publishes before it
// answers).
func BenchmarkIngestState(b *testing.B) {
	upstreamSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer upstreamSrv.Close()
	for _, backend := range []string{"memory", "redis"} {
		for _, churn := range []int{0, 10} {
			name := backend + "/steady"
			if churn > 0 {
				name = fmt.Sprintf("%s/churn%d", backend, churn)
			}
			b.Run(name, func(b *testing.B) {
				cfg := defaultConfig()
				cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: upstreamSrv.URL, Timeout: 5 * time.Second}
				multiTenant("overrides:\n  \"1\":\n    max_series: 10000000\n")(&cfg)
				if backend == "redis" {
					rs := vmtest.StartRedis(b)
					cfg.State = state.Config{Backend: state.BackendRedis, Redis: state.RedisConfig{Addr: rs.Addr}}
				}
				o, err := parseFlags([]string{"-dataDir=" + b.TempDir()}, io.Discard)
				if err != nil {
					b.Fatal(err)
				}
				a, err := newApp(cfg, o, slog.New(slog.DiscardHandler))
				if err != nil {
					b.Fatal(err)
				}
				if err := a.start(b.Context()); err != nil {
					b.Fatal(err)
				}
				defer a.stop()
				h := a.routes()
				ts := time.Now().UnixMilli()
				known := genSeries("bench_m", 1000-churn, ts)
				send := func(body []byte) {
					req := httptest.NewRequest(http.MethodPost, "/insert/1/prometheus/api/v1/write", bytes.NewReader(body))
					req.Header.Set("Content-Encoding", "snappy")
					req.Header.Set("Content-Type", "application/x-protobuf")
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					if rec.Code != http.StatusNoContent {
						b.Fatalf("status %d: %s", rec.Code, rec.Body)
					}
				}
				send(encodeWR(&prompb.WriteRequest{Timeseries: known}))
				steady := encodeWR(&prompb.WriteRequest{Timeseries: known})
				b.ReportAllocs()
				b.SetBytes(int64(len(steady)))
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					body := steady
					if churn > 0 {
						b.StopTimer()
						series := append(known[:len(known):len(known)], genSeries("bench_new", churn, ts)...)
						for j := range churn {
							series[len(known)+j].Labels[1].Value = strconv.Itoa(i*churn + j)
						}
						body = encodeWR(&prompb.WriteRequest{Timeseries: series})
						b.StartTimer()
					}
					send(body)
				}
				b.ReportMetric(float64(b.N)*1000/b.Elapsed().Seconds(), "series/s")
			})
		}
	}
}

// TestRedisConcurrentOvershoot: with 4 clients writing new series at the same
// time, round-robin over two replicas, the shared membership decides each
// request's new series in one atomic step: the tenant ends at its limit
// exactly. Only an admission slower than the timeout (counted in
// cardguard_state_sync_errors_total{op="series_admit"}) lets a replica decide
// alone, and then the bound is the limit plus the new series of the requests
// in flight elsewhere, here (4 - 1) x 100.
func TestRedisConcurrentOvershoot(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			testRedisConcurrentOvershoot(t, newClusterOn(t, layout, "overrides:\n  \"1\":\n    max_series: 1000\n"))
		})
	}
}

func testRedisConcurrentOvershoot(t *testing.T, c *cluster) {
	ts := time.Now().Add(-30 * time.Second).UnixMilli()
	all := genSeries("overshoot_m", 4000, ts)
	const clients, size = 4, 100
	var wg sync.WaitGroup
	var mu sync.Mutex
	for k := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := k * size; i < len(all); i += clients * size {
				mu.Lock()
				srv := c.srvs[c.next%2].URL
				c.next++
				mu.Unlock()
				body := encodeWR(&prompb.WriteRequest{Timeseries: all[i : i+size]})
				req, _ := http.NewRequest(http.MethodPost, srv+"/insert/1/prometheus/api/v1/write", bytes.NewReader(body))
				req.Header.Set("Content-Encoding", "snappy")
				req.Header.Set("Content-Type", "application/x-protobuf")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNoContent {
					t.Errorf("status %d", resp.StatusCode)
				}
			}
		}()
	}
	wg.Wait()
	series := c.tenantValue("1", `count(count_over_time(overshoot_m[5m]))`)
	var timeouts float64
	for i := range c.apps {
		timeouts += metricValue(t, &env{t: t, srv: c.srvs[i]}, "cardguard_state_sync_errors_total", map[string]string{"op": "series_admit"})
	}
	t.Logf("%d clients, %d-series requests, 2 replicas, limit 1,000: %.0f series in VictoriaMetrics, %.0f admissions decided alone", clients, size, series, timeouts)
	switch {
	case timeouts == 0 && series != 1000:
		t.Errorf("%.0f series with every admission decided by Redis; want exactly 1,000", series)
	case series < 1000 || series > 1000+(clients-1)*size:
		t.Errorf("%.0f series; want between 1,000 and %d", series, 1000+(clients-1)*size)
	}
}
