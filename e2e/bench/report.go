package main

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// runInfo is where and how a run happened, printed above its numbers.
type runInfo struct {
	Start          time.Time `json:"start"`
	End            time.Time `json:"end"`
	Command        string    `json:"command"`
	Note           string    `json:"note,omitempty"`
	GoVersion      string    `json:"go_version"`
	VMVersion      string    `json:"vm_version"`
	VMAgentVersion string    `json:"vmagent_version"`
	CardguardRev   string    `json:"cardguard_rev"`
	NProc          int       `json:"nproc"`
	CPUModel       string    `json:"cpu_model"`
	MemTotalKiB    int64     `json:"mem_total_kib"`
	LoadStart      string    `json:"loadavg_start"`
	LoadEnd        string    `json:"loadavg_end"`
	ConfigSections []string  `json:"cardguard_config_sections"`
}

func collectRunInfo(c config) runInfo {
	quoted := make([]string, len(os.Args)-1)
	for i, a := range os.Args[1:] {
		if strings.ContainsAny(a, " '\"$`\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		quoted[i] = a
	}
	args := strings.Join(quoted, " ")
	info := runInfo{
		Start:          time.Now().UTC(),
		Command:        strings.TrimSpace("go run ./e2e/bench " + args),
		Note:           c.note,
		GoVersion:      runtime.Version(),
		VMVersion:      moduleVersion(filepath.Join(c.binDir, "victoria-metrics")),
		VMAgentVersion: moduleVersion(filepath.Join(c.binDir, "vmagent")),
		CardguardRev:   gitRev(),
		NProc:          runtime.NumCPU(),
		CPUModel:       cpuModel(),
		LoadStart:      loadAvg(),
	}
	info.MemTotalKiB = memTotal()
	info.ConfigSections = configSections(c.cardguardConfig)
	return info
}

func (i *runInfo) finish() {
	i.End = time.Now().UTC()
	i.LoadEnd = loadAvg()
}

func (i runInfo) machine() string {
	return fmt.Sprintf("%d CPUs (%s), %.1f GiB memory, load average %s", i.NProc, i.CPUModel, float64(i.MemTotalKiB)/(1<<20), i.LoadStart)
}

// moduleVersion reads the VictoriaMetrics module version a binary was built from.
func moduleVersion(bin string) string {
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[0] == "mod" || f[0] == "dep") && f[1] == "github.com/VictoriaMetrics/VictoriaMetrics" {
			return f[2]
		}
	}
	return "unknown"
}

func gitRev() string {
	out, err := exec.Command("git", "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	rev := strings.TrimSpace(string(out))
	// Markdown is left out: a run rewrites BENCHMARKS.md, and the docs do not
	// change what is measured.
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)*.md").Output(); err == nil && len(st) > 0 {
		rev += " (working tree with uncommitted changes)"
	}
	return rev
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func memTotal() int64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// configSections lists the top-level keys of the cardguard config, so the report
// says which features were on.
func configSections(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var m map[string]any
	if yaml.Unmarshal(b, &m) != nil {
		return nil
	}
	return slices.Sorted(maps.Keys(m))
}

func statusString(st map[string]int64) string {
	keys := slices.Sorted(maps.Keys(st))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s×%d", k, st[k])
	}
	return strings.Join(parts, " ")
}

func mib(kib int64) string { return strconv.FormatInt((kib+512)>>10, 10) }

func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (i runInfo) header(b *strings.Builder, what string) {
	fmt.Fprintf(b, "Last run: %s to %s UTC.", i.Start.Format("2006-01-02 15:04"), i.End.Format("15:04"))
	if i.Note != "" {
		fmt.Fprintf(b, " Conditions: %s.", i.Note)
	}
	fmt.Fprintf(b, "\n\n")
	fmt.Fprintf(b, "- command: `%s` (%s)\n", makeTarget(what), i.Command)
	fmt.Fprintf(b, "- machine: %d CPUs, %s, %.1f GiB memory; load average %s at the start, %s at the end\n",
		i.NProc, i.CPUModel, float64(i.MemTotalKiB)/(1<<20), i.LoadStart, i.LoadEnd)
	fmt.Fprintf(b, "- versions: VictoriaMetrics %s, vmagent %s (built from the Go module proxy, pinned in tools/vm/go.mod), %s, cardguard %s\n",
		i.VMVersion, i.VMAgentVersion, i.GoVersion, i.CardguardRev)
}

