package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/aggregate"
	"github.com/cardguard/cardguard/internal/guard"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// A metric that metadata declares a counter is aggregated as one, although its
// name does not say so; without metadata, the same name is a gauge. The
// metadata comes in a request of its own, as Prometheus sends it.
func TestFoldKindFromMetadata(t *testing.T) {
	for _, tc := range []struct {
		name     string
		metadata bool
		want     string
	}{{"with metadata", true, "counter"}, {"without", false, "gauge"}} {
		t.Run(tc.name, func(t *testing.T) {
			up := newFakeUpstream(t)
			scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: up.srv.URL, SelectURL: up.srv.URL, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			def := limits.Default()
			def.LabelGuard.MaxValuesPerLabel = 1
			registry, err := limits.NewRegistry(def, nil, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			aggCfg := aggregate.Config{}
			if err := aggCfg.Validate(); err != nil {
				t.Fatal(err)
			}
			folds := aggregate.New(aggCfg, nil, nil)
			h := New(Config{Types: aggregate.NewTypes(100)}, scheme, Stages{
				Guard: guard.New(guard.Options{}), Limits: registry, Folder: folds,
			}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if tc.metadata {
				md := &prompb.WriteRequest{Metadata: []prompb.MetricMetadata{{Type: prompb.MetricTypeCounter, MetricFamilyName: "jobs_done"}}}
				if rec := post(h, encode(md), nil); rec.Code != http.StatusNoContent {
					t.Fatalf("metadata: %d %s", rec.Code, rec.Body)
				}
			}
			wr := &prompb.WriteRequest{}
			for _, u := range []string{"a", "b", "c"} {
				wr.Timeseries = append(wr.Timeseries, prompb.TimeSeries{
					Labels:  []prompb.Label{{Name: "__name__", Value: "jobs_done"}, {Name: "user", Value: u}},
					Samples: []prompb.Sample{{Value: 5, Timestamp: time.Now().UnixMilli()}},
				})
			}
			if rec := post(h, encode(wr), nil); rec.Code != http.StatusNoContent {
				t.Fatalf("series: %d %s", rec.Code, rec.Body)
			}
			got := folds.Snapshot(tenant.MustParse("1"), "jobs_done", 10)
			if len(got) != 1 || got[0].Kind != tc.want || got[0].Inputs != 2 {
				t.Fatalf("aggregations: %+v, want one %s of 2 inputs", got, tc.want)
			}
		})
	}
}
