package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/assets"
	"github.com/cardguard/cardguard/internal/namestats"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

// UsageConfig is the usage section: the sources of usage beside the reads
// through cardguard, so that a metric is called unused only when no reader
// anywhere reads it.
type UsageConfig struct {
	// AssetsDir holds Grafana dashboards and library panels (.json) and
	// Prometheus or vmalert rule files (.yaml, .yml): at its top for every
	// tenant, in <tenant>/ (1:0) for one. "" reads none; uploads still work.
	AssetsDir string `yaml:"assets_dir"`
	// AssetsPollInterval is how often AssetsDir is checked for changes
	// (default 30s).
	AssetsPollInterval time.Duration `yaml:"assets_poll_interval"`
	// MaxAssetBytes bounds one asset, read or uploaded (default 4 MiB).
	MaxAssetBytes int64 `yaml:"max_asset_bytes"`
	// MaxAssets bounds the assets per tenant folder, per tenant's uploads and
	// at the top of AssetsDir (default 500).
	MaxAssets int `yaml:"max_assets"`
	// MetricNamesStats polls VictoriaMetrics' own per-metric read counts.
	MetricNamesStats MetricNamesStatsConfig `yaml:"metric_names_stats"`
}

// MetricNamesStatsConfig is usage.metric_names_stats.
type MetricNamesStatsConfig struct {
	// Disabled stops the polling (it is on by default; VictoriaMetrics tracks
	// the stats by default since v1.130, -storage.trackMetricNamesStats).
	Disabled bool `yaml:"disabled"`
	// Interval between polls (default 5m).
	Interval time.Duration `yaml:"interval"`
	// MaxNames is asked of VictoriaMetrics per tenant (default 50000).
	MaxNames int `yaml:"max_names"`
}

func (c UsageConfig) validate() error {
	switch {
	case c.AssetsPollInterval < 0:
		return fmt.Errorf("usage.assets_poll_interval %s: must not be negative", c.AssetsPollInterval)
	case c.MaxAssetBytes < 0:
		return fmt.Errorf("usage.max_asset_bytes %d: must not be negative", c.MaxAssetBytes)
	case c.MaxAssets < 0:
		return fmt.Errorf("usage.max_assets %d: must not be negative", c.MaxAssets)
	case c.MetricNamesStats.Interval < 0:
		return fmt.Errorf("usage.metric_names_stats.interval %s: must not be negative", c.MetricNamesStats.Interval)
	case c.MetricNamesStats.MaxNames < 0:
		return fmt.Errorf("usage.metric_names_stats.max_names %d: must not be negative", c.MetricNamesStats.MaxNames)
	}
	return nil
}

// usageSources are the other sources of usage: assets and VictoriaMetrics'
// metric name stats. names is nil when disabled.
type usageSources struct {
	assets *assets.Book
	names  *namestats.Poller
}

// assetsUploadDir is where uploaded assets are kept, under -dataDir.
const assetsUploadDir = "assets"

// newSources builds the sources and makes the usage report ask them.
func (a *app) newSources() error {
	c := a.cfg.Usage
	book, err := assets.New(assets.Config{
		Dir:           c.AssetsDir,
		PollInterval:  c.AssetsPollInterval,
		UploadDir:     filepath.Join(a.opts.dataDir, assetsUploadDir),
		MaxAssetBytes: c.MaxAssetBytes,
		MaxAssets:     c.MaxAssets,
	}, a.tracker, a.reg, a.logger)
	if err != nil {
		return err
	}
	a.sources.assets = book
	checkers := []queryaudit.MetricChecker{assetsCheck{book}}
	if !c.MetricNamesStats.Disabled {
		a.sources.names = namestats.New(namestats.Config{
			Interval: c.MetricNamesStats.Interval,
			MaxNames: c.MetricNamesStats.MaxNames,
		}, a.scheme, a.tracker, nil, a.reg, a.logger)
		checkers = append(checkers, nameStatsCheck{a.sources.names})
	}
	a.usage.SetCheckers(checkers...)
	a.usageReports().SetCheckers(checkers...)
	return nil
}

