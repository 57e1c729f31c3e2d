// Command bench measures cardguard's write path against VictoriaMetrics directly
// and against vmagent, on identical payloads from e2e/loadgen (remote write, and
// the same series over OTLP/HTTP), plus the latency cardguard adds to typical
// Grafana queries, (with -memory) its memory with a million active series, and
// (with -readlimits) how much one tenant at 10× its read limits moves another
// tenant's query latency, and (with -scale) what 1, 2 and 3 replicas sharing Redis
// cost for the same series. It writes the results into BENCHMARKS.md.
//
// Run it with `make bench` (or `make bench-memory`, `bench-readlimits`, `bench-scale`), which
// builds the binaries it needs first. Everything listens on loopback ports chosen at
// start, lives under a temporary directory, and is stopped before the command returns.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type config struct {
	binDir          string
	cardguardBin    string
	out             string
	cardguardConfig string
	vmClusterDir    string
	clusterDuration time.Duration
	vmagentRelabel  string
	resultsDir      string
	note            string
	only            string
	keep            bool

	duration     time.Duration
	concurrency  int
	warmupPasses int
	passes       int
	wl           workloadFlags
	queryIters   int

	agg          aggregateFlags
	otlpDuration time.Duration

	memory       bool
	memMetrics   int
	memSeries    int
	memLabels    int
	memTargetMiB int

	readLimits bool
	rl         readLimitsFlags

	scale bool
	sc    scaleFlags
}

// workloadFlags are passed to every loadgen run of a benchmark, so that all
// targets get the same bytes.
type workloadFlags struct {
	metrics, seriesPerMetric, labels, rounds, batch int
	churn                                           float64
	seed                                            uint64
	interval                                        time.Duration
	start                                           int64
	userMetrics, users                              int    // the aggregation scenario's user_id label
	protocol                                        string // loadgen -protocol; empty: remote write
}

func (w workloadFlags) args() []string {
	args := w.common()
	if w.userMetrics > 0 {
		args = append(args, "-user-metrics="+strconv.Itoa(w.userMetrics), "-users="+strconv.Itoa(w.users))
	}
	if w.protocol != "" {
		args = append(args, "-protocol="+w.protocol)
	}
	return args
}

// writePath is where every target (VictoriaMetrics, vmagent, cardguard) takes
// the workload's protocol.
func (w workloadFlags) writePath() string {
	if w.protocol == "otlp" {
		return "/opentelemetry/v1/metrics"
	}
	return "/api/v1/write"
}

func (w workloadFlags) common() []string {
	return []string{
		"-metrics=" + strconv.Itoa(w.metrics),
		"-series-per-metric=" + strconv.Itoa(w.seriesPerMetric),
		"-labels=" + strconv.Itoa(w.labels),
		"-rounds=" + strconv.Itoa(w.rounds),
		"-batch=" + strconv.Itoa(w.batch),
		"-churn=" + strconv.FormatFloat(w.churn, 'g', -1, 64),
		"-seed=" + strconv.FormatUint(w.seed, 10),
		"-interval=" + w.interval.String(),
		"-start=" + strconv.FormatInt(w.start, 10),
	}
}

// dataEnd is the timestamp of the last round.
func (w workloadFlags) dataEnd() time.Time {
	return time.UnixMilli(w.start).Add(time.Duration(w.rounds-1) * w.interval)
}

