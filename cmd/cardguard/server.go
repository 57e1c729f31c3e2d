package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/cardinality"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/readpath"
	"github.com/cardguard/cardguard/internal/relabel"
	"github.com/cardguard/cardguard/internal/seriesusage"
	"github.com/cardguard/cardguard/internal/streamrules"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// app is one cardguard instance: everything the HTTP server needs, wired.
type app struct {
	cfg    Config
	opts   options
	logger *slog.Logger
	reg    *prometheus.Registry
	auth   *auth.Authenticator
	scheme *upstream.Scheme
	ingest *ingest.Handler
	proxy  *readpath.Proxy
	ready  atomic.Bool

	rules    liveRules
	tracker  *cardinality.Tracker
	registry *limits.Registry
	enforcer *limits.Enforcer
	guard    *guard.Guard
	usage    *queryaudit.Recorder
	folds    *aggregate.Aggregator
	streams  *streamrules.Rules
	claims   *aggregate.Claims
	// observers: observers.go. Add to observers.more before ingest.New.
	observers observers
	adaptive  adaptiveWiring // adaptive.go
	ui        *dashboard
	shared    *shared // nil: state.backend memory

	// seriesUsage: seriesusage.go.
	seriesUsage *seriesusage.Book

	// sources: sources.go, the other sources of usage (assets, VictoriaMetrics'
	// metric name stats).
	sources usageSources

	loops loops
}