func makeTarget(what string) string {
	if what == "bench-memory" || what == "bench-readlimits" {
		return "make " + what
	}
	return "make bench"
}

// combine folds the passes of each target into one result, in the order the
// targets first ran: samples, time, CPU and statuses are summed, so that rates and
// CPU per sample are over all passes; latency percentiles are the mean of the
// passes' own (the load generator reports percentiles, not its samples).
func combine(rs []scenarioResult) []scenarioResult {
	var out []scenarioResult
	idx := map[string]int{}
	for _, r := range rs {
		i, ok := idx[r.Name]
		if !ok {
			idx[r.Name] = len(out)
			c := r
			c.Pass = 0
			c.Measured.LatencyMS = maps.Clone(r.Measured.LatencyMS)
			c.Measured.Status = maps.Clone(r.Measured.Status)
			c.Notes = nil
			out = append(out, c)
			continue
		}
		c := &out[i]
		m, n := &c.Measured, r.Measured
		m.ElapsedSeconds += n.ElapsedSeconds
		m.Requests += n.Requests
		m.SamplesSent += n.SamplesSent
		m.SamplesOK += n.SamplesOK
		m.GeneratorCPU += n.GeneratorCPU
		for k, v := range n.Status {
			m.Status[k] += v
		}
		for k, v := range n.LatencyMS {
			m.LatencyMS[k] += v
		}
		if m.PayloadDigest != n.PayloadDigest {
			m.PayloadDigest += "+" + n.PayloadDigest
		}
		c.ProxyCPUSeconds += r.ProxyCPUSeconds
		c.VMCPUSeconds += r.VMCPUSeconds
		c.Delivered += r.Delivered
		c.DrainSeconds += r.DrainSeconds
		c.Dropped += r.Dropped
		c.Fold = c.Fold.add(r.Fold)
		c.ProxyPeakKiB = max(c.ProxyPeakKiB, r.ProxyPeakKiB)
		c.VMPeakKiB = max(c.VMPeakKiB, r.VMPeakKiB)
	}
	for i := range out {
		c := &out[i]
		// A note every pass made is given once; others say which passes made them.
		passes := 0
		var texts []string
		in := map[string][]string{}
		for _, r := range rs {
			if r.Name != c.Name {
				continue
			}
			passes++
			for _, n := range r.Notes {
				if in[n] == nil {
					texts = append(texts, n)
				}
				in[n] = append(in[n], strconv.Itoa(r.Pass))
			}
		}
		for _, n := range texts {
			if len(in[n]) == passes {
				c.Notes = append(c.Notes, n)
			} else {
				c.Notes = append(c.Notes, fmt.Sprintf("pass %s: %s", strings.Join(in[n], ", "), n))
			}
		}
		for k := range c.Measured.LatencyMS {
			c.Measured.LatencyMS[k] /= float64(passes)
		}
		if c.Measured.ElapsedSeconds > 0 {
			c.Measured.SamplesPerSecond = float64(c.Measured.SamplesOK) / c.Measured.ElapsedSeconds
		}
	}
	return out
}

// targetTable writes each target's figures over all its passes.
func targetTable(b *strings.Builder, rs []scenarioResult) {
	fmt.Fprintf(b, "| target | accepted samples/s | delivered samples/s | target CPU s / M samples | VictoriaMetrics CPU s / M samples | target peak RSS MiB | p50 ms | p90 ms | p99 ms | statuses | load generator CPU s / M samples |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n")
	for _, r := range rs {
		fmt.Fprintf(b, "| %s | %s | %s | %.3f | %s | %s | %.1f | %.1f | %.1f | %s | %.3f |\n",
			r.Name, thousands(r.Measured.SamplesPerSecond), thousands(r.DeliveredRate()), r.ProxyCPUSeconds/r.MSamples(), vmCPUCell(r),
			mib(r.ProxyPeakKiB), r.Measured.LatencyMS["p50"], r.Measured.LatencyMS["p90"], r.Measured.LatencyMS["p99"], statusString(r.Measured.Status),
			r.Measured.GeneratorCPU/r.MSamples())
	}
	b.WriteString("\n")
}

// ratios are the two write-path targets' figures for a set of results:
// cardguard's CPU per sample over vmagent's, its throughput over direct's
// (throughput) and over vmagent's (vmagentThroughput).
type ratios struct {
	cpu, throughput, vmagentThroughput          float64
	hasCPU, hasThroughput, hasVMAgentThroughput bool
}