// routes mounts the assets API and GET usage/tenants/<tenant>/sources (what
// each source can say for the tenant) under /api/cardguard/v1.
func (s *usageSources) routes(r chi.Router, requireAdmin, requireTenant func(http.Handler) http.Handler) {
	s.assets.Routes(r, requireAdmin, requireTenant)
	r.With(requireTenant).Get("/usage/tenants/{tenant}/sources", s.serveStatus)
}

// sourcesStatus is the answer of GET usage/tenants/<tenant>/sources.
type sourcesStatus struct {
	Tenant string `json:"tenant"`
	Assets struct {
		Files int `json:"files"`
		// Problems: while above 0, "unused" by the assets is not certain.
		Problems int `json:"problems"`
	} `json:"assets"`
	// MetricNamesStats is nil when usage.metric_names_stats.disabled.
	MetricNamesStats *namestats.Status `json:"metricNamesStats"`
}

func (s *usageSources) serveStatus(w http.ResponseWriter, r *http.Request) {
	t, err := tenant.Parse(chi.URLParam(r, "tenant"))
	if err != nil {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": "error", "errorType": "bad_data", "error": err.Error()})
		return
	}
	out := sourcesStatus{Tenant: t.String()}
	for _, f := range s.assets.Files(t) {
		if f.File != "." {
			out.Assets.Files++
		}
		out.Assets.Problems += len(f.Errors)
	}
	if s.names != nil {
		_, st := s.names.Stats(t)
		out.MetricNamesStats = &st
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}

// start runs the directory polling and the stats poller until ctx is done.
func (s *usageSources) start(ctx context.Context, l *loops) {
	l.goLoop(ctx, s.assets.Run)
	if s.names != nil {
		l.goLoop(ctx, s.names.Run)
	}
}

// assetsCheck tells the usage report what the assets say of a metric.
type assetsCheck struct{ b *assets.Book }

func (c assetsCheck) CheckMetric(t tenant.ID, metric string) queryaudit.SourceCheck {
	out := queryaudit.SourceCheck{Source: "assets", Available: true, Verdict: queryaudit.VerdictUnused}
	if u, ok := c.b.Uses(t)[metric]; ok {
		out.Verdict = queryaudit.VerdictUsed
		out.Detail = assets.JSONUse(metric, u)
		return out
	}
	if n := c.b.Problems(t); n > 0 {
		// An expression that could not be read may be the one reading it.
		out.Verdict = queryaudit.VerdictUnknown
		out.Reason = fmt.Sprintf("%d problems in the tenant's assets (GET /api/cardguard/v1/usage/tenants/%s/assets)", n, t)
	}
	return out
}

// nameStatsCheck tells the usage report what VictoriaMetrics counted.
type nameStatsCheck struct{ p *namestats.Poller }

func (c nameStatsCheck) CheckMetric(t tenant.ID, metric string) queryaudit.SourceCheck {
	names, st := c.p.Stats(t)
	out := queryaudit.SourceCheck{Source: "victoriametrics", Available: st.Available, Reason: st.Reason, Verdict: queryaudit.VerdictUnknown}
	s, ok := names[metric]
	if !ok {
		if st.Available && st.Complete {
			out.Reason = "VictoriaMetrics lists no stats for this metric since " + st.CollectedSince.Format(time.RFC3339)
		}
		out.Detail = map[string]any{"status": st}
		return out
	}
	out.Verdict = queryaudit.VerdictUnused
	if s.Requests > 0 {
		out.Verdict = queryaudit.VerdictUsed
	}
	d := map[string]any{"requests": s.Requests, "status": st}
	if !s.LastRequest.IsZero() {
		d["lastRequest"] = s.LastRequest
	}
	out.Detail = d
	return out
}
