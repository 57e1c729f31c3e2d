package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/klauspost/compress/zstd"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// protocolCase is one payload sent to VictoriaMetrics directly and through
// cardguard.
type protocolCase struct {
	name string
	path string // through cardguard (and directly, unless direct is set)
	// direct, when set, is the path, body and headers VictoriaMetrics gets
	// instead (OTLP JSON, which VictoriaMetrics does not take, goes to it as
	// protobuf; OpenTSDB goes to its own listener).
	direct     *protocolCase
	body       []byte
	hdr        map[string]string
	wantStatus int
	wantBody   string // a part of the answer's body
}

func otlpKV(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// otlpAllKinds is an OTLP request with a metric of each of the five kinds,
// their names starting with prefix, points at ts.
func otlpAllKinds(prefix string, ts time.Time) *metricsv1.MetricsData {
	ns := uint64(ts.UnixNano())
	attrs := []*commonv1.KeyValue{otlpKV("route", "/api"), otlpKV("code", "200")}
	sum, mn, mx := 12.5, 0.5, 7.0
	return &metricsv1.MetricsData{ResourceMetrics: []*metricsv1.ResourceMetrics{{
		Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{otlpKV("service.name", "checkout"), otlpKV("host.name", "h1")}},
		ScopeMetrics: []*metricsv1.ScopeMetrics{{
			Scope: &commonv1.InstrumentationScope{Name: "cardguard.test", Version: "1.0"},
			Metrics: []*metricsv1.Metric{
				{Name: prefix + "gauge", Unit: "1", Data: &metricsv1.Metric_Gauge{Gauge: &metricsv1.Gauge{DataPoints: []*metricsv1.NumberDataPoint{
					{Attributes: attrs, TimeUnixNano: ns, Value: &metricsv1.NumberDataPoint_AsDouble{AsDouble: 0.75}},
					{Attributes: []*commonv1.KeyValue{otlpKV("route", "/other")}, TimeUnixNano: ns, Value: &metricsv1.NumberDataPoint_AsInt{AsInt: 3}},
				}}}},
				{Name: prefix + "requests", Unit: "{request}", Data: &metricsv1.Metric_Sum{Sum: &metricsv1.Sum{
					IsMonotonic: true, AggregationTemporality: metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
					DataPoints: []*metricsv1.NumberDataPoint{{Attributes: attrs, TimeUnixNano: ns, Value: &metricsv1.NumberDataPoint_AsInt{AsInt: 42}}},
				}}},
				{Name: prefix + "latency", Unit: "s", Data: &metricsv1.Metric_Histogram{Histogram: &metricsv1.Histogram{
					AggregationTemporality: metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
					DataPoints: []*metricsv1.HistogramDataPoint{{
						Attributes: attrs, TimeUnixNano: ns, Count: 6, Sum: &sum, Min: &mn, Max: &mx,
						BucketCounts: []uint64{1, 2, 3}, ExplicitBounds: []float64{0.1, 1},
					}},
				}}},
				{Name: prefix + "size", Unit: "By", Data: &metricsv1.Metric_ExponentialHistogram{ExponentialHistogram: &metricsv1.ExponentialHistogram{
					AggregationTemporality: metricsv1.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE,
					DataPoints: []*metricsv1.ExponentialHistogramDataPoint{{
						Attributes: attrs, TimeUnixNano: ns, Count: 7, Sum: &sum, Scale: 1, ZeroCount: 1,
						Positive: &metricsv1.ExponentialHistogramDataPoint_Buckets{Offset: 2, BucketCounts: []uint64{1, 2, 3}},
					}},
				}}},
				{Name: prefix + "summary", Data: &metricsv1.Metric_Summary{Summary: &metricsv1.Summary{
					DataPoints: []*metricsv1.SummaryDataPoint{{
						Attributes: attrs, TimeUnixNano: ns, Count: 4, Sum: 10,
						QuantileValues: []*metricsv1.SummaryDataPoint_ValueAtQuantile{{Quantile: 0.5, Value: 2}, {Quantile: 0.99, Value: 4}},
					}},
				}}},
			},
		}},
	}}}
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return buf.Bytes()
}

