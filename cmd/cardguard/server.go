package main

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/queryaudit"
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
	proxy  *queryaudit.Proxy
	ready  atomic.Bool
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
	a.ingest = ingest.New(ingest.Config{
		MaxRequestBytes: opts.maxRequestBytes,
		MaxDecodedBytes: opts.maxDecodedBytes,
	}, scheme, ingest.Stages{}, reg, logger)
	a.proxy = queryaudit.NewProxy(queryaudit.ProxyConfig{}, scheme, nil, reg, logger)
	return a, nil
}

// routes is the whole URL space. Write and read paths mirror VictoriaMetrics'
// cluster layout plus the single-tenant Prometheus paths, so that only the host of
// a remote_write URL or a Grafana datasource URL changes.
func (a *app) routes() http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.Get("/readyz", a.readyz)
	r.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))

	write := func(w http.ResponseWriter, r *http.Request) {
		t, ok := a.requestTenant(w, r)
		if !ok {
			return
		}
		a.ingest.ServeWrite(w, r, t)
	}
	for _, p := range []string{"/api/v1/write", "/api/v1/push", "/prometheus/api/v1/write", "/prometheus/api/v1/push"} {
		r.HandleFunc(p, write)
	}
	r.HandleFunc("/insert/{tenant}/prometheus/api/v1/write", write)
	r.HandleFunc("/insert/{tenant}/prometheus/api/v1/push", write)

	read := func(prefix string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			t, ok := a.requestTenant(w, r)
			if !ok {
				return
			}
			rest, ok := queryaudit.CleanAPIPath(chi.URLParam(r, "*"))
			if !ok {
				http.Error(w, "bad request path: dot segments, empty segments and encoded slashes are not allowed", http.StatusBadRequest)
				return
			}
			a.proxy.ServeTenant(w, r, t, prefix+rest)
		}
	}
	r.HandleFunc("/select/{tenant}/prometheus/*", read(""))
	r.HandleFunc("/api/v1/*", read("api/v1/"))
	r.HandleFunc("/prometheus/api/v1/*", read("api/v1/"))
	r.HandleFunc("/federate", func(w http.ResponseWriter, r *http.Request) {
		t, ok := a.requestTenant(w, r)
		if !ok {
			return
		}
		a.proxy.ServeTenant(w, r, t, "federate")
	})
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

func (a *app) readyz(w http.ResponseWriter, _ *http.Request) {
	if !a.ready.Load() {
		http.Error(w, "not ready", http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write([]byte("ok\n"))
}
