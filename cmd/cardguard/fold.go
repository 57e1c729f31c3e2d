package main

import (
	"context"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/tenant"
)

// maxClaims bounds the output series whose one input is remembered per window,
// as the series cache bounds its entries: past it, new series of tenants with
// relabel rules are aggregated whether or not they collide.
const maxClaims = 4 << 20

// maxTypes bounds the metric families whose type from remote-write metadata is
// remembered, in all tenants; past it, series are typed by their names.
const maxTypes = 1 << 20

// foldFlushTimeout is what the last flush of the aggregates gets on shutdown.
const foldFlushTimeout = 20 * time.Second

// foldSink writes the aggregator's flushes through the ingest handler, which is
// built after the aggregator it hands series to.
type foldSink struct{ h *ingest.Handler }

func (s *foldSink) Write(ctx context.Context, t tenant.ID, series []prompb.TimeSeries) error {
	return s.h.Write(ctx, t, series)
}