func zstdEncoded(b []byte) []byte {
	enc, _ := zstd.NewWriter(nil)
	defer enc.Close()
	return enc.EncodeAll(b, nil)
}

// protocolCases are payloads of every protocol, points at ts.
func protocolCases(t *testing.T, ts time.Time) []protocolCase {
	t.Helper()
	ms, s := ts.UnixMilli(), ts.Unix()
	otlpPB, err := proto.Marshal(otlpAllKinds("otlp_pb_", ts))
	if err != nil {
		t.Fatal(err)
	}
	otlpJS, err := protojson.Marshal(otlpAllKinds("otlp_json_", ts))
	if err != nil {
		t.Fatal(err)
	}
	otlpJSAsPB, _ := proto.Marshal(otlpAllKinds("otlp_json_", ts))
	wr := &prompb.WriteRequest{Timeseries: []prompb.TimeSeries{
		{Labels: []prompb.Label{{Name: "__name__", Value: "zstd_rw"}, {Name: "job", Value: "vmagent"}}, Samples: []prompb.Sample{{Value: 1, Timestamp: ms}, {Value: 2, Timestamp: ms + 1000}}},
	}}
	pbHdr := map[string]string{"Content-Type": "application/x-protobuf"}
	return []protocolCase{
		{name: "otlp protobuf gzip", path: "/opentelemetry/v1/metrics", body: gzipped(otlpPB),
			hdr: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}, wantStatus: 200},
		{name: "otlp json", path: "/opentelemetry/v1/metrics", body: otlpJS, hdr: map[string]string{"Content-Type": "application/json"}, wantStatus: 200,
			wantBody: "{}", direct: &protocolCase{path: "/opentelemetry/v1/metrics", body: otlpJSAsPB, hdr: pbHdr}},
		{name: "vmimport", path: "/api/v1/import", wantStatus: 204, body: []byte(fmt.Sprintf(
			`{"metric":{"__name__":"vmimport_metric","job":"a","instance":"i:1"},"values":[1,2.5,3],"timestamps":[%d,%d,%d]}`+"\n"+
				`{"metric":{"__name__":"vmimport_metric","job":"b"},"values":[7],"timestamps":[%d]}`+"\n", ms, ms+1000, ms+2000, ms))},
		{name: "prometheus text with extra_label and timestamp", path: "/api/v1/import/prometheus?extra_label=env%3Dquery&extra_label=team%3Dx&timestamp=" + fmt.Sprint(ms),
			wantStatus: 204, hdr: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, body: []byte(fmt.Sprintf(
				"# HELP promtext_requests_total Requests.\n# TYPE promtext_requests_total counter\n"+
					"promtext_requests_total{code=\"200\",env=\"body\"} 10\npromtext_requests_total{code=\"500\"} 2 %d\npromtext_up 1\n", ms-60000))},
		{name: "csv with format", path: "/api/v1/import/csv?format=" + url.QueryEscape("2:metric:csv_temperature,3:metric:csv_humidity,1:label:city,4:time:unix_s"),
			wantStatus: 204, body: []byte(fmt.Sprintf("berlin,21.5,60,%d\nparis,25,45,%d\n", s, s))},
		{name: "influx /write with db and precision", path: "/write?db=telegraf&precision=s", wantStatus: 204, body: []byte(fmt.Sprintf(
			"cpu,host=h1,region=eu usage_user=1.5,usage_system=2i %d\nmem,host=h1,db=own used=10 %d\n", s, s))},
		{name: "influx v2 gzip", path: "/influx/api/v2/write?precision=ms&bucket=b&org=o", wantStatus: 204, hdr: map[string]string{"Content-Encoding": "gzip"},
			body: gzipped([]byte(fmt.Sprintf("disk,path=/ free=5,used=7 %d\n", ms)))},
		{name: "influx under /insert/0/ with guessed precision", path: "/insert/0/influx/write", wantStatus: 204,
			direct: &protocolCase{path: "/influx/write"}, body: []byte(fmt.Sprintf("net,if=eth0 bytes_recv=100 %d\n", ts.UnixNano()))},
		{name: "datadog v1", path: "/datadog/api/v1/series", wantStatus: 202, wantBody: `{"errors":[]}`, body: []byte(fmt.Sprintf(
			`{"series":[{"metric":"system.load.1","host":"h1","device":"sda","tags":["env:prod","host:other","bare"],"points":[[%d,0.7],[%d,0.9]]}]}`, s, s+10))},
		{name: "datadog v2", path: "/datadog/api/v2/series", wantStatus: 202, wantBody: `{"errors":[]}`, hdr: map[string]string{"Content-Type": "application/json"},
			body: []byte(fmt.Sprintf(`{"series":[{"metric":"dd.v2.requests","type":1,"points":[{"timestamp":%d,"value":5}],"resources":[{"name":"h2","type":"host"}],"tags":["env:dev"],"source_type_name":"agent"}]}`, s))},
		{name: "newrelic", path: "/newrelic/infra/v2/metrics/events/bulk", wantStatus: 202, body: []byte(fmt.Sprintf(
			`[{"EntityID":1,"IsAgent":true,"Events":[{"eventType":"SystemSample","timestamp":%d,"entityKey":"h1","cpuPercent":25.5,"memoryUsedBytes":1024}],"ReportingAgentID":1}]`, s))},
		{name: "opentsdb", path: "/api/put", wantStatus: 204, body: []byte(fmt.Sprintf(
			`[{"metric":"tsdb.cpu","timestamp":%d,"value":3,"tags":{"host":"h1"}},{"metric":"tsdb.mem","timestamp":%d,"value":4,"tags":{"host":"h1"}}]`, s, ms))},
		{name: "remote write zstd", path: "/api/v1/write", wantStatus: 204, body: zstdEncoded(wr.MarshalProtobuf(nil)),
			hdr: map[string]string{"Content-Type": "application/x-protobuf", "Content-Encoding": "zstd"}},
	}
}

