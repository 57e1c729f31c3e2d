package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// memoryResult is cardguard's memory after a million distinct series went through.
type memoryResult struct {
	Series     int      `json:"series"`
	Metrics    int      `json:"metrics"`
	Labels     int      `json:"labels"`
	Passes     int      `json:"passes"`
	Load       lgResult `json:"load"`
	Seconds    float64  `json:"seconds"`
	RSSKiB     int64    `json:"rss_kib"`
	PeakKiB    int64    `json:"peak_rss_kib"`
	HeapInuse  float64  `json:"heap_inuse_bytes"`
	HeapLive   float64  `json:"heap_live_bytes"`
	CPUSeconds float64  `json:"cpu_s"`
	Dropped    float64  `json:"dropped"`
	Notes      []string `json:"notes,omitempty"`
}

// memory pushes memory.metrics x memory.series-per-metric distinct series through
// a fresh cardguard twice (the second pass sees only known series, as a steady
// scrape does) and reads its memory.
func (e *env) memory(ctx context.Context) (memoryResult, error) {
	c := e.cfg
	e.cfg.wl = workloadFlags{
		metrics: c.memMetrics, seriesPerMetric: c.memSeries, labels: c.memLabels,
		rounds: 1, batch: c.wl.batch, churn: 0, seed: c.wl.seed, interval: c.wl.interval,
		start: time.Now().Truncate(time.Minute).Add(-2 * time.Minute).UnixMilli(),
	}
	r := memoryResult{Series: c.memMetrics * c.memSeries, Metrics: c.memMetrics, Labels: c.memLabels, Passes: 2}
	cg, base, err := e.startCardguard(ctx, "cardguard-memory", c.cardguardConfig)
	if err != nil {
		return r, err
	}
	defer cg.stop(15 * time.Second)
	rows0, err := e.vmRows()
	if err != nil {
		return r, err
	}
	cpu0, _ := cpuSeconds(cg.pid(), e.ticks)
	t0 := time.Now()
	e.logf("memory: pushing %d series, %d passes", r.Series, r.Passes)
	r.Load, err = e.loadgen(ctx, "memory", base+"/api/v1/write",
		"-passes="+strconv.Itoa(r.Passes), "-concurrency="+strconv.Itoa(c.concurrency), "-duration=10m")
	if err != nil {
		return r, err
	}
	if _, err := e.waitDelivered(ctx, rows0+float64(r.Load.SamplesOK), 2*time.Minute); err != nil {
		r.Notes = append(r.Notes, err.Error())
	}
	r.Seconds = time.Since(t0).Seconds()
	cpu1, _ := cpuSeconds(cg.pid(), e.ticks)
	r.CPUSeconds = cpu1 - cpu0
	r.RSSKiB, _ = memKiB(cg.pid(), "VmRSS")
	r.PeakKiB, _ = memKiB(cg.pid(), "VmHWM")
	r.HeapInuse, _ = scrapeSum(base+"/metrics", "go_memstats_heap_inuse_bytes")
	// Heap in use counts garbage not yet collected, so it moves with when the last
	// collection ran; what is live is read after one forced by the heap profile.
	if err := forceGC(base); err != nil {
		r.Notes = append(r.Notes, "live heap not measured: "+err.Error())
	} else {
		r.HeapLive, _ = scrapeSum(base+"/metrics", "go_memstats_heap_alloc_bytes")
	}
	r.Dropped, _ = scrapeSum(base+"/metrics", "cardguard_discarded_samples_total")
	if r.Load.SamplesOK != r.Load.SamplesSent {
		r.Notes = append(r.Notes, "not every sample was accepted: status "+statusString(r.Load.Status)+", first error "+strconv.Quote(r.Load.FirstError))
	}
	e.logf("memory: cardguard RSS %d MiB (peak %d MiB), heap in use %.0f MiB, live %.0f MiB", r.RSSKiB>>10, r.PeakKiB>>10, r.HeapInuse/(1<<20), r.HeapLive/(1<<20))
	return r, nil
}

// forceGC has cardguard at base run a garbage collection, by asking for its heap
// profile with gc=1.
func forceGC(base string) error {
	resp, err := http.Get(base + "/debug/pprof/heap?gc=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("heap profile: %s", resp.Status)
	}
	return nil
}
