// Command loadgen sends Prometheus remote-write 1.0 traffic (or, with
// -protocol=otlp, the same series over OTLP/HTTP) to a loopback target and
// reports throughput, latency and status codes, for benchmarking cardguard
// against vmagent and VictoriaMetrics itself.
//
// Every request body is encoded before the clock starts (rounds of series, with
// churn between rounds, cycled for as long as the run lasts), so the generator
// costs little more than the socket writes and the same flags and seed give the
// same bytes for every target. The run is bounded: it stops after -duration, after
// -requests (or -passes over the pre-encoded rounds), or after -max-errors
// transport errors, and it only talks to loopback addresses.
//
// The result is one JSON line on stdout; a human summary goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cardguard/cardguard/e2e/workload"
)

type options struct {
	wl          workload.Workload
	url         string
	tenants     int
	concurrency int
	duration    time.Duration
	requests    int64
	passes      int64
	timeout     time.Duration
	maxErrors   int64
	label       string
	ringCache   string
}

// Hard bounds, whatever the flags say.
const (
	maxDuration    = 15 * time.Minute
	maxRequests    = 10_000_000
	maxConcurrency = 256
	maxTenants     = 1000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "", "write URL (loopback only), or several comma-separated, as replicas behind a load balancer: requests go round-robin over them; with -tenants, the base URL that /insert/<t>/prometheus/api/v1/write (or /insert/<t>/opentelemetry/v1/metrics) is appended to")
	fs.IntVar(&o.tenants, "tenants", 0, "send round-robin to tenants 1..N under /insert/<t>/...; 0 posts to -url as given")
	fs.StringVar((*string)(&o.wl.Protocol), "protocol", string(workload.RemoteWrite), "remotewrite: snappy remote-write 1.0 requests; otlp: the same series as gzip OTLP/HTTP protobuf ExportMetricsServiceRequests, as the OpenTelemetry Collector's otlphttp exporter sends them")
	fs.IntVar(&o.wl.Metrics, "metrics", 100, "metric names")
	fs.IntVar(&o.wl.SeriesPerMetric, "series-per-metric", 500, "series per metric in each round")
	fs.IntVar(&o.wl.Labels, "labels", 10, "labels per series besides __name__")
	fs.Float64Var(&o.wl.Churn, "churn", 0.05, "fraction of series replaced by new series at each round")
	fs.IntVar(&o.wl.Rounds, "rounds", 8, "rounds (scrapes of every series) encoded up front; sending cycles through them")
	fs.IntVar(&o.wl.Batch, "batch", 2000, "series per request, one sample each (Prometheus sends up to 2000 samples per request by default)")
	fs.Uint64Var(&o.wl.Seed, "seed", 1, "seed for send order and churn: same seed and flags, same bytes")
	fs.Int64Var(&o.wl.Start, "start", 0, "timestamp of round 0 in Unix milliseconds; 0: now minus rounds x interval, rounded down to the minute (give it to get identical bytes across runs)")
	fs.DurationVar(&o.wl.Interval, "interval", 15*time.Second, "timestamp step between rounds")
	fs.Int64Var(&o.wl.MaxRingBytes, "max-ring-bytes", 1<<30, "largest total size of the pre-encoded payloads")
	fs.IntVar(&o.wl.UserMetrics, "user-metrics", 0, "give the first N metrics a user_id label: their series come in groups of -users that differ only in user_id")
	fs.IntVar(&o.wl.Users, "users", 50, "user_id values of each -user-metrics metric's series groups")
	fs.IntVar(&o.concurrency, "concurrency", 4, "requests in flight")
	fs.DurationVar(&o.duration, "duration", 0, "stop taking new requests after this long (at most 15m)")
	fs.Int64Var(&o.requests, "requests", 0, "stop after this many requests")
	fs.Int64Var(&o.passes, "passes", 0, "stop after this many passes over the pre-encoded rounds (per tenant)")
	fs.DurationVar(&o.timeout, "timeout", 30*time.Second, "per-request timeout")
	fs.Int64Var(&o.maxErrors, "max-errors", 1000, "stop after this many transport errors")
	fs.StringVar(&o.label, "label", "", "name of this run, copied into the JSON result")
	fs.StringVar(&o.ringCache, "ring-cache", "", "directory where the encoded payloads are kept for the next run with the same workload flags (and taken from, when there)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	switch {
	case o.url == "":
		return o, errors.New("-url is required")
	case o.concurrency < 1 || o.concurrency > maxConcurrency:
		return o, fmt.Errorf("-concurrency %d out of range [1, %d]", o.concurrency, maxConcurrency)
	case o.tenants < 0 || o.tenants > maxTenants:
		return o, fmt.Errorf("-tenants %d out of range [0, %d]", o.tenants, maxTenants)
	case o.tenants > 0 && strings.Contains(o.url, ","):
		return o, errors.New("-tenants takes one base -url")
	case o.duration < 0 || o.duration > maxDuration:
		return o, fmt.Errorf("-duration %s out of range (0, %s]", o.duration, maxDuration)
	case o.requests < 0 || o.requests > maxRequests || o.passes < 0:
		return o, fmt.Errorf("-requests %d out of range [0, %d]", o.requests, maxRequests)
	case o.duration == 0 && o.requests == 0 && o.passes == 0:
		return o, errors.New("give -duration, -requests or -passes: the generator must stop by itself")
	case o.maxErrors < 1:
		return o, fmt.Errorf("-max-errors %d must be positive", o.maxErrors)
	}
	if o.duration == 0 {
		o.duration = maxDuration
	}
	for _, u := range strings.Split(o.url, ",") {
		if err := checkLoopback(u); err != nil {
			return o, err
		}
	}
	if o.wl.Start == 0 {
		back := time.Duration(o.wl.Rounds) * o.wl.Interval
		o.wl.Start = time.Now().Add(-back).Truncate(time.Minute).UnixMilli()
	}
	return o, o.wl.Validate()
}

