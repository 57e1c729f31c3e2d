package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/vmtest"
)

// The tests here run the real sender: Prometheus scrapes a target every second and
// remote-writes through cardguard (in-process) into a real VictoriaMetrics. They
// check what an operator cares about: every sample Prometheus stored reached
// VictoriaMetrics, whatever happened in between.

// scrapeTarget serves a few counters that move on every scrape.
func scrapeTarget(t *testing.T) *httptest.Server {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := n.Add(1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		fmt.Fprintf(w, "# HELP e2e_requests_total Requests seen by the e2e target.\n# TYPE e2e_requests_total counter\n")
		for _, path := range []string{"/a", "/b", "/c"} {
			fmt.Fprintf(w, "e2e_requests_total{path=%q} %d\n", path, v)
		}
		fmt.Fprintf(w, "# HELP e2e_temperature_celsius A gauge.\n# TYPE e2e_temperature_celsius gauge\ne2e_temperature_celsius %d.5\n", v%7)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// promConfig scrapes target every second and remote-writes to writeURL with a
// single shard (so that "highest timestamp sent" means "everything before it was
// acknowledged") and short backoffs, so that the tests are quick.
func promConfig(target, writeURL, protoMsg string) string {
	return fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: e2e
    static_configs:
      - targets: [%q]
remote_write:
  - url: %q
    remote_timeout: 10s
    protobuf_message: %s
    queue_config:
      capacity: 1000
      min_shards: 1
      max_shards: 1
      max_samples_per_send: 20
      batch_send_deadline: 200ms
      min_backoff: 50ms
      max_backoff: 500ms
    metadata_config:
      send_interval: 2s
`, strings.TrimPrefix(target, "http://"), writeURL, protoMsg)
}

// promMetrics reads Prometheus' own metrics, summing series of the same name.
func promMetrics(t *testing.T, p *vmtest.Prometheus) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(bytes.NewReader(p.Get("/metrics")))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		name := line[:sp]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out
}

// instantQuery evaluates expr at ts against a Prometheus-compatible API and
// returns value by the series' labels.
func instantQuery(t *testing.T, base, expr string, ts time.Time) map[string]float64 {
	t.Helper()
	q := url.Values{"query": {expr}, "time": {strconv.FormatFloat(float64(ts.UnixMilli())/1000, 'f', 3, 64)}}
	code, body := get(t, base+"/api/v1/query?"+q.Encode())
	if code != http.StatusOK {
		t.Fatalf("query %s at %s: status %d: %s", expr, base, code, body)
	}
	var resp struct {
		Data struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatalf("query %s: %v: %s", expr, err, body)
	}
	out := map[string]float64{}
	for _, r := range resp.Data.Result {
		keys := make([]string, 0, len(r.Metric))
		for k, v := range r.Metric {
			keys = append(keys, k+"="+v)
		}
		sort.Strings(keys)
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("query %s: value %v: %v", expr, r.Value, err)
		}
		out[strings.Join(keys, ",")] = v
	}
	return out
}

// waitFor polls cond every 200 ms until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitCaughtUp waits until Prometheus has sent, and had acknowledged, every sample
// up to at least ts: with one shard, samples go out in order and the highest sent
// timestamp only moves after a 2xx.
func waitCaughtUp(t *testing.T, p *vmtest.Prometheus, ts time.Time) {
	t.Helper()
	waitFor(t, 45*time.Second, "Prometheus to send everything up to "+ts.Format(time.RFC3339), func() bool {
		m := promMetrics(t, p)
		return m["prometheus_remote_storage_queue_highest_sent_timestamp_seconds"] > float64(ts.Unix())+1
	})
}

// compareCounts asserts that, for every series of metric, VictoriaMetrics (read
// through cardguard) holds exactly as many samples up to ts as Prometheus' own TSDB.
func compareCounts(t *testing.T, e *env, p *vmtest.Prometheus, metric string, since, ts time.Time) (series, samples int) {
	t.Helper()
	window := ts.Sub(since).Round(time.Second) + 10*time.Second
	expr := fmt.Sprintf("count_over_time(%s[%ds])", metric, int(window.Seconds()))
	e.vm.Flush()
	inProm := instantQuery(t, p.URL, expr, ts)
	inVM := instantQuery(t, e.srv.URL, expr, ts)
	if len(inProm) == 0 {
		t.Fatalf("Prometheus has no %s samples", metric)
	}
	for k, want := range inProm {
		got, ok := inVM[k]
		if !ok {
			t.Errorf("series {%s}: %v samples in Prometheus, none in VictoriaMetrics", k, want)
			continue
		}
		if got != want {
			t.Errorf("series {%s}: %v samples in VictoriaMetrics, %v in Prometheus", k, got, want)
		}
		samples += int(want)
	}
	for k := range inVM {
		if _, ok := inProm[k]; !ok {
			t.Errorf("series {%s} is in VictoriaMetrics but not in Prometheus", k)
		}
	}
	return len(inProm), samples
}

func firstKey(m map[string]float64) string {
	for k := range m {
		return k
	}
	return ""
}

func assertNothingFailed(t *testing.T, p *vmtest.Prometheus) map[string]float64 {
	t.Helper()
	m := promMetrics(t, p)
	for _, name := range []string{
		"prometheus_remote_storage_samples_failed_total",
		"prometheus_remote_storage_samples_dropped_total",
		"prometheus_remote_storage_histograms_failed_total",
		"prometheus_remote_storage_exemplars_failed_total",
		"prometheus_remote_storage_metadata_failed_total",
	} {
		if m[name] != 0 {
			t.Errorf("%s = %v, want 0; Prometheus log:\n%s", name, m[name], p.Log())
		}
	}
	if m["prometheus_remote_storage_samples_total"] == 0 {
		t.Errorf("Prometheus reports no samples sent")
	}
	return m
}

// TestPrometheusNoSampleLostThroughOutage stops VictoriaMetrics for several
// seconds while Prometheus writes through cardguard: cardguard must answer 503 (not
// 2xx, not a 4xx that drops the batch), Prometheus must retry, and in the end every
// scraped sample must be in VictoriaMetrics.
func TestPrometheusNoSampleLostThroughOutage(t *testing.T) {
	e := newEnv(t, nil)
	target := scrapeTarget(t)
	start := time.Now()
	p := vmtest.StartPrometheus(t, promConfig(target.URL, e.srv.URL+"/api/v1/write", "prometheus.WriteRequest"))

	waitFor(t, 20*time.Second, "the first samples in VictoriaMetrics", func() bool {
		e.vm.Flush()
		return len(instantQuery(t, e.srv.URL, "e2e_requests_total", time.Now())) == 3
	})
	before := promMetrics(t, p)["prometheus_remote_storage_samples_retried_total"]

	e.vm.Stop()
	stopped := time.Now()
	outage := 7 * time.Second
	time.Sleep(outage)
	e.vm.Start()
	restarted := time.Now()

	// Samples scraped after the restart must make it too.
	time.Sleep(2 * time.Second)
	end := time.Now()
	waitCaughtUp(t, p, end)

	m := assertNothingFailed(t, p)
	retried := m["prometheus_remote_storage_samples_retried_total"] - before
	if retried == 0 {
		t.Errorf("Prometheus retried no samples: VictoriaMetrics was down for %s, the outage was not noticed", outage)
	}
	series, samples := compareCounts(t, e, p, "e2e_requests_total", start, end)
	gs, gsamples := compareCounts(t, e, p, "e2e_temperature_celsius", start, end)
	// The samples scraped while VictoriaMetrics was down are the ones at risk:
	// make sure there were some, and that they are there.
	during := fmt.Sprintf("count_over_time(e2e_temperature_celsius[%dms])", restarted.Sub(stopped).Milliseconds())
	inProm, inVM := instantQuery(t, p.URL, during, restarted), instantQuery(t, e.srv.URL, during, restarted)
	if len(inProm) != 1 || inProm[firstKey(inProm)] < 5 {
		t.Errorf("Prometheus scraped %v samples during the %s outage, want at least 5", inProm, outage)
	} else if !reflect.DeepEqual(inProm, inVM) {
		t.Errorf("samples scraped during the outage: %v in VictoriaMetrics, %v in Prometheus", inVM, inProm)
	}
	t.Logf("outage %s; caught up %s after restart; %d series with %d samples equal in Prometheus and VictoriaMetrics (%v per series scraped during the outage); %v samples retried",
		outage, time.Since(restarted).Round(100*time.Millisecond), series+gs, samples+gsamples, inProm[firstKey(inProm)], retried)
}

// TestPrometheusRemoteWrite2 has Prometheus write with remote write 2.0: cardguard
// converts to 1.0 for VictoriaMetrics and answers the written-count headers,
// without which Prometheus would count every sample as failed.
func TestPrometheusRemoteWrite2(t *testing.T) {
	e := newEnv(t, nil)
	target := scrapeTarget(t)
	start := time.Now()
	// metadata-wal-records makes Prometheus attach metadata to 2.0 series.
	p := vmtest.StartPrometheus(t, promConfig(target.URL, e.srv.URL+"/api/v1/write", "io.prometheus.write.v2.Request"),
		"--enable-feature=metadata-wal-records")

	waitFor(t, 20*time.Second, "Prometheus to send 10 samples", func() bool {
		return promMetrics(t, p)["prometheus_remote_storage_samples_total"] >= 10
	})
	time.Sleep(3 * time.Second)
	end := time.Now()
	waitCaughtUp(t, p, end)

	m := assertNothingFailed(t, p)
	series, samples := compareCounts(t, e, p, "e2e_requests_total", start, end)
	gs, gsamples := compareCounts(t, e, p, "e2e_temperature_celsius", start, end)
	if strings.Contains(p.Log(), "statistics indicate") {
		t.Errorf("Prometheus distrusts the written headers:\n%s", p.Log())
	}
	t.Logf("remote write 2.0: %v samples sent; %d series with %d samples equal in Prometheus and VictoriaMetrics",
		m["prometheus_remote_storage_samples_total"], series+gs, samples+gsamples)
}
