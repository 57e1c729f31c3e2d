package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// readLimitsFlags configure the two-tenant read scenario (-readlimits): tenant A
// sends heavy queries at load times its max_concurrent_queries and query_rate
// while tenant B queries one at a time, in rounds with A idle and A busy in
// alternation, through cardguard and straight to VictoriaMetrics.
type readLimitsFlags struct {
	workers       string // -search.maxWorkersPerQuery values, one VictoriaMetrics each; "default": flag unset
	vmFlags       string // more VictoriaMetrics flags for every configuration, space-separated
	rounds        int    // pairs of rounds (one idle, one busy) per configuration
	round         time.Duration
	maxConcurrent int
	queryRate     float64
	load          int      // A sends load × maxConcurrent senders at load × queryRate queries/s in total
	heavySeries   int      // series of each of A's two metrics
	queries       []string // A's heavy queries, one configuration each
	quiet         float64  // cores the rest of the machine may use in a round of a quiet pair
	bRate         float64  // B's queries per second on each path; 0: one at a time
}

// Tenants of the scenario, B's query and the label that keeps them apart on the
// single node, as in cmd/cardguard's TestReadLimitsIsolateTenantsAgainstVictoriaMetrics.
const (
	rlTenantA     = "1"
	rlTenantB     = "2"
	rlTenantLabel = "vm_account_id"
	rlQueryB      = `sum(light_metric_0{job="j-1"})`
)

// rlSample is one of B's queries: when it ran and how long it took.
type rlSample struct {
	start, end time.Time
	overlap    bool // one of A's admitted queries was under way (sent, queued in cardguard or running) at some point of it
	newConn    bool // the client dialled for it instead of reusing a connection
}

func (s rlSample) d() time.Duration { return s.end.Sub(s.start) }

// rlRound is one round's raw figures.
type rlRound struct {
	Busy          bool    `json:"busy"`
	Seconds       float64 `json:"seconds"`
	Cardguard     rlStats `json:"cardguard"`
	Direct        rlStats `json:"direct"`
	A             aStats  `json:"a"`
	CPUCardguard  float64 `json:"cpu_cardguard_s"`
	CPUVM         float64 `json:"cpu_vm_s"`
	CPUBench      float64 `json:"cpu_bench_s"`
	CPUMachine    float64 `json:"cpu_machine_s"`
	GCVM          float64 `json:"gc_cycles_vm"`
	GCCardguard   float64 `json:"gc_cycles_cardguard"`
	GCBench       uint32  `json:"gc_cycles_bench"`
	NewConns      int     `json:"b_new_connections"`
	cg, direct    []rlSample
	aAdmitted     [][2]time.Time
	aAdmittedTime []time.Duration
}

// others is the CPU the rest of the machine used during the round, in cores.
func (r rlRound) others() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return (r.CPUMachine - r.CPUCardguard - r.CPUVM - r.CPUBench) / r.Seconds
}