func postRaw(t *testing.T, rawURL string, body []byte, hdr map[string]string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, rawURL, bytes.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// exportAll is every series VictoriaMetrics at base holds, one normalised
// JSON line each, sorted.
func exportAll(t *testing.T, base string) []string {
	t.Helper()
	code, body := get(t, base+"/api/v1/export?match[]="+url.QueryEscape(`{__name__!=""}`))
	if code != 200 {
		t.Fatalf("export from %s: %d %s", base, code, body)
	}
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(string(body)), "\n") {
		if line == "" {
			continue
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("export line %q: %v", line, err)
		}
		b, _ := json.Marshal(v) // keys sorted
		out = append(out, string(b))
	}
	slices.Sort(out)
	return out
}

// exportSource is one VictoriaMetrics a test reads every series of tenant 0 from.
type exportSource struct {
	flush func()
	base  string // exportAll's base: the single node, or vmselect's /select/0/prometheus
}

// waitSameExport polls both VictoriaMetrics until their exports are equal and
// hold want series at least, and returns the last exports.
func waitSameExport(t *testing.T, a, b exportSource, want int) (direct, through []string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a.flush()
		b.flush()
		direct, through = exportAll(t, a.base), exportAll(t, b.base)
		if len(direct) >= want && slices.Equal(direct, through) || time.Now().After(deadline) {
			return direct, through
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestProtocolsMatchVictoriaMetrics sends the payload of every protocol to a
// VictoriaMetrics directly and to another through cardguard with no rules:
// both must hold the same series and samples, and each sender gets its
// protocol's answer. It runs with two single nodes and with two clusters.
func TestProtocolsMatchVictoriaMetrics(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			tsdbAddr := vmtest.FreeAddr(t)
			var direct exportSource
			var writeURL func(path string) string
			if layout == layoutCluster {
				c := vmtest.StartCluster(t, "-opentsdbHTTPListenAddr="+tsdbAddr)
				direct = exportSource{flush: c.Flush, base: c.SelectURL + "/select/0/prometheus"}
				writeURL = func(path string) string { return c.InsertURL + vminsertPath(path) }
			} else {
				vm := vmtest.StartVM(t, "-opentsdbHTTPListenAddr="+tsdbAddr)
				direct = exportSource{flush: vm.Flush, base: vm.URL}
				writeURL = func(path string) string { return vm.URL + path }
			}
			byPath := writeURL
			writeURL = func(path string) string {
				if !strings.HasPrefix(path, "/api/put") {
					return byPath(path)
				}
				if layout == layoutCluster {
					// vminsert's OpenTSDB listener takes the tenant in the path.
					return "http://" + tsdbAddr + "/insert/0/opentsdb" + path
				}
				return "http://" + tsdbAddr + path
			}
			testProtocolsMatch(t, newEnvOn(t, layout, nil, io.Discard), direct, writeURL)
		})
	}
}

