package main

import (
	"fmt"
	"slices"
	"strings"
)

// renderScale is the scale-out section: one row per replica count, then how the
// largest count compares with the smallest, then every gauge about entries or
// series per replica, so that what the heap holds can be named.
func renderScale(info runInfo, redisVersion string, rs []scaleResult, c config) string {
	var b strings.Builder
	s, wl := c.sc, c.wl
	fmt.Fprintf(&b, "## Scale-out: the same active series through 1, 2 and 3 replicas sharing Redis\n\n")
	if n := failedRuns(rs); n > 0 {
		fmt.Fprintf(&b, "**WRITES WERE LOST OR REFUSED in %d of %d runs (see below): those rows do not describe the whole workload.**\n\n", n, len(rs))
	}
	fmt.Fprintf(&b, "Last run: %s to %s UTC.", info.Start.Format("2006-01-02 15:04"), info.End.Format("15:04"))
	if info.Note != "" {
		fmt.Fprintf(&b, " Conditions: %s.", info.Note)
	}
	fmt.Fprintf(&b, "\n\n- command: `make bench-scale` (%s)\n", info.Command)
	fmt.Fprintf(&b, "- machine: %d CPUs, %s, %.1f GiB memory; load average %s at the start, %s at the end\n",
		info.NProc, info.CPUModel, float64(info.MemTotalKiB)/(1<<20), info.LoadStart, info.LoadEnd)
	fmt.Fprintf(&b, "- versions: VictoriaMetrics %s (pinned in tools/vm/go.mod), %s, %s, cardguard %s\n",
		info.VMVersion, redisVersion, info.GoVersion, info.CardguardRev)
	fmt.Fprintf(&b, "- workload: %s active series (%d metrics × %d series, %d labels + `__name__`), %d rounds %s apart without churn (every series written %d times), %d series per request, at concurrency %d; the same payloads for every replica count",
		thousands(float64(s.series)), s.metrics, s.series/s.metrics, wl.labels, s.rounds, wl.interval, s.rounds, wl.batch, c.concurrency)
	if len(rs) > 0 {
		fmt.Fprintf(&b, " (digest %s)", rs[0].Load.PayloadDigest)
	}
	fmt.Fprintf(&b, "\n- requests round-robin over the replicas, each round starting one replica further: with 2 or 3 replicas every series goes through 2 or 3 of them\n")
	fmt.Fprintf(&b, "- each replica count on fresh processes: a VictoriaMetrics, a redis-server (`--save \"\" --appendonly no`), and replicas with `state.backend: redis`, their own `-dataDir`, `replica_id` and `advertise_url`, and tenant `0:0`'s limits `%s`\n", s.tenantLimits)
	fmt.Fprintf(&b, "- heap: `go_memstats_heap_alloc_bytes` after two GCs forced through `/debug/pprof/heap?gc=1` (the second frees what the first left in sync.Pool's victim cache); RSS: VmRSS; both %s after VictoriaMetrics stored the last sample. Redis: `used_memory` then, less `used_memory` right after start, per active series; of which the series membership: `MEMORY USAGE` of its keys (sets and counts of the current and previous window). CPU: utime+stime from the first request to the same moment, per sample sent\n\n", s.settle)

	fmt.Fprintf(&b, "| replicas | samples sent | not accepted, lost or refused | series in VictoriaMetrics / expected | heap after GC MiB per replica | of which sketches | heap less sketches | RSS MiB per replica | Redis used_memory MiB | Redis bytes / active series | of which membership | cardguard CPU µs/sample (all replicas) | VictoriaMetrics CPU µs/sample | cardguard ÷ VictoriaMetrics | Redis CPU µs/sample | push s |\n")
	fmt.Fprintf(&b, "|---:|---:|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rs {
		lo, hi, _ := r.heapRange()
		rlo, rhi := r.rssRange()
		slo, shi, _ := r.rangeOf(func(m member) float64 { return m.Sketches })
		xlo, xhi, _ := r.heapBeyondSketchesRange()
		fmt.Fprintf(&b, "| %d | %s | %s | %s / %s | %s | %s | %s | %s | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f | %.2f | %.1f |\n",
			r.Replicas, thousands(float64(r.Load.SamplesSent)), failedCell(r),
			thousands(r.VMSeries), thousands(float64(r.Series)),
			span(lo/(1<<20), hi/(1<<20)), span(slo/(1<<20), shi/(1<<20)), span(xlo/(1<<20), xhi/(1<<20)), span(float64(rlo)/1024, float64(rhi)/1024),
			float64(r.RedisUsed)/(1<<20), r.redisPerSeries(), r.membersPerSeries(),
			r.perSample(r.CardguardCPU()), r.perSample(r.VMCPU), ratio(r.CardguardCPU(), r.VMCPU), r.perSample(r.RedisCPU), r.PushSeconds)
	}
	if len(rs) >= 2 {
		one, many := rs[0], rs[len(rs)-1]
		_, hi1, sum1 := one.heapRange()
		_, hiN, sumN := many.heapRange()
		fmt.Fprintf(&b, "\n- %d-replica heap ÷ %d-replica heap: ×%.2f per replica (the largest), ×%.2f all replicas together\n",
			many.Replicas, one.Replicas, ratio(hiN, hi1), ratio(sumN, sum1))
		_, xhi1, _ := one.heapBeyondSketchesRange()
		_, xhiN, _ := many.heapBeyondSketchesRange()
		fmt.Fprintf(&b, "- %d-replica heap less the sketches ÷ %d-replica: ×%.2f per replica (the largest). The sketches (`cardguard_cardinality_sketch_memory_bytes`) are the capped part: bounded by the cardinality caps, and whole on every replica so that each one's estimates are global\n",
			many.Replicas, one.Replicas, ratio(xhiN, xhi1))
		fmt.Fprintf(&b, "- %d-replica cardguard CPU/sample ÷ %d-replica: ×%.2f\n",
			many.Replicas, one.Replicas, ratio(many.perSample(many.CardguardCPU()), one.perSample(one.CardguardCPU())))
		if one.IdleSeconds > 0 && many.IdleSeconds > 0 {
			fmt.Fprintf(&b, "- the same less what the replicas use idle (heartbeats, syncs, refreshes; measured for %s before the load, and taken off over the %.0fs and %.0fs CPU windows): %.2f against %.2f µs/sample, ×%.2f\n",
				c.sc.idle, one.WindowSeconds, many.WindowSeconds, one.perSample(one.CardguardBusyCPU()), many.perSample(many.CardguardBusyCPU()),
				ratio(many.perSample(many.CardguardBusyCPU()), one.perSample(one.CardguardBusyCPU())))
			for _, r := range rs {
				fmt.Fprintf(&b, "- %d replica(s) idle: %.4f cores together\n", r.Replicas, r.IdleRate())
			}
		}
		for _, r := range rs {
			fmt.Fprintf(&b, "- %d replica(s): %.1f of %.1f CPU seconds after the load was stored (the %s settle: exchanges of what it left)\n",
				r.Replicas, r.CardguardSettleCPU(), r.CardguardCPU(), c.sc.settle)
		}
	}
	renderScaleGauges(&b, rs)
	var notes []string
	for _, r := range rs {
		for _, f := range r.Failures {
			notes = append(notes, fmt.Sprintf("- **%d replica%s: FAILED: %s**\n", r.Replicas, plural(r.Replicas), f))
		}
		for _, n := range r.Notes {
			notes = append(notes, fmt.Sprintf("- %d replica%s: %s\n", r.Replicas, plural(r.Replicas), n))
		}
	}
	if len(notes) > 0 {
		b.WriteString("\n" + strings.Join(notes, ""))
	}
	return b.String()
}

