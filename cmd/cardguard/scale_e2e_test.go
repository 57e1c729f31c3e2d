package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// scaleCluster is cardguard replicas sharing a real 3-master Redis Cluster in
// front of a real VictoriaMetrics, where replicas come and go during the test:
// each is an app with its own data directory (so its own replica ID), HTTP
// server and advertised URL, as a pod would be.
type scaleCluster struct {
	t          *testing.T
	be         *backend
	redis      *vmtest.RedisCluster
	limitsYAML string
	reps       []*scaleReplica // every replica ever started, by number
	live       []*scaleReplica // the balancer's targets, in round-robin order
	next       int
}

type scaleReplica struct {
	n      int
	app    *app
	srv    *httptest.Server
	cancel context.CancelFunc
}

// newScaleCluster starts n replicas in front of a VictoriaMetrics of the given
// layout and waits until every one counts all of them.
func newScaleCluster(t *testing.T, layout string, n int, limitsYAML string) *scaleCluster {
	t.Helper()
	c := &scaleCluster{t: t, be: startBackend(t, layout), redis: vmtest.StartRedisCluster(t), limitsYAML: limitsYAML}
	for range n {
		c.start()
	}
	c.converge()
	return c
}

// start starts a new replica with a fresh data directory and adds it to the
// round-robin once it serves, as a balancer would once /readyz answers.
func (c *scaleCluster) start() *scaleReplica {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := defaultConfig()
	cfg.Upstream = c.be.upstream()
	multiTenant(c.limitsYAML)(&cfg)
	c.be.tenantLabel = cfg.Upstream.TenantLabel
	cfg.State = state.Config{Backend: state.BackendRedis, AdvertiseURL: "http://" + ln.Addr().String(), Redis: state.RedisConfig{
		ClusterAddrs: c.redis.Addrs, SyncInterval: 500 * time.Millisecond, Timeout: 250 * time.Millisecond,
	}}
	a, err := newApp(cfg, testOptions(c.t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(c.t.Context())
	if err := a.start(ctx); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(a.stop)
	srv := httptest.NewUnstartedServer(a.routes())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	c.t.Cleanup(srv.Close)
	a.ready.Store(true)
	r := &scaleReplica{n: len(c.reps), app: a, srv: srv, cancel: cancel}
	c.reps = append(c.reps, r)
	c.live = append(c.live, r)
	return r
}

// kill ends replica n the closest an in-process replica gets to SIGKILL: its
// connections and listener close, its loops stop (no more heartbeats, no
// more syncs), and it hands nothing over. It leaves the round-robin.
func (c *scaleCluster) kill(n int) {
	c.t.Helper()
	r := c.reps[n]
	r.srv.CloseClientConnections()
	r.srv.Close()
	r.cancel()
	r.app.loops.wg.Wait()
	for i, l := range c.live {
		if l == r {
			c.live = append(c.live[:i], c.live[i+1:]...)
			break
		}
	}
}

// converge runs heartbeat rounds on the live replicas until each counts exactly
// the live replicas as alive and routes among them; a killed replica drops out
// once its last heartbeat expires (3 sync intervals and a second). The series
// membership needs no help: a replica consults the shared state before it
// decides about a series.
func (c *scaleCluster) converge() {
	c.t.Helper()
	want := float64(len(c.live))
	waitFor(c.t, 15*time.Second, fmt.Sprintf("every live replica to count %d replicas", len(c.live)), func() bool {
		for _, r := range c.live {
			r.app.shared.syncer.SyncOnce(context.Background())
		}
		for _, r := range c.live {
			if c.metricSum(r, "cardguard_state_replicas") != want {
				return false
			}
			if r.app.shared.ring != nil && r.app.shared.ring.Size() != len(c.live) {
				return false
			}
		}
		return true
	})
}

// push sends one remote-write request of tenant tn to the next live replica and
// returns the replica's number, the status and the body; status 0 is a
// transport error, with the error as body.
func (c *scaleCluster) push(tn string, series []prompb.TimeSeries) (int, int, string) {
	c.t.Helper()
	r := c.live[c.next%len(c.live)]
	c.next++
	body := encodeWR(&prompb.WriteRequest{Timeseries: series})
	req, _ := http.NewRequest(http.MethodPost, r.srv.URL+"/insert/"+tn+"/prometheus/api/v1/write", bytes.NewReader(body))
	req.Header.Set("Content-Encoding", "snappy")
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return r.n, 0, err.Error()
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return r.n, resp.StatusCode, string(b)
}

// scalarAt is backend.scalar evaluated at time ts (ms).
func (c *scaleCluster) scalarAt(tn, query string, ts int64) float64 {
	c.t.Helper()
	return c.be.scalarWith(tn, url.Values{"query": {query}, "time": {strconv.FormatFloat(float64(ts)/1000, 'f', 3, 64)}})
}

// metricSum is the sum of every series of metric name that replica r exposes
// on /metrics.
func (c *scaleCluster) metricSum(r *scaleReplica, name string) float64 {
	c.t.Helper()
	_, body := get(c.t, r.srv.URL+"/metrics")
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			f, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			sum += f
		}
	}
	return sum
}

