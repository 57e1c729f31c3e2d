package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// scaleFlags are the -scale.* flags: the same active series written through 1,
// 2 and 3 cardguard replicas that share one Redis.
type scaleFlags struct {
	series, metrics, rounds int
	replicas                string        // comma-separated replica counts, run in this order
	settle                  time.Duration // after the load, before memory is read
	redisBin                string
	tenantLimits            string        // YAML mapping: tenant 0's limits
	profile                 time.Duration // CPU profile of each replica from the start of the load; 0: none
	idle                    time.Duration // replicas' CPU measured idle before the load
}

func (s scaleFlags) validate() error {
	if s.series < 1 || s.metrics < 1 || s.series%s.metrics != 0 {
		return fmt.Errorf("-scale.series %d must be a positive multiple of -scale.metrics %d", s.series, s.metrics)
	}
	if s.rounds < 2 {
		return fmt.Errorf("-scale.rounds %d: at least 2, so that every series goes through more than one replica", s.rounds)
	}
	if s.settle < 0 || s.settle > 5*time.Minute {
		return fmt.Errorf("-scale.settle %s out of range [0, 5m]", s.settle)
	}
	if _, err := s.counts(); err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal([]byte(s.tenantLimits), &m); err != nil || len(m) == 0 {
		return fmt.Errorf("-scale.tenant-limits %q: want a YAML mapping of limits", s.tenantLimits)
	}
	return nil
}

// counts are the replica counts of -scale.replicas.
func (s scaleFlags) counts() ([]int, error) {
	var ns []int
	for _, f := range strings.Split(s.replicas, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			return nil, fmt.Errorf("-scale.replicas %q: want replica counts in [1, 16], comma-separated", s.replicas)
		}
		ns = append(ns, n)
	}
	return ns, nil
}

// scaleResult is one replica count's run.
type scaleResult struct {
	Replicas      int       `json:"replicas"`
	Series        int       `json:"series"` // active series the workload has
	Load          lgResult  `json:"load"`
	PushSeconds   float64   `json:"push_s"` // from the first request to the last sample stored
	Members       []member  `json:"members"`
	RedisBase     int64     `json:"redis_used_memory_start"`
	RedisUsed     int64     `json:"redis_used_memory"`
	RedisMembers  int64     `json:"redis_membership_bytes"` // MEMORY USAGE of the series membership keys
	RedisCPU      float64   `json:"redis_cpu_s"`
	VMCPU         float64   `json:"vm_cpu_s"`
	VMRows        float64   `json:"vm_rows_inserted"`
	VMSeries      float64   `json:"vm_series"` // count({__name__=~".+"}) at the last round
	Gauges        []gauge   `json:"gauges"`    // cardguard_* gauges about entries or series
	Counters      []gauge   `json:"counters"`  // cardguard_* counters of refusals and errors that are not zero
	Failures      []string  `json:"failures,omitempty"`
	Notes         []string  `json:"notes,omitempty"`
	StateReplicas []float64 `json:"state_replicas"` // cardguard_state_replicas of each replica before the load
	ReadySeconds  float64   `json:"replicas_ready_s"`
	SettleSeconds float64   `json:"settle_s"`
	// IdleSeconds is the window before the load in which each member's
	// IdleCPU was measured; WindowSeconds the one of CPU, from the first
	// request to the end of the settle.
	IdleSeconds   float64 `json:"idle_s"`
	WindowSeconds float64 `json:"cpu_window_s"`
}

// member is one replica's figures after the load.
type member struct {
	Name      string  `json:"name"`
	URL       string  `json:"url"`
	HeapLive  float64 `json:"heap_alloc_after_gc_bytes"`
	HeapInuse float64 `json:"heap_inuse_after_gc_bytes"`
	// Sketches is cardguard_cardinality_sketch_memory_bytes: the HLL sketches,
	// bounded by the cardinality caps and held whole by every replica (each
	// merges the others' so that its estimates are global).
	Sketches float64 `json:"sketch_memory_bytes"`
	RSSKiB   int64   `json:"rss_kib"`
	CPU      float64 `json:"cpu_s"`
	// CPUSettle is the part of CPU spent after the load was stored, while the
	// replicas exchanged what it left (sketches, usage).
	CPUSettle float64 `json:"cpu_settle_s"`
	// IdleCPU is what the replica used before the load, over IdleSeconds: its
	// heartbeats, syncs and refreshes, which go on whatever the load.
	IdleCPU float64 `json:"idle_cpu_s"`
}

