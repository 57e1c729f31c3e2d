package protocol

import (
	"mime"
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/datadogutil"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/datadogv1"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/datadogv2"

	"github.com/cardguard/cardguard/internal/ingest"
)

// Datadog series are /datadog/api/v1/series (JSON) and /datadog/api/v2/series
// (JSON or protobuf), translated as VictoriaMetrics does with its default
// flags: metric names sanitized the way Datadog does
// (-datadog.sanitizeMetricName), host and device (v1) and resources (v2) as
// labels, tags split at the first colon, a host tag renamed exported_host.
// The answer is Datadog's own: 202 with {"errors":[]}.
type (
	DatadogV1 struct{}
	DatadogV2 struct{}
)

func (DatadogV1) Name() string { return "datadog_v1" }
func (DatadogV2) Name() string { return "datadog_v2" }

func (DatadogV1) Decode(_ *http.Request, body []byte, b *ingest.Builder) error {
	var req datadogv1.Request
	if err := req.Unmarshal(body); err != nil {
		return err
	}
	for i := range req.Series {
		s := &req.Series[i]
		b.Begin()
		b.Label("__name__", datadogutil.SanitizeName(s.Metric))
		b.Label("host", s.Host)
		b.Label("device", s.Device)
		datadogTags(b, s.Tags)
		for j := range s.Points {
			b.Sample(s.Points[j].Timestamp(), s.Points[j].Value())
		}
		if err := b.End(); err != nil {
			return err
		}
	}
	return nil
}

func (DatadogV2) Decode(r *http.Request, body []byte, b *ingest.Builder) error {
	var req datadogv2.Request
	var err error
	// VictoriaMetrics compares the Content-Type as it is.
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/x-protobuf" {
		err = datadogv2.UnmarshalProtobuf(&req, body)
	} else {
		err = datadogv2.UnmarshalJSON(&req, body)
	}
	if err != nil {
		return err
	}
	for i := range req.Series {
		s := &req.Series[i]
		b.Begin()
		b.Label("__name__", datadogutil.SanitizeName(s.Metric))
		for _, rs := range s.Resources {
			b.Label(rs.Type, rs.Name)
		}
		datadogTags(b, s.Tags)
		b.Label("source_type_name", s.SourceTypeName)
		for j := range s.Points {
			b.Sample(s.Points[j].Timestamp*1000, s.Points[j].Value)
		}
		if err := b.End(); err != nil {
			return err
		}
	}
	return nil
}

func datadogTags(b *ingest.Builder, tags []string) {
	for _, tag := range tags {
		name, value := datadogutil.SplitTag(tag)
		if name == "host" {
			name = "exported_host"
		}
		b.Label(name, value)
	}
}

func (DatadogV1) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusAccepted, "application/json", `{"errors":[]}`)
}

func (DatadogV2) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusAccepted, "application/json", `{"errors":[]}`)
}