func parseFlags(args []string) (config, error) {
	var c config
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&c.binDir, "bin", ".cache/bin", "directory holding victoria-metrics, vmagent and loadgen")
	fs.StringVar(&c.cardguardBin, "cardguard", "bin/cardguard", "cardguard binary")
	fs.StringVar(&c.out, "out", "BENCHMARKS.md", "markdown file whose benchmark section is rewritten")
	fs.StringVar(&c.cardguardConfig, "cardguard.config", "e2e/bench/cardguard.yml", "cardguard policy file for the benchmark")
	fs.StringVar(&c.vmagentRelabel, "vmagent.relabel", "e2e/bench/vmagent-relabel.yml", "vmagent -remoteWrite.relabelConfig, the same rule as in the cardguard config")
	fs.StringVar(&c.resultsDir, "results", ".cache/bench", "directory for the raw JSON results")
	fs.StringVar(&c.note, "note", "", "conditions of this run, written next to the numbers (e.g. 'shared machine, other builds running')")
	fs.StringVar(&c.only, "only", "direct,vmagent,cardguard,aggregate,otlp,cluster,query", "comma-separated parts to run: the write targets direct, vmagent, cardguard; aggregate (vmagent and cardguard aggregating 10% of the series); otlp (the three targets taking the workload over OTLP/HTTP); cluster (direct and cardguard into a VictoriaMetrics cluster); query")
	fs.StringVar(&c.vmClusterDir, "vmcluster.dir", "", "directory of the VictoriaMetrics cluster binaries (vmstorage, vminsert, vmselect) for the cluster part; default $CARDGUARD_VM_CLUSTER_DIR, else ../shared/vm-cluster")
	fs.BoolVar(&c.keep, "keep", false, "keep the temporary directory (data and logs)")
	fs.DurationVar(&c.duration, "duration", 60*time.Second, "measured window per target")
	fs.IntVar(&c.concurrency, "concurrency", 4, "requests in flight from the load generator")
	fs.IntVar(&c.warmupPasses, "warmup-passes", 2, "passes over the pre-encoded rounds before measuring (creates every series first)")
	fs.IntVar(&c.passes, "passes", 2, "measurements of every write target; every second pass takes the targets in reverse order, and each target's figures are over all its passes")
	fs.IntVar(&c.wl.metrics, "metrics", 100, "metric names")
	fs.IntVar(&c.wl.seriesPerMetric, "series-per-metric", 500, "series per metric")
	fs.IntVar(&c.wl.labels, "labels", 10, "labels per series besides __name__")
	fs.IntVar(&c.wl.rounds, "rounds", 8, "rounds pre-encoded by the load generator")
	fs.IntVar(&c.wl.batch, "batch", 2000, "series per request")
	fs.Float64Var(&c.wl.churn, "churn", 0.05, "fraction of series replaced at each round")
	fs.Uint64Var(&c.wl.seed, "seed", 1, "load generator seed")
	fs.DurationVar(&c.wl.interval, "interval", 15*time.Second, "timestamp step between rounds")
	fs.IntVar(&c.queryIters, "query-iterations", 300, "measured requests per query and target")
	fs.DurationVar(&c.agg.duration, "aggregate.duration", 45*time.Second, "measured window per target and pass of the aggregation scenario")
	fs.IntVar(&c.agg.userMetrics, "aggregate.user-metrics", 10, "metrics whose series carry the user_id label that the aggregation scenario folds (10 of the 100: 10% of the series)")
	fs.IntVar(&c.agg.users, "aggregate.users", 250, "user_id values per group of series that share every other label")
	fs.StringVar(&c.agg.cardguardConfig, "aggregate.cardguard.config", "e2e/bench/cardguard-aggregate.yml", "cardguard policy of the aggregation scenario: the label guard folds user_id")
	fs.StringVar(&c.agg.vmagentConfig, "aggregate.vmagent.config", "e2e/bench/vmagent-streamaggr.yml", "vmagent -streamAggr.config of the aggregation scenario: the same series aggregated without user_id")
	fs.DurationVar(&c.otlpDuration, "otlp.duration", 20*time.Second, "measured window per target and pass of the OTLP scenario (short, to keep make bench near 15 minutes)")
	fs.DurationVar(&c.clusterDuration, "cluster.duration", 30*time.Second, "measured window per target and pass of the cluster scenario")
	fs.BoolVar(&c.memory, "memory", false, "run only the memory measurement (1M active series through cardguard)")
	fs.IntVar(&c.memMetrics, "memory.metrics", 1000, "metric names for -memory")
	fs.IntVar(&c.memSeries, "memory.series-per-metric", 1000, "series per metric for -memory")
	fs.IntVar(&c.memLabels, "memory.labels", 10, "labels per series for -memory")
	fs.IntVar(&c.memTargetMiB, "memory.target-mib", 512, "RSS target for -memory")
	fs.BoolVar(&c.readLimits, "readlimits", false, "run only the read-limits scenario: tenant A at -readlimits.load times its read limits, tenant B's latency with A idle and busy, through cardguard and direct")
	fs.StringVar(&c.rl.workers, "readlimits.workers", "default,1", "VictoriaMetrics -search.maxWorkersPerQuery values, one configuration each, in this order; \"default\" leaves the flag unset")
	fs.StringVar(&c.rl.vmFlags, "readlimits.vm-flags", "", "more VictoriaMetrics flags for every configuration, space-separated")
	fs.IntVar(&c.rl.rounds, "readlimits.rounds", 5, "pairs of rounds (A idle, A busy, the order swapped every pair) per configuration")
	fs.DurationVar(&c.rl.round, "readlimits.round", 8*time.Second, "measured time of B per round")
	fs.IntVar(&c.rl.maxConcurrent, "readlimits.max-concurrent", 1, "tenant A's max_concurrent_queries")
	fs.Float64Var(&c.rl.queryRate, "readlimits.query-rate", 0.1, "tenant A's query_rate: at 0.1 its admitted heavy queries (20 to 60 ms each here) keep VictoriaMetrics busy under 1% of the time, the share B's p99 leaves out")
	fs.IntVar(&c.rl.load, "readlimits.load", 10, "tenant A sends load × max-concurrent queries at once, at load × query-rate per second")
	fs.IntVar(&c.rl.heavySeries, "readlimits.heavy-series", 10_000, "series of each of tenant A's two metrics")
	fs.Float64Var(&c.rl.bRate, "readlimits.b-rate", 150, "tenant B's queries per second through cardguard, and as many direct, each sent at its appointed time whatever the answers before it; 0: one query at a time, each sent when the one before was answered")
	fs.Float64Var(&c.rl.quiet, "readlimits.quiet", 0.25, "the pairs of rounds in both of which the rest of the machine used fewer cores than this are summed up apart, as the quiet ones")
	fs.Func("readlimits.query", "tenant A's heavy query over heavy_metric_0 and heavy_metric_1; repeat the flag for more, each measured with every -readlimits.workers (default: the end-to-end test's, whose two sides VictoriaMetrics evaluates in parallel, and one selector alone)", func(q string) error {
		c.rl.queries = append(c.rl.queries, q)
		return nil
	})
	fs.BoolVar(&c.scale, "scale", false, "run only the scale-out measurement: the same active series through 1, 2 and 3 cardguard replicas sharing one Redis")
	fs.IntVar(&c.sc.series, "scale.series", 1_000_000, "active series for -scale (100000 for a quick try)")
	fs.IntVar(&c.sc.metrics, "scale.metrics", 1000, "metric names the -scale series are spread over")
	fs.IntVar(&c.sc.rounds, "scale.rounds", 3, "times every -scale series is written, one round after the other")
	fs.StringVar(&c.sc.replicas, "scale.replicas", "1,2,3", "replica counts for -scale, in this order; the first and the last are compared")
	fs.DurationVar(&c.sc.settle, "scale.settle", 65*time.Second, "wait after the -scale load before memory and CPU are read: two sketch intervals (30s), one for each replica to share what the load left and one for the others to merge it")
	fs.DurationVar(&c.sc.profile, "scale.profile", 0, "with -scale, take a CPU profile of each replica over this long from the start of the load, and its allocation profile at the end, into .cache/bench (0: none)")
	fs.DurationVar(&c.sc.idle, "scale.idle", 20*time.Second, "with -scale, measure the replicas' CPU idle for this long before the load, to tell what the load cost from what they use anyway (0: not measured)")
	fs.StringVar(&c.sc.redisBin, "scale.redis", "redis-server", "redis-server binary for -scale")
	fs.StringVar(&c.sc.tenantLimits, "scale.tenant-limits", "{max_series: 100000000}", "limits of tenant 0:0 for -scale, a YAML mapping; a series limit makes the replicas keep series membership")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if c.passes < 1 || c.passes > 10 {
		return c, fmt.Errorf("-passes %d out of range [1, 10]", c.passes)
	}
	if c.duration <= 0 || c.duration > 10*time.Minute {
		return c, fmt.Errorf("-duration %s out of range (0, 10m]", c.duration)
	}
	if c.agg.duration <= 0 || c.agg.duration > 10*time.Minute {
		return c, fmt.Errorf("-aggregate.duration %s out of range (0, 10m]", c.agg.duration)
	}
	if len(c.rl.queries) == 0 {
		c.rl.queries = []string{`count(heavy_metric_0) + count(heavy_metric_1 > 10)`, `count(heavy_metric_0)`}
	}
	if c.rl.rounds < 1 || c.rl.round <= 0 || c.rl.maxConcurrent < 1 || c.rl.queryRate <= 0 || c.rl.load < 1 || c.rl.heavySeries < 1 || c.rl.bRate < 0 {
		return c, errors.New("-readlimits.rounds, .round, .max-concurrent, .query-rate, .load and .heavy-series must be positive")
	}
	if c.otlpDuration <= 0 || c.otlpDuration > 10*time.Minute {
		return c, fmt.Errorf("-otlp.duration %s out of range (0, 10m]", c.otlpDuration)
	}
	if c.scale {
		return c, c.sc.validate()
	}
	return c, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	c, err := parseFlags(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := bench(ctx, c, append([]string{"bench"}, args...)); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// env is what every part of a benchmark shares: one VictoriaMetrics, a work dir.
type env struct {
	cfg   config
	work  string
	ticks float64
	vm    *process
	vmURL string
	// cluster, once started, is the VictoriaMetrics written to instead of vm.
	cluster *vmCluster
	procs   []*process // stopped at the end, in reverse
	logw    io.Writer
	argv    []string
	digest  map[string]string // loadgen payload digest per target, to prove identical traffic
}

func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.logw, "bench: "+format+"\n", args...)
}