// gauge is one metric name summed over its label sets, per replica.
type gauge struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
}

// CardguardCPU is the CPU of every replica together.
func (r scaleResult) CardguardCPU() float64 {
	var s float64
	for _, m := range r.Members {
		s += m.CPU
	}
	return s
}

// IdleRate is the CPU the replicas used idle, together, per second.
func (r scaleResult) IdleRate() float64 {
	if r.IdleSeconds <= 0 {
		return 0
	}
	var s float64
	for _, m := range r.Members {
		s += m.IdleCPU
	}
	return s / r.IdleSeconds
}

// CardguardBusyCPU is CardguardCPU less what the replicas would have used idle
// over the same window: the part the load cost.
func (r scaleResult) CardguardBusyCPU() float64 {
	return r.CardguardCPU() - r.IdleRate()*r.WindowSeconds
}

// CardguardSettleCPU is the replicas' CPU after the load, together.
func (r scaleResult) CardguardSettleCPU() float64 {
	var s float64
	for _, m := range r.Members {
		s += m.CPUSettle
	}
	return s
}

// perSample is seconds of CPU per sample sent, in µs.
func (r scaleResult) perSample(cpu float64) float64 {
	if r.Load.SamplesSent == 0 {
		return 0
	}
	return cpu * 1e6 / float64(r.Load.SamplesSent)
}

// heapRange is the smallest and largest replica heap after a GC, and their sum.
func (r scaleResult) heapRange() (lo, hi, sum float64) {
	return r.rangeOf(func(m member) float64 { return m.HeapLive })
}

// heapBeyondSketchesRange is heapRange less the sketches: the part of the heap
// that must shrink as replicas divide the series.
func (r scaleResult) heapBeyondSketchesRange() (lo, hi, sum float64) {
	return r.rangeOf(func(m member) float64 { return m.HeapLive - m.Sketches })
}

func (r scaleResult) rangeOf(f func(member) float64) (lo, hi, sum float64) {
	for i, m := range r.Members {
		v := f(m)
		if i == 0 || v < lo {
			lo = v
		}
		hi = max(hi, v)
		sum += v
	}
	return lo, hi, sum
}

func (r scaleResult) rssRange() (lo, hi int64) {
	for i, m := range r.Members {
		if i == 0 || m.RSSKiB < lo {
			lo = m.RSSKiB
		}
		hi = max(hi, m.RSSKiB)
	}
	return lo, hi
}

// membersPerSeries is the series membership's Redis memory per active series.
func (r scaleResult) membersPerSeries() float64 {
	if r.Series == 0 {
		return 0
	}
	return float64(r.RedisMembers) / float64(r.Series)
}

// redisPerSeries is what Redis grew by, per active series.
func (r scaleResult) redisPerSeries() float64 {
	if r.Series == 0 {
		return 0
	}
	return float64(r.RedisUsed-r.RedisBase) / float64(r.Series)
}

