package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"time"
)

// scenarioResult is one target of the remote-write benchmark.
type scenarioResult struct {
	Name     string   `json:"name"`
	Pass     int      `json:"pass"`
	Warmup   lgResult `json:"warmup"`
	Measured lgResult `json:"measured"`
	// CPU seconds over the measured window, until VictoriaMetrics had every
	// accepted sample (vmagent answers before it forwards).
	ProxyCPUSeconds float64 `json:"proxy_cpu_s"`
	VMCPUSeconds    float64 `json:"vm_cpu_s"`
	// Samples VictoriaMetrics counted as inserted over that window, and over
	// the warm-up, which sends every target the same requests.
	Delivered       float64 `json:"delivered"`
	WarmupDelivered float64 `json:"warmup_delivered"`
	DrainSeconds    float64 `json:"drain_s"`
	ProxyPeakKiB    int64   `json:"proxy_peak_rss_kib"`
	VMPeakKiB       int64   `json:"vm_peak_rss_kib"`
	// Dropped is what the proxy says it discarded (cardguard: discarded samples,
	// vmagent: rows over the hourly series limit).
	Dropped float64 `json:"dropped"`
	// Fold is what a proxy that aggregates says it aggregated.
	Fold  *foldStats `json:"fold,omitempty"`
	Notes []string   `json:"notes,omitempty"`
	proxy bool
}

// foldCounter reads, from a proxy that aggregates, the samples it has taken in
// to aggregate and the aggregated samples it has sent on, so far: VictoriaMetrics
// gets what the proxy accepted, less the first, plus the second.
type foldCounter func() (in, out float64, err error)

// wantRows is what VictoriaMetrics should have counted once it has every sample
// the proxy accepted since rows0 was read, given the fold counts then (in0, out0).
func wantRows(rows0 float64, accepted int64, fold foldCounter, in0, out0 float64) (float64, error) {
	want := rows0 + float64(accepted)
	if fold == nil {
		return want, nil
	}
	in1, out1, err := fold()
	return want - (in1 - in0) + (out1 - out0), err
}

// MSamples is the accepted samples of the measured window, in millions.
func (r scenarioResult) MSamples() float64 { return float64(r.Measured.SamplesOK) / 1e6 }

// DeliveredRate is samples per second reaching VictoriaMetrics, drain included.
func (r scenarioResult) DeliveredRate() float64 {
	t := r.Measured.ElapsedSeconds + r.DrainSeconds
	if t <= 0 {
		return 0
	}
	return r.Delivered / t
}

func (e *env) vmRows() (float64, error) {
	if e.cluster != nil {
		return scrapeSum(e.cluster.storageURL+"/metrics", "vm_rows_received_by_storage_total")
	}
	return scrapeSum(e.vmURL+"/metrics", "vm_rows_inserted_total{")
}

// vmProcs are the processes of the VictoriaMetrics written to: the single
// node, or a cluster's three.
func (e *env) vmProcs() []*process {
	if e.cluster != nil {
		return e.cluster.procs()
	}
	return []*process{e.vm}
}

// vmCPU is the CPU seconds the VictoriaMetrics processes used so far.
func (e *env) vmCPU() (float64, error) {
	var sum float64
	for _, p := range e.vmProcs() {
		s, err := cpuSeconds(p.pid(), e.ticks)
		if err != nil {
			return 0, err
		}
		sum += s
	}
	return sum, nil
}

// vmPeakKiB is the peak RSS of the VictoriaMetrics processes, summed.
func (e *env) vmPeakKiB() int64 {
	var sum int64
	for _, p := range e.vmProcs() {
		n, _ := memKiB(p.pid(), "VmHWM")
		sum += n
	}
	return sum
}

