package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/prometheus"
	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/protoparserutil"

	"github.com/cardguard/cardguard/internal/ingest"
)

// PromText is /api/v1/import/prometheus: the Prometheus text exposition
// format, whatever the Content-Type (VictoriaMetrics reads the raw body, so
// `curl -d` works). Samples without a timestamp get the `timestamp` query
// argument (milliseconds), or the time of the request. TYPE and HELP lines are
// metadata. As in VictoriaMetrics, a line that does not parse is skipped; the
// answer is 204.
type PromText struct{}

func (PromText) Name() string { return "prometheus_import" }

func (PromText) Decode(r *http.Request, body []byte, b *ingest.Builder) error {
	ts, err := protoparserutil.GetTimestamp(r)
	if err != nil {
		return err
	}
	if ts <= 0 {
		ts = b.Now()
	}
	var (
		rows prometheus.Rows
		meta prometheus.MetadataRows
	)
	skip := func(string) {}
	return lines(body, func(chunk string, _ bool) error {
		rows, meta = prometheus.UnmarshalWithMetadata(rows, meta, chunk, skip)
		for i := range rows.Rows {
			row := &rows.Rows[i]
			b.Begin()
			b.Label("__name__", row.Metric)
			for j := range row.Tags {
				b.Label(row.Tags[j].Key, row.Tags[j].Value)
			}
			t := row.Timestamp
			if t == 0 {
				t = ts
			}
			b.Sample(t, row.Value)
			if err := b.End(); err != nil {
				return err
			}
		}
		for i := range meta.Rows {
			m := &meta.Rows[i]
			if err := b.Metadata(m.Metric, m.Help, "", m.Type); err != nil {
				return err
			}
		}
		return nil
	})
}

func (PromText) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusNoContent, "", "")
}