// vminsertPath is the path of tenant 0 on vminsert for a single node's write path.
func vminsertPath(path string) string {
	switch {
	case strings.HasPrefix(path, "/api/v1/"):
		return "/insert/0/prometheus" + path
	case path == "/write" || strings.HasPrefix(path, "/write?"):
		return "/insert/0/influx" + path
	}
	return "/insert/0" + path
}

func testProtocolsMatch(t *testing.T, e *env, direct exportSource, writeURL func(path string) string) {
	ts := time.Now().Add(-5 * time.Minute).Truncate(time.Second)
	cases := protocolCases(t, ts)
	for _, c := range cases {
		d := protocolCase{path: c.path, body: c.body, hdr: c.hdr}
		if c.direct != nil {
			if c.direct.path != "" {
				d.path = c.direct.path
			}
			if c.direct.body != nil {
				d.body, d.hdr = c.direct.body, c.direct.hdr
			}
		}
		if code, body, _ := postRaw(t, writeURL(d.path), d.body, d.hdr); code/100 != 2 {
			t.Fatalf("%s: VictoriaMetrics answered %d %s", c.name, code, body)
		}
		code, body, _ := postRaw(t, e.srv.URL+c.path, c.body, c.hdr)
		if code != c.wantStatus || !strings.Contains(body, c.wantBody) {
			t.Errorf("%s: cardguard answered %d %q, want %d with %q", c.name, code, body, c.wantStatus, c.wantBody)
		}
	}
	through := exportSource{flush: e.be.flush}
	if e.be.cl != nil {
		through.base = e.be.cl.SelectURL + "/select/0/prometheus"
	} else {
		through.base = e.be.vm.URL
	}
	want, got := waitSameExport(t, direct, through, 30)
	if !slices.Equal(want, got) {
		t.Errorf("through cardguard VictoriaMetrics holds\n%s\n\ndirectly\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, p := range []string{"opentelemetry", "vmimport", "prometheus_import", "csv_import", "influx", "datadog_v1", "datadog_v2", "newrelic", "opentsdb", "vm_remote_write"} {
		if got := metricValue(t, e, "cardguard_ingested_samples_total", map[string]string{"protocol": p}); got == 0 {
			t.Errorf("cardguard_ingested_samples_total{protocol=%q} = 0", p)
		}
	}
	t.Logf("%d series identical:\n%s", len(want), strings.Join(want, "\n"))
}

// otlpPoints is an OTLP request of n gauge points of metric name, each with
// its own value of attribute key.
func otlpPoints(name, key string, n int, ts time.Time) *metricsv1.MetricsData {
	var dps []*metricsv1.NumberDataPoint
	for i := range n {
		dps = append(dps, &metricsv1.NumberDataPoint{
			Attributes:   []*commonv1.KeyValue{otlpKV(key, fmt.Sprint(i))},
			TimeUnixNano: uint64(ts.UnixNano()), Value: &metricsv1.NumberDataPoint_AsDouble{AsDouble: float64(i)},
		})
	}
	return &metricsv1.MetricsData{ResourceMetrics: []*metricsv1.ResourceMetrics{{ScopeMetrics: []*metricsv1.ScopeMetrics{{
		Metrics: []*metricsv1.Metric{{Name: name, Data: &metricsv1.Metric_Gauge{Gauge: &metricsv1.Gauge{DataPoints: dps}}}},
	}}}}}
}

// partialSuccess reads ExportMetricsServiceResponse.partial_success.
func partialSuccess(t *testing.T, b []byte) (rejected int64, msg string) {
	t.Helper()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			t.Fatalf("unexpected field %d in ExportMetricsServiceResponse", num)
		}
		ps, n := protowire.ConsumeBytes(b)
		b = b[n:]
		for len(ps) > 0 {
			num, typ, n := protowire.ConsumeTag(ps)
			ps = ps[n:]
			switch {
			case num == 1 && typ == protowire.VarintType:
				v, n := protowire.ConsumeVarint(ps)
				rejected, ps = int64(v), ps[n:]
			case num == 2 && typ == protowire.BytesType:
				v, n := protowire.ConsumeBytes(ps)
				msg, ps = string(v), ps[n:]
			default:
				t.Fatalf("unexpected field %d in partial_success", num)
			}
		}
	}
	return rejected, msg
}

