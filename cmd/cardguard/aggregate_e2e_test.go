package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// foldWorkload is the table, compressed in time and with everything
// that makes folding hard: 100 counters req_total{job,user_id} written every 15
// s, one of which resets, ten of which vanish while ten new ones appear, and all
// of which pause for two minutes (a failed scrape) and go on where they would
// have been; a histogram h_bucket{le,user_id} and a gauge g{user_id} over the
// same users. Everything starts from zero, as the counters do.
type foldWorkload struct {
	start time.Time
	steps int
}

const (
	foldStep      = 15 * time.Second
	foldUsers     = 110 // 0..99 from the start, 100..109 from vanishStep
	foldReset     = 7   // user whose counter resets at resetStep
	resetStep     = 10
	vanishStep    = 12 // users 90..99 send nothing from here, 100..109 start
	pauseFrom     = 14 // no samples from pauseFrom to pauseTo (two minutes)
	pauseTo       = 21
	foldStepCount = 45
)

func (w foldWorkload) active(user, step int) bool {
	switch {
	case step >= pauseFrom && step <= pauseTo:
		return false
	case user >= 90 && user < 100:
		return step < vanishStep
	case user >= 100:
		return step >= vanishStep
	}
	return true
}

// counter is user's req_total at step: it rises by 1+user%3 a step from its
// first step, and foldReset's restarts from zero at resetStep.
func (w foldWorkload) counter(user, step int) float64 {
	first := 0
	if user >= 100 {
		first = vanishStep
	}
	from := first
	if user == foldReset && step >= resetStep {
		from = resetStep
	}
	return float64((step - from) * (1 + user%3))
}

var foldBuckets = []string{"0.1", "0.5", "1", "+Inf"}

// bucket is user's h_bucket{le=foldBuckets[b]} at step.
func (w foldWorkload) bucket(user, b, step int) float64 {
	perStep := []int{user % 2, user%2 + 1, user%2 + 1 + user%3, user%2 + 1 + user%3}[b]
	first := 0
	if user >= 100 {
		first = vanishStep
	}
	return float64((step - first) * perStep)
}

func (w foldWorkload) gauge(user, step int) float64 { return float64(user%7) + float64(step)/2 }

func (w foldWorkload) at(step int) time.Time { return w.start.Add(time.Duration(step) * foldStep) }

// request is the remote-write request of one step.
func (w foldWorkload) request(step int) *prompb.WriteRequest {
	ts := w.at(step).UnixMilli()
	wr := &prompb.WriteRequest{}
	add := func(v float64, ls ...string) {
		s := prompb.TimeSeries{Samples: []prompb.Sample{{Value: v, Timestamp: ts}}}
		for i := 0; i < len(ls); i += 2 {
			s.Labels = append(s.Labels, prompb.Label{Name: ls[i], Value: ls[i+1]})
		}
		wr.Timeseries = append(wr.Timeseries, s)
	}
	for u := range foldUsers {
		if !w.active(u, step) {
			continue
		}
		id := fmt.Sprintf("u%04d", u)
		add(w.counter(u, step), "__name__", "req_total", "job", "app", "user_id", id)
		for b, le := range foldBuckets {
			add(w.bucket(u, b, step), "__name__", "h_bucket", "le", le, "user_id", id)
		}
		add(w.gauge(u, step), "__name__", "g", "user_id", id)
	}
	return wr
}

// instant runs query at ts against a Prometheus API root and returns the value
// of its single result (NaN when empty).
func instant(t *testing.T, base, query string, ts time.Time) float64 {
	t.Helper()
	q := url.Values{"query": {query}, "time": {strconv.FormatInt(ts.Unix(), 10)}}
	_, body := get(t, base+"/api/v1/query?"+q.Encode())
	var resp struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("%s: %v: %s", query, err, body)
	}
	if len(resp.Data.Result) != 1 {
		if len(resp.Data.Result) == 0 {
			return math.NaN()
		}
		t.Fatalf("%s: want one result, got %s", query, body)
	}
	f, _ := strconv.ParseFloat(resp.Data.Result[0].Value[1].(string), 64)
	return f
}

func pushTo(t *testing.T, writeURL string, wr *prompb.WriteRequest) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, writeURL, bytes.NewReader(encodeWR(wr)))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("write to %s: status %d", writeURL, resp.StatusCode)
	}
}

