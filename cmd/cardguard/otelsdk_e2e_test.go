package main

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"

	"github.com/cardguard/cardguard/internal/vmtest"
)

// otelSender is an application instrumented with the OpenTelemetry Go SDK,
// exporting with its OTLP/HTTP metric exporter to base.
type otelSender struct {
	mp      *sdkmetric.MeterProvider
	counter metric.Int64Counter
	gauge   metric.Float64Gauge
	hist    metric.Float64Histogram
}

func newOTelSender(t *testing.T, base string) *otelSender {
	t.Helper()
	exp, err := otlpmetrichttp.New(t.Context(),
		otlpmetrichttp.WithEndpointURL(base+"/opentelemetry/v1/metrics"),
		otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{
			Enabled: true, InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second, MaxElapsedTime: 60 * time.Second,
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "shop"), attribute.String("service.instance.id", "i-1"))
	// Exports happen only when the test flushes.
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithResource(res),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, sdkmetric.WithInterval(time.Hour))))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	m := mp.Meter("shop/checkout")
	s := &otelSender{mp: mp}
	if s.counter, err = m.Int64Counter("orders", metric.WithUnit("{order}")); err != nil {
		t.Fatal(err)
	}
	if s.gauge, err = m.Float64Gauge("queue.depth"); err != nil {
		t.Fatal(err)
	}
	if s.hist, err = m.Float64Histogram("checkout.duration", metric.WithUnit("s")); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *otelSender) record(ctx context.Context, depth float64) {
	for _, pay := range []string{"card", "invoice"} {
		attrs := metric.WithAttributes(attribute.String("payment", pay))
		s.counter.Add(ctx, 3, attrs)
		s.hist.Record(ctx, 0.25, attrs)
	}
	s.gauge.Record(ctx, depth)
}

// seriesNames is every series VictoriaMetrics at base holds, as its labels.
func seriesNames(t *testing.T, base string) []string {
	t.Helper()
	code, body := get(t, base+"/api/v1/series?match[]="+url.QueryEscape(`{__name__!=""}`))
	if code != 200 {
		t.Fatalf("series: %d %s", code, body)
	}
	var resp struct{ Data []map[string]string }
	if err := json.Unmarshal(body, &resp); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range resp.Data {
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out
}

// TestOTelSDKThroughCardguard: the OpenTelemetry Go SDK's OTLP/HTTP exporter
// sends through cardguard the series it sends VictoriaMetrics directly, and
// what it exports while VictoriaMetrics is down arrives once it is back: the
// exporter retries on cardguard's 503 and Retry-After.
func TestOTelSDKThroughCardguard(t *testing.T) {
	direct := vmtest.StartVM(t)
	e := newEnv(t, nil)
	ctx := t.Context()
	viaDirect, viaCardguard := newOTelSender(t, direct.URL), newOTelSender(t, e.srv.URL)
	for _, s := range []*otelSender{viaDirect, viaCardguard} {
		s.record(ctx, 5)
		if err := s.mp.ForceFlush(ctx); err != nil {
			t.Fatalf("export: %v", err)
		}
	}
	var want, got []string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		direct.Flush()
		e.vm.Flush()
		if want, got = seriesNames(t, direct.URL), seriesNames(t, e.vm.URL); len(want) > 0 && slices.Equal(want, got) {
			break
		}
	}
	if len(want) < 5 || !slices.Equal(want, got) {
		t.Fatalf("series through cardguard:\n%s\ndirectly:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// VictoriaMetrics goes away; the export of depth 77 is retried until it
	// is back.
	e.vm.Stop()
	viaCardguard.record(ctx, 77)
	done := make(chan error, 1)
	go func() { done <- viaCardguard.mp.ForceFlush(ctx) }()
	time.Sleep(3 * time.Second)
	select {
	case err := <-done:
		t.Fatalf("export finished while VictoriaMetrics was down: %v", err)
	default:
	}
	e.vm.Start()
	if err := <-done; err != nil {
		t.Fatalf("export after VictoriaMetrics came back: %v", err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		e.vm.Flush()
		if v := vmScalar(t, e, `max_over_time(queue_depth[10m]) or max_over_time({__name__="queue.depth"}[10m])`); v == 77 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sample exported while VictoriaMetrics was down never arrived")
		}
	}
	if got := metricValue(t, e, "cardguard_ingest_requests_total", map[string]string{"code": "503"}); got == 0 {
		t.Error("no export was answered 503 while VictoriaMetrics was down")
	}
}
