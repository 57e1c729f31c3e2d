package ingest

import (
	"errors"
	"fmt"
	"net/http"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// What one request may make cardguard hold.
//
// Decoding turns bytes into Go values that are larger than their encoding: a
// four-byte series becomes a 72-byte series entry, a two-byte label a 32-byte
// prompb.Label, a two-byte 2.0 symbol a string header. Left alone, a request of a
// few MB of tiny fields would make cardguard hold gigabytes. So every decoder
// charges what it keeps, per value, against a budget fixed by the size of the
// decoded request, and refuses the request with 413 as soon as it is spent: the
// memory one request holds is at most heldPerByte × its decoded size (plus
// heldFloor), whatever it contains.
//
// The multiples leave room for every valid request: a 1.0 series needs at least
// ~19 bytes (a __name__ label and a sample) and holds ~104 (5.5×); a 2.0 series
// needs 8 (a label pair of one-byte refs and a sample) and holds ~168 (21×), each
// further label 2 bytes for 32 (16×). Real requests hold 2–6× (1.0) and 6–10×
// (2.0).
const (
	heldPerByteV1 = 8
	heldPerByteV2 = 24
	// heldFloor lets tiny requests through whatever their shape.
	heldFloor = 64 << 10
)

// Bytes charged per value kept. A series also costs what the series loop keeps
// for it (seriesScratch.entries and .order).
const (
	heldSeries   = int(unsafe.Sizeof(series{})+unsafe.Sizeof(requestEntry{})) + 4
	heldLabel    = int(unsafe.Sizeof(prompb.Label{}))
	heldSample   = int(unsafe.Sizeof(prompb.Sample{}))
	heldTS       = int(unsafe.Sizeof(prompb.TimeSeries{}))
	heldMetadata = int(unsafe.Sizeof(prompb.MetricMetadata{})) + 48 // and its map entry
	heldRange    = int(unsafe.Sizeof([]byte(nil)))
	heldSymbol   = 4 // an offset into the request: see v2Decoder.symbols
)

// errBudget is how a decoder tells its caller that the budget is spent; the
// caller turns it into budget.err, which it can name better.
var errBudget = errors.New("memory budget of the request spent")

// budget counts the bytes a request's decoded values hold against its limit. The
// zero budget has no limit (decoding in tests).
type budget struct {
	held, limit int
	decoded     int // the decoded size the limit derives from, for the message
	perByte     int
}

func newBudget(decoded, perByte int) budget {
	return budget{limit: perByte*decoded + heldFloor, decoded: decoded, perByte: perByte}
}

// take charges n bytes and reports whether they fit.
func (b *budget) take(n int) bool {
	b.held += n
	return b.limit == 0 || b.held <= b.limit
}

// err is the 413 for a request that spent its budget on count values of what.
func (b *budget) err(what string, count int) error {
	return &statusError{status: http.StatusRequestEntityTooLarge, msg: fmt.Sprintf(
		"remote write request too large to hold: %d %s in %d decoded bytes need more than %d bytes of memory, the limit for this request (%d bytes per decoded byte + %d); send fewer, larger values per request or split it",
		count, what, b.decoded, b.limit, b.perByte, heldFloor)}
}

// A request with native histograms is decoded by lib/prompb, which expands each
// histogram into a _count, a _sum and a series per bucket, each with a copy of
// the series' labels and a vmrange label: its values grow with buckets × labels,
// not with the bytes that carry them. A real histogram of 20 buckets on a series
// of 10 labels holds ~50× its encoding, one of 160 buckets ~130×, so such
// requests get a larger multiple; what lib/prompb will hold is estimated before
// it runs (prompbHeld), so a request over it is refused before anything is
// allocated.
const heldPerByteHistograms = 256

// heldPerBucketSeries is what one series of an expanded histogram holds beyond
// its labels: the series, its sample and its name and vmrange strings.
const heldPerBucketSeries = heldTS + heldSeries + heldSample + 64

// prompbHeld is an upper bound of what lib/prompb's decoding of src holds, and
// of the series it gives. A field it cannot read ends the estimate: lib/prompb
// stops at the same field with an error.
func prompbHeld(src []byte) (held, series int) {
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			break
		}
		if f.num == 1 && f.wt == wtLen {
			h, n := timeseriesHeld(src[f.start:f.end])
			held, series = held+h, series+n
		}
		i = f.end
	}
	return held, series
}

func timeseriesHeld(msg []byte) (held, series int) {
	labels, samples, histograms, buckets := 0, 0, 0, 0
	for i := 0; i < len(msg); {
		f, err := nextField(msg, i)
		if err != nil {
			break
		}
		switch f.num {
		case 1:
			labels++
		case 2:
			samples++
		case 4:
			if f.wt == wtLen {
				histograms++
				buckets += histogramBuckets(msg[f.start:f.end])
			}
		}
		i = f.end
	}
	held = labels*heldLabel + samples*heldSample
	if samples > 0 {
		return held + heldTS + heldSeries, 1
	}
	// Each histogram: _count, _sum, the zero bucket and one series per bucket
	// value at most; its bucket values and spans are decoded first.
	series = 3*histograms + buckets
	return held + series*(heldPerBucketSeries+(labels+1)*heldLabel) + buckets*8, series
}

// histogramBuckets bounds the buckets of a native histogram message: bucket
// spans and deltas or counts, packed or not.
func histogramBuckets(msg []byte) int {
	n := 0
	for i := 0; i < len(msg); {
		f, err := nextField(msg, i)
		if err != nil {
			break
		}
		switch f.num {
		case 8, 11, 9, 12: // spans, sint64 deltas: at least one byte each
			if f.wt == wtLen && (f.num == 9 || f.num == 12) {
				for _, c := range msg[f.start:f.end] {
					if c < 0x80 {
						n++
					}
				}
			} else {
				n++
			}
		case 10, 13: // double counts
			if f.wt == wtLen {
				n += (f.end - f.start) / 8
			} else {
				n++
			}
		}
		i = f.end
	}
	return n
}