func bench(ctx context.Context, c config, argv []string) error {
	need := []string{filepath.Join(c.binDir, "victoria-metrics"), c.cardguardBin}
	switch {
	case c.scale:
		need = append(need, filepath.Join(c.binDir, "loadgen"))
	case !c.readLimits:
		need = append(need, filepath.Join(c.binDir, "vmagent"), filepath.Join(c.binDir, "loadgen"))
	}
	for _, b := range need {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%s missing: run through `make bench`, which builds it", b)
		}
	}
	work, err := os.MkdirTemp("", "cardguard-bench-")
	if err != nil {
		return err
	}
	e := &env{cfg: c, work: work, ticks: clockTicks(), logw: os.Stderr, argv: argv, digest: map[string]string{}}
	defer func() {
		for i := len(e.procs) - 1; i >= 0; i-- {
			e.procs[i].stop(15 * time.Second)
		}
		if c.keep {
			e.logf("kept %s", work)
			return
		}
		_ = os.RemoveAll(work)
	}()
	if err := os.MkdirAll(c.resultsDir, 0o755); err != nil {
		return err
	}
	info := collectRunInfo(c)
	e.logf("work dir %s; %s", work, info.machine())

	if c.memory {
		if err := e.startVM("vm-data"); err != nil {
			return err
		}
		res, err := e.memory(ctx)
		if err != nil {
			return err
		}
		info.finish()
		e.saveJSON("memory.json", map[string]any{"info": info, "memory": res})
		return updateSection(c.out, "memory", renderMemory(info, res, c))
	}

	if c.scale {
		return e.scaleOut(ctx, info)
	}

	if c.readLimits {
		res, err := e.readLimits(ctx)
		if err != nil {
			return err
		}
		info.finish()
		e.saveJSON("readlimits.json", map[string]any{"info": info, "configurations": res})
		return updateSection(c.out, "readlimits", renderReadLimits(info, res, c))
	}

	// Timestamps in the recent past, the same for every target.
	c.wl.start = time.Now().Truncate(time.Minute).Add(-time.Duration(c.wl.rounds)*c.wl.interval - time.Minute).UnixMilli()
	e.cfg = c
	parts := map[string]bool{}
	for _, p := range strings.Split(c.only, ",") {
		parts[strings.TrimSpace(p)] = true
	}
	if parts["cluster"] {
		for _, b := range []string{"vmstorage", "vminsert", "vmselect"} {
			if _, err := os.Stat(filepath.Join(c.clusterDir(), b)); err != nil {
				return fmt.Errorf("VictoriaMetrics cluster binary %s missing (-vmcluster.dir, or leave cluster out of -only): %w", b, err)
			}
		}
	}
	var (
		results, aggregated, otlp, cluster []scenarioResult
		queries                            []queryResult
	)
	var targets []string
	for _, t := range []string{"direct", "vmagent", "cardguard"} {
		if parts[t] {
			targets = append(targets, t)
		}
	}
	// Every second pass takes the targets in reverse order (direct, vmagent,
	// cardguard, cardguard, vmagent, direct): a machine that gets faster or slower
	// during the run then moves every target's mean alike, where one pass would
	// hand the drift to whichever target ran last.
	for pass := 1; pass <= c.passes; pass++ {
		order := slices.Clone(targets)
		if pass%2 == 0 {
			slices.Reverse(order)
		}
		for _, t := range order {
			r, err := e.runTarget(ctx, "", t, pass)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	if parts["aggregate"] {
		aggregated, err = e.aggregateScenario(ctx)
		if err != nil {
			return err
		}
	}
	if parts["otlp"] {
		otlp, err = e.otlpScenario(ctx)
		if err != nil {
			return err
		}
	}
	if parts["cluster"] {
		cluster, err = e.clusterScenario(ctx)
		if err != nil {
			return err
		}
	}
	// The query path last, not between two write measurements: when it ran
	// right after cardguard's first pass, cardguard's second pass came out 7-11%
	// lower against direct's than its first in three runs; without it there,
	// -3% to +4% in five.
	if parts["query"] {
		q, err := e.queryOnly(ctx)
		if err != nil {
			return err
		}
		queries = q
	}
	info.finish()
	e.saveJSON("ingest.json", map[string]any{"info": info, "scenarios": results, "aggregate": aggregated, "otlp": otlp, "cluster": cluster, "queries": queries})
	return updateSection(c.out, "ingest", renderIngest(info, results, aggregated, otlp, cluster, queries, e))
}

func (e *env) saveJSON(name string, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(e.cfg.resultsDir, name), b, 0o644)
	}
	if err != nil {
		e.logf("cannot save %s: %v", name, err)
	}
}

