package main

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/adaptive"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/web"
)

// adaptiveHash is the Redis hash of the applied adaptive rules and exemptions;
// adaptiveReadsHash the one of the reads that keep a metric from aggregation,
// which every replica must know of (adaptive.Readers.Share).
const (
	adaptiveHash      = "adaptive_rules"
	adaptiveReadsHash = "adaptive_reads"
)

// adaptiveWiring is what the app keeps for the recommendations: the engine,
// and the lock that orders the rebuilds of the relabel rules (config reloads
// and applied rules).
type adaptiveWiring struct {
	engine  *adaptive.Engine
	readers *adaptive.Readers
	rulesMu sync.Mutex
	relabel RelabelConfig // the config's rules, as last loaded
}

// newAdaptive builds the recommendations engine: its evidence sources, its
// store (the data directory, and Redis when shared), its preview observer and
// its read listeners; then it installs the applied rules. newApp calls it
// before ingest.New, after the usage recorder exists.
func (a *app) newAdaptive() error {
	if err := a.cfg.Adaptive.Validate(); err != nil {
		return err
	}
	var store adaptive.Store = adaptive.NewFileStore(a.opts.dataDir)
	replica := ""
	if a.shared != nil {
		store = state.NewRulesStore(a.shared.redis.RulesIn(adaptiveHash), adaptive.NewFileStore(a.opts.dataDir), a.shared.cfg.Redis.SyncInterval, a.logger)
		replica = a.shared.cfg.ReplicaID
		if replica == "" {
			replica = "this replica"
		}
	}
	window := a.cfg.Cardinality.Window
	if window == 0 {
		window = time.Hour
	}
	cfg := a.cfg.Adaptive.WithDefaults()
	readers := adaptive.NewReaders()
	if a.shared != nil {
		readers.Share(state.NewRulesStore(a.shared.redis.RulesIn(adaptiveReadsHash), nil, a.shared.cfg.Redis.SyncInterval, a.logger), a.logger)
	} else {
		// Kept across restarts: a weekly report that counts a metric's
		// series must keep it from aggregation after a restart too.
		readers.Share(adaptive.NewFileStoreAt(a.opts.dataDir, adaptive.ReadsFile), a.logger)
	}
	a.adaptive.readers = readers
	a.usage.AddListener(readers)
	eng, err := adaptive.New(adaptive.Options{
		Config:  cfg,
		Series:  a.tracker,
		Tenants: a.trackedTenants,
		Counter: adaptive.NewUpstream(a.scheme, window, cfg.UpstreamTimeout),
		Sources: a.adaptiveSources(readers),
		// Series usage is recorded per replica: selectors are not shared.
		SeriesUsage: a.seriesUsage,
		Store:       store,
		Epoch:       a.tracker.Epoch,
		Replica:     replica,
		OnChange: func() {
			a.adaptive.rulesMu.Lock()
			defer a.adaptive.rulesMu.Unlock()
			a.installRulesLocked(a.adaptive.relabel)
		},
		Logger: a.logger.With("component", "adaptive"),
	})
	if err != nil {
		return err
	}
	a.adaptive.engine = eng
	if err := eng.Register(a.reg); err != nil {
		return err
	}
	a.usage.AddListener(eng)
	a.observers.more = append(a.observers.more, eng)
	a.setRelabel(a.cfg.Relabel)
	return nil
}

// adaptiveSources are the evidence the recommendations rest on: the queries
// through cardguard, the assets, and VictoriaMetrics' metric name stats unless
// usage.metric_names_stats.disabled.
func (a *app) adaptiveSources(readers *adaptive.Readers) []adaptive.Source {
	out := []adaptive.Source{adaptive.NewQuerySource(a.usageReports(), readers)}
	if a.sources.assets != nil {
		out = append(out, adaptive.NewAssetSource(a.sources.assets))
	}
	if a.sources.names != nil {
		out = append(out, adaptive.NewNameStatsSource(a.sources.names))
	}
	return out
}

// trackedTenants are the tenants the cardinality tracker knows.
func (a *app) trackedTenants() []tenant.ID {
	var out []tenant.ID
	for _, s := range a.tracker.Tenants() {
		if t, err := tenant.Parse(s.Tenant); err == nil {
			out = append(out, t)
		}
	}
	return out
}

