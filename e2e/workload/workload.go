// Package workload builds the traffic the load generator sends and the write
// path's benchmarks replay: series shaped like a Kubernetes scrape, in requests
// as Prometheus sends them over remote write (or the OpenTelemetry Collector over
// OTLP/HTTP), pre-encoded and byte-identical for the same settings.
package workload

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"
	"github.com/golang/snappy"
)

// Workload describes the series a run sends. The same workload and seed give
// byte-identical payloads, so several targets can be measured on the same bytes.
type Workload struct {
	Metrics         int           // metric names
	SeriesPerMetric int           // series of each metric in one round
	Labels          int           // labels per series besides __name__
	Churn           float64       // fraction of series replaced by new ones each round
	Rounds          int           // rounds pre-encoded; sending cycles through them
	Batch           int           // series (one sample each) per request
	Seed            uint64        // chooses send order and which series churn
	Start           int64         // timestamp of round 0, Unix milliseconds
	Interval        time.Duration // timestamp step between rounds (the scrape interval)
	MaxRingBytes    int64         // bound on the memory the encoded payloads may take

	// UserMetrics, when positive, gives the first UserMetrics metrics one more
	// label, user_id, with Users values: their series come in groups of Users
	// that share every other label and differ only in user_id, as per-user
	// counters of one pod do. Taking user_id away (a label guard, a labeldrop,
	// stream aggregation) folds each group into one series.
	UserMetrics int
	Users       int

	// Protocol is how requests are encoded: remote write (the zero value) or OTLP.
	Protocol Protocol
}

// Protocol is the encoding of the requests of a workload.
type Protocol string

const (
	// RemoteWrite is Prometheus remote write 1.0: a WriteRequest, snappy-compressed.
	RemoteWrite Protocol = "remotewrite"
	// OTLP is OTLP/HTTP metrics: an ExportMetricsServiceRequest in protobuf,
	// gzip-compressed, as the OpenTelemetry Collector's otlphttp exporter sends it.
	OTLP Protocol = "otlp"
)

// Bounds keep a mistyped flag from eating the machine.
const (
	maxSeries       = 10_000_000
	maxSeriesRounds = 100_000_000
	maxLabels       = 60
	maxRounds       = 1000
)

func (w Workload) Validate() error {
	switch {
	case w.Metrics <= 0 || w.SeriesPerMetric <= 0:
		return fmt.Errorf("metrics (%d) and series per metric (%d) must be positive", w.Metrics, w.SeriesPerMetric)
	case w.Metrics*w.SeriesPerMetric > maxSeries:
		return fmt.Errorf("%d series per round is over the limit %d", w.Metrics*w.SeriesPerMetric, maxSeries)
	case w.Labels < 1 || w.Labels > maxLabels:
		return fmt.Errorf("labels %d out of range [1, %d]", w.Labels, maxLabels)
	case w.Churn < 0 || w.Churn > 1:
		return fmt.Errorf("churn %g out of range [0, 1]", w.Churn)
	case w.Rounds < 1 || w.Rounds > maxRounds:
		return fmt.Errorf("rounds %d out of range [1, %d]", w.Rounds, maxRounds)
	case w.Metrics*w.SeriesPerMetric*w.Rounds > maxSeriesRounds:
		return fmt.Errorf("series x rounds %d is over the limit %d", w.Metrics*w.SeriesPerMetric*w.Rounds, maxSeriesRounds)
	case w.Batch < 1:
		return fmt.Errorf("batch %d must be positive", w.Batch)
	case w.Interval <= 0:
		return fmt.Errorf("interval %s must be positive", w.Interval)
	case w.UserMetrics < 0 || w.UserMetrics > w.Metrics:
		return fmt.Errorf("user metrics %d out of range [0, %d]", w.UserMetrics, w.Metrics)
	case w.UserMetrics > 0 && (w.Users < 1 || w.Users > w.SeriesPerMetric):
		return fmt.Errorf("users %d out of range [1, %d]", w.Users, w.SeriesPerMetric)
	case w.Protocol != "" && w.Protocol != RemoteWrite && w.Protocol != OTLP:
		return fmt.Errorf("protocol %q: want %q or %q", w.Protocol, RemoteWrite, OTLP)
	}
	return nil
}

// Ring is the pre-encoded traffic: request i of a run sends Payloads[i%len].
// It is read-only once built and safe for concurrent use.
type Ring struct {
	Payloads     [][]byte // compressed requests: snappy WriteRequests, or gzip OTLP
	Samples      []int    // samples in each payload
	UniqueSeries int      // distinct series over all rounds
	RawBytes     int64    // protobuf bytes before compression
	EncBytes     int64    // compressed bytes
	Digest       string   // xxhash of every payload in order: equal digests, equal traffic
}

