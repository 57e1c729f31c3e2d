// Package aggregate folds series that a relabel rule or the label guard made
// equal into one output series per interval, with the semantics of their type, so
// that taking a label away never makes two series' samples interleave in one.
//
// Counters (and histogram buckets, which keep le) become the sum of their inputs'
// increases, written as a counter that never goes down: vmagent's `total` output.
// An input's reset counts its new value as increase; an input that appears
// only sets its baseline (vmagent's total_prometheus): its earlier increase was
// never seen here, and a series that was forwarded as it was until the label
// guard's window turned, or until a rule changed, would otherwise add its whole
// value at once. An input that goes away takes nothing away from the total. Unlike vmagent, whose
// inputs are forgotten after two intervals without samples (so that after a
// failed scrape every input's whole value is counted again), an input's last
// value is kept for the staleness interval, which is the cardinality window:
// a scrape that fails for minutes changes nothing.
//
// Gauges become one value per interval over the inputs' last values in it: sum
// by default, or min, max, avg, count or last.
//
// Outputs are written at the end of each interval, aligned to it, with the flush
// time as timestamp. A sample is held once Add returned; Stop flushes what is
// held. The state is bounded by MaxOutputs and MaxInputs: past them Add refuses.
package aggregate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Kind is how the inputs of one output combine.
type Kind uint8

// Kinds.
const (
	Counter Kind = iota + 1
	Gauge
)

func (k Kind) String() string {
	if k == Counter {
		return "counter"
	}
	return "gauge"
}

// KindOf tells a counter from a gauge by the metric's name, the way Prometheus'
// naming conventions do when no metadata says otherwise.
func KindOf(metric string) Kind {
	for _, s := range [...]string{"_total", "_count", "_sum", "_bucket"} {
		if strings.HasSuffix(metric, s) {
			return Counter
		}
	}
	return Gauge
}

// GaugeOutput is how the inputs' values of a gauge combine in one interval.
type GaugeOutput string

// Gauge outputs.
const (
	GaugeSum   GaugeOutput = "sum"
	GaugeMin   GaugeOutput = "min"
	GaugeMax   GaugeOutput = "max"
	GaugeAvg   GaugeOutput = "avg"
	GaugeCount GaugeOutput = "count"
	GaugeLast  GaugeOutput = "last"
)

// Validate refuses an unknown output; "" is sum.
func (g GaugeOutput) Validate() error {
	switch g {
	case "", GaugeSum, GaugeMin, GaugeMax, GaugeAvg, GaugeCount, GaugeLast:
		return nil
	}
	return fmt.Errorf("unknown gauge output %q: want sum, min, max, avg, count or last", truncate(string(g)))
}

// Source says what folded an output's inputs together.
type Source uint8

// Sources.
const (
	SourceRelabel Source = iota + 1 // relabel rules made distinct series collide
	SourceGuard                     // the label guard's aggregate action
)

func (s Source) String() string {
	if s == SourceGuard {
		return "label_guard"
	}
	return "relabel"
}

// Config sizes an Aggregator.
type Config struct {
	// Interval is how often outputs are written (default 30s).
	Interval time.Duration `yaml:"interval"`
	// Staleness is how long an input's last value is kept without samples
	// (default 1h, the cardinality window).
	Staleness time.Duration `yaml:"staleness"`
	// MaxOutputs and MaxInputs bound the state (defaults 100,000 and 2,000,000).
	MaxOutputs int `yaml:"max_outputs"`
	MaxInputs  int `yaml:"max_inputs"`
}

// Defaults for Config.
const (
	DefaultInterval   = 30 * time.Second
	DefaultStaleness  = time.Hour
	DefaultMaxOutputs = 100_000
	DefaultMaxInputs  = 2_000_000
)