// TestAggregationKeepsTheTruth writes the same workload directly to one
// VictoriaMetrics and through cardguard to another, with user_id folded away by
// the label guard's default action and by a labeldrop rule, and compares
// sum(increase()), histogram_quantile() and sum() of both at several times:
// before and after the reset, across the vanishing and appearing inputs, and
// across the pause. The answers must agree within 2%; the workload's own truth
// is checked against the direct VictoriaMetrics too, so that a broken workload
// cannot pass.
func TestAggregationKeepsTheTruth(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
	}{
		{"label guard", func(c *Config) {
			c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 10
		}},
		{"labeldrop", func(c *Config) {
			if err := decodeStrict([]byte("global:\n  - action: labeldrop\n    regex: user_id\n"), &c.Relabel); err != nil {
				panic(err)
			}
		}},
		{"the reference config's user_id rules", func(c *Config) {
			// hashmod user_id into 100 buckets, then labeldrop user_id: the
			// users of one bucket collide.
			ref, err := loadConfig("../../configs/cardguard.yml")
			if err != nil {
				panic(err)
			}
			c.Relabel.Global = ref.Relabel.Tenants[tenant.MustParse("2:0")]
			if len(c.Relabel.Global) == 0 {
				panic("configs/cardguard.yml has no rules for tenant 2:0")
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *Config) {
				tc.mutate(c)
				// Flushes are driven by the test, on the workload's clock.
				c.Aggregation.Interval = time.Hour
			})
			direct := vmtest.StartVM(t)
			w := foldWorkload{start: time.Now().Add(-time.Hour).Truncate(time.Hour), steps: foldStepCount}
			var (
				mu  sync.Mutex
				sim = w.at(0)
			)
			e.app.folds.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return sim })
			for step := range w.steps {
				mu.Lock()
				sim = w.at(step)
				mu.Unlock()
				if wr := w.request(step); len(wr.Timeseries) > 0 {
					pushTo(t, direct.URL+"/api/v1/write", wr)
					pushTo(t, e.srv.URL+"/api/v1/write", wr)
				}
				if err := e.app.folds.Flush(context.Background(), w.at(step), false); err != nil {
					t.Fatal(err)
				}
			}
			direct.Flush()
			e.vm.Flush()
			if in, out := e.app.folds.TenantSeries(e.app.cfg.DefaultTenant); in == 0 || out == 0 {
				t.Errorf("nothing was aggregated: %d inputs, %d outputs", in, out)
			}
			// The API shows each aggregation in force and what made it.
			var api struct {
				Aggregations []struct {
					Metric, Source string
					Inputs         int
				} `json:"aggregations"`
			}
			_, body := get(t, e.srv.URL+"/api/cardguard/v1/aggregations/tenants/"+e.app.cfg.DefaultTenant.String()+"?metric=req_total")
			if err := json.Unmarshal(body, &api); err != nil || len(api.Aggregations) == 0 {
				t.Errorf("aggregations API: %v: %s", err, body)
			}
			for _, ag := range api.Aggregations {
				if ag.Metric != "req_total" || ag.Inputs < 2 {
					t.Errorf("aggregations API lists %+v: want req_total outputs of two inputs or more", ag)
				}
			}
			through := e.vm.URL + "/prometheus"
			check := func(query string, step int, truth float64) {
				t.Helper()
				at := w.at(step)
				d, c := instant(t, direct.URL, query, at), instant(t, through, query, at)
				t.Logf("%-60s step %2d: truth %9.3f direct %9.3f through cardguard %9.3f", query, step, truth, d, c)
				if math.IsNaN(truth) {
					truth = d
				} else if math.Abs(d-truth) > 0.02*math.Abs(truth) {
					t.Errorf("%s at step %d: direct VictoriaMetrics says %v, the workload %v: the test is wrong", query, step, d, truth)
				}
				if math.IsNaN(c) || math.Abs(c-truth) > 0.02*math.Abs(truth)+1e-9 {
					t.Errorf("%s at step %d: through cardguard %v, truth %v", query, step, c, truth)
				}
			}
			increase := func(from, to int) float64 {
				sum := 0.0
				for u := range foldUsers {
					for s := from + 1; s <= to; s++ {
						// Between two samples of the input, or from its start.
						if !w.active(u, s) {
							continue
						}
						prev := s - 1
						for prev >= 0 && !w.active(u, prev) {
							prev--
						}
						cur := w.counter(u, s)
						switch {
						case prev < 0:
							sum += cur
						case cur < w.counter(u, prev):
							sum += cur
						default:
							sum += cur - w.counter(u, prev)
						}
					}
				}
				return sum
			}
			for _, step := range []int{9, 11, 13, 24, 30, 40, 44} {
				from := max(step-20, 0)
				check("sum(increase(req_total[5m]))", step, increase(from, step))
				check("histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))", step, math.NaN())
				check("histogram_quantile(0.5, sum by (le) (rate(h_bucket[5m])))", step, math.NaN())
			}
			for _, step := range []int{5, 9, 11, 40, 44} {
				sum := 0.0
				for u := range foldUsers {
					if w.active(u, step) {
						sum += w.gauge(u, step)
					}
				}
				check("sum(g)", step, sum)
			}
		})
	}
}

