package protocol

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strconv"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/decimal"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/promutil"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/opentelemetry/pb"
	"github.com/VictoriaMetrics/easyproto"
	metricsv1 "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cardguard/cardguard/internal/ingest"
)

// OTLP is OTLP/HTTP metrics (/opentelemetry/v1/metrics), protobuf or JSON.
//
// Series are what VictoriaMetrics' OTLP ingestion makes of the request with its
// default flags: lib/protoparser/opentelemetry/pb decodes every metric kind
// (gauge, sum, histogram, exponential histogram, summary) into samples with
// resource and scope attributes as labels, and names are kept as sent
// (-opentelemetry.usePrometheusNaming is off by default); a point flagged "no
// recorded value" is a stale marker.
//
// VictoriaMetrics v1.150 answers JSON with 400; cardguard decodes JSON into the
// protobuf form first (protojson over the OTLP definitions) and translates
// that the same way.
//
// The answer is ExportMetricsServiceResponse in the request's encoding, with
// partial_success when cardguard dropped points on purpose; errors carry a
// google.rpc.Status, and 429 and 503 a Retry-After, which the OpenTelemetry
// exporters honour.
type OTLP struct{}

func (OTLP) Name() string { return "opentelemetry" }

const (
	ctProtobuf = "application/x-protobuf"
	ctJSON     = "application/json"
)

func otlpJSON(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == ctJSON
}

func (OTLP) Decode(r *http.Request, body []byte, b *ingest.Builder) error {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch mt {
	case ctProtobuf, "":
	case ctJSON:
		var md metricsv1.MetricsData
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(body, &md); err != nil {
			return fmt.Errorf("cannot unmarshal OTLP JSON: %w", err)
		}
		// ExportMetricsServiceRequest and MetricsData are the same message on
		// the wire (resource_metrics = 1).
		var err error
		if body, err = proto.Marshal(&md); err != nil {
			return fmt.Errorf("cannot marshal OTLP JSON as protobuf: %w", err)
		}
	default:
		return ingest.Errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: OTLP/HTTP is application/x-protobuf or application/json", ct)
	}
	p := otlpPusher{b: b}
	if err := pb.DecodeMetricsData(body, &p, pb.DecodeMetricsOptions{}); err != nil {
		return err
	}
	return p.err
}

// otlpPusher receives what pb decodes (pb.MetricPusher).
type otlpPusher struct {
	b    *ingest.Builder
	name []byte
	err  error
}

func (p *otlpPusher) PushSample(mm *pb.MetricMetadata, suffix string, ls *promutil.Labels, timestampNsecs uint64, value float64, flags uint32) {
	if p.err != nil {
		return
	}
	if flags&1 != 0 {
		value = decimal.StaleNaN
	}
	b := p.b
	b.Begin()
	p.name = append(append(p.name[:0], mm.Name...), suffix...)
	b.Label("__name__", bytesString(p.name))
	for _, l := range ls.Labels {
		b.Label(l.Name, l.Value)
	}
	b.Sample(int64(timestampNsecs/1e6), value)
	p.err = b.End()
}

func (p *otlpPusher) PushMetricMetadata(mm *pb.MetricMetadata) {
	if p.err != nil {
		return
	}
	p.err = p.b.Metadata(mm.Name, mm.Description, mm.Unit, mm.Type)
}

func (OTLP) Answer(w http.ResponseWriter, r *http.Request, o ingest.Outcome) int {
	js := otlpJSON(r)
	code := o.Status()
	if code == 0 {
		var body []byte
		if js {
			w.Header().Set("Content-Type", ctJSON)
			body = otlpResponseJSON(o)
		} else {
			w.Header().Set("Content-Type", ctProtobuf)
			body = otlpResponse(o)
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
		return http.StatusOK
	}
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter(o))
	}
	// google.rpc.Status { int32 code = 1; string message = 2; }, with the gRPC
	// code closest to the HTTP status.
	msg := o.Err.Error()
	rpc := grpcCode(code)
	if js {
		w.Header().Set("Content-Type", ctJSON)
		w.WriteHeader(code)
		b, _ := json.Marshal(struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		}{rpc, msg})
		_, _ = w.Write(b)
		return code
	}
	var m easyproto.Marshaler
	st := m.MessageMarshaler()
	st.AppendInt32(1, int32(rpc))
	st.AppendString(2, msg)
	w.Header().Set("Content-Type", ctProtobuf)
	w.WriteHeader(code)
	_, _ = w.Write(m.Marshal(nil))
	return code
}

// otlpResponse is ExportMetricsServiceResponse { ExportMetricsPartialSuccess
// partial_success = 1; } with ExportMetricsPartialSuccess { int64
// rejected_data_points = 1; string error_message = 2; }. Samples are what
// cardguard counts: a histogram point dropped is its every bucket.
func otlpResponse(o ingest.Outcome) []byte {
	if o.Rejected == 0 {
		return nil
	}
	var m easyproto.Marshaler
	ps := m.MessageMarshaler().AppendMessage(1)
	ps.AppendInt64(1, int64(o.Rejected))
	ps.AppendString(2, o.Message())
	return m.Marshal(nil)
}

func otlpResponseJSON(o ingest.Outcome) []byte {
	if o.Rejected == 0 {
		return []byte("{}")
	}
	b, _ := json.Marshal(map[string]any{"partialSuccess": map[string]string{
		// protojson writes int64 as a string.
		"rejectedDataPoints": strconv.Itoa(o.Rejected),
		"errorMessage":       o.Message(),
	}})
	return b
}

func grpcCode(status int) int {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType, http.StatusMethodNotAllowed:
		return 3 // INVALID_ARGUMENT
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return 8 // RESOURCE_EXHAUSTED
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusServiceUnavailable:
		return 14 // UNAVAILABLE
	}
	return 13 // INTERNAL
}

var _ pb.MetricPusher = (*otlpPusher)(nil)
