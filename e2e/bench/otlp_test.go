package main

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// otlpPass is one target's pass of the OTLP scenario: warm-up and measured
// window fully stored unless told otherwise.
func otlpPass(name string, n int, samples int64, cpu float64) scenarioResult {
	return scenarioResult{
		Name: name, Pass: n, ProxyCPUSeconds: cpu, VMCPUSeconds: 2 * cpu, proxy: name != "direct",
		Warmup:          lgResult{SamplesOK: 800_000, SamplesSent: 800_000, PayloadDigest: "d1"},
		WarmupDelivered: 800_000,
		Measured: lgResult{
			SamplesOK: samples, SamplesSent: samples, ElapsedSeconds: 30, SamplesPerSecond: float64(samples) / 30,
			PayloadDigest: "d1", UniqueSeries: 67_500, RingBytes: 7 << 20, RingRawBytes: 92 << 20,
			LatencyMS: map[string]float64{"p50": 20}, Status: map[string]int64{"200": samples / 2000},
		},
		Delivered: float64(samples),
	}
}

// TestStoredCheck: every target's VictoriaMetrics must have every sample the
// target accepted, and every warm-up (the same requests) as many as the others.
func TestStoredCheck(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		edit func([]scenarioResult)
		ok   bool
		want string
	}{
		{"all stored", func([]scenarioResult) {}, true, "800,000 after each warm-up, and the 36,000,000 accepted"},
		{"measured window short", func(rs []scenarioResult) { rs[1].Delivered-- }, false, "vmagent, pass 1: 5,999,999 of the 6,000,000 samples accepted in the measured window"},
		{"warm-up short", func(rs []scenarioResult) { rs[2].WarmupDelivered = 799_000 }, false, "cardguard, pass 1: 799,000 of the 800,000 samples accepted in the warm-up"},
		{"warm-ups differ", func(rs []scenarioResult) {
			rs[5].Warmup.SamplesOK, rs[5].WarmupDelivered = 798_000, 798_000
		}, false, "the warm-ups stored different numbers of samples: direct 800,000, vmagent 800,000, cardguard 800,000, cardguard 800,000, vmagent 800,000, direct 798,000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rs := []scenarioResult{
				otlpPass("direct", 1, 6e6, 20), otlpPass("vmagent", 1, 6e6, 20), otlpPass("cardguard", 1, 6e6, 20),
				otlpPass("cardguard", 2, 6e6, 20), otlpPass("vmagent", 2, 6e6, 20), otlpPass("direct", 2, 6e6, 20),
			}
			tc.edit(rs)
			text, ok := storedCheck(rs)
			if ok != tc.ok || !strings.Contains(text, tc.want) {
				t.Errorf("storedCheck = %v, %q; want %v and %q", ok, text, tc.ok, tc.want)
			}
		})
	}
	if _, ok := storedCheck(nil); ok {
		t.Error("no results: want not ok")
	}
}

// TestRenderOTLP: the section compares cardguard with vmagent (CPU and
// throughput) and with direct, over all passes and pass by pass.
func TestRenderOTLP(t *testing.T) {
	t.Parallel()
	all := []scenarioResult{
		otlpPass("direct", 1, 15e6, 45), otlpPass("vmagent", 1, 9e6, 36), otlpPass("cardguard", 1, 12e6, 24),
		otlpPass("cardguard", 2, 9e6, 27), otlpPass("vmagent", 2, 9e6, 27), otlpPass("direct", 2, 12e6, 36),
	}
	var b strings.Builder
	c := config{passes: 2, concurrency: 4, otlpDuration: 30 * time.Second, wl: workloadFlags{metrics: 100, batch: 2000, rounds: 8}}
	renderOTLP(&b, all, c)
	for _, want := range []string{
		"## OTLP/HTTP: direct, through vmagent, through cardguard",
		"the 50 even metrics monotonic cumulative sums", "2,000 points per request, 8 rounds pre-encoded (67,500 distinct series, 7.0 MiB gzip / 92.0 MiB protobuf); payloads identical for every target (digest d1)",
		"30s per target and pass at concurrency 4, in the order direct, vmagent, cardguard, cardguard, vmagent, direct",
		"- stored: every target's VictoriaMetrics stored every sample the target accepted",
		"| cardguard | 350,000 | 350,000 | 2.429 | 4.857 |",
		// (24+27)/21M against (36+27)/18M; 21M/60s against 18M/60s and 27M/60s.
		"| cardguard CPU per sample ÷ vmagent CPU per sample | 0.69 |",
		"| cardguard throughput ÷ vmagent throughput | 1.17 |",
		"| cardguard throughput ÷ direct throughput | 0.78 |",
		// Pass 1: 2/4 CPU, 12/9 and 12/15 throughput; pass 2: 3/3, 9/9, 9/12.
		"| 1 | direct | 500,000 | 3.000 | (same) | 0.50 | 1.33 | 0.80 |",
		"| 2 | cardguard | 300,000 | 3.000 | 6.000 | 1.00 | 1.00 | 0.75 |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestWorkloadProtocol: the OTLP scenario's loadgen runs send OTLP, to the
// path every target serves it at.
func TestWorkloadProtocol(t *testing.T) {
	t.Parallel()
	w := workloadFlags{metrics: 1, seriesPerMetric: 1, labels: 1, rounds: 1, batch: 1, interval: time.Second}
	if w.writePath() != "/api/v1/write" || slices.ContainsFunc(w.args(), func(a string) bool { return strings.HasPrefix(a, "-protocol") }) {
		t.Errorf("remote write: path %s, args %v", w.writePath(), w.args())
	}
	w.protocol = "otlp"
	if w.writePath() != "/opentelemetry/v1/metrics" || !slices.Contains(w.args(), "-protocol=otlp") {
		t.Errorf("OTLP: path %s, args %v", w.writePath(), w.args())
	}
}