// Validate checks c and fills in defaults.
func (c *Config) Validate() error {
	if c.Interval < 0 || c.Staleness < 0 || c.MaxOutputs < 0 || c.MaxInputs < 0 {
		return errors.New("aggregation: interval, staleness, max_outputs and max_inputs must not be negative")
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Interval < time.Second {
		return fmt.Errorf("aggregation.interval must be at least 1s, got %s", c.Interval)
	}
	if c.Staleness == 0 {
		c.Staleness = DefaultStaleness
	}
	if c.Staleness < c.Interval {
		return fmt.Errorf("aggregation.staleness (%s) must not be shorter than aggregation.interval (%s)", c.Staleness, c.Interval)
	}
	if c.MaxOutputs == 0 {
		c.MaxOutputs = DefaultMaxOutputs
	}
	if c.MaxInputs == 0 {
		c.MaxInputs = DefaultMaxInputs
	}
	return nil
}

// Sink takes what a flush wrote. Write must not keep series after it returned.
type Sink interface {
	Write(ctx context.Context, t tenant.ID, series []prompb.TimeSeries) error
}

// ErrFull is returned by Add when an output or input would exceed the caps.
var ErrFull = errors.New("aggregation state is full")

const numShards = 16

// Aggregator holds the folded series of every tenant. It is safe for concurrent
// use.
type Aggregator struct {
	cfg    Config
	sink   Sink
	logger *slog.Logger
	clock  atomic.Pointer[func() time.Time] // see now and SetClock

	shards [numShards]shard

	dry *DryRun

	flushMu sync.Mutex                        // one flush at a time
	pending map[tenant.ID][]prompb.TimeSeries // written by a flush that failed

	stats Stats
}

type shard struct {
	mu      sync.Mutex
	outputs map[outKey]*output
}

type outKey struct {
	t tenant.ID
	h uint64
}

type output struct {
	labels  []prompb.Label // owned
	metric  string
	kind    Kind
	gauge   GaugeOutput
	source  Source
	total   float64
	updated bool // a sample arrived since the last flush
	inputs  map[uint64]*input
	// seed is the input that had the output to itself, forwarded as it was,
	// until a second input collided with it: its first value here continues the
	// output from where its raw samples left it, and the output is not written
	// before that value came (or holdUntil passed), so that the output never
	// goes down when aggregation takes over.
	seed      uint64
	holdUntil int64 // unix nanoseconds
	emitted   bool
	created   int64 // unix nanoseconds; an output restored from a snapshot has no inputs yet
}

type input struct {
	last float64 // counter: last value; gauge: last value in this interval
	ts   int64   // timestamp of last
	seen int64   // when the last sample arrived, unix nanoseconds
	has  bool    // gauge: a value in this interval
}

// New builds an Aggregator; cfg must have been validated.
func New(cfg Config, sink Sink, logger *slog.Logger) *Aggregator {
	a := &Aggregator{cfg: cfg, sink: sink, logger: logger, pending: map[tenant.ID][]prompb.TimeSeries{},
		dry: NewDryRun(cfg.Staleness, cfg.MaxInputs)}
	for i := range a.shards {
		a.shards[i].outputs = map[outKey]*output{}
	}
	return a
}

// DryRun counts what aggregation would do for tenants in dry run.
func (a *Aggregator) DryRun() *DryRun { return a.dry }

// Interval is the flush interval.
func (a *Aggregator) Interval() time.Duration { return a.cfg.Interval }

func (a *Aggregator) shard(h uint64) *shard { return &a.shards[h>>60] }

// Has reports whether the output series with hash h is being aggregated.
func (a *Aggregator) Has(t tenant.ID, h uint64) bool {
	sh := a.shard(h)
	sh.mu.Lock()
	_, ok := sh.outputs[outKey{t, h}]
	sh.mu.Unlock()
	return ok
}

// Input is one input series' contribution to Add.
type Input struct {
	// Labels of the output series and their hash; copied when the output is new.
	Labels []prompb.Label
	Hash   uint64
	Metric string
	// Key identifies the input series among the output's inputs.
	Key uint64
	// Seed, for an output that is new, is the input that had it to itself
	// until now (Claims.Claim's prev); 0 for none.
	Seed    uint64
	Kind    Kind
	Gauge   GaugeOutput
	Source  Source
	Samples []prompb.Sample
}

// Add folds in's samples into its output. Samples older than the input's last
// one and NaNs (staleness markers among them) are skipped.
func (a *Aggregator) Add(t tenant.ID, in *Input) error {
	now := a.now()
	sh := a.shard(in.Hash)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	k := outKey{t, in.Hash}
	o := sh.outputs[k]
	if o == nil {
		if a.stats.outputs.Load() >= int64(a.cfg.MaxOutputs) {
			return fmt.Errorf("%w: %d output series (aggregation.max_outputs)", ErrFull, a.cfg.MaxOutputs)
		}
		o = &output{
			labels:  cloneLabels(in.Labels),
			metric:  strings.Clone(in.Metric),
			kind:    in.Kind,
			gauge:   in.Gauge,
			source:  in.Source,
			inputs:  map[uint64]*input{},
			created: now.UnixNano(),
		}
		if in.Seed != 0 && in.Seed != in.Key && in.Kind == Counter {
			o.seed, o.holdUntil = in.Seed, now.Add(2*a.cfg.Interval).UnixNano()
		}
		sh.outputs[k] = o
		a.stats.outputs.Add(1)
	}
	if in.Gauge != "" {
		o.gauge = in.Gauge
	}
	i := o.inputs[in.Key]
	first := i == nil
	if first {
		if a.stats.inputs.Load() >= int64(a.cfg.MaxInputs) {
			if len(o.inputs) == 0 {
				delete(sh.outputs, k)
				a.stats.outputs.Add(-1)
			}
			return fmt.Errorf("%w: %d input series (aggregation.max_inputs)", ErrFull, a.cfg.MaxInputs)
		}
		i = &input{ts: math.MinInt64}
		o.inputs[in.Key] = i
		a.stats.inputs.Add(1)
	}
	for _, s := range in.Samples {
		if math.IsNaN(s.Value) || s.Timestamp < i.ts {
			continue
		}
		switch {
		case o.kind == Gauge:
			i.has = true
		case first:
			if in.Key == o.seed && !o.emitted {
				o.total += s.Value
			}
			if in.Key == o.seed {
				o.seed = 0
			}
		case s.Value >= i.last:
			o.total += s.Value - i.last
		default: // a reset: the counter started again from zero
			o.total += s.Value
		}
		first = false
		i.last, i.ts = s.Value, s.Timestamp
		o.updated = true
	}
	i.seen = now.UnixNano()
	a.stats.samples.Add(int64(len(in.Samples)))
	return nil
}

// Run flushes at the end of every interval, aligned to it, until ctx is done.
func (a *Aggregator) Run(ctx context.Context) {
	for {
		now := a.now()
		next := now.Truncate(a.cfg.Interval).Add(a.cfg.Interval)
		t := time.NewTimer(next.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		fctx, cancel := context.WithTimeout(ctx, a.cfg.Interval)
		a.Flush(fctx, next, false)
		cancel()
	}
}

// Stop writes everything held, the current interval included, with ctx's
// deadline.
func (a *Aggregator) Stop(ctx context.Context) error {
	return a.Flush(ctx, a.now(), true)
}

// Flush writes every output updated since the last flush, stamped at, and forgets
// inputs stale for longer than the staleness interval. final writes counters
// whether or not they were updated. A write that fails is retried with the next
// flush.
func (a *Aggregator) Flush(ctx context.Context, at time.Time, final bool) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	ts := at.UnixMilli()
	staleBefore := a.now().Add(-a.cfg.Staleness).UnixNano()
	out := a.pending
	a.pending = map[tenant.ID][]prompb.TimeSeries{}
	var inputs, outputs int64
	perTenant := map[tenant.ID][2]int64{}
	for si := range a.shards {
		sh := &a.shards[si]
		sh.mu.Lock()
		for k, o := range sh.outputs {
			for ik, in := range o.inputs {
				if in.seen < staleBefore {
					delete(o.inputs, ik)
				}
			}
			if len(o.inputs) == 0 && o.created < staleBefore {
				delete(sh.outputs, k)
				continue
			}
			inputs += int64(len(o.inputs))
			outputs++
			c := perTenant[k.t]
			perTenant[k.t] = [2]int64{c[0] + int64(len(o.inputs)), c[1] + 1}
			if o.seed != 0 && !final && a.now().UnixNano() < o.holdUntil {
				continue // waiting for the seed input's value
			}
			v, ok := o.value(final)
			if !ok {
				continue
			}
			o.emitted = true
			out[k.t] = append(out[k.t], prompb.TimeSeries{Labels: o.labels, Samples: []prompb.Sample{{Value: v, Timestamp: ts}}})
		}
		sh.mu.Unlock()
	}
	a.stats.inputs.Store(inputs)
	a.stats.outputs.Store(outputs)
	a.stats.setPerTenant(perTenant)
	var errs []error
	for t, series := range out {
		if len(series) == 0 {
			continue
		}
		if err := a.sink.Write(ctx, t, series); err != nil {
			a.stats.flushErrors.Add(1)
			errs = append(errs, fmt.Errorf("tenant %s: %w", t, err))
			// Keep the latest value per output: a counter's newer total
			// supersedes an older one, and the pending set stays bounded by the
			// outputs.
			if len(series) <= a.cfg.MaxOutputs {
				a.pending[t] = latest(series)
			}
			continue
		}
		a.stats.written.Add(int64(len(series)))
	}
	err := errors.Join(errs...)
	if err != nil && a.logger != nil {
		a.logger.Warn("cannot write aggregated series; retrying with the next flush", "err", err)
	}
	return err
}

// value is what o writes in this flush, and resets the interval's state.
func (o *output) value(final bool) (float64, bool) {
	if o.kind == Counter {
		ok := o.updated || final
		o.updated = false
		return o.total, ok
	}
	o.updated = false
	var (
		n        int
		v        float64
		lastTime = int64(math.MinInt64)
	)
	for _, in := range o.inputs {
		if !in.has {
			continue
		}
		in.has = false
		x := in.last
		switch {
		case n == 0:
			v = x
		case o.gauge == GaugeMin:
			v = min(v, x)
		case o.gauge == GaugeMax:
			v = max(v, x)
		case o.gauge == GaugeLast:
			if in.ts > lastTime {
				v = x
			}
		default: // sum, avg
			v += x
		}
		lastTime = max(lastTime, in.ts)
		n++
	}
	if n == 0 {
		return 0, false
	}
	switch o.gauge {
	case GaugeAvg:
		v /= float64(n)
	case GaugeCount:
		v = float64(n)
	}
	return v, true
}

// latest keeps, for each output in series, its last sample.
func latest(series []prompb.TimeSeries) []prompb.TimeSeries {
	seen := make(map[string]int, len(series))
	out := series[:0]
	for _, s := range series {
		k := labelsKey(s.Labels)
		if i, ok := seen[k]; ok {
			out[i] = s
			continue
		}
		seen[k] = len(out)
		out = append(out, s)
	}
	return out
}

func labelsKey(ls []prompb.Label) string {
	var b strings.Builder
	for _, l := range ls {
		b.WriteString(l.Name)
		b.WriteByte(0)
		b.WriteString(l.Value)
		b.WriteByte(0)
	}
	return b.String()
}

func cloneLabels(ls []prompb.Label) []prompb.Label {
	out := make([]prompb.Label, len(ls))
	for i, l := range ls {
		out[i] = prompb.Label{Name: strings.Clone(l.Name), Value: strings.Clone(l.Value)}
	}
	return out
}

// Aggregation describes one output series being aggregated.
type Aggregation struct {
	Metric string `json:"metric"`
	Series string `json:"series"`
	Kind   string `json:"kind"`
	Output string `json:"output"` // total for counters, the gauge output otherwise
	Source string `json:"source"`
	Inputs int    `json:"inputs"`
}

// SeriesCount is one tenant's aggregated series.
type SeriesCount struct {
	Inputs, Outputs int64
}

// Held counts, per tenant, the input and output series held now. TenantSeries
// answers as of the last flush; Held also counts what was folded since, so that
// a fold shows as soon as it happens. It walks every output once, without
// allocating per output.
func (a *Aggregator) Held() map[tenant.ID]SeriesCount {
	out := map[tenant.ID]SeriesCount{}
	for si := range a.shards {
		sh := &a.shards[si]
		sh.mu.Lock()
		for k, o := range sh.outputs {
			c := out[k.t]
			c.Inputs += int64(len(o.inputs))
			c.Outputs++
			out[k.t] = c
		}
		sh.mu.Unlock()
	}
	return out
}

// Snapshot lists tenant t's aggregations, for metric (all when ""), at most max
// of them, largest first.
func (a *Aggregator) Snapshot(t tenant.ID, metric string, max int) []Aggregation {
	var out []Aggregation
	for si := range a.shards {
		sh := &a.shards[si]
		sh.mu.Lock()
		for k, o := range sh.outputs {
			if k.t != t || (metric != "" && o.metric != metric) {
				continue
			}
			ag := Aggregation{Metric: o.metric, Series: seriesString(o.labels), Kind: o.kind.String(), Output: "total", Source: o.source.String(), Inputs: len(o.inputs)}
			if o.kind == Gauge {
				ag.Output = string(GaugeSum)
				if o.gauge != "" {
					ag.Output = string(o.gauge)
				}
			}
			out = append(out, ag)
		}
		sh.mu.Unlock()
	}
	slices.SortFunc(out, func(x, y Aggregation) int {
		if x.Inputs != y.Inputs {
			return y.Inputs - x.Inputs
		}
		return strings.Compare(x.Series, y.Series)
	})
	if max > 0 && len(out) > max {
		out = out[:max]
	}
	return out
}

func seriesString(ls []prompb.Label) string {
	var b strings.Builder
	name := ""
	for _, l := range ls {
		if l.Name == "__name__" {
			name = l.Value
		}
	}
	b.WriteString(name)
	b.WriteByte('{')
	first := true
	for _, l := range ls {
		if l.Name == "__name__" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		fmt.Fprintf(&b, "%s=%q", l.Name, l.Value)
	}
	b.WriteByte('}')
	return b.String()
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// SetClock replaces the clock, for simulations and tests that write at times
// of their own choosing. Call it before the first Add; it is safe while Run
// flushes.
func (a *Aggregator) SetClock(now func() time.Time) { a.clock.Store(&now) }

func (a *Aggregator) now() time.Time {
	if f := a.clock.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}