// scaleOut runs the workload once per replica count, each on fresh processes, and
// writes the section. A run in which writes failed or VictoriaMetrics holds
// fewer series than were sent is still written, marked, and fails the command.
func (e *env) scaleOut(ctx context.Context, info runInfo) error {
	s := e.cfg.sc
	counts, err := s.counts()
	if err != nil {
		return err
	}
	// One workload for every replica count: the same bytes, timestamps in the
	// recent past. Rounds without churn are the same series again, one interval
	// later.
	e.cfg.wl = workloadFlags{
		metrics: s.metrics, seriesPerMetric: s.series / s.metrics, labels: e.cfg.wl.labels,
		rounds: s.rounds, batch: e.cfg.wl.batch, churn: 0, seed: e.cfg.wl.seed, interval: e.cfg.wl.interval,
	}
	e.cfg.wl.start = time.Now().Truncate(time.Minute).Add(-time.Duration(s.rounds)*e.cfg.wl.interval - time.Minute).UnixMilli()
	redisVersion := commandVersion(s.redisBin)
	var rs []scaleResult
	for _, n := range counts {
		r, err := e.scaleRun(ctx, n)
		if err != nil {
			return fmt.Errorf("%d replicas: %w", n, err)
		}
		for _, f := range r.Failures {
			e.logf("scale: %d replicas: FAILED: %s", n, f)
		}
		rs = append(rs, r)
	}
	info.finish()
	e.saveJSON("scale.json", map[string]any{"info": info, "redis_version": redisVersion, "runs": rs})
	section := renderScale(info, redisVersion, rs, e.cfg)
	fmt.Println(section)
	if err := updateSection(e.cfg.out, "scale", section); err != nil {
		return err
	}
	if n := failedRuns(rs); n > 0 {
		return fmt.Errorf("%d of %d runs lost or refused writes: their figures are not those of the whole workload (see %s)", n, len(rs), e.cfg.out)
	}
	return nil
}

func failedRuns(rs []scaleResult) int {
	n := 0
	for _, r := range rs {
		if len(r.Failures) > 0 {
			n++
		}
	}
	return n
}

// scaleRun starts a VictoriaMetrics, a Redis and n replicas, all fresh, sends the
// workload round-robin over the replicas, measures, and stops them all.
func (e *env) scaleRun(ctx context.Context, n int) (scaleResult, error) {
	s := e.cfg.sc
	r := scaleResult{Replicas: n, Series: s.series}
	tag := "scale-" + strconv.Itoa(n)
	var stop []*process
	defer func() {
		for i := len(stop) - 1; i >= 0; i-- {
			stop[i].stop(15 * time.Second)
		}
		// A million series leave hundreds of MiB behind per run.
		_ = os.RemoveAll(filepath.Join(e.work, tag))
	}()
	if err := os.MkdirAll(filepath.Join(e.work, tag), 0o755); err != nil {
		return r, err
	}
	// count() over every series must not hit VictoriaMetrics' cap on the series
	// one query may select, which depends on the machine's memory.
	if err := e.startVM(filepath.Join(tag, "vm-data"), "-search.maxUniqueTimeseries="+strconv.Itoa(2*s.series+1000)); err != nil {
		return r, err
	}
	stop = append(stop, e.vm)
	redis, redisAddr, err := e.startRedis(ctx, tag)
	if err != nil {
		return r, err
	}
	stop = append(stop, redis)
	if r.RedisBase, err = redisUsedMemory(redisAddr); err != nil {
		return r, err
	}
	var procs []*process
	for i := 1; i <= n; i++ {
		p, base, err := e.startReplica(ctx, tag, i, redisAddr)
		if err != nil {
			return r, err
		}
		stop = append(stop, p)
		procs = append(procs, p)
		r.Members = append(r.Members, member{Name: p.name, URL: base})
	}
	t0 := time.Now()
	r.StateReplicas, err = waitReplicas(ctx, r.Members, 30*time.Second)
	r.ReadySeconds = time.Since(t0).Seconds()
	if err != nil {
		// Replicas that do not know each other still take writes, but the run
		// would not be the one it claims to be.
		r.Notes = append(r.Notes, err.Error())
	}
	e.logf("scale: %d replicas up (each sees %v), pushing %d series in %d rounds", n, r.StateReplicas, s.series, s.rounds)

	if s.idle > 0 {
		i0, t := e.scaleCPU(procs, redis), time.Now()
		select {
		case <-time.After(s.idle):
		case <-ctx.Done():
			return r, ctx.Err()
		}
		i1 := e.scaleCPU(procs, redis)
		r.IdleSeconds = time.Since(t).Seconds()
		for i := range r.Members {
			r.Members[i].IdleCPU = i1[i] - i0[i]
		}
	}
	cpu0, tCPU := e.scaleCPU(procs, redis), time.Now()
	rows0, err := e.vmRows()
	if err != nil {
		return r, err
	}
	urls := make([]string, n)
	for i, m := range r.Members {
		urls[i] = m.URL + "/api/v1/write"
	}
	t0 = time.Now()
	profiled := e.profileReplicas(tag, r.Members)
	r.Load, err = e.loadgen(ctx, tag, strings.Join(urls, ","), "-passes=1", "-concurrency="+strconv.Itoa(e.cfg.concurrency), "-duration=15m")
	if err != nil {
		return r, err
	}
	rows, err := e.waitDelivered(ctx, rows0+float64(r.Load.SamplesOK), 2*time.Minute)
	r.VMRows = rows - rows0
	if err != nil {
		// checkScale counts the rows against the workload's and fails the run.
		r.Notes = append(r.Notes, err.Error())
	}
	r.PushSeconds = time.Since(t0).Seconds()
	// Replicas exchange sketches and usage every sync interval: what the load
	// leaves in their heaps and in Redis is read once that has happened, and its
	// CPU counts with the load's.
	t1 := time.Now()
	cpuLoad := e.scaleCPU(procs, redis)
	select {
	case <-time.After(s.settle):
	case <-ctx.Done():
		return r, ctx.Err()
	}
	r.SettleSeconds = time.Since(t1).Seconds()
	cpu1 := e.scaleCPU(procs, redis)
	r.WindowSeconds = time.Since(tCPU).Seconds()
	profiled()
	for i := range r.Members {
		r.Members[i].CPU = cpu1[i] - cpu0[i]
		r.Members[i].CPUSettle = cpu1[i] - cpuLoad[i]
	}
	r.VMCPU = cpu1[n] - cpu0[n]
	r.RedisCPU = cpu1[n+1] - cpu0[n+1]
	if r.RedisUsed, err = redisUsedMemory(redisAddr); err != nil {
		r.Notes = append(r.Notes, "Redis used_memory not read: "+err.Error())
	}
	if r.RedisMembers, err = redisMembershipMemory(redisAddr, "0:0", time.Now()); err != nil {
		r.Notes = append(r.Notes, "Redis membership memory not read: "+err.Error())
	}
	e.readMembers(&r, procs)
	e.checkScale(&r)
	e.logf("scale: %d replicas: %s", n, scaleSummary(r))
	return r, nil
}

