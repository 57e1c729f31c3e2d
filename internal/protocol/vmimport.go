package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/vmimport"

	"github.com/cardguard/cardguard/internal/ingest"
)

// VMImport is /api/v1/import: JSON lines as /api/v1/export writes them, one
// series with its values and timestamps per line. As in VictoriaMetrics, a
// line that does not parse is skipped; the answer is 204.
type VMImport struct{}

func (VMImport) Name() string { return "vmimport" }

func (VMImport) Decode(_ *http.Request, body []byte, b *ingest.Builder) error {
	var rows vmimport.Rows
	return lines(body, func(chunk string, _ bool) error {
		rows.Unmarshal(chunk)
		for i := range rows.Rows {
			r := &rows.Rows[i]
			b.Begin()
			for j := range r.Tags {
				b.Label(bytesString(r.Tags[j].Key), bytesString(r.Tags[j].Value))
			}
			for j, v := range r.Values {
				b.Sample(r.Timestamps[j], v)
			}
			if err := b.End(); err != nil {
				return err
			}
		}
		return nil
	})
}

func (VMImport) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusNoContent, "", "")
}