func newApp(cfg Config, opts options, logger *slog.Logger) (*app, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	scheme, err := upstream.New(cfg.Upstream)
	if err != nil {
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a := &app{
		cfg:    cfg,
		opts:   opts,
		logger: logger,
		reg:    reg,
		auth:   auth.New(cfg.Auth),
		scheme: scheme,
	}
	rs, err := newRuleSet(cfg.Relabel, nil)
	if err != nil {
		return nil, err
	}
	a.rules.p.Store(rs)
	if a.tracker, err = cardinality.New(cfg.Cardinality); err != nil {
		return nil, err
	}
	if err := a.tracker.Register(reg); err != nil {
		return nil, err
	}
	window := cfg.Cardinality.Window
	if window == 0 {
		window = time.Hour
	}
	a.enforcer = limits.NewEnforcer(limits.EnforcerOptions{Registerer: reg, Logger: logger, Window: window})
	if a.shared, err = newShared(cfg, opts, a); err != nil {
		return nil, err
	}
	a.registry, err = limits.NewRegistry(cfg.Limits.Defaults, cfg.Limits.Overrides, a.limitsStore(), logger)
	if err != nil {
		return nil, err
	}
	a.guard = guard.New(guard.Options{Window: window, Registerer: reg})
	usageCfg := queryaudit.RecorderConfig{
		Retention:           cfg.QueryAudit.Retention,
		RarelyQueriedBelow:  cfg.QueryAudit.RarelyQueriedBelow,
		MaxMetricsPerTenant: cfg.QueryAudit.MaxMetricsPerTenant,
	}
	a.usage = queryaudit.NewRecorder(usageCfg, a.tracker, reg, logger)
	if err := a.newSeriesUsage(); err != nil { // before attach, which shares its selectors
		return nil, err
	}
	if err := a.shared.attach(a, usageCfg); err != nil {
		return nil, err
	}
	if err := a.newSources(); err != nil {
		return nil, err
	}
	aggCfg, err := cfg.aggregation()
	if err != nil {
		return nil, err
	}
	sink := &foldSink{}
	a.folds = aggregate.New(aggCfg, sink, logger)
	if err := a.folds.Register(reg); err != nil {
		return nil, err
	}
	if a.streams, err = a.newStreamRules(sink); err != nil {
		return nil, err
	}
	a.claims = aggregate.NewClaims(window, maxClaims)
	if err := a.claims.Register(reg); err != nil {
		return nil, err
	}
	a.observers.tracker = a.tracker
	if err := a.newAdaptive(); err != nil {
		return nil, err
	}
	a.ingest = ingest.New(ingest.Config{
		MaxRequestBytes: opts.maxRequestBytes,
		MaxDecodedBytes: opts.maxDecodedBytes,
		MaxConcurrent:   opts.maxConcurrent,
		QueueWait:       opts.maxQueueWait,
		CacheWindow:     window,
		Peers:           a.shared.peers(),
		PeerToken:       cfg.Auth.AdminToken,
		Types:           aggregate.NewTypes(maxTypes),
		DryRun:          a.folds.DryRun(),
	}, scheme, ingest.Stages{
		Rules:    &a.rules,
		Observer: &a.observers,
		Guard:    a.guard,
		Limits:   a.registry,
		Enforcer: a.enforcer,
		Folder:   a.folds,
		Streams:  a.streams,
		Claims:   a.claims,
	}, reg, logger)
	sink.h = a.ingest
	a.proxy = readpath.New(readpath.Config{Limits: a.registry, Sketches: a.tracker}, scheme, a.usage, reg, logger)
	if a.ui, err = newDashboard(a); err != nil {
		return nil, err
	}
	return a, nil
}

// routes is the whole URL space. Write and read paths mirror VictoriaMetrics'
// cluster layout plus the single-tenant Prometheus paths, so that only the host of
// a remote_write URL or a Grafana datasource URL changes.
func (a *app) routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.Get("/readyz", a.readyz)
	if a.opts.metricsAddr == "" {
		r.Handle("/metrics", a.metricsHandler())
	}
	// Profiles, as VictoriaMetrics serves them, for the admin only: they show
	// internals and cost CPU.
	r.With(a.auth.RequireAdmin).Mount("/debug/pprof", http.HandlerFunc(servePprof))
	a.mountUI(r)

	write := func(w http.ResponseWriter, r *http.Request) {
		t, ok := a.requestTenant(w, r)
		if !ok {
			return
		}
		if v := r.Header.Get(ingest.RoutedHeader); v != "" {
			// Another replica sent this part to its owner: process it here.
			// Only with the admin credential, which replicas share.
			if role, err := a.auth.Resolve(r); err == nil && role.Admin {
				r = r.WithContext(ingest.RoutedContext(r.Context(), v))
			}
		}
		a.ingest.ServeWrite(w, r, t)
	}
	for _, p := range []string{"/api/v1/write", "/api/v1/push", "/prometheus/api/v1/write", "/prometheus/api/v1/push"} {
		r.HandleFunc(p, write)
	}
	r.HandleFunc("/insert/{tenant}/prometheus/api/v1/write", write)
	r.HandleFunc("/insert/{tenant}/prometheus/api/v1/push", write)
	a.protocolRoutes(r)

	read := func(prefix string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			t, admin, ok := a.readTenant(w, r)
			if !ok {
				return
			}
			rest, ok := readpath.CleanAPIPath(chi.URLParam(r, "*"))
			if !ok {
				http.Error(w, "bad request path: dot segments, empty segments, encoded slashes and control characters are not allowed", http.StatusBadRequest)
				return
			}
			a.proxy.ServeTenant(w, r, t, admin, prefix+rest)
		}
	}
	r.HandleFunc("/select/{tenant}/prometheus/*", read(""))
	r.HandleFunc("/api/v1/*", read("api/v1/"))
	r.HandleFunc("/prometheus/api/v1/*", read("api/v1/"))
	r.Route("/api/cardguard/v1", func(r chi.Router) {
		r.Use(a.scopeTenantTokens)
		requireTenant := a.auth.RequireTenant("tenant")
		a.tracker.Routes(r, requireTenant)
		limits.NewAPI(a.registry, a.enforcer, trackerEstimates{a.tracker}).WithQueries(a.proxy.Limiter()).Routes(r, a.auth.RequireAdmin, requireTenant)
		a.guard.Routes(r, requireTenant)
		a.folds.Routes(r, requireTenant)
		a.streams.Routes(r, a.auth.RequireAdmin, requireTenant)
		a.usageReports().Routes(r, usageEstimates{a.tracker}, requireTenant)
		a.sources.routes(r, a.auth.RequireAdmin, requireTenant)
		a.seriesUsage.Routes(r, requireTenant)
		r.With(a.auth.RequireAdmin).Method(http.MethodPost, "/relabel/debug", relabel.DebugHandler())
		a.adaptive.engine.Routes(r, a.auth.RequireAdmin, requireTenant, a.appliedBy)
	})
	federate := func(w http.ResponseWriter, r *http.Request) {
		t, admin, ok := a.readTenant(w, r)
		if !ok {
			return
		}
		a.proxy.ServeTenant(w, r, t, admin, "federate")
	}
	r.HandleFunc("/federate", federate)
	r.HandleFunc("/prometheus/federate", federate)
	return r
}

