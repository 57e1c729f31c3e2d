package ingest

import (
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
)

// limitedHandler is a handler with the default limits in force.
func limitedHandler(t testing.TB, upstreamURL string) (*Handler, *limits.Enforcer) {
	t.Helper()
	scheme, err := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: upstreamURL, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	registry, err := limits.NewRegistry(limits.Default(), nil, nil, logger)
	if err != nil {
		t.Fatal(err)
	}
	enf := limits.NewEnforcer(limits.EnforcerOptions{Registerer: reg, Logger: logger})
	h := New(Config{}, scheme, Stages{Limits: registry, Enforcer: enf}, reg, logger)
	return h, enf
}

// TestOversizedSeriesAreDroppedNotForwarded: a series with 1,000 labels or a 1 MB
// label value is over VictoriaMetrics' own limits (40 labels, 4096-byte values):
// cardguard drops it, counts it under the limit's reason, forwards the rest and
// answers 204 — what VictoriaMetrics would answer, minus the silence.
func TestOversizedSeriesAreDroppedNotForwarded(t *testing.T) {
	t.Parallel()
	many := []prompb.Label{{Name: "__name__", Value: "wide"}}
	for i := 0; i < 999; i++ {
		many = append(many, prompb.Label{Name: "l" + strconv.Itoa(1000+i), Value: "v"})
	}
	tests := []struct {
		name   string
		series prompb.TimeSeries
		reason limits.Reason
	}{
		{"1000 labels", prompb.TimeSeries{Labels: many, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}, limits.ReasonMaxLabelsPerSeries},
		{"1 MB label value", prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "big"}, {Name: "v", Value: strings.Repeat("x", 1<<20)}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}, limits.ReasonMaxLabelValueLength},
		{"long label name", prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "big"}, {Name: strings.Repeat("n", 300), Value: "v"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: 1}}}, limits.ReasonMaxLabelNameLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			up := newFakeUpstream(t)
			h, enf := limitedHandler(t, up.srv.URL)
			good := prompb.TimeSeries{Labels: []prompb.Label{{Name: "__name__", Value: "fine"}}, Samples: []prompb.Sample{{Value: 2, Timestamp: 2}}}
			rec := post(h, encode(&prompb.WriteRequest{Timeseries: []prompb.TimeSeries{tt.series, good}}), nil)
			if rec.Code != 204 {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			if up.forwarded() != 1 {
				t.Fatalf("forwarded %d requests", up.forwarded())
			}
			var wru prompb.WriteRequestUnmarshaler
			wr, err := wru.UnmarshalProtobuf(mustDecode(up.bodies[0]))
			if err != nil || len(wr.Timeseries) != 1 || wr.Timeseries[0].Labels[0].Value != "fine" {
				t.Fatalf("forwarded %v, %v; want only the fine series", wr, err)
			}
			enforced, _ := enf.Discards(tenant.MustParse("1"))
			if enforced[tt.reason] != 1 {
				t.Errorf("discards %v, want 1 sample under %s", enforced, tt.reason)
			}
		})
	}
}

// TestMillionSeriesRequestMemory: one request with 1,000,000 series (44 MB
// decoded) is over the default decoded limit (32 MiB, VictoriaMetrics' own) and
// gets 413 without being decoded; with the limit raised it is processed with a
// peak heap bounded by a small multiple of its decoded size.
func TestMillionSeriesRequestMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a few hundred MB")
	}
	var wr prompb.WriteRequest
	wr.Timeseries = make([]prompb.TimeSeries, 1_000_000)
	for i := range wr.Timeseries {
		wr.Timeseries[i] = prompb.TimeSeries{
			Labels:  []prompb.Label{{Name: "__name__", Value: "m"}, {Name: "id", Value: strconv.Itoa(i)}},
			Samples: []prompb.Sample{{Value: 1, Timestamp: 1}},
		}
	}
	raw := wr.MarshalProtobuf(nil)
	body := encode(&wr)
	decodedLen := len(raw)
	wr = prompb.WriteRequest{}
	raw = nil

	up := newFakeUpstream(t)
	h, _ := limitedHandler(t, up.srv.URL)
	if rec := post(h, body, nil); rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "-ingest.maxDecodedBytes") {
		t.Fatalf("default limit: status %d %q, want 413 naming the flag", rec.Code, rec.Body)
	}
	h.cfg.MaxDecodedBytes = 64 << 20
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	rec := post(h, body, nil)
	close(stop)
	wg.Wait()
	if rec.Code != http.StatusNoContent {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	grew := int64(peak.Load()) - int64(base.HeapAlloc)
	t.Logf("1M series: compressed %d B, decoded %d B, peak heap growth %d MiB", len(body), decodedLen, grew>>20)
	// Decoding keeps 1M TimeSeries, 2M labels and 1M samples (about 130 MB) beside
	// the body and its decoded copy; the series cache remembers 1M new series
	// (about 60 MB, kept) and the request tracks them (48 MB); HeapAlloc counts
	// garbage the GC has not collected yet; the fake upstream keeps its own copy
	// of the body.
	if limit := int64(20 * decodedLen); grew > limit {
		t.Errorf("peak heap grew %d MiB for a %d MiB request, want under %d MiB", grew>>20, decodedLen>>20, limit>>20)
	}
}
