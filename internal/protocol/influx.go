package protocol

import (
	"net/http"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/protoparser/influx"

	"github.com/cardguard/cardguard/internal/ingest"
)

// Influx is the InfluxDB line protocol (/write, /influx/write,
// /influx/api/v2/write), translated as VictoriaMetrics does with its default
// flags: every field is a series named {measurement}_{field}, the tags are
// labels, and the `db` query argument is a db label unless a tag of that name
// is present. Timestamps are read in the `precision` given (ns, u, ms, s, m,
// h), or, without one, in the unit their number of digits suggests. A line that
// does not parse refuses the whole request with 400, as VictoriaMetrics does
// outside stream mode; the answer is 204.
type Influx struct{}

func (Influx) Name() string { return "influx" }

// Flags of VictoriaMetrics' Influx ingestion, at their defaults.
const (
	influxSeparator = "_"  // -influxMeasurementFieldSeparator
	influxDBLabel   = "db" // -influxDBLabel
)

func (Influx) Decode(r *http.Request, body []byte, b *ingest.Builder) error {
	q := r.URL.Query()
	db := q.Get("db")
	mult := influxMultiplier(q.Get("precision"))
	now := b.Now()
	var (
		rows influx.Rows
		name []byte
	)
	return lines(body, func(chunk string, _ bool) error {
		if err := rows.Unmarshal(chunk, false); err != nil {
			return err
		}
		for i := range rows.Rows {
			row := &rows.Rows[i]
			ts := influxTimestamp(row.Timestamp, mult, now)
			hasDB := false
			for j := range row.Tags {
				if row.Tags[j].Key == influxDBLabel {
					hasDB = true
				}
			}
			name = append(append(name[:0], row.Measurement...), influxSeparator...)
			prefix := len(name)
			if row.Measurement == "" {
				prefix = 0
			}
			for j := range row.Fields {
				f := &row.Fields[j]
				b.Begin()
				for k := range row.Tags {
					b.Label(row.Tags[k].Key, row.Tags[k].Value)
				}
				if !hasDB {
					b.Label(influxDBLabel, db)
				}
				name = append(name[:prefix], f.Key...)
				b.Label("__name__", bytesString(name))
				b.Sample(ts, f.Value)
				if err := b.End(); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// influxMultiplier is lib/protoparser/influx/stream's getTimestampMultiplier:
// positive divides a timestamp into milliseconds, negative multiplies it, 0
// guesses the unit.
func influxMultiplier(precision string) int64 {
	switch precision {
	case "ns":
		return 1e6
	case "u", "us", "µ":
		return 1e3
	case "ms":
		return 1
	case "s":
		return -1e3
	case "m":
		return -1e3 * 60
	case "h":
		return -1e3 * 3600
	}
	return 0
}

// influxTimestamp converts ts to milliseconds as lib/protoparser/influx/stream
// does; a missing one is now (in the precision's unit).
func influxTimestamp(ts, mult, now int64) int64 {
	switch {
	case mult == 0:
		switch {
		case ts == 0:
			return now
		case ts >= 1e17:
			return ts / 1e6
		case ts >= 1e14:
			return ts / 1e3
		case ts >= 1e11:
			return ts
		}
		return ts * 1e3
	case mult >= 1:
		if ts == 0 {
			return now
		}
		return ts / mult
	}
	mult = -mult
	if ts == 0 {
		return now - now%mult
	}
	return ts * mult
}

func (Influx) Answer(w http.ResponseWriter, _ *http.Request, o ingest.Outcome) int {
	return answer(w, o, http.StatusNoContent, "", "")
}
