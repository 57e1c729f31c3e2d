package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/opentsdbhttp"
	"github.com/valyala/fastjson"

	"github.com/cardguard/cardguard/internal/ingest"
)

// OpenTSDB is OpenTSDB's HTTP /api/put: a JSON object or array of
// {metric, timestamp, value, tags}. Timestamps are seconds, or milliseconds
// when they are too large for seconds (OpenTSDB's SECOND_MASK); a missing one
// is the time of the request, in whole seconds. The answer is 204.
type OpenTSDB struct{}

func (OpenTSDB) Name() string { return "opentsdb" }

// secondMask is lib/protoparser/opentsdbhttp/stream's: a timestamp with none
// of these bits set is in seconds.
const secondMask int64 = 0x7FFFFFFF00000000

func (OpenTSDB) Decode(_ *http.Request, body []byte, b *ingest.Builder) error {
	// A parser of its own, not lib/protoparser's pool: a pooled parser keeps
	// what the largest request made it grow to.
	var p fastjson.Parser
	v, err := p.ParseBytes(body)
	if err != nil {
		return err
	}
	var rows opentsdbhttp.Rows
	rows.Unmarshal(v)
	now := b.Now() / 1000
	for i := range rows.Rows {
		r := &rows.Rows[i]
		ts := r.Timestamp
		if ts == 0 {
			ts = now
		}
		if ts&secondMask == 0 {
			ts *= 1e3
		}
		b.Begin()
		b.Label("__name__", r.Metric)
		for j := range r.Tags {
			b.Label(r.Tags[j].Key, r.Tags[j].Value)
		}
		b.Sample(ts, r.Value)
		if err := b.End(); err != nil {
			return err
		}
	}
	return nil
}

func (OpenTSDB) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusNoContent, "", "")
}