// TestAggregatesFlushedOnShutdown: samples that were acknowledged because the
// aggregator held them reach VictoriaMetrics when cardguard stops (as on
// SIGTERM, after the HTTP server has drained), although the interval is far
// from over.
func TestAggregatesFlushedOnShutdown(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 2
		c.Aggregation.Interval = time.Hour
	})
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := &prompb.WriteRequest{}
	for u := range 5 {
		for k := range 2 {
			wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "jobs_total"}, {Name: "user_id", Value: fmt.Sprintf("u%d", u)}},
				Samples: []prompb.Sample{{Value: float64(10 + k*(u+1)), Timestamp: ts + int64(k)*1000}},
			})
		}
	}
	pushTo(t, e.srv.URL+"/api/v1/write", wr)
	e.app.stop()
	// Users 2, 3 and 4 were folded: their increases 3+4+5 are the output's value.
	var got float64
	waitFor(t, 15*time.Second, "the aggregate in VictoriaMetrics", func() bool {
		e.vm.Flush()
		got = vmScalar(t, e, `jobs_total{user_id="__cardguard_overflow__"}`)
		return got != -1
	})
	if got != 12 {
		t.Fatalf("folded series after shutdown: got %v, want 12", got)
	}
	if got := vmScalar(t, e, `count(jobs_total)`); got != 3 {
		t.Fatalf("series after shutdown: got %v, want 3 (u0, u1 and the aggregate)", got)
	}
}