// startVM starts a VictoriaMetrics on an empty data directory, dir under the
// work directory, with the flags of the benchmark and extra, and stops the one
// started before, if any.
func (e *env) startVM(dir string, extra ...string) error {
	if e.vm != nil {
		e.vm.stop(15 * time.Second)
	}
	if e.cluster != nil {
		e.cluster.stop()
		e.cluster = nil
	}
	addr, err := freeAddr()
	if err != nil {
		return err
	}
	vm, err := startProcess("victoria-metrics", filepath.Join(e.cfg.binDir, "victoria-metrics"), append([]string{
		"-httpListenAddr=" + addr,
		"-storageDataPath=" + filepath.Join(e.work, dir),
		"-retentionPeriod=1y",
		"-loggerLevel=ERROR",
	}, extra...), filepath.Join(e.work, "victoria-metrics.log"))
	if err != nil {
		return err
	}
	e.procs = append(e.procs, vm)
	e.vm, e.vmURL = vm, "http://"+addr
	return waitReady(context.Background(), vm, e.vmURL+"/health", 30*time.Second)
}

// startCardguard starts a fresh cardguard with the policy file config in front of
// the VictoriaMetrics.
func (e *env) startCardguard(ctx context.Context, name, config string) (*process, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	args := []string{
		"-httpListenAddr=" + addr,
		"-config=" + config,
		"-dataDir=" + filepath.Join(e.work, name+"-data"),
		"-loggerLevel=warn",
	}
	if e.cluster == nil {
		// The cluster's addresses are in its config (clusterConfig).
		args = append(args, "-upstream.url="+e.vmURL)
	}
	p, err := startProcess(name, e.cfg.cardguardBin, args, filepath.Join(e.work, name+".log"))
	if err != nil {
		return nil, "", err
	}
	e.procs = append(e.procs, p)
	base := "http://" + addr
	return p, base, waitReady(ctx, p, base+"/readyz", 30*time.Second)
}

