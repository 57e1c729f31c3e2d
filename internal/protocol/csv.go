package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/csvimport"

	"github.com/cardguard/cardguard/internal/ingest"
)

// CSV is /api/v1/import/csv, whose `format` query argument says what each
// column is (`1:metric:temperature,2:label:city,3:time:unix_s`). A first line
// that is a header is skipped; samples without a timestamp get the time of the
// request. As in VictoriaMetrics, a line that does not parse is skipped; the
// answer is 204.
type CSV struct{}

func (CSV) Name() string { return "csv_import" }

func (CSV) Decode(r *http.Request, body []byte, b *ingest.Builder) error {
	cds, err := csvimport.ParseColumnDescriptors(r.URL.Query().Get("format"))
	if err != nil {
		return err
	}
	var rows csvimport.Rows
	return lines(body, func(chunk string, first bool) error {
		if first {
			rows.UnmarshalDetectHeader(chunk, cds)
		} else {
			rows.Unmarshal(chunk, cds)
		}
		for i := range rows.Rows {
			row := &rows.Rows[i]
			b.Begin()
			b.Label("__name__", row.Metric)
			for j := range row.Tags {
				b.Label(row.Tags[j].Key, row.Tags[j].Value)
			}
			t := row.Timestamp
			if t == 0 {
				t = b.Now()
			}
			b.Sample(t, row.Value)
			if err := b.End(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (CSV) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusNoContent, "", "")
}
