// Package streamrules runs vmagent's stream aggregation rules per tenant: the
// global rules and the tenant's own, from the policy file's aggregate section
// or set through the API, compiled by VictoriaMetrics' lib/streamaggr. The
// series a rule matches are aggregated instead of forwarded (vmagent's default,
// without -streamAggr.keepInput); the aggregates are written to the tenant in
// VictoriaMetrics at the end of every interval of their rule.
//
// A tenant's rules are one lib/streamaggr instance, built when the tenant has
// rules of its own, or on its first write when only global rules apply to it.
// A change of a tenant's rules replaces its instance: the old one flushes what
// it holds and its aggregates start again, as after a vmagent restart.
package streamrules

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/streamaggr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/tenant"
)

// GlobalKey is the store key of the global rules; tenants are stored under
// their ID, which never reads "global".
const GlobalKey = "global"

// Sink writes aggregated series of a tenant to VictoriaMetrics.
type Sink interface {
	Write(ctx context.Context, t tenant.ID, series []prompb.TimeSeries) error
}

// Store keeps the rule lists set through the API by key (GlobalKey or a
// tenant's ID); Save with nil rules deletes.
type Store interface {
	Load() (map[string][]byte, error)
	Save(key string, rules []byte) error
}

// Options are the dependencies of Rules. Sink and Store are required.
type Options struct {
	Sink  Sink
	Store Store
	// FlushTimeout bounds one write of aggregates (DefaultFlushTimeout).
	FlushTimeout time.Duration
	// Window is how long the usage of rules is counted before it starts again
	// (default 1h, the cardinality window).
	Window     time.Duration
	Now        func() time.Time
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Rules holds every tenant's compiled rules. It is safe for concurrent use.
type Rules struct {
	o    Options
	log  *slog.Logger
	view atomic.Pointer[view]

	// mu serialises changes and the building of instances; gen counts API
	// changes, so that a reload that read the store before one does not undo it.
	mu      sync.Mutex
	gen     uint64
	stopped bool

	consumed, outputs, flushErrors *prometheus.CounterVec
	overflow                       prometheus.Counter
}

// view is an immutable snapshot: the rule lists in force and the instances
// built from them.
type view struct {
	file, api map[string]List
	global    List // effective: api, else file
	own       map[tenant.ID]List
	instances map[tenant.ID]*instance
	globalN   int // instances running only the global rules
}

// instance is one tenant's compiled rules. Pushes hold mu for reading; retire
// takes it for writing and marks the instance stopped, so that no sample goes
// into an instance after its last flush.
type instance struct {
	mu      sync.RWMutex
	stopped bool
	a       *streamaggr.Aggregators
	src     []byte // the YAML it was built from
	own     bool   // the tenant has rules of its own
	rules   []ruleView
	usage   *usage
}

// New compiles the file's rules and those the store holds. A store that cannot
// be read is an error; a stored list that no longer compiles is skipped and
// logged.
func New(file Config, o Options) (*Rules, error) {
	if o.Sink == nil || o.Store == nil {
		return nil, errors.New("streamrules: Sink and Store are required")
	}
	if err := file.Validate(); err != nil {
		return nil, err
	}
	if o.FlushTimeout <= 0 {
		o.FlushTimeout = DefaultFlushTimeout
	}
	if o.Window <= 0 {
		o.Window = time.Hour
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(o.Registerer)
	r := &Rules{
		o: o, log: o.Logger,
		consumed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_aggregate_rules_input_samples_total",
			Help: "Samples that a stream aggregation rule took instead of forwarding them, by tenant.",
		}, []string{"tenant"}),
		outputs: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_aggregate_rules_output_samples_total",
			Help: "Aggregated samples that stream aggregation rules wrote to VictoriaMetrics, by tenant.",
		}, []string{"tenant"}),
		flushErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_aggregate_rules_flush_errors_total",
			Help: "Writes of stream aggregation outputs that VictoriaMetrics did not take, by tenant; the interval's aggregates are lost.",
		}, []string{"tenant"}),
		overflow: f.NewCounter(prometheus.CounterOpts{
			Name: "cardguard_aggregate_rules_tenants_overflow_total",
			Help: fmt.Sprintf("Writes of tenants past the %d the global stream aggregation rules run for: forwarded unaggregated.", MaxTenants),
		}),
	}
	f.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cardguard_aggregate_rules_tenants",
		Help: "Tenants whose stream aggregation rules are running.",
	}, func() float64 { return float64(len(r.view.Load().instances)) })
	api, err := o.Store.Load()
	if err != nil {
		return nil, fmt.Errorf("load aggregation rules: %w", err)
	}
	r.view.Store(&view{file: map[string]List{}, api: map[string]List{}, instances: map[tenant.ID]*instance{}})
	r.mu.Lock()
	defer r.mu.Unlock()
	r.applyLocked(fileLists(file), r.checked(api))
	return r, nil
}