// rlStats are B's latencies on one path.
type rlStats struct {
	N          int     `json:"n"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	Max        float64 `json:"max_ms"`
	Overlapped int     `json:"overlapped"` // of N, those during an admitted query of A
	OverP50    float64 `json:"overlapped_p50_ms"`
	OverP99    float64 `json:"overlapped_p99_ms"`
	ClearP50   float64 `json:"clear_p50_ms"`
	ClearP99   float64 `json:"clear_p99_ms"`
}

// aStats count A's answers.
type aStats struct {
	OK         int      `json:"ok"`
	Limited    int      `json:"limited"`
	RetryAfter int      `json:"retry_after"`
	Other      int      `json:"other"`
	RetryVals  []string `json:"retry_after_values,omitempty"`
	FirstOther string   `json:"first_other,omitempty"`
	OKP50      float64  `json:"ok_p50_ms"`
	OKMax      float64  `json:"ok_max_ms"`
}

func (a *aStats) add(b aStats) {
	a.OK, a.Limited, a.RetryAfter, a.Other = a.OK+b.OK, a.Limited+b.Limited, a.RetryAfter+b.RetryAfter, a.Other+b.Other
	for _, v := range b.RetryVals {
		if !slices.Contains(a.RetryVals, v) {
			a.RetryVals = append(a.RetryVals, v)
		}
	}
	if a.FirstOther == "" {
		a.FirstOther = b.FirstOther
	}
}

// rlConfig is the result of one VictoriaMetrics configuration and query of A.
type rlConfig struct {
	Name        string    `json:"name"`
	VMFlags     []string  `json:"vm_flags"`
	QueryA      string    `json:"query_a"`
	Rounds      []rlRound `json:"rounds"`
	IdleCG      rlStats   `json:"idle_cardguard"`
	BusyCG      rlStats   `json:"busy_cardguard"`
	IdleDirect  rlStats   `json:"idle_direct"`
	BusyDirect  rlStats   `json:"busy_direct"`
	A           aStats    `json:"a"`
	Refusals    float64   `json:"cardguard_refused_queries"`
	ItemsB      int       `json:"b_items"`
	ItemsDirect int       `json:"b_items_direct"`
	HeavyAlone  float64   `json:"a_query_alone_p50_ms"` // A's query direct, nothing else running

	// The same over the pairs of rounds in both of which the rest of the
	// machine used less than -readlimits.quiet cores.
	QuietPairs      int     `json:"quiet_pairs"`
	QuietIdleCG     rlStats `json:"quiet_idle_cardguard"`
	QuietBusyCG     rlStats `json:"quiet_busy_cardguard"`
	QuietIdleDirect rlStats `json:"quiet_idle_direct"`
	QuietBusyDirect rlStats `json:"quiet_busy_direct"`
}

// readLimits runs the scenario once per VictoriaMetrics configuration and query
// of A, each with a fresh VictoriaMetrics and cardguard.
func (e *env) readLimits(ctx context.Context) ([]rlConfig, error) {
	var out []rlConfig
	for w := range strings.SplitSeq(e.cfg.rl.workers, ",") {
		w = strings.TrimSpace(w)
		var flags []string
		if w != "default" && w != "" {
			n, err := strconv.Atoi(w)
			if err != nil || n < 1 {
				return out, fmt.Errorf("-readlimits.workers: %q is neither \"default\" nor a positive number", w)
			}
			flags = append(flags, "-search.maxWorkersPerQuery="+w)
		}
		flags = append(flags, strings.Fields(e.cfg.rl.vmFlags)...)
		for _, q := range e.cfg.rl.queries {
			r, err := e.readLimitsConfig(ctx, len(out), flags, q)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func (e *env) readLimitsConfig(ctx context.Context, n int, vmFlags []string, queryA string) (rlConfig, error) {
	rl := e.cfg.rl
	name := "VictoriaMetrics defaults"
	if len(vmFlags) > 0 {
		name = strings.Join(vmFlags, " ")
	}
	name += ", A: " + queryA
	res := rlConfig{Name: name, VMFlags: vmFlags, QueryA: queryA}
	e.logf("read limits, %s: starting VictoriaMetrics and cardguard", name)
	if err := e.startVM("vm-data-readlimits-"+strconv.Itoa(n), vmFlags...); err != nil {
		return res, err
	}
	cfgPath := filepath.Join(e.work, "cardguard-readlimits.yml")
	if err := os.WriteFile(cfgPath, []byte(readLimitsPolicy(rl)), 0o644); err != nil {
		return res, err
	}
	cg, cgURL, err := e.startCardguard(ctx, "cardguard-readlimits", cfgPath)
	if err != nil {
		return res, err
	}
	defer cg.stop(15 * time.Second)

	if err := rlPush(cgURL, rlTenantA, "heavy_metric", 2, rl.heavySeries); err != nil {
		return res, err
	}
	if err := rlPush(cgURL, rlTenantB, "light_metric", 1, 100); err != nil {
		return res, err
	}
	if err := e.vmForceFlush(); err != nil {
		return res, err
	}

	// B alone, one query at a time; the direct path asks exactly what cardguard
	// forwards (its tenant filter), so that both answer the same.
	bClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	aClient := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4 * rl.load * rl.maxConcurrent}}
	bURL := cgURL + "/select/" + rlTenantB + "/prometheus/api/v1/query?query=" + url.QueryEscape(rlQueryB)
	directURL := e.vmURL + "/api/v1/query?" + url.Values{"query": {rlQueryB}, "extra_label": {rlTenantLabel + "=" + rlTenantB + ":0"}}.Encode()
	aURL := cgURL + "/select/" + rlTenantA + "/prometheus/api/v1/query?query=" + url.QueryEscape(queryA)
	aDirect := e.vmURL + "/api/v1/query?" + url.Values{"query": {queryA}, "extra_label": {rlTenantLabel + "=" + rlTenantA + ":0"}}.Encode()
	for i := range 100 { // connections, caches, VictoriaMetrics' parsed-query cache
		if _, res.ItemsB, err = rlGet(bClient, bURL); err != nil {
			return res, err
		}
		if _, res.ItemsDirect, err = rlGet(bClient, directURL); err != nil {
			return res, err
		}
		if i < 20 {
			if _, n, err := rlGet(aClient, aDirect); err != nil || n == 0 {
				return res, fmt.Errorf("tenant A's query direct: %d items, %v", n, err)
			}
		}
	}
	if res.ItemsB == 0 || res.ItemsB != res.ItemsDirect {
		return res, fmt.Errorf("tenant B's query answers %d items through cardguard, %d direct: want the same, not empty", res.ItemsB, res.ItemsDirect)
	}
	var alone []time.Duration
	for range 20 {
		d, _, err := rlGet(aClient, aDirect)
		if err != nil {
			return res, err
		}
		alone = append(alone, d)
		time.Sleep(50 * time.Millisecond)
	}
	slices.Sort(alone)
	res.HeavyAlone = ms(pct(alone, 0.5))
	e.logf("read limits, %s: tenant A's query alone, direct: p50 %.1f ms", name, res.HeavyAlone)

	for i := range rl.rounds {
		// Which comes first alternates, so that a machine getting faster or
		// slower during the run favours neither.
		for _, busy := range []bool{i%2 == 1, i%2 == 0} {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			r, err := e.rlRound(ctx, busy, cg, cgURL, bClient, aClient, bURL, directURL, aURL)
			if err != nil {
				return res, err
			}
			e.logf("read limits, %s, round %d busy=%-5v: B through cardguard p50 %.2f p99 %.2f ms, direct p50 %.2f p99 %.2f ms; A %d×200 %d×429; CPU s cardguard %.2f VictoriaMetrics %.2f machine %.2f of %.1f",
				name, len(res.Rounds)+1, busy, r.Cardguard.P50, r.Cardguard.P99, r.Direct.P50, r.Direct.P99, r.A.OK, r.A.Limited,
				r.CPUCardguard, r.CPUVM, r.CPUMachine, r.Seconds*float64(runtime.NumCPU()))
			res.Rounds = append(res.Rounds, r)
		}
	}
	var idleCG, busyCG, idleD, busyD []rlSample
	for _, r := range res.Rounds {
		if r.Busy {
			busyCG, busyD = append(busyCG, r.cg...), append(busyD, r.direct...)
			res.A.add(r.A)
		} else {
			idleCG, idleD = append(idleCG, r.cg...), append(idleD, r.direct...)
		}
	}
	res.IdleCG, res.BusyCG, res.IdleDirect, res.BusyDirect = rlSummary(idleCG), rlSummary(busyCG), rlSummary(idleD), rlSummary(busyD)
	idleCG, busyCG, idleD, busyD = nil, nil, nil, nil
	for i := 0; i+1 < len(res.Rounds); i += 2 {
		pair := res.Rounds[i : i+2]
		if pair[0].others() >= rl.quiet || pair[1].others() >= rl.quiet {
			continue
		}
		res.QuietPairs++
		for _, r := range pair {
			if r.Busy {
				busyCG, busyD = append(busyCG, r.cg...), append(busyD, r.direct...)
			} else {
				idleCG, idleD = append(idleCG, r.cg...), append(idleD, r.direct...)
			}
		}
	}
	res.QuietIdleCG, res.QuietBusyCG, res.QuietIdleDirect, res.QuietBusyDirect = rlSummary(idleCG), rlSummary(busyCG), rlSummary(idleD), rlSummary(busyD)
	var okLat []time.Duration
	for _, r := range res.Rounds {
		okLat = append(okLat, r.aAdmittedTime...)
	}
	slices.Sort(okLat)
	res.A.OKP50 = ms(pct(okLat, 0.5))
	if len(okLat) > 0 {
		res.A.OKMax = ms(okLat[len(okLat)-1])
	}
	res.Refusals, _ = scrapeSum(cgURL+"/metrics", `cardguard_refused_queries_total{`)
	return res, nil
}

// readLimitsPolicy is cardguard's policy for the scenario: tenants kept apart on
// the single node by a label, A's read limits, B's left at the defaults.
func readLimitsPolicy(rl readLimitsFlags) string {
	return fmt.Sprintf(`# Written by e2e/bench -readlimits.
default_tenant: "0:0"
upstream:
  tenant_label: %s
limits:
  overrides:
    %q:
      max_concurrent_queries: %d
      query_rate: %g
`, rlTenantLabel, rlTenantA, rl.maxConcurrent, rl.queryRate)
}

// rlRound measures B for one round, with A sending its load if busy.
func (e *env) rlRound(ctx context.Context, busy bool, cg *process, cgURL string, bClient, aClient *http.Client, bURL, directURL, aURL string) (rlRound, error) {
	rl := e.cfg.rl
	r := rlRound{Busy: busy}
	var (
		stop    = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		aResult aStats
	)
	if busy {
		senders := rl.load * rl.maxConcurrent
		every := time.Duration(float64(senders) / (float64(rl.load) * rl.queryRate) * float64(time.Second))
		for s := range senders {
			wg.Go(func() {
				var st aStats
				var admitted [][2]time.Time
				var lat []time.Duration
				// Senders spread over the interval rather than all at once.
				select {
				case <-stop:
				case <-time.After(every * time.Duration(s) / time.Duration(senders)):
				}
				tick := time.NewTicker(every)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						mu.Lock()
						aResult.add(st)
						r.aAdmitted = append(r.aAdmitted, admitted...)
						r.aAdmittedTime = append(r.aAdmittedTime, lat...)
						mu.Unlock()
						return
					default:
					}
					t0 := time.Now()
					code, hdr, err := rlSend(aClient, aURL)
					t1 := time.Now()
					switch {
					case err != nil:
						st.Other++
						if st.FirstOther == "" {
							st.FirstOther = err.Error()
						}
					case code == http.StatusOK:
						st.OK++
						admitted = append(admitted, [2]time.Time{t0, t1})
						lat = append(lat, t1.Sub(t0))
					case code == http.StatusTooManyRequests:
						st.Limited++
						if v := hdr.Get("Retry-After"); v != "" {
							st.RetryAfter++
							if !slices.Contains(st.RetryVals, v) {
								st.RetryVals = append(st.RetryVals, v)
							}
						}
					default:
						st.Other++
						if st.FirstOther == "" {
							st.FirstOther = "status " + strconv.Itoa(code)
						}
					}
					select {
					case <-stop:
					case <-tick.C:
					}
				}
			})
		}
		time.Sleep(time.Second) // A at full pace before B is measured
	}

	cpu0 := e.rlCPU(cg, cgURL)
	start := time.Now()
	var err error
	if rl.bRate > 0 {
		err = rlOpenLoop(ctx, &r, rl, start, bClient, bURL, directURL)
	} else {
		err = rlClosedLoop(ctx, &r, rl, start, bClient, bURL, directURL)
	}
	if err != nil {
		close(stop)
		wg.Wait()
		return r, err
	}
	r.Seconds = time.Since(start).Seconds()
	cpu1 := e.rlCPU(cg, cgURL)
	close(stop)
	wg.Wait()
	r.A = aResult
	r.CPUCardguard, r.CPUVM, r.CPUBench, r.CPUMachine = cpu1.cg-cpu0.cg, cpu1.vm-cpu0.vm, cpu1.self-cpu0.self, cpu1.machine-cpu0.machine
	r.GCVM, r.GCCardguard, r.GCBench = cpu1.gcVM-cpu0.gcVM, cpu1.gcCG-cpu0.gcCG, cpu1.gcSelf-cpu0.gcSelf
	for _, ss := range [][]rlSample{r.cg, r.direct} {
		for i := range ss {
			s := &ss[i]
			if s.newConn {
				r.NewConns++
			}
			for _, a := range r.aAdmitted {
				if a[0].Before(s.end) && a[1].After(s.start) {
					s.overlap = true
					break
				}
			}
		}
	}
	r.Cardguard, r.Direct = rlSummary(r.cg), rlSummary(r.direct)
	return r, nil
}

type rlCounters struct {
	cg, vm, self, machine float64
	gcVM, gcCG            float64
	gcSelf                uint32
}

func (e *env) rlCPU(cg *process, cgURL string) rlCounters {
	var c rlCounters
	c.cg, _ = cpuSeconds(cg.pid(), e.ticks)
	c.vm, _ = cpuSeconds(e.vm.pid(), e.ticks)
	c.self, _ = cpuSeconds(os.Getpid(), e.ticks)
	c.machine, _ = machineCPUSeconds(e.ticks)
	c.gcVM, _ = scrapeSum(e.vmURL+"/metrics", "go_gc_duration_seconds_count")
	c.gcCG, _ = scrapeSum(cgURL+"/metrics", "go_gc_duration_seconds_count")
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	c.gcSelf = m.NumGC
	return c
}

// machineCPUSeconds is the CPU time every CPU spent busy since boot (the first
// line of /proc/stat without idle and iowait).
func machineCPUSeconds(ticks float64) (float64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy float64
	for i, v := range f[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are in user already
			continue
		}
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return 0, err
		}
		busy += n
	}
	return busy / ticks, nil
}

func rlSummary(ss []rlSample) rlStats {
	var all, over, clear []time.Duration
	for _, s := range ss {
		all = append(all, s.d())
		if s.overlap {
			over = append(over, s.d())
		} else {
			clear = append(clear, s.d())
		}
	}
	for _, x := range [][]time.Duration{all, over, clear} {
		slices.Sort(x)
	}
	st := rlStats{N: len(all), Overlapped: len(over),
		P50: ms(pct(all, 0.5)), P99: ms(pct(all, 0.99)),
		OverP50: ms(pct(over, 0.5)), OverP99: ms(pct(over, 0.99)),
		ClearP50: ms(pct(clear, 0.5)), ClearP99: ms(pct(clear, 0.99)),
	}
	if len(all) > 0 {
		st.Max = ms(all[len(all)-1])
	}
	return st
}

// rlOpenLoop sends B's queries at a fixed rate, each at its appointed time
// whether or not the ones before it were answered, alternately through cardguard
// and direct, as independent users do: a stall then delays every query sent
// during it. (A client that waits for each answer before its next query sends
// fewer queries during a stall, and its percentiles underweight it.) Latency runs
// from sending, so that the benchmark's own timer jitter is not counted.
func rlOpenLoop(ctx context.Context, r *rlRound, rl readLimitsFlags, start time.Time, c *http.Client, bURL, directURL string) error {
	every := time.Duration(float64(time.Second) / (2 * rl.bRate))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for i := 1; ; i++ {
		at := start.Add(time.Duration(i) * every)
		if at.Sub(start) > rl.round || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Until(at))
		dst, u := &r.cg, bURL
		if i%2 == 0 {
			dst, u = &r.direct, directURL
		}
		wg.Go(func() {
			s, err := rlTimed(c, u)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			*dst = append(*dst, s)
		})
	}
	wg.Wait()
	return firstErr
}

// rlClosedLoop sends B's queries one at a time, 2 ms apart, alternately through
// cardguard and direct, the order swapped every time.
func rlClosedLoop(ctx context.Context, r *rlRound, rl readLimitsFlags, start time.Time, c *http.Client, bURL, directURL string) error {
	for i := 0; time.Since(start) < rl.round && ctx.Err() == nil; i++ {
		first, second := &r.cg, &r.direct
		fu, su := bURL, directURL
		if i%2 == 1 {
			first, second, fu, su = second, first, su, fu
		}
		s, err := rlTimed(c, fu)
		if err != nil {
			return err
		}
		*first = append(*first, s)
		if s, err = rlTimed(c, su); err != nil {
			return err
		}
		*second = append(*second, s)
		time.Sleep(2 * time.Millisecond)
	}
	return nil
}

// rlTimed sends one of B's queries and notes whether it reused a connection.
func rlTimed(c *http.Client, u string) (rlSample, error) {
	var s rlSample
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { s.newConn = !i.Reused }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, u, nil)
	if err != nil {
		return s, err
	}
	s.start = time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return s, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	s.end = time.Now()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: status %d", u, resp.StatusCode)
	}
	return s, err
}

// rlSend sends one of A's queries and returns its status and headers.
func rlSend(c *http.Client, u string) (int, http.Header, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, nil, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header, nil
}

// rlGet sends a query that must answer 200 and counts the series in its answer.
func rlGet(c *http.Client, u string) (time.Duration, int, error) {
	t0 := time.Now()
	resp, err := c.Get(u)
	if err != nil {
		return 0, 0, err
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	d := time.Since(t0)
	if err != nil {
		return d, 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return d, 0, fmt.Errorf("GET %s: status %d: %.200s", u, resp.StatusCode, body)
	}
	var ans struct {
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return d, 0, fmt.Errorf("GET %s: %w", u, err)
	}
	return d, countItems(ans.Data), nil
}

// rlPush writes metrics prefix_0.. of perMetric series each for tenant tn through
// cardguard (Prometheus text import): label id unique per series, instance one of
// 100 values and job one of 10, as in the end-to-end test.
func rlPush(cgURL, tn, prefix string, metrics, perMetric int) error {
	ts := time.Now().Add(-time.Minute).UnixMilli()
	var b strings.Builder
	flush := func() error {
		if b.Len() == 0 {
			return nil
		}
		resp, err := http.Post(cgURL+"/insert/"+tn+"/prometheus/api/v1/import/prometheus", "text/plain", strings.NewReader(b.String()))
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("import for tenant %s: status %d: %.200s", tn, resp.StatusCode, body)
		}
		b.Reset()
		return nil
	}
	for m := range metrics {
		for i := range perMetric {
			fmt.Fprintf(&b, "%s_%d{id=\"%d\",instance=\"i-%d\",job=\"j-%d\"} %d %d\n", prefix, m, i, i%100, i%10, i, ts)
			if (i+1)%10_000 == 0 {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}