// setRelabel installs the config's relabel rules c followed by the applied
// adaptive rules.
func (a *app) setRelabel(c RelabelConfig) {
	a.adaptive.rulesMu.Lock()
	defer a.adaptive.rulesMu.Unlock()
	a.adaptive.relabel = c
	a.installRulesLocked(c)
}

func (a *app) installRulesLocked(c RelabelConfig) {
	var extra map[tenant.ID][]relabel.Config
	if a.adaptive.engine != nil {
		extra = a.adaptive.engine.Rules()
	}
	if rs := ruleSetWithApplied(c, extra, a.logger); rs != nil {
		a.rules.p.Store(rs)
	}
}

// ruleSetWithApplied compiles the config's rules c with the applied rules
// extra. The config's rules compiled (validate); an applied rule may not (one
// stored by a newer replica during an upgrade): its tenant then runs the
// config's rules only, and every other tenant keeps its applied rules, whose
// removal would let their series back in at once. nil when even the
// config's rules do not compile.
func ruleSetWithApplied(c RelabelConfig, extra map[tenant.ID][]relabel.Config, logger *slog.Logger) *ruleSet {
	rs, err := newRuleSet(c, extra)
	if err == nil {
		return rs
	}
	kept := make(map[tenant.ID][]relabel.Config, len(extra))
	for t, rules := range extra {
		one := RelabelConfig{Global: c.Global, Tenants: map[tenant.ID][]relabel.Config{}}
		if own, ok := c.Tenants[t]; ok {
			one.Tenants[t] = own
		}
		if _, err := newRuleSet(one, map[tenant.ID][]relabel.Config{t: rules}); err != nil {
			logger.Error("applied adaptive rules of a tenant do not compile; it runs the config's relabel rules only", "tenant", t.String(), "err", err)
			continue
		}
		kept[t] = rules
	}
	if rs, err = newRuleSet(c, kept); err == nil {
		return rs
	}
	logger.Error("applied adaptive rules do not compile; running the config's relabel rules only", "err", err)
	if rs, err = newRuleSet(c, nil); err != nil {
		return nil
	}
	return rs
}