// scaleCPU is the CPU seconds so far of every replica, then VictoriaMetrics, then
// Redis.
func (e *env) scaleCPU(replicas []*process, redis *process) []float64 {
	var out []float64
	for _, p := range append(slices.Clone(replicas), e.vm, redis) {
		s, err := cpuSeconds(p.pid(), e.ticks)
		if err != nil {
			e.logf("scale: CPU of %s: %v", p.name, err)
		}
		out = append(out, s)
	}
	return out
}

// readMembers reads each replica's heap after a forced GC, its RSS and its
// gauges and counters.
func (e *env) readMembers(r *scaleResult, procs []*process) {
	gauges, counters := map[string][]float64{}, map[string][]float64{}
	for i := range r.Members {
		m := &r.Members[i]
		m.RSSKiB, _ = memKiB(procs[i].pid(), "VmRSS")
		// Twice: the first GC moves sync.Pool's buffers to its victim cache,
		// the second frees them. What is left is what the replica holds.
		_ = forceGC(m.URL)
		if err := forceGC(m.URL); err != nil {
			r.Notes = append(r.Notes, m.Name+": heap after a GC not measured: "+err.Error())
		}
		fam, err := scrapeFamilies(m.URL + "/metrics")
		if err != nil {
			r.Failures = append(r.Failures, m.Name+": /metrics: "+err.Error())
			continue
		}
		m.HeapLive = fam["go_memstats_heap_alloc_bytes"].value
		m.HeapInuse = fam["go_memstats_heap_inuse_bytes"].value
		m.Sketches = fam["cardguard_cardinality_sketch_memory_bytes"].value
		for name, f := range fam {
			switch {
			case f.typ == "gauge" && sizeGauge(name):
				addAt(gauges, name, i, len(r.Members), f.value)
			case f.typ == "counter" && troubleCounter(name) && f.value != 0:
				addAt(counters, name, i, len(r.Members), f.value)
			}
		}
	}
	r.Gauges, r.Counters = sortedGauges(gauges), sortedGauges(counters)
}

