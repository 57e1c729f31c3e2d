// Package namestats polls VictoriaMetrics' own per-metric-name read counts
// (/api/v1/status/metric_names_stats) for every tenant cardguard knows.
//
// VictoriaMetrics counts every read that reaches its storage, including those
// that never pass through cardguard: a vmalert or Grafana pointed at vmselect
// directly. The counts need the storage to track them: the flag
// -storage.trackMetricNamesStats on the single node or on vmstorage (on by
// default since v1.130; with it off the API answers an empty list, which the
// poller reports as unavailable, never as "no reads").
package namestats

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// APIPath is the Prometheus API path of the stats, under the tenant's read URL.
const APIPath = "api/v1/status/metric_names_stats"

// NameStat is what VictoriaMetrics counted for one metric name since its stats
// began (Status.CollectedSince).
type NameStat struct {
	// Requests is the number of query requests that read the metric.
	Requests uint64 `json:"requests"`
	// LastRequest is when it was last read; zero when never.
	LastRequest time.Time `json:"lastRequest,omitzero"`
}

// Status says how far the stats of a tenant can be trusted.
type Status struct {
	// Available is true when the last poll succeeded and VictoriaMetrics tracks
	// the stats. When false, Reason says why and the names held, if any, are
	// those of the last good poll.
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
	// LastPoll is when the tenant was last polled, LastSuccess when a poll last
	// worked. Zero when never.
	LastPoll    time.Time `json:"lastPoll,omitzero"`
	LastSuccess time.Time `json:"lastSuccess,omitzero"`
	// CollectedSince is when VictoriaMetrics began counting (its start, or the
	// last reset of the stats): a name read only before that shows 0.
	CollectedSince time.Time `json:"collectedSince,omitzero"`
	// Complete is true when every name VictoriaMetrics tracks for the tenant was
	// received. When false (the answer hit Config.MaxNames, or VictoriaMetrics'
	// tracker is full and stopped adding names), a name missing from the map
	// says nothing about its reads.
	Complete bool `json:"complete"`
	// Shared is true on a single node: the counts are the node's, every tenant's
	// reads together, since the node has no tenants.
	Shared bool `json:"shared,omitempty"`
	// Names is the number of names received.
	Names int `json:"names"`
}

// Config tunes the Poller. Zero values take the defaults documented on each field.
type Config struct {
	// Interval between polls. Default 5m.
	Interval time.Duration
	// NewTenantsEvery is how often the tenant list is checked for tenants
	// never polled, which are polled at once rather than at the next
	// Interval: until a tenant is polled, no metric of it can be called
	// unused. Default 1s, at most Interval.
	NewTenantsEvery time.Duration
	// Timeout bounds one request. Default 30s.
	Timeout time.Duration
	// MaxNames is the limit asked of VictoriaMetrics per tenant; an answer that
	// reaches it is marked incomplete. Default 50000.
	MaxNames int
	// MaxTenants caps the tenants polled and held. Default 1000.
	MaxTenants int
	// MaxResponseBytes bounds one answer; a larger one is an error. Default 32 MiB.
	MaxResponseBytes int64
	// MaxNameBytes: longer names are skipped. Default 256.
	MaxNameBytes int
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = 5 * time.Minute
	}
	if c.NewTenantsEvery <= 0 {
		c.NewTenantsEvery = time.Second
	}
	c.NewTenantsEvery = min(c.NewTenantsEvery, c.Interval)
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	if c.MaxNames <= 0 {
		c.MaxNames = 50000
	}
	if c.MaxTenants <= 0 {
		c.MaxTenants = 1000
	}
	if c.MaxResponseBytes <= 0 {
		c.MaxResponseBytes = 32 << 20
	}
	if c.MaxNameBytes <= 0 {
		c.MaxNameBytes = 256
	}
	return c
}

// Tenants lists the tenants to poll; cardinality.Tracker implements it.
type Tenants interface {
	TenantIDs() []tenant.ID
}

// Poller polls the stats and holds the last answer per tenant. It is safe for
// concurrent use; Run polls in the background.
type Poller struct {
	cfg     Config
	scheme  *upstream.Scheme
	tenants Tenants
	client  *http.Client
	logger  *slog.Logger

	polls  *prometheus.CounterVec
	errors *prometheus.CounterVec

	pollMu sync.Mutex // one poll at a time

	mu    sync.RWMutex
	state map[tenant.ID]*tenantStats
}

// tenantStats is the last answer for one tenant. names is never modified once
// stored: Stats hands it out.
type tenantStats struct {
	names  map[string]NameStat
	status Status
}