// waitDelivered waits until VictoriaMetrics has inserted want rows in total, or
// until the count stops moving for 3 s (something was dropped), or timeout.
func (e *env) waitDelivered(ctx context.Context, want float64, timeout time.Duration) (float64, error) {
	deadline := time.Now().Add(timeout)
	last, lastMove := -1.0, time.Now()
	for {
		n, err := e.vmRows()
		if err != nil {
			return n, err
		}
		if n >= want {
			return n, nil
		}
		if n != last {
			last, lastMove = n, time.Now()
		}
		if time.Since(lastMove) > 3*time.Second || time.Now().After(deadline) || ctx.Err() != nil {
			return n, fmt.Errorf("VictoriaMetrics inserted %.0f rows, want %.0f", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// measure warms a target up, then measures it: proxy is the process whose CPU and
// memory are attributed to the target (VictoriaMetrics itself for direct writes,
// or nil for a cluster written to directly);
// fold, for a proxy that aggregates, says how many fewer rows VictoriaMetrics is to
// get than were accepted.
func (e *env) measure(ctx context.Context, name, writeURL string, proxy *process, fold foldCounter) (scenarioResult, error) {
	direct := proxy == nil || proxy == e.vm
	r := scenarioResult{Name: name, proxy: !direct}
	conc := "-concurrency=" + strconv.Itoa(e.cfg.concurrency)
	for _, p := range e.vmProcs() {
		if err := resetPeakRSS(p.pid()); err != nil {
			r.Notes = append(r.Notes, "cannot reset VictoriaMetrics peak RSS: "+err.Error())
		}
	}
	proxyCPU := func() (float64, error) {
		if direct {
			return e.vmCPU()
		}
		return cpuSeconds(proxy.pid(), e.ticks)
	}

	base, err := e.vmRows()
	if err != nil {
		return r, err
	}
	in0, out0, err := foldCounts(fold)
	if err != nil {
		return r, err
	}
	e.logf("%s: warm-up, %d passes", name, e.cfg.warmupPasses)
	r.Warmup, err = e.loadgen(ctx, name+"-warmup", writeURL, conc, "-passes="+strconv.Itoa(e.cfg.warmupPasses), "-duration=3m")
	if err != nil {
		return r, err
	}
	want, err := wantRows(base, r.Warmup.SamplesOK, fold, in0, out0)
	if err != nil {
		return r, err
	}
	n, err := e.waitDelivered(ctx, want, 2*time.Minute)
	if err != nil {
		r.Notes = append(r.Notes, "warm-up: "+err.Error())
	}
	r.WarmupDelivered = n - base

	rows0, err := e.vmRows()
	if err != nil {
		return r, err
	}
	in0, out0, err = foldCounts(fold)
	if err != nil {
		return r, err
	}
	p0, err1 := proxyCPU()
	v0, err2 := e.vmCPU()
	if err1 != nil || err2 != nil {
		return r, fmt.Errorf("read cpu: %v %v", err1, err2)
	}
	e.logf("%s: measuring for %s at concurrency %d", name, e.cfg.duration, e.cfg.concurrency)
	r.Measured, err = e.loadgen(ctx, name, writeURL, conc, "-duration="+e.cfg.duration.String())
	if err != nil {
		return r, err
	}
	sent := time.Now()
	want, err = wantRows(rows0, r.Measured.SamplesOK, fold, in0, out0)
	if err != nil {
		return r, err
	}
	rows1, err := e.waitDelivered(ctx, want, 5*time.Minute)
	if err != nil {
		r.Notes = append(r.Notes, "measured window: "+err.Error())
	}
	r.DrainSeconds = time.Since(sent).Seconds()
	if r.DrainSeconds < 0.2 {
		r.DrainSeconds = 0 // the poll interval, not a backlog
	}
	r.Delivered = rows1 - rows0
	p1, err1 := proxyCPU()
	v1, err2 := e.vmCPU()
	if err1 != nil || err2 != nil {
		return r, fmt.Errorf("read cpu: %v %v", err1, err2)
	}
	r.ProxyCPUSeconds, r.VMCPUSeconds = p1-p0, v1-v0
	r.VMPeakKiB = e.vmPeakKiB()
	r.ProxyPeakKiB = r.VMPeakKiB
	if !direct {
		r.ProxyPeakKiB, _ = memKiB(proxy.pid(), "VmHWM")
	}
	if r.Measured.SamplesOK != r.Measured.SamplesSent {
		r.Notes = append(r.Notes, fmt.Sprintf("%d of %d samples not accepted (status %v, first error %q)",
			r.Measured.SamplesSent-r.Measured.SamplesOK, r.Measured.SamplesSent, r.Measured.Status, r.Measured.FirstError))
	}
	if r.Warmup.PayloadDigest != r.Measured.PayloadDigest {
		r.Notes = append(r.Notes, "warm-up and measured payloads differ")
	}
	e.digest[name] = r.Measured.PayloadDigest
	e.logf("%s: %.0f samples/s, proxy %.3f CPU s/Msample, VM %.3f CPU s/Msample, drain %.1fs",
		name, r.Measured.SamplesPerSecond, r.ProxyCPUSeconds/r.MSamples(), r.VMCPUSeconds/r.MSamples(), r.DrainSeconds)
	return r, nil
}

// foldCounts calls fold, if any.
func foldCounts(fold foldCounter) (in, out float64, err error) {
	if fold == nil {
		return 0, 0, nil
	}
	return fold()
}

// runTarget measures one write target in pass number pass, each on a
// VictoriaMetrics of its own started afresh: one that earlier targets filled
// would spend more CPU per sample (merges, a larger index) on the later ones, and
// the share of the two CPUs left to the target under test would depend on the
// order of the targets. scenario names the data directories and logs of a
// scenario other than plain remote write.
func (e *env) runTarget(ctx context.Context, scenario, name string, pass int) (scenarioResult, error) {
	prefix := ""
	if scenario != "" {
		prefix = "-" + scenario
	}
	suffix := fmt.Sprintf("%s-%s-%d", prefix, name, pass)
	if err := e.startVM("vm-data" + suffix); err != nil {
		return scenarioResult{}, err
	}
	var (
		r   scenarioResult
		err error
	)
	switch name {
	case "direct":
		r, err = e.measure(ctx, "direct", e.vmURL+e.cfg.wl.writePath(), e.vm, nil)
	case "vmagent":
		r, err = e.runVMAgent(ctx, suffix, "")
	case "cardguard":
		var (
			cg   *process
			base string
		)
		cg, base, err = e.startCardguard(ctx, fmt.Sprintf("cardguard%s-%d", prefix, pass), e.cfg.cardguardConfig)
		if err != nil {
			return r, err
		}
		defer cg.stop(15 * time.Second)
		r, err = e.measure(ctx, "cardguard", base+e.cfg.wl.writePath(), cg, nil)
		if err != nil {
			return r, err
		}
		r.Dropped, _ = scrapeSum(base+"/metrics", "cardguard_discarded_samples_total")
	default:
		err = fmt.Errorf("unknown target %q", name)
	}
	r.Pass = pass
	return r, err
}

// queryOnly measures the query path after the writes: it gives a fresh
// VictoriaMetrics one pass of the same payloads and queries it directly and
// through a fresh cardguard.
func (e *env) queryOnly(ctx context.Context) ([]queryResult, error) {
	if err := e.startVM("vm-data-query"); err != nil {
		return nil, err
	}
	cg, base, err := e.startCardguard(ctx, "cardguard-query", e.cfg.cardguardConfig)
	if err != nil {
		return nil, err
	}
	defer cg.stop(15 * time.Second)
	if _, err := e.loadgen(ctx, "query-data", e.vmURL+"/api/v1/write", "-passes=1", "-concurrency="+strconv.Itoa(e.cfg.concurrency)); err != nil {
		return nil, err
	}
	// Rows just written become searchable at VictoriaMetrics' next flush: queries
	// sent before it (all of them, at well under a millisecond each) find nothing.
	if err := e.vmForceFlush(); err != nil {
		return nil, err
	}
	return e.queryBench(ctx, base)
}

// vmForceFlush makes what VictoriaMetrics has inserted searchable now.
func (e *env) vmForceFlush() error {
	resp, err := http.Get(e.vmURL + "/internal/force_flush")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("/internal/force_flush: %s", resp.Status)
	}
	return nil
}

// runVMAgent measures a fresh vmagent forwarding to the VictoriaMetrics with the
// same relabel rule as cardguard and an hourly series limit high enough to drop
// nothing, so that its bloom-filter limiter is on the path as cardguard's limits are.
// streamAggr, if not empty, is its -streamAggr.config.
func (e *env) runVMAgent(ctx context.Context, suffix, streamAggr string) (scenarioResult, error) {
	addr, err := freeAddr()
	if err != nil {
		return scenarioResult{}, err
	}
	maxHourly := 4 * e.cfg.wl.metrics * e.cfg.wl.seriesPerMetric
	args := []string{
		"-httpListenAddr=" + addr,
		"-remoteWrite.url=" + e.vmURL + "/api/v1/write",
		"-remoteWrite.tmpDataPath=" + filepath.Join(e.work, "vmagent-data"+suffix),
		"-remoteWrite.relabelConfig=" + e.cfg.vmagentRelabel,
		"-remoteWrite.maxHourlySeries=" + strconv.Itoa(maxHourly),
		"-loggerLevel=ERROR",
	}
	base := "http://" + addr
	var fold foldCounter
	if streamAggr != "" {
		// Matched inputs are aggregated and dropped, the others pass unchanged.
		args = append(args, "-streamAggr.config="+streamAggr, "-streamAggr.keepInput=false")
		fold = func() (in, out float64, err error) {
			in, err1 := scrapeSum(base+"/metrics", "vm_streamaggr_matched_samples_total")
			out, err2 := scrapeSum(base+"/metrics", "vm_streamaggr_output_samples_total")
			return in, out, errors.Join(err1, err2)
		}
	}
	p, err := startProcess("vmagent", filepath.Join(e.cfg.binDir, "vmagent"), args, filepath.Join(e.work, "vmagent"+suffix+".log"))
	if err != nil {
		return scenarioResult{}, err
	}
	e.procs = append(e.procs, p)
	defer p.stop(15 * time.Second)
	if err := waitReady(ctx, p, base+"/health", 30*time.Second); err != nil {
		return scenarioResult{}, err
	}
	r, err := e.measure(ctx, "vmagent", base+e.cfg.wl.writePath(), p, fold)
	if err != nil {
		return r, err
	}
	r.Dropped, _ = scrapeSum(base+"/metrics", "vmagent_hourly_series_limit_rows_dropped_total")
	if fold != nil {
		r.Fold = &foldStats{}
		var err1, err2, err3 error
		r.Fold.Received, err1 = scrapeSum(base+"/metrics", `vmagent_rows_inserted_total{type="promremotewrite"}`)
		r.Fold.Folded, r.Fold.Written, err2 = fold()
		if err3 = errors.Join(err1, err2); err3 != nil {
			r.Notes = append(r.Notes, "aggregation counters: "+err3.Error())
		}
	}
	r.Notes = append(r.Notes, fmt.Sprintf("-remoteWrite.maxHourlySeries=%d", maxHourly))
	return r, nil
}