// renderScaleGauges lists every cardguard gauge about entries or series, each
// replica's value, per replica count.
func renderScaleGauges(b *strings.Builder, rs []scaleResult) {
	var names []string
	for _, r := range rs {
		for _, g := range r.Gauges {
			if !slices.Contains(names, g.Name) {
				names = append(names, g.Name)
			}
		}
	}
	if len(names) == 0 {
		return
	}
	fmt.Fprintf(b, "\ncardguard's gauges of entries and series after the load, each replica's value (summed over labels):\n\n| gauge |")
	for _, r := range rs {
		fmt.Fprintf(b, " %d replica%s |", r.Replicas, plural(r.Replicas))
	}
	fmt.Fprintf(b, "\n|---|%s\n", strings.Repeat("---:|", len(rs)))
	for _, name := range names {
		fmt.Fprintf(b, "| `%s` |", name)
		for _, r := range rs {
			cell := "–"
			for _, g := range r.Gauges {
				if g.Name == name {
					vs := make([]string, len(g.Values))
					for i, v := range g.Values {
						vs[i] = thousands(v)
					}
					cell = strings.Join(vs, " / ")
				}
			}
			fmt.Fprintf(b, " %s |", cell)
		}
		b.WriteString("\n")
	}
}

// failedCell is "0" for a clean run, and loudly what went missing otherwise.
func failedCell(r scaleResult) string {
	if len(r.Failures) == 0 {
		return "0"
	}
	cell := fmt.Sprintf("%d failure%s, below", len(r.Failures), plural(len(r.Failures)))
	if lost := r.Load.SamplesSent - r.Load.SamplesOK; lost != 0 {
		cell = thousands(float64(lost)) + " samples not accepted; " + cell
	}
	return "**" + cell + "**"
}

// span is "lo–hi", or one figure when they round alike.
func span(lo, hi float64) string {
	a, z := fmt.Sprintf("%.0f", lo), fmt.Sprintf("%.0f", hi)
	if a == z {
		return a
	}
	return a + "–" + z
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

// scaleSummary is the log line of one replica count.
func scaleSummary(r scaleResult) string {
	lo, hi, _ := r.heapRange()
	return fmt.Sprintf("%s samples in %.1fs, %.0f series in VictoriaMetrics (want %d), heap after GC %s MiB, Redis %.1f B/series, cardguard %.2f µs/sample, VictoriaMetrics %.2f µs/sample, %d failures",
		thousands(float64(r.Load.SamplesSent)), r.PushSeconds, r.VMSeries, r.Series, span(lo/(1<<20), hi/(1<<20)),
		r.redisPerSeries(), r.perSample(r.CardguardCPU()), r.perSample(r.VMCPU), len(r.Failures))
}