// Build encodes every round up front, in parallel, so that sending costs no
// more than writing bytes to a socket.
func Build(w Workload) (*Ring, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	total := w.Metrics * w.SeriesPerMetric
	rng := rand.New(rand.NewPCG(w.Seed, 0x9e3779b97f4a7c15))

	// Prometheus shards by series hash, so a request mixes metrics: send in a
	// shuffled, fixed order.
	order := rng.Perm(total)

	// gens[r][i] is the generation of series i in round r; churn bumps it, which
	// changes the pod label and so makes a new series.
	gens := make([][]uint32, w.Rounds)
	gens[0] = make([]uint32, total)
	churned := int(w.Churn*float64(total) + 0.5)
	unique := total
	for r := 1; r < w.Rounds; r++ {
		g := slices.Clone(gens[r-1])
		for _, i := range rng.Perm(total)[:churned] {
			g[i]++
		}
		gens[r] = g
		unique += churned
	}

	type job struct{ round, lo, hi int }
	var jobs []job
	for r := 0; r < w.Rounds; r++ {
		for lo := 0; lo < total; lo += w.Batch {
			jobs = append(jobs, job{r, lo, min(lo+w.Batch, total)})
		}
	}
	rg := &Ring{
		Payloads:     make([][]byte, len(jobs)),
		Samples:      make([]int, len(jobs)),
		UniqueSeries: unique,
	}
	names := metricNames(w.Metrics)

	var (
		next     atomic.Int64
		raw, enc atomic.Int64
		stop     atomic.Bool // the ring is too big, or a request failed to encode
		wg       sync.WaitGroup
		errOnce  sync.Once
		encErr   error
	)
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := newEncoder(w, names, gens)
			for {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) || stop.Load() {
					return
				}
				jb := jobs[j]
				n, p, err := e.encode(order[jb.lo:jb.hi], jb.round)
				if err != nil {
					errOnce.Do(func() { encErr = err })
					stop.Store(true)
					return
				}
				rg.Payloads[j] = p
				rg.Samples[j] = jb.hi - jb.lo
				raw.Add(int64(n))
				if enc.Add(int64(len(p))) > w.MaxRingBytes {
					stop.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	if encErr != nil {
		return nil, encErr
	}
	if enc.Load() > w.MaxRingBytes {
		return nil, fmt.Errorf("encoded payloads exceed %d bytes: lower rounds, series or labels, or raise -max-ring-bytes", w.MaxRingBytes)
	}
	rg.RawBytes, rg.EncBytes = raw.Load(), enc.Load()
	rg.Digest = Digest(rg.Payloads)
	if len(rg.Payloads) == 0 {
		return nil, errors.New("workload has no requests")
	}
	return rg, nil
}

// encoder turns the series of one request into its compressed payload. Each
// worker has its own, and reuses its buffers from request to request.
type encoder interface {
	// encode returns the size of the encoded request before compression and
	// the compressed payload, which the encoder does not keep.
	encode(series []int, round int) (raw int, payload []byte, err error)
}

func newEncoder(w Workload, names []string, gens [][]uint32) encoder {
	if w.Protocol == OTLP {
		return &otlpEncoder{w: w, names: names, gens: gens}
	}
	return &remoteWriteEncoder{w: w, names: names, gens: gens}
}

// timestamp is the time of the samples of round r, Unix milliseconds.
func (w Workload) timestamp(r int) int64 { return w.Start + int64(r)*w.Interval.Milliseconds() }

// value is the sample of series i in round r: it grows from round to round, as
// a counter does.
func value(r, i int) float64 { return float64(uint64(r+1) * uint64(1+i%97)) }

// remoteWriteEncoder makes snappy-compressed remote-write 1.0 WriteRequests.
type remoteWriteEncoder struct {
	w     Workload
	names []string
	gens  [][]uint32
	wr    prompb.WriteRequest
	pb    []byte
	lbs   []prompb.Label
}

func (e *remoteWriteEncoder) encode(series []int, round int) (int, []byte, error) {
	e.wr.Reset()
	e.lbs = e.lbs[:0]
	samples := make([]prompb.Sample, len(series))
	ts := e.w.timestamp(round)
	for k, i := range series {
		start := len(e.lbs)
		e.lbs = appendSeriesLabels(e.lbs, e.names, e.w, i, e.gens[round][i])
		samples[k] = prompb.Sample{Value: value(round, i), Timestamp: ts}
		e.wr.Timeseries = append(e.wr.Timeseries, prompb.TimeSeries{
			Labels:  e.lbs[start:len(e.lbs):len(e.lbs)],
			Samples: samples[k : k+1 : k+1],
		})
	}
	e.pb = e.wr.MarshalProtobuf(e.pb[:0])
	return len(e.pb), snappy.Encode(nil, e.pb), nil
}

// Digest is the xxhash of payloads in order, which Ring.Digest holds.
func Digest(payloads [][]byte) string {
	d := xxhash.New()
	for _, p := range payloads {
		_, _ = d.Write(p)
	}
	return strconv.FormatUint(d.Sum64(), 16)
}

func metricNames(n int) []string {
	names := make([]string, n)
	for m := range names {
		names[m] = metricName(m)
	}
	return names
}

func metricName(m int) string { return fmt.Sprintf("loadgen_m%04d_total", m) }

// Value sets of the labels that look like a Kubernetes scrape; every series of a
// metric differs in pod and instance, the rest are low-cardinality dimensions.
var (
	deployments = []string{"api", "checkout", "cart", "search", "payments", "auth", "catalog", "frontend", "shipping", "email", "ads", "recommend", "gateway", "inventory", "billing", "notify", "profile", "reviews", "pricing", "worker"}
	namespaces  = []string{"default", "shop", "platform", "data", "edge", "internal", "batch"}
	zones       = []string{"eu-west-1a", "eu-west-1b", "eu-west-1c"}
	containers  = []string{"app", "sidecar"}
	envs        = []string{"prod", "prod", "prod", "staging", "dev"}
	regions     = []string{"eu-west-1", "us-east-1", "ap-south-1"}
	teams       = []string{"core", "growth", "infra", "data", "mobile", "search"}
	methods     = []string{"GET", "GET", "GET", "POST", "PUT", "DELETE"}
	codes       = []string{"200", "200", "200", "200", "201", "204", "400", "404", "500", "503"}
	handlers    = []string{"/", "/api/v1/items", "/api/v1/items/:id", "/api/v1/cart", "/api/v1/checkout", "/healthz", "/login", "/search"}
)

// labelNames in the order they are added as -labels grows; az is fifth so the
// benchmark's labeldrop rule has something to drop with -labels >= 5.
var labelNames = []string{"pod", "instance", "job", "namespace", "az", "container", "env", "region", "node", "team", "version", "service", "method", "handler", "code"}

// appendSeriesLabels appends the sorted labels of series i (of generation gen) to dst.
func appendSeriesLabels(dst []prompb.Label, names []string, w Workload, i int, gen uint32) []prompb.Label {
	m, s := i/w.SeriesPerMetric, i%w.SeriesPerMetric
	start := len(dst)
	dst = append(dst, prompb.Label{Name: "__name__", Value: names[m]})
	if m < w.UserMetrics {
		// The other labels are those of the group's first series.
		dst = append(dst, prompb.Label{Name: "user_id", Value: fmt.Sprintf("u%04d", s%w.Users)})
		s -= s % w.Users
	}
	for k := range w.Labels {
		var name, value string
		if k < len(labelNames) {
			name = labelNames[k]
			value = labelValue(name, s, gen)
		} else {
			name = fmt.Sprintf("label_%02d", k)
			value = "value_" + strconv.Itoa((s*31+k)%50)
		}
		dst = append(dst, prompb.Label{Name: name, Value: value})
	}
	slices.SortFunc(dst[start:], func(a, b prompb.Label) int { return strings.Compare(a.Name, b.Name) })
	return dst
}

func labelValue(name string, s int, gen uint32) string {
	pick := func(vs []string, n int) string { return vs[n%len(vs)] }
	switch name {
	case "pod":
		return fmt.Sprintf("%s-%06x-%d", pick(deployments, s), s, gen)
	case "instance":
		return fmt.Sprintf("10.%d.%d.%d:9100", (s>>16)&255, (s>>8)&255, s&255)
	case "job":
		return pick(deployments, s)
	case "namespace":
		return pick(namespaces, s/7)
	case "az":
		return pick(zones, s)
	case "container":
		return pick(containers, s/3)
	case "env":
		return pick(envs, s/11)
	case "region":
		return pick(regions, s/13)
	case "node":
		return fmt.Sprintf("node-%03d", s%64)
	case "team":
		return pick(teams, s/5)
	case "version":
		return fmt.Sprintf("v1.%d.0", (s/100)%8)
	case "service":
		return pick(deployments, s/3)
	case "method":
		return pick(methods, s/2)
	case "handler":
		return pick(handlers, s/17)
	case "code":
		return pick(codes, s/19)
	}
	return "x"
}
