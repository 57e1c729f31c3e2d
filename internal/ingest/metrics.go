package ingest

import (
	"errors"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/cardguard/cardguard/internal/tenant"
)

type metrics struct {
	tenants          *tenant.Labeler
	requests         *prometheus.CounterVec
	duration         *prometheus.HistogramVec
	receivedBytes    *prometheus.CounterVec
	samplesReceived  *prometheus.CounterVec
	samplesForwarded *prometheus.CounterVec
	ingested         *prometheus.CounterVec
	samplesFolded    *prometheus.CounterVec
	routed           *prometheus.CounterVec
	routeErrors      prometheus.Counter
	upstreamErrors   prometheus.Counter
	queued           prometheus.Gauge
	overloaded       prometheus.Counter
	relabeledSeries  *prometheus.CounterVec
	dryRunRelabeled  *prometheus.CounterVec
}

// relabeled counts a series that a rule or the guard dropped or rewrote (or, in
// dry run, would have).
func (m *metrics) relabeled(tenantLabel, action string, dryRun bool, n int) {
	if dryRun {
		m.dryRunRelabeled.WithLabelValues(tenantLabel, action).Add(float64(n))
		return
	}
	m.relabeledSeries.WithLabelValues(tenantLabel, action).Add(float64(n))
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		tenants: tenant.NewLabeler(tenant.DefaultLabelCap),
		requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_requests_total",
			Help: "Remote-write requests by tenant and status code.",
		}, []string{"tenant", "code"}),
		duration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cardguard_ingest_request_duration_seconds",
			Help:    "Time to answer a remote-write request, upstream included.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 25},
		}, []string{"tenant"}),
		receivedBytes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_received_bytes_total",
			Help: "Compressed remote-write bytes received.",
		}, []string{"tenant"}),
		samplesReceived: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_samples_received_total",
			Help: "Samples in remote-write requests that decoded successfully.",
		}, []string{"tenant"}),
		samplesForwarded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_samples_forwarded_total",
			Help: "Samples VictoriaMetrics accepted through cardguard.",
		}, []string{"tenant"}),
		ingested: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingested_samples_total",
			Help: "Samples in write requests that decoded successfully, by tenant and protocol (prometheus_remote_write, prometheus_remote_write_v2, vm_remote_write, opentelemetry, vmimport, prometheus_import, csv_import, influx, datadog_v1, datadog_v2, newrelic, opentsdb).",
		}, []string{"tenant", "protocol"}),
		samplesFolded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_samples_aggregated_total",
			Help: "Samples of series that relabel rules or the label guard folded together, handed to aggregation instead of forwarded.",
		}, []string{"tenant"}),
		routed: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_ingest_routed_samples_total",
			Help: "Samples sent to the replica that owns their metric, by the class of its answer.",
		}, []string{"code"}),
		routeErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "cardguard_ingest_route_errors_total",
			Help: "Parts of writes that the replica owning them did not take, or could not be reached for.",
		}),
		upstreamErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "cardguard_ingest_upstream_errors_total",
			Help: "Forwarded writes that VictoriaMetrics did not accept, or that failed to reach it.",
		}),
		queued: f.NewGauge(prometheus.GaugeOpts{
			Name: "cardguard_ingest_queued_requests",
			Help: "Remote-write requests waiting for a processing slot.",
		}),
		overloaded: f.NewCounter(prometheus.CounterOpts{
			Name: "cardguard_ingest_overload_rejections_total",
			Help: "Remote-write requests answered 503 because no processing slot freed up in time.",
		}),
		relabeledSeries: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_relabeled_series_total",
			Help: "Series changed by relabel rules or the label guard, by action (drop, rewrite, overflow_value, drop_label).",
		}, []string{"tenant", "action"}),
		dryRunRelabeled: f.NewCounterVec(prometheus.CounterOpts{
			Name: "cardguard_dry_run_relabeled_series_total",
			Help: "Series that relabel rules or the label guard would have changed, for tenants in dry_run mode.",
		}, []string{"tenant", "action"}),
	}
}

func statusClass(code int) string { return strconv.Itoa(code) }

func asStatus(err error, target **statusError) bool { return errors.As(err, target) }