// scaleSeries is n series of tenant-wide distinct ids spread over metrics
// prefix_0 .. prefix_<metrics-1> (series i has metric i%metrics), so that every
// request of consecutive series touches every metric, whichever replica owns it.
func scaleSeries(prefix string, n, metrics int, ts int64) []prompb.TimeSeries {
	out := genSeries(prefix, n, ts)
	for i := range out {
		out[i].Labels[0].Value = prefix + "_" + strconv.Itoa(i%metrics)
	}
	return out
}

// TestReplicaKilledAndStarted: three replicas on a Redis Cluster in front of a
// VictoriaMetrics cluster take a Prometheus-like writer (1,500 admitted series,
// one sample each per round, requests of 100 round-robin over the live
// replicas, one at a time). Replica 2 is killed mid-run and replica 3 started
// with a new ID and data directory; meanwhile 1,000 more series are offered
// against a 2,000 limit. No request of admitted series may be refused, every
// one of their samples lands, and the tenant ends with exactly 2,000 series:
// requests answered one after the other are decided exactly (package state).
func TestReplicaKilledAndStarted(t *testing.T) {
	const (
		limit    = 2000
		admitted = 1500
		offered  = 1000
		size     = 100
		tn       = "1"
	)
	c := newScaleCluster(t, layoutCluster, 3, "overrides:\n  \""+tn+"\":\n    max_series: "+strconv.Itoa(limit)+"\n")
	began := time.Now()

	base := time.Now().Add(-3 * time.Minute).Truncate(time.Second)
	tsOf := func(round int) int64 { return base.Add(time.Duration(round) * 15 * time.Second).UnixMilli() }
	type refusal struct {
		round, replica, status int
		body                   string
	}
	var (
		refused    []refusal // requests of admitted series only that did not get a 2xx
		newAnswers = map[int]int{}
		rounds     int
		newRounds  int
	)
	// round sends one sample of every admitted series and, when withNew, of
	// the offered series too, interleaving their requests.
	round := func(what string, withNew bool) {
		ts := tsOf(rounds)
		rounds++
		old := scaleSeries("scale_admitted", admitted, 15, ts)
		var fresh []prompb.TimeSeries
		if withNew {
			newRounds++
			fresh = scaleSeries("scale_new", offered, 10, ts)
		}
		start := time.Now()
		for i, j := 0, 0; i < len(old) || j < len(fresh); {
			if i < len(old) {
				rep, code, body := c.push(tn, old[i:min(len(old), i+size)])
				if code/100 != 2 {
					refused = append(refused, refusal{rounds, rep, code, body})
				}
				i += size
			}
			if j < len(fresh) {
				_, code, _ := c.push(tn, fresh[j:min(len(fresh), j+size)])
				newAnswers[code]++
				j += size
			}
		}
		t.Logf("round %d (%s): %d live replicas, %s", rounds, what, len(c.live), time.Since(start).Round(time.Millisecond))
	}

	for range 3 {
		round("3 replicas", false)
	}
	c.kill(2)
	round("right after replica 2 was killed", true)
	c.converge()
	round("replica 2 expired from the membership", true)
	c.start()
	round("right after replica 3 started", true)
	c.converge()
	round("replica 3 known to every replica", true)
	t.Logf("writes took %s; answers to requests of offered series by status: %v", time.Since(began).Round(time.Millisecond), newAnswers)

	// (a) Every request of admitted series was answered 2xx.
	for i, r := range refused {
		if i == 10 {
			t.Errorf("... and %d more", len(refused)-10)
			break
		}
		t.Errorf("round %d: request of admitted series to replica %d answered %d: %s", r.round, r.replica, r.status, r.body)
	}
	if len(refused) > 0 {
		t.Errorf("%d of %d requests of admitted series were not answered 2xx", len(refused), rounds*admitted/size)
	}

	c.be.flush()
	const (
		admittedSel = `{__name__=~"scale_admitted_.+"}`
		newSel      = `{__name__=~"scale_new_.+"}`
		allSel      = `{__name__=~"scale_.+"}`
	)
	// (a) Every sample of the admitted series is in VictoriaMetrics, round by round.
	for r := range rounds {
		ts := tsOf(r)
		got := c.scalarAt(tn, `sum(count_over_time(`+admittedSel+`[5s]))`, ts)
		gotNew := c.scalarAt(tn, `sum(count_over_time(`+newSel+`[5s]))`, ts)
		t.Logf("round %d: %.0f samples of admitted series, %.0f of offered series in VictoriaMetrics", r+1, got, max(gotNew, 0))
		if got != admitted {
			t.Errorf("round %d: %.0f samples of the %d admitted series in VictoriaMetrics; want %d", r+1, got, admitted, admitted)
		}
	}
	if got := c.be.scalar(tn, `sum(count_over_time(`+admittedSel+`[10m]))`); got != float64(rounds*admitted) {
		t.Errorf("%.0f samples of admitted series in VictoriaMetrics; want %d rounds x %d = %d", got, rounds, admitted, rounds*admitted)
	}
	if got := c.be.scalar(tn, `count(count_over_time(`+admittedSel+`[10m]))`); got != admitted {
		t.Errorf("%.0f admitted series in VictoriaMetrics; want %d", got, admitted)
	}
	// Their values as sent: series i carries i in every round, whether its
	// request went to VictoriaMetrics as it came or rebuilt without refused
	// series.
	if got, want := c.be.scalar(tn, `sum(sum_over_time(`+admittedSel+`[10m]))`), float64(rounds*admitted*(admitted-1)/2); got != want {
		t.Errorf("sum of the admitted series' samples in VictoriaMetrics %.0f; want %.0f, computed from what was sent", got, want)
	}

	// (b), (c) The tenant holds exactly the limit: nothing beyond it while Redis
	// answers (a sequential writer has nothing in flight elsewhere), and the
	// offered series filled it up to the limit.
	total := c.be.scalar(tn, `count(count_over_time(`+allSel+`[10m]))`)
	newSeries := c.be.scalar(tn, `count(count_over_time(`+newSel+`[10m]))`)
	newSamples := c.be.scalar(tn, `sum(count_over_time(`+newSel+`[10m]))`)
	var syncErrs []float64
	for _, r := range c.live {
		syncErrs = append(syncErrs, c.metricSum(r, "cardguard_state_sync_errors_total"))
	}
	t.Logf("tenant %s holds %.0f series in VictoriaMetrics (limit %d): %d admitted + %.0f of %d offered per round over %d rounds, %.0f samples of those; state sync errors of the live replicas: %v",
		tn, total, limit, admitted, newSeries, offered, newRounds, newSamples, syncErrs)
	if total > limit {
		t.Errorf("tenant %s has %.0f series in VictoriaMetrics; the bound is the limit, %d, with one request at a time", tn, total, limit)
	}
	if total < limit {
		t.Errorf("tenant %s has %.0f series in VictoriaMetrics; the offered series should have filled it to the limit, %d", tn, total, limit)
	}
	// The offered series admitted in the first round that offered them kept
	// flowing: every one has a sample of every later round.
	if newSeries > 0 && newSamples != float64(newRounds)*newSeries {
		t.Errorf("%.0f samples for %.0f admitted offered series; want %d each: an admitted series was refused later", newSamples, newSeries, newRounds)
	}
	t.Logf("whole test: %s", time.Since(began).Round(time.Millisecond))
}