// New returns a Poller of the stats of tenants, read where scheme says. client
// may be nil for a default one.
func New(cfg Config, scheme *upstream.Scheme, tenants Tenants, client *http.Client, reg prometheus.Registerer, logger *slog.Logger) *Poller {
	if client == nil {
		client = &http.Client{}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := promauto.With(reg)
	p := &Poller{
		cfg:     cfg.withDefaults(),
		scheme:  scheme,
		tenants: tenants,
		client:  client,
		logger:  logger,
		polls: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_namestats_polls_total",
			Help: "Polls of VictoriaMetrics' metric_names_stats, by result: ok, unavailable (tracking off) or error.",
		}, []string{"result"}),
		errors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_namestats_poll_errors_total",
			Help: "Failed polls of VictoriaMetrics' metric_names_stats, by reason.",
		}, []string{"reason"}),
		state: make(map[tenant.ID]*tenantStats),
	}
	for _, r := range []string{"ok", "unavailable", "error"} {
		p.polls.WithLabelValues(r)
	}
	for _, r := range []string{reasonRequest, reasonStatus, reasonDecode, reasonTooLarge} {
		p.errors.WithLabelValues(r)
	}
	return p
}

// Error reasons, the values of the reason label.
const (
	reasonRequest  = "request"
	reasonStatus   = "status"
	reasonDecode   = "decode"
	reasonTooLarge = "too_large"
)

// Interval returns the configured poll interval.
func (p *Poller) Interval() time.Duration { return p.cfg.Interval }

// Stats returns the names VictoriaMetrics counted for t, with how far to trust
// them. The map is shared and must not be modified; it is nil when no poll of t
// ever worked. A tenant never polled has a zero Status with Reason "not polled yet".
func (p *Poller) Stats(t tenant.ID) (map[string]NameStat, Status) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	ts := p.state[t]
	if ts == nil {
		return nil, Status{Reason: "not polled yet"}
	}
	return ts.names, ts.status
}

// Run polls at once and then every Config.Interval until ctx is done; in
// between, every Config.NewTenantsEvery, it polls the tenants that appeared
// since. Tenants appear after cardguard starts (with their first write), so
// without that every tenant would wait a whole Interval for its first stats.
func (p *Poller) Run(ctx context.Context) {
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	check := time.NewTicker(p.cfg.NewTenantsEvery)
	defer check.Stop()
	p.Poll(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			p.Poll(ctx)
		case <-check.C:
			p.PollNew(ctx)
		}
	}
}

// Poll polls every tenant once. A single node is asked once for all of them.
func (p *Poller) Poll(ctx context.Context) {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	ids := p.tenantIDs()
	p.poll(ctx, ids)
	p.forget(ids)
}

// PollNew polls the tenants never polled, if any; the others keep their last
// answer until the next Poll.
func (p *Poller) PollNew(ctx context.Context) {
	p.pollMu.Lock()
	defer p.pollMu.Unlock()
	ids := p.tenantIDs()
	p.mu.RLock()
	ids = slices.DeleteFunc(ids, func(t tenant.ID) bool { return p.state[t] != nil })
	p.mu.RUnlock()
	p.poll(ctx, ids)
}

// tenantIDs are the tenants to poll: sorted, so that which tenants the cap
// leaves out does not change per poll.
func (p *Poller) tenantIDs() []tenant.ID {
	ids := p.tenants.TenantIDs()
	slices.SortFunc(ids, func(a, b tenant.ID) int {
		return cmp.Or(cmp.Compare(a.AccountID, b.AccountID), cmp.Compare(a.ProjectID, b.ProjectID))
	})
	if len(ids) > p.cfg.MaxTenants {
		ids = ids[:p.cfg.MaxTenants]
	}
	return ids
}

func (p *Poller) poll(ctx context.Context, ids []tenant.ID) {
	shared := p.scheme.Mode() == upstream.ModeSingle
	var one *answer
	for _, t := range ids {
		if ctx.Err() != nil {
			return
		}
		var a answer
		if shared && one != nil {
			a = *one
		} else {
			a = p.fetch(ctx, t)
			if shared {
				one = &a
			}
		}
		p.store(t, a, shared)
	}
}

// answer is the outcome of one request.
type answer struct {
	at     time.Time
	names  map[string]NameStat
	since  time.Time
	full   bool // the answer hit MaxNames or VictoriaMetrics' tracker is full
	off    bool // tracking is off upstream
	err    error
	reason string // error reason label
}

// response is VictoriaMetrics' answer (app/vmselect/stats, v1.150).
type response struct {
	Status           string `json:"status"`
	CollectedSince   uint64 `json:"statsCollectedSince"`
	RecordsTotal     uint64 `json:"statsCollectedRecordsTotal"`
	MaxSizeBytes     uint64 `json:"trackerMemoryMaxSizeBytes"`
	CurrentSizeBytes uint64 `json:"trackerCurrentMemoryUsageBytes"`
	Records          []struct {
		MetricName string `json:"metricName"`
		Requests   uint64 `json:"queryRequestsCount"`
		LastReqTs  uint64 `json:"lastQueryRequestTimestamp"`
	} `json:"records"`
}