func ratiosOf(rs []scenarioResult) ratios {
	var x ratios
	byName := map[string]scenarioResult{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	cg, okC := byName["cardguard"]
	if !okC {
		return x
	}
	if va, ok := byName["vmagent"]; ok {
		x.cpu, x.hasCPU = (cg.ProxyCPUSeconds/cg.MSamples())/(va.ProxyCPUSeconds/va.MSamples()), true
		x.vmagentThroughput, x.hasVMAgentThroughput = cg.Measured.SamplesPerSecond/va.Measured.SamplesPerSecond, true
	}
	if di, ok := byName["direct"]; ok {
		x.throughput, x.hasThroughput = cg.Measured.SamplesPerSecond/di.Measured.SamplesPerSecond, true
	}
	return x
}

func renderIngest(info runInfo, all, aggregated, otlp, cluster []scenarioResult, qs []queryResult, e *env) string {
	var b strings.Builder
	c := e.cfg
	rs := combine(all)
	fmt.Fprintf(&b, "## Remote write: direct, through vmagent, through cardguard\n\n")
	info.header(&b, "bench")
	var ringSeries int
	var ringBytes, ringRaw int64
	digests := map[string]bool{}
	for _, r := range rs {
		ringSeries, ringBytes, ringRaw = r.Measured.UniqueSeries, r.Measured.RingBytes, r.Measured.RingRawBytes
		digests[r.Measured.PayloadDigest] = true
	}
	same := "identical for every target"
	if len(digests) > 1 {
		same = "NOT identical across targets"
	}
	fmt.Fprintf(&b, "- workload (`e2e/loadgen`): %d metrics × %d series, %d labels + `__name__`, %g%% of series replaced per round, %d rounds pre-encoded (%s distinct series, %.1f MiB snappy / %.1f MiB protobuf), %d series per request, one sample each; payloads %s (digest %s)\n",
		c.wl.metrics, c.wl.seriesPerMetric, c.wl.labels, c.wl.churn*100, c.wl.rounds, thousands(float64(ringSeries)),
		float64(ringBytes)/(1<<20), float64(ringRaw)/(1<<20), c.wl.batch, same, strings.Join(slices.Sorted(maps.Keys(digests)), ", "))
	fmt.Fprintf(&b, "- method: each target started fresh, each with a VictoriaMetrics of its own started on an empty data directory (one that earlier targets filled spends more CPU per sample, which would favour the first target), warm-up: %d passes over all rounds so every series exists, then %s at concurrency %d; CPU is utime+stime from /proc over the window and until VictoriaMetrics had counted every accepted sample; peak RSS is VmHWM since the target started\n",
		c.warmupPasses, c.duration, c.concurrency)
	if c.passes > 1 {
		fmt.Fprintf(&b, "- passes: every target was measured %d times, every second pass in reverse order (%s), so that the machine getting faster or slower during the run moves every target alike; a target's figures are over all its passes (samples over time, CPU over samples; latency percentiles are the mean of the passes')\n",
			c.passes, passOrder(all))
	}
	fmt.Fprintf(&b, "- reading throughput: the load generator, the target and VictoriaMetrics share %d CPUs; when they saturate them, throughput is bounded by the total CPU per sample (target + VictoriaMetrics + generator), so the throughput ratio restates the CPU figures; with spare cores it reflects latency instead\n", info.NProc)
	fmt.Fprintf(&b, "- vmagent: `-remoteWrite.relabelConfig=%s` (labeldrop `az`), `-remoteWrite.maxHourlySeries` at 4× the series per round, default queues\n", c.vmagentRelabel)
	fmt.Fprintf(&b, "- cardguard: `-config=%s`, top-level sections in use: %s\n\n", c.cardguardConfig, codeList(info.ConfigSections))

	targetTable(&b, rs)

	if x := ratiosOf(rs); x.hasCPU || x.hasThroughput {
		fmt.Fprintf(&b, "| ratio | value | target | met |\n|---|---:|---:|---|\n")
		if x.hasCPU {
			fmt.Fprintf(&b, "| cardguard CPU per sample ÷ vmagent CPU per sample | %.2f | ≤ 0.5 | %s |\n", x.cpu, yesNo(x.cpu <= 0.5))
		}
		if x.hasThroughput {
			fmt.Fprintf(&b, "| cardguard throughput ÷ direct throughput | %.2f | ≥ 0.7 | %s |\n", x.throughput, yesNo(x.throughput >= 0.7))
		}
		b.WriteString("\n")
	}
	if c.passes > 1 {
		fmt.Fprintf(&b, "Each pass on its own (the table above is over all of them):\n\n")
		fmt.Fprintf(&b, "| pass | target | accepted samples/s | target CPU s / M samples | VictoriaMetrics CPU s / M samples | cardguard CPU ÷ vmagent's | cardguard throughput ÷ direct's |\n")
		fmt.Fprintf(&b, "|---:|---|---:|---:|---:|---:|---:|\n")
		for pass := 1; pass <= c.passes; pass++ {
			var in []scenarioResult
			for _, r := range all {
				if r.Pass == pass {
					in = append(in, r)
				}
			}
			x := ratiosOf(in)
			for i, r := range in {
				cpuR, tpR := "", ""
				if i == 0 {
					if x.hasCPU {
						cpuR = fmt.Sprintf("%.2f", x.cpu)
					}
					if x.hasThroughput {
						tpR = fmt.Sprintf("%.2f", x.throughput)
					}
				}
				fmt.Fprintf(&b, "| %d | %s | %s | %.3f | %s | %s | %s |\n", pass, r.Name, thousands(r.Measured.SamplesPerSecond), r.ProxyCPUSeconds/r.MSamples(), vmCPUCell(r), cpuR, tpR)
			}
		}
		b.WriteString("\n")
	}
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "- %s: %s\n", r.Name, n)
		}
		if r.Dropped > 0 {
			fmt.Fprintf(&b, "- %s: reported %.0f samples dropped\n", r.Name, r.Dropped)
		}
	}
	for _, r := range all {
		if r.DrainSeconds > 0 {
			fmt.Fprintf(&b, "- %s, pass %d: VictoriaMetrics had every accepted sample %.1f s after the load stopped (answers before forwarding); delivered samples/s counts that time\n", r.Name, r.Pass, r.DrainSeconds)
		}
	}

	if len(aggregated) > 0 {
		renderAggregate(&b, aggregated, c)
	}
	if len(otlp) > 0 {
		renderOTLP(&b, otlp, c)
	}
	if len(cluster) > 0 {
		renderCluster(&b, cluster, c)
	}

	if len(qs) > 0 {
		fmt.Fprintf(&b, "\n## Query path: latency cardguard adds to Grafana queries\n\n")
		fmt.Fprintf(&b, "Same run, after every write measurement, so that the queries do not disturb one. A fresh VictoriaMetrics was given one pass over the same payloads, written directly; then each query was sent %d times to it and to a fresh cardguard in front of it, in alternation (one at a time, order swapped every round, 10 unmeasured first), as Grafana's Prometheus datasource sends it (form POST for query and query_range).\n\n", c.queryIters)
		fmt.Fprintf(&b, "| query | expression / match[] | direct p50 ms | cardguard p50 ms | added p50 ms | direct p99 ms | cardguard p99 ms | added p99 ms | items direct / cardguard |\n")
		fmt.Fprintf(&b, "|---|---|---:|---:|---:|---:|---:|---:|---|\n")
		for _, q := range qs {
			fmt.Fprintf(&b, "| %s | `%s` | %.2f | %.2f | %+.2f | %.2f | %.2f | %+.2f | %d / %d |\n", q.Name, strings.ReplaceAll(q.Expr, "|", "\\|"),
				q.DirectP50, q.CardguardP50, q.CardguardP50-q.DirectP50, q.DirectP99, q.CardguardP99, q.CardguardP99-q.DirectP99, q.DirectItems, q.CardguardItems)
		}
		met := 0
		for _, q := range qs {
			if q.CardguardP50-q.DirectP50 <= queryAddedP50Target {
				met++
			}
		}
		fmt.Fprintf(&b, "\nTarget: added p50 ≤ %.1f ms for every query: %s (%d of %d).\n", queryAddedP50Target, yesNo(met == len(qs)), met, len(qs))
		for _, q := range qs {
			for _, err := range q.Errors {
				fmt.Fprintf(&b, "- %s: error %s\n", q.Name, err)
			}
		}
	}
	return b.String()
}