// metricsHandler serves cardguard's own metrics. They name tenants and their
// traffic, so -metrics.requireAdmin puts them behind the admin token.
func (a *app) metricsHandler() http.Handler {
	h := promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg})
	if a.opts.metricsRequireAdmin {
		return a.auth.RequireAdmin(h)
	}
	return h
}

// metricsRoutes is the server of -metricsListenAddr: /metrics only.
func (a *app) metricsRoutes() http.Handler {
	r := chi.NewRouter()
	r.Handle("/metrics", a.metricsHandler())
	return r
}

// requestTenant decides which tenant a data-path request acts for. The tenant in
// the URL, if any, must be one the credentials allow; single-tenant paths act for the
// token's tenant, or for the default tenant with the admin token or with auth off.
func (a *app) requestTenant(w http.ResponseWriter, r *http.Request) (tenant.ID, bool) {
	var (
		t      = a.cfg.DefaultTenant
		inURL  bool
		rawSeg = chi.URLParam(r, "tenant")
	)
	if strings.HasPrefix(r.URL.Path, "/insert/") || strings.HasPrefix(r.URL.Path, "/select/") {
		id, err := tenant.Parse(rawSeg)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad tenant in path: %v", err), http.StatusBadRequest)
			return t, false
		}
		t, inURL = id, true
	}
	role, err := a.auth.Resolve(r)
	if err != nil {
		auth.Unauthorized(w, err)
		return t, false
	}
	if role.HasTenant {
		if inURL && t != role.Tenant {
			http.Error(w, "forbidden: token is not valid for tenant "+t.String(), http.StatusForbidden)
			return t, false
		}
		t = role.Tenant
	}
	return t, true
}

// readTenant is requestTenant for the read path, which also needs to know whether
// the caller holds the admin credential (admin-only upstream paths).
func (a *app) readTenant(w http.ResponseWriter, r *http.Request) (tenant.ID, bool, bool) {
	t, ok := a.requestTenant(w, r)
	if !ok {
		return t, false, false
	}
	role, _ := a.auth.Resolve(r) // requestTenant has resolved it without error
	return t, role.Admin, true
}

// scopeTenantTokens keeps tenant tokens on their own tenant's API paths
// (…/tenants/<tenant>/… and /limits/<tenant>); everything else in the cardguard API
// (lists of all tenants, the relabel debugger) needs the admin token. The routes'
// own middleware then checks that the tenant in the path is the token's.
func (a *app) scopeTenantTokens(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		role, err := a.auth.Resolve(r)
		if err != nil {
			auth.Unauthorized(w, err)
			return
		}
		if role.HasTenant && !tenantScopedPath(r.URL.Path) {
			http.Error(w, "forbidden: this endpoint needs the admin token", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func tenantScopedPath(p string) bool {
	segs := strings.Split(strings.TrimPrefix(p, "/api/cardguard/v1/"), "/")
	for i := 0; i+1 < len(segs); i++ {
		if (segs[i] == "tenants" || (i == 0 && segs[i] == "limits")) && segs[i+1] != "" {
			return true
		}
	}
	return false
}

func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	if !a.ready.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}