func (p *Poller) fetch(ctx context.Context, t tenant.ID) answer {
	a := answer{at: time.Now()}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	u := p.scheme.ReadURL(t, APIPath, url.Values{"limit": {strconv.Itoa(p.cfg.MaxNames)}})
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		a.err, a.reason = err, reasonRequest
		return a
	}
	if tok := p.scheme.BearerToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		a.err, a.reason = fmt.Errorf("cannot reach VictoriaMetrics: %w", err), reasonRequest
		return a
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, p.cfg.MaxResponseBytes+1)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(body, 512))
		a.err, a.reason = fmt.Errorf("VictoriaMetrics answered %d to %s: %s", resp.StatusCode, u.Path, msg), reasonStatus
		return a
	}
	b, err := io.ReadAll(body)
	if err != nil {
		a.err, a.reason = fmt.Errorf("cannot read the answer: %w", err), reasonRequest
		return a
	}
	if int64(len(b)) > p.cfg.MaxResponseBytes {
		a.err, a.reason = fmt.Errorf("answer larger than %d bytes (namestats max_response_bytes)", p.cfg.MaxResponseBytes), reasonTooLarge
		return a
	}
	var r response
	if err := json.Unmarshal(b, &r); err != nil {
		a.err, a.reason = fmt.Errorf("cannot decode the answer: %w", err), reasonDecode
		return a
	}
	if r.Status != "success" {
		a.err, a.reason = fmt.Errorf("answer status %q", r.Status), reasonDecode
		return a
	}
	if r.CollectedSince == 0 && r.MaxSizeBytes == 0 {
		// What a storage without a tracker answers: no stats, not "no reads".
		a.off = true
		return a
	}
	a.since = time.Unix(int64(r.CollectedSince), 0).UTC()
	a.full = len(r.Records) >= p.cfg.MaxNames || (r.MaxSizeBytes > 0 && r.CurrentSizeBytes >= r.MaxSizeBytes)
	a.names = make(map[string]NameStat, len(r.Records))
	for _, rec := range r.Records {
		if len(rec.MetricName) > p.cfg.MaxNameBytes {
			continue
		}
		s := NameStat{Requests: rec.Requests}
		if rec.LastReqTs > 0 {
			s.LastRequest = time.Unix(int64(rec.LastReqTs), 0).UTC()
		}
		// Records of several vmstorage nodes may repeat a name: add them up.
		if have, ok := a.names[rec.MetricName]; ok {
			s.Requests += have.Requests
			if have.LastRequest.After(s.LastRequest) {
				s.LastRequest = have.LastRequest
			}
		}
		a.names[rec.MetricName] = s
	}
	return a
}

var errTrackingOff = errors.New("VictoriaMetrics does not track metric name stats: start the single node or vmstorage with -storage.trackMetricNamesStats")

func (p *Poller) store(t tenant.ID, a answer, shared bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.state[t]
	if ts == nil {
		ts = &tenantStats{}
		p.state[t] = ts
	}
	prev := ts.status
	st := Status{LastPoll: a.at, LastSuccess: prev.LastSuccess, Shared: shared}
	switch {
	case a.err != nil:
		p.polls.WithLabelValues("error").Inc()
		p.errors.WithLabelValues(a.reason).Inc()
		st.Reason = a.err.Error()
	case a.off:
		p.polls.WithLabelValues("unavailable").Inc()
		st.Reason = errTrackingOff.Error()
		ts.names = nil // nothing counted: never pass old counts off as current
	default:
		p.polls.WithLabelValues("ok").Inc()
		st.Available = true
		st.LastSuccess = a.at
		st.CollectedSince = a.since
		st.Complete = !a.full
		ts.names = a.names
	}
	if !st.Available && ts.names != nil {
		// Keep the last good names, with what they were.
		st.CollectedSince, st.Complete = prev.CollectedSince, prev.Complete
	}
	st.Names = len(ts.names)
	ts.status = st
	if st.Reason != prev.Reason && st.Reason != "" {
		p.logger.Warn("namestats: VictoriaMetrics' metric name stats unavailable", "tenant", t.String(), "reason", st.Reason)
	} else if st.Available && !prev.Available && prev.Reason != "" {
		p.logger.Info("namestats: VictoriaMetrics' metric name stats available again", "tenant", t.String())
	}
}

// forget drops tenants no longer listed, so memory follows the tenant list.
func (p *Poller) forget(ids []tenant.ID) {
	keep := make(map[tenant.ID]struct{}, len(ids))
	for _, t := range ids {
		keep[t] = struct{}{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for t := range p.state {
		if _, ok := keep[t]; !ok {
			delete(p.state, t)
		}
	}
}
