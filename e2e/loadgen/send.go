package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cardguard/cardguard/e2e/workload"
)

// sendConfig says where and how hard to send the ring.
type sendConfig struct {
	URLs        []string      // round-robin per request
	Header      http.Header   // of every request
	Concurrency int           // requests in flight
	Duration    time.Duration // stop taking new requests after this; 0: no time bound
	Requests    int64         // stop after this many requests; 0: no count bound
	Timeout     time.Duration // per request
	MaxErrors   int64         // stop after this many transport errors
	// RoundLen, when positive, makes the URLs replicas of one target that share
	// one walk of the ring (see pick); it is the number of payloads per round.
	// Zero: the URLs are tenants, each walking the whole ring.
	RoundLen int64
}

// stats is what one worker saw; merged at the end.
type stats struct {
	latencies   []time.Duration
	codes       map[int]int64
	errors      int64
	firstErr    string
	samplesSent int64
	samplesOK   int64
	bytesSent   int64
}

// checkLoopback refuses targets off this machine: the generator is a benchmark
// tool and must never be pointed at someone else's server by accident.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("bad url %q: %w", raw, err)
	}
	if u.Scheme != "http" {
		return fmt.Errorf("url %q: only http is supported", raw)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("url %q: only loopback targets (127.0.0.0/8, ::1, localhost) are allowed", raw)
}

// send runs the load and returns the merged stats and the wall time it took,
// from the first request to the last answer.
func send(ctx context.Context, cfg sendConfig, rg *workload.Ring) (stats, time.Duration) {
	tr := &http.Transport{
		MaxIdleConns:        cfg.Concurrency,
		MaxIdleConnsPerHost: cfg.Concurrency,
		DisableCompression:  true,
		IdleConnTimeout:     time.Minute,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: cfg.Timeout}

	var (
		next   atomic.Int64
		errs   atomic.Int64
		wg     sync.WaitGroup
		all    = make([]stats, cfg.Concurrency)
		nurls  = int64(len(cfg.URLs))
		nring  = int64(len(rg.Payloads))
		start  = time.Now()
		cancel context.CancelFunc
	)
	if cfg.Duration > 0 {
		ctx, cancel = context.WithDeadline(ctx, start.Add(cfg.Duration))
		defer cancel()
	}
	for w := range cfg.Concurrency {
		wg.Add(1)
		go func(st *stats) {
			defer wg.Done()
			st.codes = map[int]int64{}
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if cfg.Requests > 0 && i >= cfg.Requests {
					return
				}
				u, p := cfg.pick(i, nurls, nring)
				// In-flight requests finish after the deadline so that they are
				// counted as what they are, not as cancellations.
				code, err := post(client, cfg.URLs[u], cfg.Header, rg.Payloads[p], st)
				st.samplesSent += int64(rg.Samples[p])
				st.bytesSent += int64(len(rg.Payloads[p]))
				if err != nil {
					st.errors++
					if st.firstErr == "" {
						st.firstErr = err.Error()
					}
					if errs.Add(1) >= cfg.MaxErrors {
						return
					}
					// A refused connection answers at once: do not spin.
					time.Sleep(50 * time.Millisecond)
					continue
				}
				st.codes[code]++
				if code/100 == 2 {
					st.samplesOK += int64(rg.Samples[p])
				}
			}
		}(&all[w])
	}
	wg.Wait()
	elapsed := time.Since(start)

	var m stats
	m.codes = map[int]int64{}
	for _, st := range all {
		m.latencies = append(m.latencies, st.latencies...)
		for c, n := range st.codes {
			m.codes[c] += n
		}
		m.errors += st.errors
		if m.firstErr == "" {
			m.firstErr = st.firstErr
		}
		m.samplesSent += st.samplesSent
		m.samplesOK += st.samplesOK
		m.bytesSent += st.bytesSent
	}
	slices.Sort(m.latencies)
	return m, elapsed
}

// pick returns the URL and the payload of request i. Tenants: each URL walks
// the whole ring, request i goes to URL i%n with payload (i/n)%len. Replicas:
// request i takes payload i%len, and the URLs take the requests of a round in
// turn, starting one further each round, so that the series of one payload
// reach a different replica in each round, as they would behind a load
// balancer, where no series sticks to one replica. Without the shift, a round
// whose length is a multiple of n would send every series to the same replica
// every time.
func (cfg sendConfig) pick(i, nurls, nring int64) (url, payload int64) {
	if cfg.RoundLen <= 0 {
		return i % nurls, (i / nurls) % nring
	}
	return (i%cfg.RoundLen + i/cfg.RoundLen) % nurls, i % nring
}

// requestHeader is what a sender of the protocol sets: Prometheus for remote
// write 1.0, the Collector's otlphttp exporter (gzip, its default) for OTLP.
func requestHeader(p workload.Protocol) http.Header {
	h := http.Header{}
	h.Set("Content-Type", "application/x-protobuf")
	h.Set("User-Agent", "cardguard-loadgen")
	if p == workload.OTLP {
		h.Set("Content-Encoding", "gzip")
		return h
	}
	h.Set("Content-Encoding", "snappy")
	h.Set("X-Prometheus-Remote-Write-Version", "0.1.0")
	return h
}

// post sends one request and records its latency. The body is read to the end
// so the connection is reused.
func post(client *http.Client, u string, h http.Header, payload []byte, st *stats) (int, error) {
	req, err := http.NewRequest(http.MethodPost, u, bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	req.Header = h.Clone()
	t0 := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	body, rerr := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	st.latencies = append(st.latencies, time.Since(t0))
	if rerr != nil {
		return 0, rerr
	}
	if resp.StatusCode/100 != 2 && st.firstErr == "" {
		st.firstErr = "status " + strconv.Itoa(resp.StatusCode) + ": " + string(bytes.TrimSpace(body))
	}
	return resp.StatusCode, nil
}

// percentile of sorted latencies, nearest rank; 0 when there are none.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}