// renderAggregate writes the aggregation scenario: vmagent and cardguard on the
// workload with user_id, each aggregating the series that carry it.
func renderAggregate(b *strings.Builder, all []scenarioResult, c config) {
	rs := combine(all)
	digests := map[string]bool{}
	for _, r := range rs {
		digests[r.Measured.PayloadDigest] = true
	}
	same := "identical for both targets"
	if len(digests) > 1 {
		same = "NOT identical across targets"
	}
	fmt.Fprintf(b, "\n## Aggregation: about 10%% of the series folded, cardguard's label guard against vmagent's stream aggregation\n\n")
	fmt.Fprintf(b, "Same run, after the write targets above.\n\n")
	fmt.Fprintf(b, "- workload: as above plus `-user-metrics=%d -users=%d`: the series of %d of the %d metrics (%.0f%% of the series) carry a `user_id` label, in groups of %d that share every other label, so that taking `user_id` away leaves one series per group (and per churned pod); payloads %s (digest %s)\n",
		c.agg.userMetrics, c.agg.users, c.agg.userMetrics, c.wl.metrics, 100*float64(c.agg.userMetrics)/float64(max(1, c.wl.metrics)), c.agg.users, same, strings.Join(slices.Sorted(maps.Keys(digests)), ", "))
	fmt.Fprintf(b, "- cardguard: `-config=%s`: the policy above with the label guard at 10 values of a label per metric, action `aggregate` (`pod`, `instance`, `node` and `job` exempt) and `aggregation.interval: 30s`; past its first 10 values, `user_id` becomes `__cardguard_overflow__` and the series so folded are aggregated (counters: the sum of their increases)\n", c.agg.cardguardConfig)
	fmt.Fprintf(b, "- vmagent: as above plus `-streamAggr.config=%s -streamAggr.keepInput=false`: the series with `user_id` are aggregated `without: [user_id]`, `outputs: [total]`, `keep_metric_names: true`, every 30s, and dropped; the others pass unchanged\n", c.agg.vmagentConfig)
	fmt.Fprintf(b, "- method: as above, %s per target and pass at concurrency %d, in the order %s; the share aggregated is each proxy's own count over its life, warm-up included: cardguard `cardguard_ingest_samples_aggregated_total` ÷ `cardguard_ingest_samples_received_total`, vmagent `vm_streamaggr_matched_samples_total` ÷ `vmagent_rows_inserted_total{type=\"promremotewrite\"}`. The guard lets each metric's first 10 `user_id` values through unchanged, which vmagent aggregates too; input and output series are cardguard's at its last flush (`cardguard_aggregate_input_series`, `_output_series`)\n\n",
		c.agg.duration, c.concurrency, passOrder(all))

	fmt.Fprintf(b, "| target | accepted samples/s | target CPU s / M samples | VictoriaMetrics CPU s / M samples | target peak RSS MiB | p50 ms | p90 ms | p99 ms | statuses | samples aggregated | aggregated samples written | input → output series |\n")
	fmt.Fprintf(b, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|\n")
	for _, r := range rs {
		fmt.Fprintf(b, "| %s | %s | %.3f | %s | %s | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n",
			r.Name, thousands(r.Measured.SamplesPerSecond), r.ProxyCPUSeconds/r.MSamples(), vmCPUCell(r), mib(r.ProxyPeakKiB),
			r.Measured.LatencyMS["p50"], r.Measured.LatencyMS["p90"], r.Measured.LatencyMS["p99"], statusString(r.Measured.Status),
			shareCell(r.Fold), writtenCell(r.Fold), seriesCell(r.Fold))
	}
	b.WriteString("\n")
	if x := aggregateRatios(rs); x.hasCPU {
		fmt.Fprintf(b, "| ratio | value | target | met |\n|---|---:|---:|---|\n")
		fmt.Fprintf(b, "| cardguard CPU per sample ÷ vmagent CPU per sample, both aggregating | %.2f | ≤ 0.5 | %s |\n", x.cpu, yesNo(x.cpu <= 0.5))
		if x.hasThroughput {
			fmt.Fprintf(b, "| cardguard throughput ÷ vmagent throughput | %.2f | | |\n", x.throughput)
		}
		b.WriteString("\n")
	}
	if c.passes > 1 {
		fmt.Fprintf(b, "Each pass on its own:\n\n")
		fmt.Fprintf(b, "| pass | target | accepted samples/s | target CPU s / M samples | VictoriaMetrics CPU s / M samples | samples aggregated | cardguard CPU ÷ vmagent's | cardguard throughput ÷ vmagent's |\n")
		fmt.Fprintf(b, "|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for pass := 1; pass <= c.passes; pass++ {
			var in []scenarioResult
			for _, r := range all {
				if r.Pass == pass {
					in = append(in, r)
				}
			}
			x := aggregateRatios(in)
			for i, r := range in {
				cpuR, tpR := "", ""
				if i == 0 && x.hasCPU {
					cpuR = fmt.Sprintf("%.2f", x.cpu)
				}
				if i == 0 && x.hasThroughput {
					tpR = fmt.Sprintf("%.2f", x.throughput)
				}
				fmt.Fprintf(b, "| %d | %s | %s | %.3f | %s | %s | %s | %s |\n", pass, r.Name, thousands(r.Measured.SamplesPerSecond),
					r.ProxyCPUSeconds/r.MSamples(), vmCPUCell(r), shareCell(r.Fold), cpuR, tpR)
			}
		}
		b.WriteString("\n")
	}
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s: %s\n", r.Name, n)
		}
		if r.Dropped > 0 {
			fmt.Fprintf(b, "- %s: reported %.0f samples dropped\n", r.Name, r.Dropped)
		}
	}
	for _, r := range all {
		if r.DrainSeconds > 0 {
			fmt.Fprintf(b, "- %s, pass %d: VictoriaMetrics had every sample it was to get %.1f s after the load stopped\n", r.Name, r.Pass, r.DrainSeconds)
		}
	}
}