func fileLists(c Config) map[string]List {
	m := make(map[string]List, len(c.Tenants)+1)
	if len(c.Global) > 0 {
		m[GlobalKey] = c.Global
	}
	for t, l := range c.Tenants {
		if len(l) > 0 {
			m[t.String()] = l
		}
	}
	return m
}

// checked keeps the stored lists that are valid under a valid key.
func (r *Rules) checked(m map[string][]byte) map[string]List {
	out := make(map[string]List, len(m))
	for k, v := range m {
		if k != GlobalKey {
			if _, err := tenant.Parse(k); err != nil {
				r.log.Warn("aggregation rules stored under a bad key; skipped", "key", k, "err", err)
				continue
			}
		}
		if _, err := Check(v); err != nil {
			r.log.Warn("stored aggregation rules do not compile; skipped", "key", k, "err", err)
			continue
		}
		out[k] = List(v)
	}
	return out
}

// Has implements ingest.StreamAggregator: whether t's writes go through rules.
func (r *Rules) Has(t tenant.ID) bool {
	v := r.view.Load()
	return v.instances[t] != nil || len(v.global) > 0
}

// Push implements ingest.StreamAggregator: it hands tss to t's rules and sets
// matched[i] to 1 for each series a rule took. The series are copied before it
// returns.
func (r *Rules) Push(t tenant.ID, tss []prompb.TimeSeries, matched []uint32) []uint32 {
	for {
		in := r.instanceFor(t)
		if in == nil {
			matched = slices.Grow(matched[:0], len(tss))[:len(tss)]
			clear(matched)
			return matched
		}
		in.mu.RLock()
		if in.stopped {
			// Replaced meanwhile: the view has its successor.
			in.mu.RUnlock()
			continue
		}
		matched = in.a.Push(tss, matched)
		in.usage.observe(in.rules, tss, r.o.Now(), false)
		in.mu.RUnlock()
		n := 0
		for i, m := range matched {
			if m != 0 {
				n += len(tss[i].Samples)
			}
		}
		if n > 0 {
			r.consumed.WithLabelValues(t.String()).Add(float64(n))
		}
		return matched
	}
}

// Observe counts what t's rules would take of tss, for a tenant in dry run:
// nothing is aggregated and every series is forwarded.
func (r *Rules) Observe(t tenant.ID, tss []prompb.TimeSeries) {
	in := r.instanceFor(t)
	if in == nil {
		return
	}
	in.mu.RLock()
	defer in.mu.RUnlock()
	if !in.stopped {
		in.usage.observe(in.rules, tss, r.o.Now(), true)
	}
}

// Usage lists, for tenant t and metric (every metric when ""), what each rule
// took (or in dry run would take) in the current window: input series and the
// output series they become.
func (r *Rules) Usage(t tenant.ID, metric string) []RuleUsage {
	in := r.view.Load().instances[t]
	if in == nil {
		return nil
	}
	return in.usage.list(in.rules, metric, r.o.Now())
}