// foldCluster is two cardguard replicas sharing one Redis, each advertising its
// own URL, in front of one VictoriaMetrics.
func foldCluster(t *testing.T, mutate func(*Config)) (*vmtest.VM, [2]*app, [2]*httptest.Server) {
	t.Helper()
	vm, redis := vmtest.StartVM(t), vmtest.StartRedis(t)
	var (
		apps [2]*app
		srvs [2]*httptest.Server
	)
	for i := range apps {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := defaultConfig()
		cfg.Upstream = upstream.Config{Mode: upstream.ModeSingle, URL: vm.URL, Timeout: 5 * time.Second}
		cfg.State = state.Config{Backend: state.BackendRedis, AdvertiseURL: "http://" + ln.Addr().String(), Redis: state.RedisConfig{
			Addr: redis.Addr, SyncInterval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond,
		}}
		mutate(&cfg)
		a, err := newApp(cfg, testOptions(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := a.start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(a.stop)
		srv := httptest.NewUnstartedServer(a.routes())
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		t.Cleanup(srv.Close)
		a.ready.Store(true)
		apps[i], srvs[i] = a, srv
	}
	waitFor(t, 10*time.Second, "both replicas in each other's ring", func() bool {
		return apps[0].shared.ring.Size() == 2 && apps[1].shared.ring.Size() == 2
	})
	return vm, apps, srvs
}

// TestAggregationAcrossReplicas is TestAggregationKeepsTheTruth with two
// replicas behind round-robin: every step's request is cut in four and the
// parts go to alternating replicas, so that each input reaches both over time.
// The series of a metric are processed by the replica that owns it, so the
// label guard and the collision check see all of them, and each aggregate has
// all its inputs.
func TestAggregationAcrossReplicas(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
	}{
		{"label guard", func(c *Config) { c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 10 }},
		{"labeldrop", func(c *Config) {
			if err := decodeStrict([]byte("global:\n  - action: labeldrop\n    regex: user_id\n"), &c.Relabel); err != nil {
				panic(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, apps, srvs := foldCluster(t, func(c *Config) {
				tc.mutate(c)
				c.Aggregation.Interval = time.Hour
			})
			direct := vmtest.StartVM(t)
			w := foldWorkload{start: time.Now().Add(-time.Hour).Truncate(time.Hour), steps: foldStepCount}
			var (
				mu  sync.Mutex
				sim = w.at(0)
			)
			for _, a := range apps {
				a.folds.SetClock(func() time.Time { mu.Lock(); defer mu.Unlock(); return sim })
			}
			for step := range w.steps {
				mu.Lock()
				sim = w.at(step)
				mu.Unlock()
				wr := w.request(step)
				if len(wr.Timeseries) > 0 {
					pushTo(t, direct.URL+"/api/v1/write", wr)
				}
				const parts = 4
				n := len(wr.Timeseries)
				for p := range parts {
					part := &prompb.WriteRequest{Timeseries: wr.Timeseries[p*n/parts : (p+1)*n/parts]}
					if len(part.Timeseries) > 0 {
						pushTo(t, srvs[(step+p)%2].URL+"/api/v1/write", part)
					}
				}
				for _, a := range apps {
					if err := a.folds.Flush(context.Background(), w.at(step), false); err != nil {
						t.Fatal(err)
					}
				}
			}
			direct.Flush()
			vm.Flush()
			held := 0
			for _, a := range apps {
				in, out := a.folds.TenantSeries(a.cfg.DefaultTenant)
				t.Logf("replica %s: %d inputs in %d outputs", a.shared.ring.Self(), in, out)
				held += int(out)
			}
			if held == 0 {
				t.Error("nothing was aggregated")
			}
			for _, step := range []int{13, 24, 40, 44} {
				for _, q := range []string{
					"sum(increase(req_total[5m]))",
					"histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))",
				} {
					d, c := instant(t, direct.URL, q, w.at(step)), instant(t, vm.URL, q, w.at(step))
					t.Logf("%-60s step %2d: direct %9.3f through two replicas %9.3f", q, step, d, c)
					if math.IsNaN(c) || math.Abs(c-d) > 0.02*math.Abs(d) {
						t.Errorf("%s at step %d: through two replicas %v, direct %v", q, step, c, d)
					}
				}
			}
			for _, step := range []int{9, 40} {
				d, c := instant(t, direct.URL, "sum(g)", w.at(step)), instant(t, vm.URL, "sum(g)", w.at(step))
				if math.Abs(c-d) > 0.02*math.Abs(d) {
					t.Errorf("sum(g) at step %d: through two replicas %v, direct %v", step, c, d)
				}
			}
		})
	}
}

// TestOwnerUnreachable: a write whose series belong to a replica that cannot be
// reached is answered 503, so that the sender keeps it and retries; nothing of
// it is acknowledged.
func TestOwnerUnreachable(t *testing.T) {
	_, apps, srvs := foldCluster(t, func(c *Config) { c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 10 })
	metric := ""
	for i := 0; metric == ""; i++ {
		name := fmt.Sprintf("owned_elsewhere_%d_total", i)
		if _, self := apps[0].shared.ring.OwnerOf(apps[0].cfg.DefaultTenant, name); !self {
			metric = name
		}
	}
	srvs[1].Close()
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
		Labels:  []prompb.Label{{Name: "__name__", Value: metric}},
		Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
	}}}
	req, _ := http.NewRequest(http.MethodPost, srvs[0].URL+"/api/v1/write", bytes.NewReader(encodeWR(wr)))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("owner down: status %d (%s), want 503", resp.StatusCode, body)
	}
}