// TestProtocolLimitsAnswers: with a series limit or the label guard on, each
// protocol's senders get its documented answer and the dropped samples are
// counted under their reason.
func TestProtocolLimitsAnswers(t *testing.T) {
	e := newEnv(t, multiTenant(`overrides:
  "1": {max_series: 3}
  "2": {max_series: 3}
  "3": {max_series: 3, on_limit: reject}
  "4": {label_guard: {max_values_per_label: 2, action: drop_series}}
`))
	ts := time.Now().Add(-time.Minute).Truncate(time.Second)
	discarded := func(tn string, reason limits.Reason) float64 {
		return metricValue(t, e, "cardguard_discarded_samples_total", map[string]string{"tenant": tn, "reason": string(reason)})
	}

	// OTLP: 200 with partial_success naming the limit.
	pbBody, _ := proto.Marshal(otlpPoints("otlp_limited", "id", 5, ts))
	code, body, _ := postRaw(t, e.srv.URL+"/insert/1/opentelemetry/v1/metrics", pbBody, map[string]string{"Content-Type": "application/x-protobuf"})
	if rej, msg := partialSuccess(t, []byte(body)); code != 200 || rej != 2 || !strings.Contains(msg, "max_series") {
		t.Errorf("OTLP over max_series: %d, rejected %d %q; want 200, 2 rejected for max_series", code, rej, msg)
	}
	if got := discarded("1:0", limits.ReasonMaxSeries); got != 2 {
		t.Errorf("tenant 1 discarded %v samples for max_series, want 2", got)
	}

	// Influx: 204, the rest stored, the drops in a header and /metrics.
	var lp strings.Builder
	for i := range 5 {
		fmt.Fprintf(&lp, "influx_limited,id=%d v=%d %d\n", i, i, ts.Unix())
	}
	code, body, hdr := postRaw(t, e.srv.URL+"/insert/2/influx/write?precision=s", []byte(lp.String()), nil)
	if code != 204 || hdr.Get("X-Cardguard-Rejected-Samples") != "2" {
		t.Errorf("Influx over max_series: %d %q rejected=%q; want 204 with 2 rejected", code, body, hdr.Get("X-Cardguard-Rejected-Samples"))
	}
	if got := discarded("2:0", limits.ReasonMaxSeries); got != 2 {
		t.Errorf("tenant 2 discarded %v samples for max_series, want 2", got)
	}

	// Datadog with on_limit: reject: 400 naming the limit, the rest stored.
	var series []string
	for i := range 5 {
		series = append(series, fmt.Sprintf(`{"metric":"dd_limited","tags":["id:%d"],"points":[[%d,1]]}`, i, ts.Unix()))
	}
	code, body, _ = postRaw(t, e.srv.URL+"/insert/3/datadog/api/v1/series", []byte(`{"series":[`+strings.Join(series, ",")+`]}`), nil)
	if code != 400 || !strings.Contains(body, "max_series") {
		t.Errorf("Datadog over max_series with on_limit reject: %d %q; want 400 naming max_series", code, body)
	}

	// The label guard, OTLP JSON: partialSuccess in JSON.
	jsBody, _ := protojson.Marshal(otlpPoints("otlp_guarded", "user", 5, ts))
	code, body, _ = postRaw(t, e.srv.URL+"/insert/4/opentelemetry/v1/metrics", jsBody, map[string]string{"Content-Type": "application/json"})
	var resp struct {
		PartialSuccess struct {
			RejectedDataPoints string `json:"rejectedDataPoints"`
			ErrorMessage       string `json:"errorMessage"`
		} `json:"partialSuccess"`
	}
	_ = json.Unmarshal([]byte(body), &resp)
	if code != 200 || resp.PartialSuccess.RejectedDataPoints == "" || !strings.Contains(resp.PartialSuccess.ErrorMessage, "label_guard") {
		t.Errorf("OTLP JSON over the label guard: %d %s; want 200 with partialSuccess for label_guard", code, body)
	}
	guarded := discarded("4:0", limits.ReasonLabelGuard)
	if guarded == 0 || fmt.Sprint(guarded) != resp.PartialSuccess.RejectedDataPoints {
		t.Errorf("tenant 4 discarded %v samples for label_guard, the answer says %s", guarded, resp.PartialSuccess.RejectedDataPoints)
	}

	e.vm.Flush()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		e.vm.Flush()
		got := []float64{
			vmScalar(t, e, `count(otlp_limited{vm_account_id="1:0"})`),
			vmScalar(t, e, `count(influx_limited_v{vm_account_id="2:0"})`),
			vmScalar(t, e, `count(dd_limited{vm_account_id="3:0"})`),
			vmScalar(t, e, `count(otlp_guarded{vm_account_id="4:0"})`) + guarded,
		}
		if slices.Equal(got, []float64{3, 3, 3, 5}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stored series (OTLP, Influx, Datadog, guarded OTLP + dropped) = %v, want [3 3 3 5]", got)
		}
	}
}