// sizeGauge says whether a gauge counts what a replica holds: entries of a cache
// or series it keeps.
func sizeGauge(name string) bool {
	return strings.HasPrefix(name, "cardguard_") && (strings.Contains(name, "entries") || strings.Contains(name, "series"))
}

// troubleCounter says whether a counter counts samples refused or dropped, or
// errors on the way to VictoriaMetrics, to Redis or to another replica.
func troubleCounter(name string) bool {
	if !strings.HasPrefix(name, "cardguard_") || strings.Contains(name, "quer") {
		return false
	}
	for _, w := range []string{"discard", "reject", "refus", "error", "drop"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// lostSamples says whether a trouble counter counts samples that did not reach
// VictoriaMetrics although the client may have been answered 2xx.
func lostSamples(name string) bool {
	return strings.Contains(name, "discarded_samples") || strings.Contains(name, "reject") || strings.Contains(name, "ingest")
}

func addAt(m map[string][]float64, name string, i, n int, v float64) {
	if m[name] == nil {
		m[name] = make([]float64, n)
	}
	m[name][i] += v
}

func sortedGauges(m map[string][]float64) []gauge {
	out := make([]gauge, 0, len(m))
	for name, vs := range m {
		out = append(out, gauge{Name: name, Values: vs})
	}
	slices.SortFunc(out, func(a, b gauge) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// checkScale turns what says that writes went missing into failures: samples not
// answered 2xx, samples a replica counted as refused or dropped, fewer rows or
// series in VictoriaMetrics than were sent.
func (e *env) checkScale(r *scaleResult) {
	if lost := r.Load.SamplesSent - r.Load.SamplesOK; lost != 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d of %d samples not accepted: status %s, first error %q", lost, r.Load.SamplesSent, statusString(r.Load.Status), r.Load.FirstError))
	}
	for _, c := range r.Counters {
		var sum float64
		for _, v := range c.Values {
			sum += v
		}
		msg := fmt.Sprintf("%s = %.0f (per replica %v)", c.Name, sum, c.Values)
		if lostSamples(c.Name) {
			r.Failures = append(r.Failures, msg)
		} else {
			r.Notes = append(r.Notes, msg)
		}
	}
	// Every replica's estimate of the tenant is the union of all of them once
	// the sketches were exchanged: one that differs had not merged the others'
	// yet, and its share of the exchange's CPU and memory is not in the figures.
	for _, g := range r.Gauges {
		if g.Name != "cardguard_tenant_active_series" || len(g.Values) < 2 {
			continue
		}
		lo, hi := slices.Min(g.Values), slices.Max(g.Values)
		if hi > 0 && lo < 0.99*hi {
			r.Notes = append(r.Notes, fmt.Sprintf("the replicas' estimates of active series had not converged after the settle (%v): raise -scale.settle", g.Values))
		}
	}
	if want := float64(r.Series * e.cfg.sc.rounds); r.VMRows < want {
		r.Failures = append(r.Failures, fmt.Sprintf("VictoriaMetrics inserted %.0f rows, want %.0f", r.VMRows, want))
	}
	if err := e.vmForceFlush(); err != nil {
		r.Notes = append(r.Notes, err.Error())
	}
	n, err := e.vmSeriesCount(e.cfg.wl.dataEnd())
	r.VMSeries = n
	switch {
	case err != nil:
		r.Failures = append(r.Failures, "series in VictoriaMetrics not counted: "+err.Error())
	case int(n) != r.Series:
		r.Failures = append(r.Failures, fmt.Sprintf("VictoriaMetrics holds %.0f series, want %d", n, r.Series))
	}
}

// vmSeriesCount asks VictoriaMetrics how many series have a sample within the
// lookback before at.
func (e *env) vmSeriesCount(at time.Time) (float64, error) {
	q := url.Values{"query": {`count({__name__=~".+"})`}, "time": {strconv.FormatInt(at.Unix(), 10)}}
	resp, err := http.Get(e.vmURL + "/api/v1/query?" + q.Encode())
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("count query: %s: %w", resp.Status, err)
	}
	if body.Status != "success" {
		return 0, fmt.Errorf("count query: %s %s", resp.Status, body.Error)
	}
	if len(body.Data.Result) == 0 {
		return 0, nil
	}
	v, _ := body.Data.Result[0].Value[1].(string)
	return strconv.ParseFloat(v, 64)
}

// startRedis starts a redis-server that keeps nothing on disk, on a free port.
func (e *env) startRedis(ctx context.Context, tag string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	_, port, _ := net.SplitHostPort(addr)
	p, err := startProcess("redis-"+tag, e.cfg.sc.redisBin, []string{
		"--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--dir", filepath.Join(e.work, tag),
	}, filepath.Join(e.work, tag+"-redis.log"))
	if err != nil {
		return nil, "", err
	}
	e.procs = append(e.procs, p)
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := redisDo(addr, "PING")
		if err == nil && reply == "PONG" {
			return p, addr, nil
		}
		if p.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			return p, "", fmt.Errorf("redis-server at %s not ready (%v); see %s", addr, err, p.log.Name())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startReplica starts replica i of tag, sharing state through the Redis at
// redisAddr, in front of the VictoriaMetrics.
func (e *env) startReplica(ctx context.Context, tag string, i int, redisAddr string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	name := fmt.Sprintf("%s-r%d", tag, i)
	base := "http://" + addr
	cfg := filepath.Join(e.work, tag, name+".yml")
	if err := os.WriteFile(cfg, []byte(scalePolicy(name, base, redisAddr, e.cfg.sc.tenantLimits)), 0o644); err != nil {
		return nil, "", err
	}
	p, err := startProcess(name, e.cfg.cardguardBin, []string{
		"-httpListenAddr=" + addr,
		"-upstream.url=" + e.vmURL,
		"-config=" + cfg,
		"-dataDir=" + filepath.Join(e.work, tag, name+"-data"),
		"-loggerLevel=warn",
	}, filepath.Join(e.work, name+".log"))
	if err != nil {
		return nil, "", err
	}
	e.procs = append(e.procs, p)
	return p, base, waitReady(ctx, p, base+"/readyz", 30*time.Second)
}

// scalePolicy is a replica's policy file: state in the shared Redis, and a series
// limit on the default tenant, so that the replica keeps series membership,
// high enough never to refuse.
func scalePolicy(name, advertise, redisAddr, tenantLimits string) string {
	return fmt.Sprintf(`default_tenant: "0:0"
state:
  backend: redis
  replica_id: %s
  advertise_url: %s
  redis:
    addr: %s
limits:
  overrides:
    "0:0": %s
`, name, advertise, redisAddr, tenantLimits)
}

// waitReplicas waits until every replica has Redis up and sees all the others,
// and returns what each saw last.
func waitReplicas(ctx context.Context, ms []member, timeout time.Duration) ([]float64, error) {
	deadline := time.Now().Add(timeout)
	seen := make([]float64, len(ms))
	for {
		ok := true
		for i, m := range ms {
			fam, err := scrapeFamilies(m.URL + "/metrics")
			seen[i] = fam["cardguard_state_replicas"].value
			if err != nil || fam["cardguard_state_backend_up"].value != 1 || int(seen[i]) != len(ms) {
				ok = false
			}
		}
		if ok {
			return seen, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return seen, fmt.Errorf("after %s the replicas saw %v replicas (cardguard_state_replicas), not %d each, or Redis down", timeout, seen, len(ms))
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// family is one metric name of a Prometheus text exposition: its type and the
// sum of its samples.
type family struct {
	typ   string
	value float64
}

// scrapeFamilies reads every metric of the exposition at url, samples of one
// name summed over their labels; histogram and summary series keep their
// suffixed names.
func scrapeFamilies(url string) (map[string]family, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: status %d", url, resp.StatusCode)
	}
	out := map[string]family{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			if name, typ, ok := strings.Cut(rest, " "); ok {
				f := out[name]
				f.typ = typ
				out[name] = f
			}
			continue
		}
		if line == "" || line[0] == '#' {
			continue
		}
		name := line[:strings.IndexAny(line+" ", "{ ")]
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric line %q: %w", line, err)
		}
		if name == "cardguard_state_sync_errors_total" && v != 0 {
			// By operation too: which exchange with Redis failed says why.
			full := line[:strings.LastIndexByte(line, ' ')]
			f := out[full]
			f.typ, f.value = "counter", f.value+v
			out[full] = f
		}
		f := out[name]
		f.value += v
		out[name] = f
	}
	return out, sc.Err()
}

// redisMembershipMemory is MEMORY USAGE (every element counted) of tenant's
// series membership keys of the current and previous window generation, in the
// layout of internal/state (default key prefix, 1h window).
func redisMembershipMemory(addr, tenant string, now time.Time) (int64, error) {
	gen := now.Unix() / 3600
	var total int64
	for _, g := range []int64{gen - 1, gen} {
		base := "cardguard:members:{" + tenant + "}:" + strconv.FormatInt(g, 10)
		for _, k := range []string{base, base + ":metrics", base + ":new"} {
			v, err := redisDo(addr, "MEMORY", "USAGE", k, "SAMPLES", "0")
			if errors.Is(err, errNilReply) {
				continue
			}
			if err != nil {
				return 0, err
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, err
			}
			total += n
		}
	}
	return total, nil
}

// redisUsedMemory is INFO memory's used_memory of the Redis at addr.
func redisUsedMemory(addr string) (int64, error) {
	info, err := redisDo(addr, "INFO", "memory")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, errors.New("no used_memory in INFO memory")
}

// errNilReply is Redis' nil reply (a key that does not exist).
var errNilReply = errors.New("redis: nil")

// redisDo sends one command to the Redis at addr and returns its reply, which
// must be a status, an integer or a bulk string: all the benchmark asks for,
// without a client library for three commands.
func redisDo(addr string, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return "", err
	}
	rd := bufio.NewReader(conn)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", errors.New("empty Redis reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '_':
		return "", errNilReply
	case '-':
		return "", errors.New("redis: " + line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if n == -1 {
			return "", errNilReply
		}
		if err != nil || n < 0 {
			return "", fmt.Errorf("redis bulk reply %q", line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("unexpected Redis reply %q", line)
}

// commandVersion is the first line of `bin --version`.
func commandVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// profileReplicas takes a CPU profile of every replica over -scale.profile from
// now, and writes it with the replica's allocation profile (since its start)
// to the cache directory; the returned func waits for them.
func (e *env) profileReplicas(tag string, ms []member) (wait func()) {
	d := e.cfg.sc.profile
	if d <= 0 {
		return func() {}
	}
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			secs := strconv.Itoa(max(1, int(d.Seconds())))
			for _, p := range []struct{ path, file string }{
				{"/debug/pprof/profile?seconds=" + secs, m.Name + ".cpu.pprof"},
				{"/debug/pprof/allocs", m.Name + ".allocs.pprof"},
			} {
				if err := fetchTo(m.URL+p.path, filepath.Join(e.cfg.resultsDir, p.file), d+30*time.Second); err != nil {
					e.logf("scale: profile of %s: %v", m.Name, err)
					return
				}
			}
			e.logf("scale: profiles of %s in %s", m.Name, e.cfg.resultsDir)
		}()
	}
	return wg.Wait
}

// fetchTo writes what a GET of url answers to path.
func fetchTo(url, path string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