// targets lists the URLs requests go to, round-robin.
func (o options) targets() []string {
	if o.tenants == 0 {
		return strings.Split(o.url, ",")
	}
	base := strings.TrimRight(o.url, "/")
	path := "/prometheus/api/v1/write"
	if o.wl.Protocol == workload.OTLP {
		path = "/opentelemetry/v1/metrics"
	}
	urls := make([]string, o.tenants)
	for t := range urls {
		urls[t] = base + "/insert/" + strconv.Itoa(t+1) + path
	}
	return urls
}

// result is the JSON line the bench driver reads.
type result struct {
	Label            string           `json:"label,omitempty"`
	Protocol         string           `json:"protocol"`
	Targets          []string         `json:"targets"`
	Seed             uint64           `json:"seed"`
	Start            int64            `json:"start_ms"`
	PayloadDigest    string           `json:"payload_digest"`
	RingRequests     int              `json:"ring_requests"`
	RingSamples      int64            `json:"ring_samples"`
	RingRawBytes     int64            `json:"ring_raw_bytes"`
	RingBytes        int64            `json:"ring_bytes"`
	UniqueSeries     int              `json:"unique_series"`
	Concurrency      int              `json:"concurrency"`
	ElapsedSeconds   float64          `json:"elapsed_s"`
	Requests         int64            `json:"requests"`
	SamplesSent      int64            `json:"samples_sent"`
	SamplesOK        int64            `json:"samples_ok"`
	BytesSent        int64            `json:"bytes_sent"`
	SamplesPerSecond float64          `json:"samples_per_s"` // accepted (2xx) samples per second
	LatencyMS        latency          `json:"latency_ms"`
	Status           map[string]int64 `json:"status"` // HTTP code, or "error" for transport errors
	FirstError       string           `json:"first_error,omitempty"`
	// GeneratorCPU is this process's CPU time while sending, to show that the
	// generator is not what limits the numbers.
	GeneratorCPU float64 `json:"generator_cpu_s"`
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "loadgen:", err)
		return 2
	}
	t0 := time.Now()
	rg, cached, err := loadRing(o.wl, o.ringCache)
	if err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	how := "encoded"
	if cached {
		how = "loaded"
	}
	var ringSamples int64
	for _, n := range rg.Samples {
		ringSamples += int64(n)
	}
	fmt.Fprintf(stderr, "loadgen: %s %d requests, %d samples, %d unique series, %.1f MiB (%.1f MiB raw) in %s, digest %s\n",
		how, len(rg.Payloads), ringSamples, rg.UniqueSeries, float64(rg.EncBytes)/(1<<20), float64(rg.RawBytes)/(1<<20),
		time.Since(t0).Round(time.Millisecond), rg.Digest)

	urls := o.targets()
	cfg := sendConfig{
		URLs:        urls,
		Header:      requestHeader(o.wl.Protocol),
		Concurrency: o.concurrency,
		Duration:    o.duration,
		Requests:    o.requests,
		Timeout:     o.timeout,
		MaxErrors:   o.maxErrors,
	}
	walks := int64(len(urls)) // each tenant walks the whole ring
	if o.tenants == 0 && len(urls) > 1 {
		// Replicas of one target share a walk of the ring.
		cfg.RoundLen = int64(len(rg.Payloads) / o.wl.Rounds)
		walks = 1
	}
	if o.passes > 0 {
		n := o.passes * int64(len(rg.Payloads)) * walks
		if cfg.Requests == 0 || n < cfg.Requests {
			cfg.Requests = n
		}
	}
	if cfg.Requests > maxRequests {
		cfg.Requests = maxRequests
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	cpu0 := cpuTime()
	st, elapsed := send(ctx, cfg, rg)
	cpu1 := cpuTime()

	res := result{
		Label:          o.label,
		Protocol:       string(o.wl.Protocol),
		Targets:        urls,
		Seed:           o.wl.Seed,
		Start:          o.wl.Start,
		PayloadDigest:  rg.Digest,
		RingRequests:   len(rg.Payloads),
		RingSamples:    ringSamples,
		RingRawBytes:   rg.RawBytes,
		RingBytes:      rg.EncBytes,
		UniqueSeries:   rg.UniqueSeries,
		Concurrency:    o.concurrency,
		ElapsedSeconds: elapsed.Seconds(),
		Requests:       int64(len(st.latencies)) + st.errors,
		SamplesSent:    st.samplesSent,
		SamplesOK:      st.samplesOK,
		BytesSent:      st.bytesSent,
		Status:         map[string]int64{},
		FirstError:     st.firstErr,
		GeneratorCPU:   (cpu1 - cpu0).Seconds(),
	}
	if elapsed > 0 {
		res.SamplesPerSecond = float64(st.samplesOK) / elapsed.Seconds()
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	var sum time.Duration
	for _, d := range st.latencies {
		sum += d
	}
	res.LatencyMS = latency{
		P50: ms(percentile(st.latencies, 0.50)),
		P90: ms(percentile(st.latencies, 0.90)),
		P99: ms(percentile(st.latencies, 0.99)),
	}
	if n := len(st.latencies); n > 0 {
		res.LatencyMS.Max = ms(st.latencies[n-1])
		res.LatencyMS.Mean = ms(sum / time.Duration(n))
	}
	for c, n := range st.codes {
		res.Status[strconv.Itoa(c)] = n
	}
	if st.errors > 0 {
		res.Status["error"] = st.errors
	}
	fmt.Fprintf(stderr, "loadgen: %d requests in %s: %.0f samples/s accepted, latency p50 %.1fms p90 %.1fms p99 %.1fms, status %v\n",
		res.Requests, elapsed.Round(time.Millisecond), res.SamplesPerSecond, res.LatencyMS.P50, res.LatencyMS.P90, res.LatencyMS.P99, res.Status)
	if res.FirstError != "" {
		fmt.Fprintln(stderr, "loadgen: first error:", res.FirstError)
	}
	if err := json.NewEncoder(stdout).Encode(res); err != nil {
		fmt.Fprintln(stderr, "loadgen:", err)
		return 1
	}
	return 0
}

// cpuTime is the user and system time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