// renderOTLP writes the OTLP scenario: the three write targets taking the
// same series over OTLP/HTTP.
func renderOTLP(b *strings.Builder, all []scenarioResult, c config) {
	rs := combine(all)
	digests := map[string]bool{}
	var r0 scenarioResult
	for _, r := range rs {
		digests[r.Measured.PayloadDigest] = true
		r0 = r
	}
	same := "identical for every target"
	if len(digests) > 1 {
		same = "NOT identical across targets"
	}
	m := r0.Measured
	fmt.Fprintf(b, "\n## OTLP/HTTP: direct, through vmagent, through cardguard\n\n")
	fmt.Fprintf(b, "Same run, after the scenarios above.\n\n")
	fmt.Fprintf(b, "- workload: the series of the remote-write targets, sent over OTLP/HTTP (`loadgen -protocol=otlp`): per request one protobuf `ExportMetricsServiceRequest`, gzip-compressed (`compress/gzip`, default level), `Content-Type: application/x-protobuf`, as the OpenTelemetry Collector's `otlphttp` exporter sends it; one resource and one scope, neither with attributes; each metric once per request, its series as data points with their labels as attributes; the %d even metrics monotonic cumulative sums with integer points, the %d odd ones gauges with double points (named without `_total`); %s points per request, %d rounds pre-encoded (%s distinct series, %.1f MiB gzip / %.1f MiB protobuf); payloads %s (digest %s)\n",
		(c.wl.metrics+1)/2, c.wl.metrics/2, thousands(float64(c.wl.batch)), c.wl.rounds, thousands(float64(m.UniqueSeries)),
		float64(m.RingBytes)/(1<<20), float64(m.RingRawBytes)/(1<<20), same, strings.Join(slices.Sorted(maps.Keys(digests)), ", "))
	fmt.Fprintf(b, "- targets: `/opentelemetry/v1/metrics` of VictoriaMetrics itself, of vmagent and of cardguard, with the flags and policy of the remote-write targets (the same relabel rule and limits), each in front of a fresh VictoriaMetrics of its own; vmagent and cardguard forward remote write\n")
	fmt.Fprintf(b, "- method: as above, %s per target and pass at concurrency %d, in the order %s\n", c.otlpDuration, c.concurrency, passOrder(all))
	text, _ := storedCheck(all)
	fmt.Fprintf(b, "- stored: %s (`vm_rows_inserted_total`)\n\n", text)

	targetTable(b, rs)
	if x := ratiosOf(rs); x.hasCPU || x.hasThroughput {
		fmt.Fprintf(b, "| ratio | value |\n|---|---:|\n")
		if x.hasCPU {
			fmt.Fprintf(b, "| cardguard CPU per sample ÷ vmagent CPU per sample | %.2f |\n", x.cpu)
			fmt.Fprintf(b, "| cardguard throughput ÷ vmagent throughput | %.2f |\n", x.vmagentThroughput)
		}
		if x.hasThroughput {
			fmt.Fprintf(b, "| cardguard throughput ÷ direct throughput | %.2f |\n", x.throughput)
		}
		b.WriteString("\n")
	}
	if c.passes > 1 {
		fmt.Fprintf(b, "Each pass on its own:\n\n")
		fmt.Fprintf(b, "| pass | target | accepted samples/s | target CPU s / M samples | VictoriaMetrics CPU s / M samples | cardguard CPU ÷ vmagent's | cardguard throughput ÷ vmagent's | cardguard throughput ÷ direct's |\n")
		fmt.Fprintf(b, "|---:|---|---:|---:|---:|---:|---:|---:|\n")
		for pass := 1; pass <= c.passes; pass++ {
			var in []scenarioResult
			for _, r := range all {
				if r.Pass == pass {
					in = append(in, r)
				}
			}
			x := ratiosOf(in)
			for i, r := range in {
				var cpuR, vaR, diR string
				if i == 0 && x.hasCPU {
					cpuR, vaR = fmt.Sprintf("%.2f", x.cpu), fmt.Sprintf("%.2f", x.vmagentThroughput)
				}
				if i == 0 && x.hasThroughput {
					diR = fmt.Sprintf("%.2f", x.throughput)
				}
				fmt.Fprintf(b, "| %d | %s | %s | %.3f | %s | %s | %s | %s |\n", pass, r.Name, thousands(r.Measured.SamplesPerSecond),
					r.ProxyCPUSeconds/r.MSamples(), vmCPUCell(r), cpuR, vaR, diR)
			}
		}
		b.WriteString("\n")
	}
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s: %s\n", r.Name, n)
		}
		if r.Dropped > 0 {
			fmt.Fprintf(b, "- %s: reported %.0f samples dropped\n", r.Name, r.Dropped)
		}
	}
	for _, r := range all {
		if r.DrainSeconds > 0 {
			fmt.Fprintf(b, "- %s, pass %d: VictoriaMetrics had every accepted sample %.1f s after the load stopped (answers before forwarding); delivered samples/s counts that time\n", r.Name, r.Pass, r.DrainSeconds)
		}
	}
}