// startAdaptive runs the engine's loop, and with shared state follows the
// rules other replicas apply: at once when Redis announces a change, and every
// sync interval in case an announcement was missed.
func (a *app) startAdaptive(ctx context.Context) {
	a.loops.goLoop(ctx, a.adaptive.engine.Run)
	a.loops.goLoop(ctx, a.adaptive.readers.Run)
	if a.shared == nil {
		return
	}
	a.loops.goLoop(ctx, func(ctx context.Context) {
		store := state.NewRulesStore(a.shared.redis.RulesIn(adaptiveHash), nil, a.shared.cfg.Redis.SyncInterval, a.logger)
		reload := func() {
			if err := a.adaptive.engine.Reload(); err != nil {
				a.logger.Warn("cannot reload adaptive rules from the shared state", "err", err)
			}
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		wg.Go(func() {
			for ctx.Err() == nil {
				if err := store.Watch(ctx, reload); err != nil {
					a.logger.Debug("adaptive rules subscription ended", "err", err)
				}
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
		})
		tick := time.NewTicker(a.shared.cfg.Redis.SyncInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				reload()
			}
		}
	})
}

// appliedBy names who applies a rule: the admin, with the user name of basic
// auth when one was sent (tokens carry no names).
func (a *app) appliedBy(r *http.Request) string {
	if !a.auth.Enabled() {
		if u, _, ok := r.BasicAuth(); ok && u != "" {
			return u
		}
		return "admin"
	}
	role, err := a.auth.Resolve(r)
	if err != nil || !role.Admin {
		return "unknown"
	}
	if u, _, ok := r.BasicAuth(); ok && u != "" {
		return "admin (" + u + ")"
	}
	return "admin"
}

// adaptiveUI is the engine as the dashboard sees it.
type adaptiveUI struct{ e *adaptive.Engine }

func (u adaptiveUI) Recommendations(r *http.Request, t tenant.ID, segment string, refresh bool) web.AdaptiveList {
	l := u.e.Recommendations(r.Context(), t, refresh)
	out := web.AdaptiveList{Computed: l.Computed, SegmentLabel: u.e.SegmentLabel()}
	for _, rec := range l.Items {
		for _, v := range rec.Segments {
			if !slices.Contains(out.SegmentValues, v) {
				out.SegmentValues = append(out.SegmentValues, v)
			}
		}
	}
	if segment != "" {
		// Scoped: each rule, estimate and preview for the segment's series.
		if sl, err := u.e.SegmentRecommendations(r.Context(), t, segment, false); err == nil {
			l, out.Segment = sl, segment
			if !slices.Contains(out.SegmentValues, segment) {
				out.SegmentValues = append(out.SegmentValues, segment)
			}
		}
	}
	slices.Sort(out.SegmentValues)
	applied := u.e.Applied(t)
	broken := u.e.BrokenAll(t)
	out.SeriesSaved = adaptive.SavedBy(applied)
	for _, s := range l.Sources {
		out.Sources = append(out.Sources, web.AdaptiveSource{Name: s.Name, Detail: s.Detail, OK: s.OK})
	}
	for _, rec := range l.Items {
		out.SeriesSaveable += rec.SeriesSaved
		wr := web.Recommendation{
			Metric: rec.Metric, Kind: rec.Kind, Labels: strings.Join(rec.Labels, ", "), Match: rec.Match, RuleText: rec.RuleText,
			Series: rec.Series, SeriesSaved: rec.SeriesSaved, Method: rec.Estimate.Method, EstimateDetail: rec.Estimate.Detail,
			Formula: rec.Estimate.Formula, Segments: rec.Segments, Segment: rec.Segment, Reason: rec.Reason, Notes: rec.Evidence.Notes,
		}
		if p := rec.Preview; p != nil {
			wr.Preview = &web.AdaptivePreview{State: p.State, SeriesIn: p.SeriesIn, SeriesOut: p.SeriesOut, SeriesSaved: p.SeriesSaved,
				Truncated: p.Truncated, MeasuredFrom: p.MeasuredFrom, Measured: p.MeasuredTo, Replica: p.Replica}
		}
		for _, row := range rec.Evidence.Labels {
			er := web.EvidenceRow{Label: row.Label, DistinctValues: row.DistinctValues, Kept: row.Kept, Why: row.Why, Last: row.Last}
			for _, w := range row.Who {
				er.Who = append(er.Who, refText(w))
			}
			wr.Evidence = append(wr.Evidence, er)
		}
		for _, ref := range rec.Evidence.Readers {
			wr.Readers = append(wr.Readers, refText(ref))
		}
		for _, c := range rec.Evidence.Sources {
			wr.Checked = append(wr.Checked, c.Name)
		}
		out.Items = append(out.Items, wr)
	}
	for _, wh := range l.Withheld {
		out.Withheld = append(out.Withheld, web.Withheld{Metric: wh.Metric, Series: wh.Series, Reason: wh.Reason})
	}
	for _, a := range applied {
		out.Applied = append(out.Applied, appliedRow(a, broken[a.Metric].Count))
	}
	return out
}

func (u adaptiveUI) MetricRules(t tenant.ID, metric string) web.AdaptiveMetric {
	var out web.AdaptiveMetric
	b := u.e.BrokenBy(t, metric)
	for _, a := range u.e.Applied(t) {
		if a.Metric == metric {
			out.Rules = append(out.Rules, appliedRow(a, b.Count))
		}
	}
	out.Broken = b.Count
	for _, r := range b.Reads {
		out.BrokenReads = append(out.BrokenReads, web.BrokenRead{Query: r.Reader.Query, Reader: r.Reader.Kind + " " + r.Reader.Name,
			Labels: strings.Join(r.Labels, ", "), Kind: r.Kind, Last: r.Reader.Last})
	}
	return out
}

func appliedRow(a adaptive.Applied, broken uint64) web.AppliedRule {
	row := web.AppliedRule{Metric: a.Metric, Kind: a.Kind, Labels: strings.Join(a.Labels, ", "), Match: a.Match, Segment: a.Segment, SegmentLabel: a.SegmentLabel,
		AppliedBy: a.AppliedBy, AppliedAt: a.AppliedAt, Forced: a.Forced, Estimated: a.Estimate.Saved, Broken: broken}
	if p := a.Preview; p != nil && p.State == adaptive.PreviewDone {
		row.Measured, row.HasMeasured = p.SeriesSaved, true
	}
	return row
}

func refText(r adaptive.Ref) string {
	s := r.Kind + " " + r.Name
	if r.Query != "" {
		s += ": " + r.Query
	}
	return s
}