// instanceFor returns t's instance, building the one of the global rules on
// the tenant's first write.
func (r *Rules) instanceFor(t tenant.ID) *instance {
	v := r.view.Load()
	if in := v.instances[t]; in != nil || len(v.global) == 0 {
		return in
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v = r.view.Load()
	if in := v.instances[t]; in != nil || len(v.global) == 0 || r.stopped {
		return in
	}
	if v.globalN >= MaxTenants {
		r.overflow.Inc()
		return nil
	}
	in, err := r.build(t, v.global, nil)
	if err != nil {
		// Checked when set: only a bug leads here.
		r.log.Error("cannot start the global aggregation rules for a tenant", "tenant", t, "err", err)
		return nil
	}
	nv := *v
	nv.instances = maps.Clone(v.instances)
	nv.instances[t] = in
	nv.globalN++
	r.view.Store(&nv)
	return in
}

// build compiles the global rules followed by own for t.
func (r *Rules) build(t tenant.ID, global, own List) (*instance, error) {
	src, err := concat(global, own)
	if err != nil || src == nil {
		return nil, err
	}
	tl := t.String()
	push := func(tss []prompb.TimeSeries) {
		ctx, cancel := context.WithTimeout(context.Background(), r.o.FlushTimeout)
		defer cancel()
		if err := r.o.Sink.Write(ctx, t, tss); err != nil {
			r.flushErrors.WithLabelValues(tl).Inc()
			r.log.Warn("cannot write stream aggregation outputs", "tenant", tl, "series", len(tss), "err", err)
			return
		}
		n := 0
		for i := range tss {
			n += len(tss[i].Samples)
		}
		r.outputs.WithLabelValues(tl).Add(float64(n))
	}
	// What a write acknowledged is flushed when the rules stop or change
	// (vmagent's flush_on_shutdown), unless a rule says otherwise.
	views, err := ruleViews(src)
	if err != nil {
		return nil, err
	}
	a, err := streamaggr.LoadFromData(src, push, &streamaggr.Options{FlushOnShutdown: true}, "tenant:"+tl)
	if err != nil {
		return nil, err
	}
	return &instance{a: a, src: src, own: len(own) > 0, rules: views, usage: newUsage(r.o.Window)}, nil
}

// applyLocked makes file and api the lists in force: tenants whose rules
// changed get a new instance, the old ones are flushed and stopped.
func (r *Rules) applyLocked(file, api map[string]List) {
	old := r.view.Load()
	nv := &view{file: file, api: api, own: map[tenant.ID]List{}, instances: map[tenant.ID]*instance{}}
	nv.global = effective(file, api, GlobalKey)
	for _, m := range []map[string]List{file, api} {
		for k := range m {
			if k == GlobalKey {
				continue
			}
			t, err := tenant.Parse(k)
			if err != nil {
				continue
			}
			if l := effective(file, api, k); len(l) > 0 {
				nv.own[t] = l
			}
		}
	}
	var retired []*instance
	keep := func(t tenant.ID, in *instance) {
		nv.instances[t] = in
		if !in.own {
			nv.globalN++
		}
	}
	for t, in := range old.instances {
		if _, ok := nv.own[t]; ok {
			continue // handled below
		}
		// Only global rules now: kept if those did not change.
		if len(nv.global) > 0 && !in.own && bytes.Equal(old.global, nv.global) && !r.stopped {
			keep(t, in)
			continue
		}
		retired = append(retired, in)
	}
	for t, own := range nv.own {
		if in := old.instances[t]; in != nil && in.own && bytes.Equal(old.global, nv.global) && bytes.Equal(old.own[t], own) {
			keep(t, in)
			continue
		}
		if in := old.instances[t]; in != nil {
			retired = append(retired, in)
		}
		in, err := r.build(t, nv.global, own)
		if err != nil {
			r.log.Error("cannot start aggregation rules; the tenant's series pass unaggregated", "tenant", t, "err", err)
			continue
		}
		if in != nil {
			keep(t, in)
		}
	}
	r.view.Store(nv)
	retire(retired)
}

func effective(file, api map[string]List, k string) List {
	if l, ok := api[k]; ok {
		return l
	}
	return file[k]
}

// retire stops instances that are no longer in the view, flushing what they
// hold: a push that still holds one finishes first, and the next finds the
// view's successor.
func retire(ins []*instance) {
	var wg sync.WaitGroup
	for _, in := range ins {
		in.mu.Lock()
		in.stopped = true
		in.mu.Unlock()
		wg.Go(in.a.MustStop)
	}
	wg.Wait()
}

// ErrNotSet is returned for rules that were not set through the API.
var ErrNotSet = errors.New("no aggregation rules set through the API")

// LimitError is a change refused by a cap or a bad rule: the client's mistake.
type LimitError struct{ msg string }

func (e *LimitError) Error() string { return e.msg }

// Set replaces the rules of key (GlobalKey or a tenant) with data, stores them
// and applies them. A list that does not compile or that would pass a cap is
// refused with a *LimitError.
func (r *Rules) Set(key string, data []byte) error {
	if _, err := Check(data); err != nil {
		return &LimitError{msg: err.Error()}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.view.Load()
	api := maps.Clone(v.api)
	api[key] = List(data)
	if err := capsOK(v.file, api); err != nil {
		return err
	}
	if err := r.o.Store.Save(key, data); err != nil {
		return fmt.Errorf("store aggregation rules: %w", err)
	}
	r.gen++
	r.applyLocked(v.file, api)
	return nil
}

// Delete removes the rules of key set through the API; the file's apply again.
func (r *Rules) Delete(key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.view.Load()
	if _, ok := v.api[key]; !ok {
		return ErrNotSet
	}
	if err := r.o.Store.Save(key, nil); err != nil {
		return fmt.Errorf("store aggregation rules: %w", err)
	}
	api := maps.Clone(v.api)
	delete(api, key)
	r.gen++
	r.applyLocked(v.file, api)
	return nil
}

// capsOK checks the rule counts and tenants of the lists file and api make.
func capsOK(file, api map[string]List) error {
	g, _ := count(effective(file, api, GlobalKey))
	if g > MaxRulesPerTenant {
		return &LimitError{msg: fmt.Sprintf("%d global rules: at most %d rules may apply to a tenant", g, MaxRulesPerTenant)}
	}
	keys := map[string]bool{}
	for _, m := range []map[string]List{file, api} {
		for k := range m {
			if k != GlobalKey && len(effective(file, api, k)) > 0 {
				keys[k] = true
			}
		}
	}
	if len(keys) > MaxTenants {
		return &LimitError{msg: fmt.Sprintf("%d tenants with rules of their own: at most %d may have them", len(keys), MaxTenants)}
	}
	for k := range keys {
		n, _ := count(effective(file, api, k))
		if g+n > MaxRulesPerTenant {
			return &LimitError{msg: fmt.Sprintf("tenant %s: %d rules and %d global rules: at most %d rules may apply to a tenant", k, n, g, MaxRulesPerTenant)}
		}
	}
	return nil
}

// Get returns the rules of key in force, as written, and where they come
// from: "api" or "file".
func (r *Rules) Get(key string) (List, string, bool) {
	v := r.view.Load()
	if l, ok := v.api[key]; ok {
		return l, "api", true
	}
	if l, ok := v.file[key]; ok {
		return l, "file", true
	}
	return nil, "", false
}

// SetFile applies the aggregate section of a reloaded policy file.
func (r *Rules) SetFile(c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	v := r.view.Load()
	if err := capsOK(fileLists(c), v.api); err != nil {
		return err
	}
	r.applyLocked(fileLists(c), v.api)
	return nil
}

// Reload applies the rules in the store, which another replica may have
// changed. It changes nothing when they are the ones in force.
func (r *Rules) Reload() error {
	r.mu.Lock()
	gen := r.gen
	r.mu.Unlock()
	m, err := r.o.Store.Load()
	if err != nil {
		return err
	}
	api := r.checked(m)
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.view.Load()
	if r.gen != gen || r.stopped || maps.EqualFunc(v.api, api, func(a, b List) bool { return bytes.Equal(a, b) }) {
		return nil // a change here since the read announces itself again
	}
	if err := capsOK(v.file, api); err != nil {
		return err
	}
	r.log.Info("aggregation rules changed by another replica applied", "lists", len(api))
	r.applyLocked(v.file, api)
	return nil
}

// Stop flushes every tenant's aggregates and stops the rules; later writes
// pass unaggregated. It is safe to call twice.
func (r *Rules) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return
	}
	r.stopped = true
	v := r.view.Load()
	ins := slices.Collect(maps.Values(v.instances))
	r.view.Store(&view{file: v.file, api: v.api, own: map[tenant.ID]List{}, instances: map[tenant.ID]*instance{}})
	retire(ins)
}