// aggregateRatios compares cardguard with vmagent when both aggregate; the
// throughput field is cardguard's over vmagent's.
func aggregateRatios(rs []scenarioResult) ratios {
	x := ratiosOf(rs)
	var cg, va float64
	for _, r := range rs {
		switch r.Name {
		case "cardguard":
			cg = r.Measured.SamplesPerSecond
		case "vmagent":
			va = r.Measured.SamplesPerSecond
		}
	}
	x.throughput, x.hasThroughput = 0, false
	if x.hasCPU && va > 0 {
		x.throughput, x.hasThroughput = cg/va, true
	}
	return x
}

func shareCell(f *foldStats) string {
	if f == nil || f.Received == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*f.Share())
}

func writtenCell(f *foldStats) string {
	if f == nil {
		return "–"
	}
	return thousands(f.Written)
}

func seriesCell(f *foldStats) string {
	if f == nil || f.InputSeries == 0 {
		return "–"
	}
	return thousands(f.InputSeries) + " → " + thousands(f.OutputSeries)
}

func renderMemory(info runInfo, r memoryResult, c config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Memory: cardguard with a million active series\n\n")
	info.header(&b, "bench-memory")
	fmt.Fprintf(&b, "- workload: %s distinct series (%d metrics × %d series, %d labels + `__name__`), sent %d times through a fresh cardguard (`-config=%s`, sections %s) at concurrency %d\n\n",
		thousands(float64(r.Series)), r.Metrics, r.Series/max(1, r.Metrics), r.Labels, r.Passes, c.cardguardConfig, codeList(info.ConfigSections), c.concurrency)
	fmt.Fprintf(&b, "| series | RSS after MiB | peak RSS MiB | Go heap in use MiB | Go heap live after a GC MiB | target | met | push time s | accepted samples/s | cardguard CPU s | statuses |\n")
	fmt.Fprintf(&b, "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|\n")
	fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.0f | ≤ %d MiB | %s | %.1f | %s | %.1f | %s |\n",
		thousands(float64(r.Series)), mib(r.RSSKiB), mib(r.PeakKiB), r.HeapInuse/(1<<20), r.HeapLive/(1<<20), c.memTargetMiB, yesNo(r.RSSKiB>>10 <= int64(c.memTargetMiB) && r.PeakKiB>>10 <= int64(c.memTargetMiB)),
		r.Seconds, thousands(r.Load.SamplesPerSecond), r.CPUSeconds, statusString(r.Load.Status))
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "\n- %s", n)
	}
	if r.Dropped > 0 {
		fmt.Fprintf(&b, "\n- cardguard reported %.0f samples dropped", r.Dropped)
	}
	b.WriteString("\n")
	return b.String()
}