// TestAggregationDryRun: a tenant in dry run gets its series as they came, and
// the API says what aggregation would fold: the guard's folded users and the
// users a labeldrop makes collide.
func TestAggregationDryRun(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Limits.Defaults.Mode = "dry_run"
		c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 3
		if err := decodeStrict([]byte("global:\n  - action: labeldrop\n    regex: pod\n"), &c.Relabel); err != nil {
			panic(err)
		}
	})
	ts := time.Now().Add(-time.Minute).UnixMilli()
	wr := &prompb.WriteRequest{}
	for u := range 10 {
		// guarded_total: user_id over the guard's 3 values; dropped_total: two
		// pods per instance that the labeldrop makes collide.
		wr.Timeseries = append(wr.Timeseries,
			prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "guarded_total"}, {Name: "user_id", Value: fmt.Sprintf("u%d", u)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
			},
			prompb.TimeSeries{
				Labels:  []prompb.Label{{Name: "__name__", Value: "dropped_total"}, {Name: "instance", Value: fmt.Sprintf("i%d", u/2)}, {Name: "pod", Value: fmt.Sprintf("p%d", u)}},
				Samples: []prompb.Sample{{Value: 1, Timestamp: ts}},
			})
	}
	pushTo(t, e.srv.URL+"/api/v1/write", wr)
	var got float64
	waitFor(t, 15*time.Second, "the series in VictoriaMetrics", func() bool {
		e.vm.Flush()
		got = vmScalar(t, e, `count({__name__=~"guarded_total|dropped_total"})`)
		return got == 20
	})
	var api struct {
		Aggregations []any `json:"aggregations"`
		DryRun       struct {
			InputSeries  int `json:"input_series"`
			OutputSeries int `json:"output_series"`
		} `json:"dry_run"`
	}
	_, body := get(t, e.srv.URL+"/api/cardguard/v1/aggregations/tenants/"+e.app.cfg.DefaultTenant.String())
	if err := json.Unmarshal(body, &api); err != nil {
		t.Fatal(err)
	}
	// The guard would fold 7 users into 1 series, the labeldrop 10 pods into 5.
	if len(api.Aggregations) != 0 || api.DryRun.InputSeries != 17 || api.DryRun.OutputSeries != 6 {
		t.Fatalf("dry run: %s, want nothing aggregated and 17 inputs into 6 outputs counted", body)
	}
}

// TestRoutedHeaderNeedsAdmin: the mark a replica puts on a part it sends to the
// part's owner is honoured only with the admin token, which replicas share. A
// tenant that sends it is routed like any write, so it cannot have a replica
// that does not own its metric fold (and split) its series.
func TestRoutedHeaderNeedsAdmin(t *testing.T) {
	_, apps, srvs := foldCluster(t, func(c *Config) {
		c.Upstream.TenantLabel = "vm_account_id"
		c.Auth = auth.Config{AdminToken: "admin-tok", Tenants: []auth.TenantToken{{Token: "one-tok", Tenant: tenant.MustParse("1")}}}
		c.Limits.Defaults.LabelGuard.MaxValuesPerLabel = 10
	})
	t1 := tenant.MustParse("1")
	metric := ""
	for i := 0; metric == ""; i++ {
		name := fmt.Sprintf("routed_%d_total", i)
		if _, self := apps[0].shared.ring.OwnerOf(t1, name); !self {
			metric = name
		}
	}
	write := func(token string) {
		t.Helper()
		wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{{
			Labels:  []prompb.Label{{Name: "__name__", Value: metric}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: time.Now().UnixMilli()}},
		}}}
		req, _ := http.NewRequest(http.MethodPost, srvs[0].URL+"/insert/1/prometheus/api/v1/write", bytes.NewReader(encodeWR(wr)))
		req.Header.Set("Content-Encoding", "snappy")
		req.Header.Set("Content-Type", "application/x-protobuf")
		req.Header.Set(ingest.RoutedHeader, "1")
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("write with %s: %d", token, resp.StatusCode)
		}
	}
	routed := func() float64 {
		req, _ := http.NewRequest(http.MethodGet, srvs[0].URL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer admin-tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, `cardguard_ingest_routed_samples_total{code="204"}`) {
				f, _ := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64)
				return f
			}
		}
		return 0
	}
	write("one-tok")
	if got := routed(); got != 1 {
		t.Fatalf("a tenant's write marked as routed was not routed to its owner: %v samples routed", got)
	}
	write("admin-tok")
	if got := routed(); got != 1 {
		t.Fatalf("a replica's routed part was routed again: %v samples routed", got)
	}
}