// loadgen runs one load generator and returns its JSON result.
func (e *env) loadgen(ctx context.Context, label, url string, extra ...string) (lgResult, error) {
	args := []string{"-url=" + url, "-label=" + label}
	if !e.cfg.memory {
		// The payloads are encoded once per workload and kept for the later
		// runs (the OTLP ones take seconds), under the work directory: never
		// across benchmark runs. The memory benchmark's million series are
		// sent by one run only.
		args = append(args, "-ring-cache="+filepath.Join(e.work, "rings"))
	}
	args = append(args, e.cfg.wl.args()...)
	args = append(args, extra...)
	cmd := exec.CommandContext(ctx, filepath.Join(e.cfg.binDir, "loadgen"), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, e.logw
	if err := cmd.Run(); err != nil {
		return lgResult{}, fmt.Errorf("loadgen %s: %w", label, err)
	}
	var r lgResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return r, fmt.Errorf("loadgen %s output %q: %w", label, out.String(), err)
	}
	return r, nil
}

// lgResult mirrors the loadgen JSON line (the fields the report uses).
type lgResult struct {
	PayloadDigest    string             `json:"payload_digest"`
	RingRequests     int                `json:"ring_requests"`
	RingSamples      int64              `json:"ring_samples"`
	RingBytes        int64              `json:"ring_bytes"`
	RingRawBytes     int64              `json:"ring_raw_bytes"`
	UniqueSeries     int                `json:"unique_series"`
	Concurrency      int                `json:"concurrency"`
	ElapsedSeconds   float64            `json:"elapsed_s"`
	Requests         int64              `json:"requests"`
	SamplesSent      int64              `json:"samples_sent"`
	SamplesOK        int64              `json:"samples_ok"`
	SamplesPerSecond float64            `json:"samples_per_s"`
	LatencyMS        map[string]float64 `json:"latency_ms"`
	Status           map[string]int64   `json:"status"`
	FirstError       string             `json:"first_error"`
	GeneratorCPU     float64            `json:"generator_cpu_s"`
}
