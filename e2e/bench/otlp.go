package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// otlpScenario measures the three write targets taking the workload over
// OTLP/HTTP (gzip protobuf, as the OpenTelemetry Collector's otlphttp exporter
// sends it) at their /opentelemetry/v1/metrics, each pass on a fresh
// VictoriaMetrics, every second pass in reverse order, as the remote-write
// targets are. vmagent and cardguard keep their remote-write setup: the same
// relabel rule and limits, forwarding remote write.
func (e *env) otlpScenario(ctx context.Context) ([]scenarioResult, error) {
	saved := e.cfg
	defer func() { e.cfg = saved }()
	e.cfg.duration = saved.otlpDuration
	e.cfg.wl.protocol = "otlp"

	var out []scenarioResult
	for pass := 1; pass <= e.cfg.passes; pass++ {
		order := []string{"direct", "vmagent", "cardguard"}
		if pass%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			r, err := e.runTarget(ctx, "otlp", name, pass)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

// storedCheck says whether each target's VictoriaMetrics stored every sample the
// target accepted, in the warm-up and in the measured window of every pass, and
// whether every target's warm-up, the same requests for all, stored as many
// samples as the others'.
func storedCheck(all []scenarioResult) (string, bool) {
	var bad []string
	warmups := map[float64]bool{}
	var measured float64
	for _, r := range all {
		warmups[r.WarmupDelivered] = true
		measured += r.Delivered
		if r.WarmupDelivered != float64(r.Warmup.SamplesOK) {
			bad = append(bad, fmt.Sprintf("%s, pass %d: %s of the %s samples accepted in the warm-up", r.Name, r.Pass, thousands(r.WarmupDelivered), thousands(float64(r.Warmup.SamplesOK))))
		}
		if r.Delivered != float64(r.Measured.SamplesOK) {
			bad = append(bad, fmt.Sprintf("%s, pass %d: %s of the %s samples accepted in the measured window", r.Name, r.Pass, thousands(r.Delivered), thousands(float64(r.Measured.SamplesOK))))
		}
	}
	if len(warmups) > 1 {
		counts := make([]string, len(all))
		for i, r := range all {
			counts[i] = fmt.Sprintf("%s %s", r.Name, thousands(r.WarmupDelivered))
		}
		bad = append(bad, "the warm-ups stored different numbers of samples: "+strings.Join(counts, ", "))
	}
	if len(all) == 0 {
		return "no target ran", false
	}
	if len(bad) > 0 {
		return "**not every sample was stored**: " + strings.Join(bad, "; "), false
	}
	return fmt.Sprintf("every target's VictoriaMetrics stored every sample the target accepted: %s after each warm-up, and the %s accepted in the measured windows", thousands(all[0].WarmupDelivered), thousands(measured)), true
}