// vmCPUCell is VictoriaMetrics' CPU per sample behind a proxy; for direct writes
// it is the target's own column.
func vmCPUCell(r scenarioResult) string {
	if !r.proxy {
		return "(same)"
	}
	return fmt.Sprintf("%.3f", r.VMCPUSeconds/r.MSamples())
}

// passOrder is the order the targets ran in, pass after pass.
func passOrder(rs []scenarioResult) string {
	var names []string
	for _, r := range rs {
		names = append(names, r.Name)
	}
	return strings.Join(names, ", ")
}

func codeList(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return "`" + strings.Join(xs, "`, `") + "`"
}

// queryAddedP50Target is the latency cardguard may add to a query at p50, in ms.
const queryAddedP50Target = 0.5

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "**no**"
}

const benchmarksIntro = `# Benchmarks

How cardguard compares with writing to VictoriaMetrics directly and with vmagent, what it
adds to query latency, and how much memory it needs. The commands below rebuild every
binary they use (VictoriaMetrics and vmagent at the version pinned in tools/vm/go.mod) and
rewrite their own section of this file; each section says when, where and how its numbers
were taken. Numbers from a shared or busy machine show that the benchmark works, not how
fast cardguard is: compare ratios from one run, never absolute figures across machines.

- ` + "`make bench`" + ` (about 15 minutes): remote write direct / vmagent / cardguard on identical
  payloads, in two passes, the second in reverse order; then vmagent and cardguard each
  aggregating the 10% of the series that carry a ` + "`user_id`" + ` label; then the same three
  targets taking the same series over OTLP/HTTP (gzip protobuf); then the same
  series into a VictoriaMetrics cluster, directly and through cardguard; then the query path.
  Targets: cardguard CPU per sample at most half of vmagent's, in the remote-write and
  aggregation scenarios; cardguard throughput at least 0.7 of direct; latency added
  to each query at p50 at most 0.5 ms.
- ` + "`make bench-memory`" + ` (separate, because creating a million series in VictoriaMetrics takes
  a while): cardguard's RSS after 1M active series. Target: at most 512 MiB.
- ` + "`make bench-readlimits`" + ` (separate, about 8 minutes): two tenants on one VictoriaMetrics,
  one at 10× its read limits; the other's query p50 and p99 with the first idle and
  busy, in alternating rounds, through cardguard and direct. Target: within 20%.
- ` + "`make bench-scale`" + ` (separate, about 8 minutes): the same 1M active series, round-robin
  through 1, 2 and 3 replicas sharing one Redis, each on fresh processes. Targets: per
  replica heap less the sketches with 3 replicas at most 45% of one replica's; cardguard
  CPU per sample of all 3 at most 1.3× one replica's; Redis at most 100 bytes per active
  series per window.

Raw results of the last run are in ` + "`.cache/bench/*.json`" + ` (not committed).
`

// updateSection rewrites the part of path between the markers of name, creating
// the file or the section when missing, and keeps everything else.
func updateSection(path, name, content string) error {
	begin, end := "<!-- bench:"+name+":begin -->", "<!-- bench:"+name+":end -->"
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(b)
	if doc == "" {
		doc = benchmarksIntro
	}
	block := begin + "\n" + content + end
	i, j := strings.Index(doc, begin), strings.Index(doc, end)
	switch {
	case i >= 0 && j > i:
		doc = doc[:i] + block + doc[j+len(end):]
	case name == "ingest" && strings.Contains(doc, "<!-- bench:memory:begin -->"):
		k := strings.Index(doc, "<!-- bench:memory:begin -->")
		doc = doc[:k] + block + "\n\n" + doc[k:]
	default:
		doc = strings.TrimRight(doc, "\n") + "\n\n" + block + "\n"
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}
