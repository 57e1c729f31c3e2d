package protocol

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cardguard/cardguard/internal/ingest"
)

const benchSeries = 1000

// benchCase is a request of benchSeries samples in one protocol.
type benchCase struct {
	name  string
	p     ingest.Protocol
	req   *http.Request
	body  []byte
	wantN int // samples
}

func kv(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

func benchOTLP() *metricsv1.MetricsData {
	var dps []*metricsv1.NumberDataPoint
	for i := range benchSeries {
		dps = append(dps, &metricsv1.NumberDataPoint{
			Attributes:   []*commonv1.KeyValue{kv("http.route", fmt.Sprintf("/api/v1/item/%d", i%50)), kv("http.method", "GET"), kv("id", fmt.Sprint(i))},
			TimeUnixNano: 1700000000000000000, Value: &metricsv1.NumberDataPoint_AsDouble{AsDouble: float64(i)},
		})
	}
	return &metricsv1.MetricsData{ResourceMetrics: []*metricsv1.ResourceMetrics{{
		Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{kv("service.name", "checkout"), kv("k8s.pod.name", "checkout-7d9f"), kv("k8s.namespace.name", "shop")}},
		ScopeMetrics: []*metricsv1.ScopeMetrics{{Scope: &commonv1.InstrumentationScope{Name: "otelhttp"}, Metrics: []*metricsv1.Metric{
			{Name: "http.server.active_requests", Data: &metricsv1.Metric_Gauge{Gauge: &metricsv1.Gauge{DataPoints: dps}}},
		}}},
	}}}
}

func benchCases(tb testing.TB) []benchCase {
	tb.Helper()
	lines := func(f func(i int) string) []byte {
		var sb strings.Builder
		for i := range benchSeries {
			sb.WriteString(f(i))
			sb.WriteByte('\n')
		}
		return []byte(sb.String())
	}
	const s, ms = 1700000000, 1700000000000
	pb, _ := proto.Marshal(benchOTLP())
	js, _ := protojson.Marshal(benchOTLP())
	var dd1, dd2, nr, tsdb []string
	for i := range benchSeries {
		dd1 = append(dd1, fmt.Sprintf(`{"metric":"system.load.1","host":"h%d","tags":["env:prod","id:%d"],"points":[[%d,%d]]}`, i%10, i, s, i))
		dd2 = append(dd2, fmt.Sprintf(`{"metric":"system.load.1","points":[{"timestamp":%d,"value":%d}],"resources":[{"name":"h%d","type":"host"}],"tags":["env:prod","id:%d"]}`, s, i, i%10, i))
		nr = append(nr, fmt.Sprintf(`{"eventType":"SystemSample","timestamp":%d,"entityKey":"h%d","cpuPercent":%d}`, s, i, i))
		tsdb = append(tsdb, fmt.Sprintf(`{"metric":"sys.cpu","timestamp":%d,"value":%d,"tags":{"host":"h%d","id":"%d"}}`, s, i, i%10, i))
	}
	req := func(target string, hdr ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	return []benchCase{
		{"otlp_protobuf", OTLP{}, req("/opentelemetry/v1/metrics", "Content-Type", ctProtobuf), pb, benchSeries},
		{"otlp_json", OTLP{}, req("/opentelemetry/v1/metrics", "Content-Type", ctJSON), js, benchSeries},
		{"vmimport", VMImport{}, req("/api/v1/import"), lines(func(i int) string {
			return fmt.Sprintf(`{"metric":{"__name__":"http_requests_total","job":"api","instance":"10.0.0.%d:9100","id":"%d"},"values":[%d],"timestamps":[%d]}`, i%200, i, i, ms)
		}), benchSeries},
		{"prometheus_import", PromText{}, req("/api/v1/import/prometheus"), lines(func(i int) string {
			return fmt.Sprintf(`http_requests_total{job="api",instance="10.0.0.%d:9100",id="%d"} %d %d`, i%200, i, i, ms)
		}), benchSeries},
		{"csv_import", CSV{}, req("/api/v1/import/csv?format=1:label:instance,2:label:id,3:metric:http_requests_total,4:time:unix_ms"), lines(func(i int) string {
			return fmt.Sprintf(`10.0.0.%d:9100,%d,%d,%d`, i%200, i, i, ms)
		}), benchSeries},
		{"influx", Influx{}, req("/write?db=telegraf"), lines(func(i int) string {
			return fmt.Sprintf(`http,host=h%d,id=%d requests=%d %d`, i%200, i, i, int64(ms)*1e6)
		}), benchSeries},
		{"datadog_v1", DatadogV1{}, req("/datadog/api/v1/series"), []byte(`{"series":[` + strings.Join(dd1, ",") + `]}`), benchSeries},
		{"datadog_v2", DatadogV2{}, req("/datadog/api/v2/series", "Content-Type", "application/json"), []byte(`{"series":[` + strings.Join(dd2, ",") + `]}`), benchSeries},
		{"newrelic", NewRelic{}, req("/newrelic/infra/v2/metrics/events/bulk"), []byte(`[{"EntityID":1,"IsAgent":true,"Events":[` + strings.Join(nr, ",") + `]}]`), benchSeries},
		{"opentsdb", OpenTSDB{}, req("/api/put"), []byte(`[` + strings.Join(tsdb, ",") + `]`), benchSeries},
	}
}

// TestDecoders: each benchmark payload decodes into every sample it has.
func TestDecoders(t *testing.T) {
	for _, c := range benchCases(t) {
		var b ingest.Builder
		b.Reset(c.body, 1)
		if err := c.p.Decode(c.req, c.body, &b); err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if b.Samples() != c.wantN {
			t.Errorf("%s: %d samples, want %d", c.name, b.Samples(), c.wantN)
		}
	}
}

// BenchmarkDecode measures each protocol's decoder, from the decompressed body
// to the pipeline's series, per sample.
func BenchmarkDecode(b *testing.B) {
	for _, c := range benchCases(b) {
		b.Run(c.name, func(b *testing.B) {
			var bld ingest.Builder
			b.ReportAllocs()
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				bld.Reset(c.body, 1)
				if err := c.p.Decode(c.req, c.body, &bld); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*c.wantN), "ns/sample")
			b.ReportMetric(float64(testing.AllocsPerRun(3, func() {
				bld.Reset(c.body, 1)
				_ = c.p.Decode(c.req, c.body, &bld)
			}))/float64(c.wantN), "allocs/sample")
		})
	}
}
