package main

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/protocol"
)

// protocolRoutes are the write paths of every protocol VictoriaMetrics takes
// besides remote write, at VictoriaMetrics' own URLs: the single-node paths for
// the default tenant (or the token's) and vminsert's /insert/<tenant>/...
// Each goes through the one ingest pipeline. Being more specific than the read
// path's /api/v1/*, the single-tenant import paths are routed here.
func (a *app) protocolRoutes(r chi.Router) {
	write := func(p ingest.Protocol) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			t, ok := a.requestTenant(w, r)
			if !ok {
				return
			}
			a.ingest.ServeProtocol(w, r, t, p)
		}
	}
	routes := []struct {
		p      ingest.Protocol
		single []string // single-node paths
		insert []string // under /insert/<tenant>/
	}{
		{protocol.OTLP{}, []string{"/opentelemetry/v1/metrics", "/opentelemetry/api/v1/push"}, []string{"opentelemetry/v1/metrics", "opentelemetry/api/v1/push"}},
		{protocol.VMImport{}, []string{"/api/v1/import", "/prometheus/api/v1/import"}, []string{"prometheus/api/v1/import"}},
		{protocol.PromText{}, []string{"/api/v1/import/prometheus", "/prometheus/api/v1/import/prometheus"}, []string{"prometheus/api/v1/import/prometheus"}},
		{protocol.CSV{}, []string{"/api/v1/import/csv", "/prometheus/api/v1/import/csv"}, []string{"prometheus/api/v1/import/csv"}},
		{protocol.Influx{}, []string{"/write", "/influx/write", "/influx/api/v2/write", "/api/v2/write"}, []string{"influx/write", "influx/api/v2/write"}},
		{protocol.DatadogV1{}, []string{"/datadog/api/v1/series"}, []string{"datadog/api/v1/series"}},
		{protocol.DatadogV2{}, []string{"/datadog/api/v2/series"}, []string{"datadog/api/v2/series"}},
		{protocol.NewRelic{}, []string{"/newrelic/infra/v2/metrics/events/bulk"}, []string{"newrelic/infra/v2/metrics/events/bulk"}},
		{protocol.OpenTSDB{}, []string{"/api/put", "/opentsdb/api/put"}, []string{"opentsdb/api/put"}},
	}
	for _, rt := range routes {
		h := write(rt.p)
		for _, p := range rt.single {
			r.HandleFunc(p, h)
		}
		for _, p := range rt.insert {
			r.HandleFunc("/insert/{tenant}/"+p, h)
		}
	}
	// The Datadog and New Relic agents call these besides their metrics paths:
	// at start (key validation, a liveness check) and for data VictoriaMetrics
	// does not store either (service checks, inventory, host metadata). They get
	// VictoriaMetrics' own answers, so that an agent pointed at cardguard behaves
	// as one pointed at vminsert.
	agent := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if _, ok := a.requestTenant(w, r); !ok {
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
		}
	}
	for p, h := range map[string]http.HandlerFunc{
		"datadog/api/v1/validate":   agent(http.StatusOK, `{"valid":true}`),
		"datadog/api/v1/check_run":  agent(http.StatusAccepted, `{"status":"ok"}`),
		"datadog/intake":            agent(http.StatusOK, `{}`),
		"datadog/api/v1/metadata":   agent(http.StatusOK, `{}`),
		"newrelic":                  agent(http.StatusAccepted, `{"status":"ok"}`),
		"newrelic/inventory/deltas": agent(http.StatusAccepted, `{"payload":{"version": 1, "state": {}, "reset": "false"}}`),
	} {
		r.HandleFunc("/"+p, h)
		r.HandleFunc("/insert/{tenant}/"+p, h)
	}
	// VictoriaMetrics' native format is refused: see the README.
	native := func(w http.ResponseWriter, r *http.Request) {
		if _, ok := a.requestTenant(w, r); !ok {
			return
		}
		http.Error(w, "/api/v1/import/native is not supported by cardguard: the native format carries VictoriaMetrics' compressed blocks of many samples per series, which cardguard would have to decode fully (lib/storage) before any limit or rule could apply; send /api/v1/import (JSON lines, what /api/v1/export writes) or remote write instead", http.StatusUnsupportedMediaType)
	}
	for _, p := range []string{"/api/v1/import/native", "/prometheus/api/v1/import/native", "/insert/{tenant}/prometheus/api/v1/import/native"} {
		r.HandleFunc(p, native)
	}
}
