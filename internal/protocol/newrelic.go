package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/newrelic"

	"github.com/cardguard/cardguard/internal/ingest"
)

// NewRelic is the New Relic infrastructure agent's
// /newrelic/infra/v2/metrics/events/bulk: every numeric attribute of an event
// is a series named after it, the string attributes are labels, as
// VictoriaMetrics translates them. Events without a timestamp get the time of
// the request, in whole seconds. The answer is 202 {"status":"ok"}.
type NewRelic struct{}

func (NewRelic) Name() string { return "newrelic" }

func (NewRelic) Decode(_ *http.Request, body []byte, b *ingest.Builder) error {
	var rows newrelic.Rows
	if err := rows.Unmarshal(body); err != nil {
		return err
	}
	now := b.Now() / 1000 * 1000
	for i := range rows.Rows {
		r := &rows.Rows[i]
		ts := r.Timestamp
		if ts == 0 {
			ts = now
		}
		for j := range r.Samples {
			s := &r.Samples[j]
			b.Begin()
			b.Label("__name__", bytesString(s.Name))
			for k := range r.Tags {
				b.Label(bytesString(r.Tags[k].Key), bytesString(r.Tags[k].Value))
			}
			b.Sample(ts, s.Value)
			if err := b.End(); err != nil {
				return err
			}
		}
	}
	return nil
}

func (NewRelic) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusAccepted, "application/json", `{"status":"ok"}`)
}
