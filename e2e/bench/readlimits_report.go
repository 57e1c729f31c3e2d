package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// rlTarget is the requirement: B's p50 and p99 with A busy within 20% of
// what they are with A idle.
const rlTarget = 1.2

// renderReadLimits writes the read-limits scenario's section of BENCHMARKS.md.
func renderReadLimits(info runInfo, cs []rlConfig, c config) string {
	rl := c.rl
	var b strings.Builder
	fmt.Fprintf(&b, "## Read limits: another tenant's latency while one sends %d× its limits\n\n", rl.load)
	info.header(&b, "bench-readlimits")
	fmt.Fprintf(&b, "- data: written through cardguard (tenants kept apart on one single-node VictoriaMetrics by `upstream.tenant_label: %s`): tenant A (`%s`) `heavy_metric_0` and `heavy_metric_1`, %s series each; tenant B (`%s`) `light_metric_0`, 100 series\n",
		rlTenantLabel, rlTenantA, thousands(float64(rl.heavySeries)), rlTenantB)
	fmt.Fprintf(&b, "- limits: tenant A `max_concurrent_queries: %d`, `query_rate: %g` (burst: one second's worth); tenant B the defaults\n", rl.maxConcurrent, rl.queryRate)
	fmt.Fprintf(&b, "- tenant A, busy: %d senders, each sending its next query when the previous one is answered and its period (%s) has passed: %g queries/s in all, %d× both limits; idle: nothing\n",
		rl.load*rl.maxConcurrent, time.Duration(float64(rl.maxConcurrent)/rl.queryRate*float64(time.Second)), float64(rl.load)*rl.queryRate, rl.load)
	pace := "one query at a time (2 ms apart), each sent when the one before was answered, so that a stall delays fewer of B's queries than it would an independent user's"
	if rl.bRate > 0 {
		pace = fmt.Sprintf("%g queries/s through cardguard and as many direct, each sent at its appointed time whether or not the ones before were answered, as independent users send them (latency from sending)", rl.bRate)
	}
	fmt.Fprintf(&b, "- tenant B: `%s`, %s, alternately through cardguard (`/select/%s/prometheus/api/v1/query`) and direct to VictoriaMetrics with the tenant filter cardguard adds (`extra_label=%s=%s:0`), %s per round; B's percentiles are over all its queries of the idle rounds and of the busy rounds\n",
		rlQueryB, pace, rlTenantB, rlTenantLabel, rlTenantB, rl.round)
	fmt.Fprintf(&b, "- rounds: per configuration %d with A idle and %d with A busy, in pairs, which comes first swapped from pair to pair; each configuration with a fresh VictoriaMetrics and cardguard; A starts 1 s before B is measured\n", rl.rounds, rl.rounds)
	fmt.Fprintf(&b, "- overlapping: one of B's queries that was under way while one of A's admitted (200) queries was, from A's sending it to its answer (a wait in cardguard's queue included); CPU is utime+stime from /proc over B's measured time, in cores (CPU s per s); \"others\" is the machine's busy CPU less cardguard's, VictoriaMetrics' and the benchmark's own\n\n")

	fmt.Fprintf(&b, "| VictoriaMetrics | A's query | B p50 ms idle → busy (×) | B p99 ms idle → busy (×) | direct p50 ms idle → busy (×) | direct p99 ms idle → busy (×) | within 20%% (cardguard p50, p99) | A: 200 / 429 (with Retry-After) / other |\n")
	fmt.Fprintf(&b, "|---|---|---|---|---|---|---|---|\n")
	for _, r := range cs {
		p50, p99 := ratio(r.BusyCG.P50, r.IdleCG.P50), ratio(r.BusyCG.P99, r.IdleCG.P99)
		fmt.Fprintf(&b, "| %s | `%s` | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %s, %s | %d / %d (%d) / %d |\n",
			rlVMName(r), r.QueryA, r.IdleCG.P50, r.BusyCG.P50, p50, r.IdleCG.P99, r.BusyCG.P99, p99,
			r.IdleDirect.P50, r.BusyDirect.P50, ratio(r.BusyDirect.P50, r.IdleDirect.P50),
			r.IdleDirect.P99, r.BusyDirect.P99, ratio(r.BusyDirect.P99, r.IdleDirect.P99),
			yesNo(p50 <= rlTarget), yesNo(p99 <= rlTarget), r.A.OK, r.A.Limited, r.A.RetryAfter, r.A.Other)
	}

	fmt.Fprintf(&b, "\nOnly the pairs of rounds in both of which the rest of the machine used less than %.2f cores (the others' load lands on idle and busy rounds at random and moves p99 more than A does):\n\n", rl.quiet)
	fmt.Fprintf(&b, "| VictoriaMetrics | A's query | quiet pairs | B p50 ms idle → busy (×) | B p99 ms idle → busy (×) | direct p50 ms idle → busy (×) | direct p99 ms idle → busy (×) | within 20%% (cardguard p50, p99) |\n")
	fmt.Fprintf(&b, "|---|---|---:|---|---|---|---|---|\n")
	for _, r := range cs {
		if r.QuietPairs == 0 {
			fmt.Fprintf(&b, "| %s | `%s` | 0 | | | | | |\n", rlVMName(r), r.QueryA)
			continue
		}
		p50, p99 := ratio(r.QuietBusyCG.P50, r.QuietIdleCG.P50), ratio(r.QuietBusyCG.P99, r.QuietIdleCG.P99)
		fmt.Fprintf(&b, "| %s | `%s` | %d of %d | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %.2f → %.2f (×%.2f) | %s, %s |\n",
			rlVMName(r), r.QueryA, r.QuietPairs, len(r.Rounds)/2, r.QuietIdleCG.P50, r.QuietBusyCG.P50, p50, r.QuietIdleCG.P99, r.QuietBusyCG.P99, p99,
			r.QuietIdleDirect.P50, r.QuietBusyDirect.P50, ratio(r.QuietBusyDirect.P50, r.QuietIdleDirect.P50),
			r.QuietIdleDirect.P99, r.QuietBusyDirect.P99, ratio(r.QuietBusyDirect.P99, r.QuietIdleDirect.P99),
			yesNo(p50 <= rlTarget), yesNo(p99 <= rlTarget))
	}

	fmt.Fprintf(&b, "\nWhat B's tail is made of, busy rounds (through cardguard; direct in brackets):\n\n")
	fmt.Fprintf(&b, "| VictoriaMetrics | A's query | A's query alone, direct, p50 ms | A's admitted queries p50 / max ms | B's queries overlapping one of A's | their p50 / p99 ms | B p99 ms of the others, idle → busy | cores: cardguard idle → busy | VictoriaMetrics | others | VictoriaMetrics GC cycles/s idle → busy | B's new connections |\n")
	fmt.Fprintf(&b, "|---|---|---:|---|---|---|---|---|---|---|---|---:|\n")
	for _, r := range cs {
		idle, busy := rlCores(r.Rounds, false), rlCores(r.Rounds, true)
		var conns int
		for _, x := range r.Rounds {
			conns += x.NewConns
		}
		fmt.Fprintf(&b, "| %s | `%s` | %.1f | %.1f / %.1f | %.1f%% (%.1f%%) | %.2f / %.2f (%.2f / %.2f) | %.2f → %.2f (%.2f → %.2f) | %.2f → %.2f | %.2f → %.2f | %.2f → %.2f | %.1f → %.1f | %d |\n",
			rlVMName(r), r.QueryA, r.HeavyAlone, r.A.OKP50, r.A.OKMax,
			pctOf(r.BusyCG.Overlapped, r.BusyCG.N), pctOf(r.BusyDirect.Overlapped, r.BusyDirect.N),
			r.BusyCG.OverP50, r.BusyCG.OverP99, r.BusyDirect.OverP50, r.BusyDirect.OverP99,
			r.IdleCG.ClearP99, r.BusyCG.ClearP99, r.IdleDirect.ClearP99, r.BusyDirect.ClearP99,
			idle.cg, busy.cg, idle.vm, busy.vm, idle.others, busy.others, idle.gcVM, busy.gcVM, conns)
	}

	fmt.Fprintf(&b, "\nEach round (B's p50 / p99 ms; cores as above):\n\n")
	fmt.Fprintf(&b, "| VictoriaMetrics | A's query | round | A | B through cardguard | B direct | overlapping | A: 200 / 429 | cores: cardguard | VictoriaMetrics | others |\n")
	fmt.Fprintf(&b, "|---|---|---:|---|---|---|---:|---|---:|---:|---:|\n")
	for _, r := range cs {
		for i, x := range r.Rounds {
			a := "idle"
			if x.Busy {
				a = "busy"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %d | %s | %.2f / %.2f | %.2f / %.2f | %d | %d / %d | %.2f | %.2f | %.2f |\n",
				rlVMName(r), r.QueryA, i+1, a, x.Cardguard.P50, x.Cardguard.P99, x.Direct.P50, x.Direct.P99,
				x.Cardguard.Overlapped+x.Direct.Overlapped, x.A.OK, x.A.Limited,
				x.CPUCardguard/x.Seconds, x.CPUVM/x.Seconds, x.others())
		}
	}
	var retry []string
	for _, r := range cs {
		for _, v := range r.A.RetryVals {
			if !slices.Contains(retry, v) {
				retry = append(retry, v)
			}
		}
		if r.A.FirstOther != "" {
			fmt.Fprintf(&b, "- %s: first of A's other answers: %s\n", r.Name, r.A.FirstOther)
		}
	}
	fmt.Fprintf(&b, "\n- Retry-After values A received: %s; cardguard's `cardguard_refused_queries_total` at the end of each configuration:", strings.Join(retry, ", "))
	for i, r := range cs {
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(&b, "%s %s", sep, thousands(r.Refusals))
	}
	fmt.Fprintf(&b, "\n")
	return b.String()
}

func rlVMName(r rlConfig) string {
	if len(r.VMFlags) == 0 {
		return "defaults"
	}
	return "`" + strings.Join(r.VMFlags, " ") + "`"
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func pctOf(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return 100 * float64(n) / float64(of)
}

type rlCoreUse struct{ cg, vm, others, gcVM float64 }

// rlCores is the CPU used over the idle or the busy rounds, in cores.
func rlCores(rs []rlRound, busy bool) rlCoreUse {
	var u rlCoreUse
	var secs float64
	for _, r := range rs {
		if r.Busy != busy {
			continue
		}
		secs += r.Seconds
		u.cg += r.CPUCardguard
		u.vm += r.CPUVM
		u.others += r.others() * r.Seconds
		u.gcVM += r.GCVM
	}
	if secs > 0 {
		u.cg, u.vm, u.others, u.gcVM = u.cg/secs, u.vm/secs, u.others/secs, u.gcVM/secs
	}
	return u
}