// TestProtocolRoutesWinOverReadPath: the single-tenant write paths are the
// protocols' handlers, not the read path's refusal of write paths; the
// cluster paths too; queries still reach the read path.
func TestProtocolRoutesWinOverReadPath(t *testing.T) {
	e := newEnv(t, nil)
	paths := []string{
		"/api/v1/import", "/api/v1/import/prometheus", "/api/v1/import/csv",
		"/prometheus/api/v1/import", "/prometheus/api/v1/import/prometheus", "/prometheus/api/v1/import/csv",
		"/opentelemetry/v1/metrics", "/write", "/influx/write", "/influx/api/v2/write", "/api/v2/write",
		"/datadog/api/v1/series", "/datadog/api/v2/series", "/newrelic/infra/v2/metrics/events/bulk",
		"/api/put", "/opentsdb/api/put",
		"/insert/0/opentelemetry/v1/metrics", "/insert/0/prometheus/api/v1/import", "/insert/0/prometheus/api/v1/import/prometheus",
		"/insert/0/prometheus/api/v1/import/csv", "/insert/0/influx/write", "/insert/0/influx/api/v2/write",
		"/insert/0/datadog/api/v1/series", "/insert/0/datadog/api/v2/series",
		"/insert/0/newrelic/infra/v2/metrics/events/bulk", "/insert/0/opentsdb/api/put",
	}
	for _, p := range paths {
		code, body, _ := postRaw(t, e.srv.URL+p, nil, nil)
		if code != 400 || !strings.Contains(body, "empty request body") {
			t.Errorf("POST %s with no body: %d %q, want the write handler's 400", p, code, body)
		}
		if code, body := get(t, e.srv.URL+p); code != 405 {
			t.Errorf("GET %s: %d %q, want 405", p, code, body)
		}
	}
	for _, p := range []string{"/api/v1/import/native", "/insert/0/prometheus/api/v1/import/native"} {
		if code, body, _ := postRaw(t, e.srv.URL+p, []byte("x"), nil); code != 415 || !strings.Contains(body, "native") {
			t.Errorf("POST %s: %d %q, want 415 explaining native", p, code, body)
		}
	}
	if code, body := get(t, e.srv.URL+"/api/v1/query?query=1"); code != 200 {
		t.Errorf("the read path lost /api/v1/query: %d %s", code, body)
	}
	// The agents' other calls get VictoriaMetrics' own answers.
	for p, want := range map[string]string{
		"/datadog/api/v1/validate": `{"valid":true}`, "/insert/0/datadog/api/v1/check_run": `{"status":"ok"}`,
		"/datadog/intake": `{}`, "/newrelic": `{"status":"ok"}`, "/insert/0/newrelic/inventory/deltas": `"reset": "false"`,
	} {
		if code, body, _ := postRaw(t, e.srv.URL+p, []byte("{}"), nil); code/100 != 2 || !strings.Contains(body, want) {
			t.Errorf("POST %s: %d %q, want VictoriaMetrics' answer %s", p, code, body, want)
		}
	}
}
