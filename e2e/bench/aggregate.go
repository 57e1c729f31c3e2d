package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// aggregateFlags set up the aggregation scenario: the workload gains a user_id
// label on the series of userMetrics metrics, and cardguard (its label guard) and
// vmagent (its stream aggregation) each take it away and aggregate what that
// folds together.
type aggregateFlags struct {
	duration           time.Duration
	userMetrics, users int
	cardguardConfig    string
	vmagentConfig      string
}

// foldStats is what a proxy that aggregates says it did over its life, warm-up
// included: the same payloads go round and round, so the shares are those of
// the measured window.
type foldStats struct {
	Received float64 `json:"received"` // samples it took in
	Folded   float64 `json:"folded"`   // of them, samples it aggregated
	Written  float64 `json:"written"`  // aggregated samples it wrote
	// Input and output series of the aggregates at cardguard's last flush
	// (vmagent does not count them).
	InputSeries  float64 `json:"input_series,omitempty"`
	OutputSeries float64 `json:"output_series,omitempty"`
}

// Share is the fraction of the received samples that were aggregated.
func (f *foldStats) Share() float64 {
	if f == nil || f.Received == 0 {
		return 0
	}
	return f.Folded / f.Received
}

func (f *foldStats) add(g *foldStats) *foldStats {
	if f == nil || g == nil {
		return f
	}
	return &foldStats{
		Received: f.Received + g.Received, Folded: f.Folded + g.Folded, Written: f.Written + g.Written,
		InputSeries: max(f.InputSeries, g.InputSeries), OutputSeries: max(f.OutputSeries, g.OutputSeries),
	}
}

// aggregateScenario measures vmagent and cardguard aggregating the same share of
// the series, each pass on a fresh VictoriaMetrics, every second pass in reverse
// order, as the plain write targets are.
func (e *env) aggregateScenario(ctx context.Context) ([]scenarioResult, error) {
	saved := e.cfg
	defer func() { e.cfg = saved }()
	e.cfg.duration = saved.agg.duration
	e.cfg.wl.userMetrics, e.cfg.wl.users = saved.agg.userMetrics, saved.agg.users

	var out []scenarioResult
	for pass := 1; pass <= e.cfg.passes; pass++ {
		order := []string{"vmagent", "cardguard"}
		if pass%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			suffix := fmt.Sprintf("-aggregate-%s-%d", name, pass)
			if err := e.startVM("vm-data" + suffix); err != nil {
				return out, err
			}
			var (
				r   scenarioResult
				err error
			)
			if name == "vmagent" {
				r, err = e.runVMAgent(ctx, suffix, e.cfg.agg.vmagentConfig)
			} else {
				r, err = e.runCardguardAggregate(ctx, suffix)
			}
			if err != nil {
				return out, err
			}
			r.Pass = pass
			f := r.Fold
			e.logf("%s aggregating: %.1f%% of %.0f samples aggregated, %.0f aggregated samples written; %.0f input series, %.0f output series",
				name, 100*f.Share(), f.Received, f.Written, f.InputSeries, f.OutputSeries)
			out = append(out, r)
		}
	}
	return out, nil
}

// runCardguardAggregate measures a fresh cardguard whose label guard folds the
// user_id label, and reads from its /metrics what it aggregated.
func (e *env) runCardguardAggregate(ctx context.Context, suffix string) (scenarioResult, error) {
	cg, base, err := e.startCardguard(ctx, "cardguard"+suffix, e.cfg.agg.cardguardConfig)
	if err != nil {
		return scenarioResult{}, err
	}
	defer cg.stop(15 * time.Second)
	metrics := base + "/metrics"
	fold := func() (in, out float64, err error) {
		in, err1 := scrapeSum(metrics, "cardguard_ingest_samples_aggregated_total")
		out, err2 := scrapeSum(metrics, "cardguard_aggregate_output_samples_total")
		return in, out, errors.Join(err1, err2)
	}
	r, err := e.measure(ctx, "cardguard", base+"/api/v1/write", cg, fold)
	if err != nil {
		return r, err
	}
	r.Dropped, _ = scrapeSum(metrics, "cardguard_discarded_samples_total")
	f := &foldStats{}
	var errs [4]error
	f.Received, errs[0] = scrapeSum(metrics, "cardguard_ingest_samples_received_total")
	f.Folded, f.Written, errs[1] = fold()
	f.InputSeries, errs[2] = scrapeSum(metrics, "cardguard_aggregate_input_series")
	f.OutputSeries, errs[3] = scrapeSum(metrics, "cardguard_aggregate_output_series")
	if err := errors.Join(errs[:]...); err != nil {
		r.Notes = append(r.Notes, "aggregation counters: "+err.Error())
	}
	r.Fold = f
	return r, nil
}
