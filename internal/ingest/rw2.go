package ingest

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/VictoriaMetrics/easyproto"
)

// Remote write 2.0 (io.prometheus.write.v2.Request) is converted to the 1.0
// WriteRequest the rest of the pipeline works on, and always forwarded re-encoded as
// 1.0: VictoriaMetrics reads a 2.0 body as an empty 1.0 request and answers 204, so
// the original bytes must never reach it.
//
// What converts and what does not:
//   - samples: one for one, stale markers bit-exact.
//   - metadata (per series in 2.0): one 1.0 MetricMetadata per metric family in the
//     request, the family named after the series' __name__ (without the
//     _bucket/_count/_sum suffix for histograms and summaries).
//   - native histograms: refused with 400. VictoriaMetrics stores them only as
//     converted bucket series, and a written-histograms count that matches what it
//     stores cannot be given; the message tells the operator to use 1.0 for them.
//   - exemplars: VictoriaMetrics does not store them (it skips them in 1.0 too), so
//     they are discarded and the answer says so: X-Prometheus-Remote-Write-Exemplars-Written
//     is 0 and Prometheus counts them in prometheus_remote_storage_exemplars_failed_total.
//     Refusing the request instead would lose the samples sent with them.
//   - created/start timestamps: ignored; VictoriaMetrics has nowhere to put them.

// Response headers a remote write 2.0 receiver must send with a 2xx; Prometheus
// reads a 2xx without them as "nothing written" and drops the batch.
const (
	headerSamplesWritten    = "X-Prometheus-Remote-Write-Samples-Written"
	headerHistogramsWritten = "X-Prometheus-Remote-Write-Histograms-Written"
	headerExemplarsWritten  = "X-Prometheus-Remote-Write-Exemplars-Written"
)

// setWritten sets the 2.0 written headers: samples is what VictoriaMetrics accepted;
// histograms and exemplars are never written (see above).
func setWritten(h http.Header, samples int) {
	h.Set(headerSamplesWritten, strconv.Itoa(samples))
	h.Set(headerHistogramsWritten, "0")
	h.Set(headerExemplarsWritten, "0")
}

// v2Decoder converts remote write 2.0 requests into 1.0 WriteRequests, reusing its
// slices from one request to the next. It is not safe for concurrent use: each
// writeCtx owns one.
type v2Decoder struct {
	wr prompb.WriteRequest
	// src is the request; symbols are the offsets in it of the symbols read so
	// far. Symbols are read only as far as a series refers to them (symbol), and
	// kept as 4-byte offsets rather than 16-byte strings: a request of millions
	// of empty symbols that nothing refers to holds nothing.
	src      []byte
	symbols  []uint32
	symRest  []byte // what is left of src to look for symbols in
	nsym     int    // symbols seen, kept or not
	refs     []uint32
	labels   []prompb.Label
	samples  []prompb.Sample
	families map[string]struct{}
	// exemplars counts the exemplars of the last request, which were discarded.
	exemplars int
	budget    budget
}

func (d *v2Decoder) reset() {
	d.wr.Reset()
	d.src, d.symRest = nil, nil
	d.symbols = d.symbols[:0]
	d.nsym = 0
	d.refs = d.refs[:0]
	clear(d.labels)
	d.labels = d.labels[:0]
	d.samples = d.samples[:0]
	clear(d.families)
	d.exemplars = 0
	d.budget = budget{}
}

// decode parses a 2.0 Request. The returned WriteRequest and every string in it
// point into src and into d: they are valid until the next decode or reset, and src
// must not change meanwhile. Errors are 400s naming what is wrong, or 413 when the
// request would hold more than its budget.
func (d *v2Decoder) decode(src []byte) (*prompb.WriteRequest, error) {
	d.reset()
	// message Request { repeated string symbols = 4; repeated TimeSeries timeseries = 5; }
	// protobuf allows the fields in any order, and every series refers to the
	// whole table: symbols are looked for in all of src as series need them.
	d.src, d.symRest = src, src
	d.budget = newBudget(len(src), heldPerByteV2)
	if err := d.readSymbols(1, true); err != nil {
		return nil, err
	}
	if len(d.symbols) > 0 && d.symbolAt(0) != "" {
		return nil, errorf(http.StatusBadRequest, "invalid remote write 2.0 request: symbols[0] must be the empty string, got %q", truncate(d.symbolAt(0), 64))
	}
	var fc easyproto.FieldContext
	var err error
	n := 0
	for rest := src; len(rest) > 0; {
		if rest, err = fc.NextField(rest); err != nil {
			return nil, errorf(http.StatusBadRequest, "cannot parse remote write 2.0 request: %v", err)
		}
		if fc.FieldNum != 5 {
			continue
		}
		data, ok := fc.MessageData()
		if !ok {
			return nil, errorf(http.StatusBadRequest, "cannot parse remote write 2.0 request: timeseries[%d] is not a message", n)
		}
		if err := d.decodeSeries(data, n); err != nil {
			return nil, err
		}
		n++
	}
	// The symbols no series refers to are not kept, but checked all the same.
	if err := d.readSymbols(0, false); err != nil {
		return nil, err
	}
	return &d.wr, nil
}

// readSymbols reads on in symRest until d has n symbols, or to the end when keep
// is false, keeping what it reads only when keep is true.
func (d *v2Decoder) readSymbols(n int, keep bool) error {
	var fc easyproto.FieldContext
	var err error
	for len(d.symRest) > 0 && (!keep || len(d.symbols) < n) {
		off := len(d.src) - len(d.symRest)
		if d.symRest, err = fc.NextField(d.symRest); err != nil {
			return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 request: %v", err)
		}
		if fc.FieldNum != 4 {
			continue
		}
		if _, ok := fc.String(); !ok {
			return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 request: symbols[%d] is not a string", d.nsym)
		}
		d.nsym++
		if !keep {
			continue
		}
		if !d.budget.take(heldSymbol) {
			return d.budget.err("symbols", d.nsym)
		}
		d.symbols = append(d.symbols, uint32(off))
	}
	return nil
}

// symbolAt is the k-th symbol read.
func (d *v2Decoder) symbolAt(k int) string {
	off, src := int(d.symbols[k]), d.src
	// Nearly every symbol: a one-byte key and length (checked by readSymbols).
	if src[off] == 4<<3|wtLen && src[off+1] < 0x80 {
		return bytesString(src[off+2 : off+2+int(src[off+1])])
	}
	f, _ := nextField(src, off)
	return bytesString(src[f.start:f.end])
}

// decodeSeries decodes timeseries[i] and appends it, and its metadata, to d.wr.
func (d *v2Decoder) decodeSeries(src []byte, i int) error {
	// message TimeSeries {
	//   repeated uint32 labels_refs = 1; repeated Sample samples = 2;
	//   repeated Histogram histograms = 3; repeated Exemplar exemplars = 4;
	//   Metadata metadata = 5; }
	d.refs = d.refs[:0]
	samplesStart := len(d.samples)
	var md []byte
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d]: %v", i, err)
		}
		switch fc.FieldNum {
		case 1:
			// Packed refs are at least a byte each: make room for as many
			// before unpacking them.
			if data, ok := fc.MessageData(); ok {
				if grow := len(d.refs) + len(data) - cap(d.refs); grow > 0 && !d.budget.take(4*grow) {
					return d.budget.err("label references", len(d.refs)+len(data))
				}
			}
			var ok bool
			if d.refs, ok = fc.UnpackUint32s(d.refs); !ok {
				return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d]: bad labels_refs", i)
			}
		case 2:
			data, ok := fc.MessageData()
			if !ok {
				return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d]: sample is not a message", i)
			}
			s, err := decodeV2Sample(data)
			if err != nil {
				return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d] sample: %v", i, err)
			}
			if !d.budget.take(heldSample) {
				return d.budget.err("samples", len(d.samples)+1)
			}
			d.samples = append(d.samples, s)
		case 3:
			return errorf(http.StatusBadRequest, "remote write 2.0 native histograms are not supported; send them with remote write 1.0 (timeseries[%d] has one)", i)
		case 4:
			d.exemplars++
		case 5:
			data, ok := fc.MessageData()
			if !ok {
				return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d]: metadata is not a message", i)
			}
			md = data
		}
	}
	if len(d.refs)%2 != 0 {
		return errorf(http.StatusBadRequest, "invalid remote write 2.0 timeseries[%d]: odd number of labels_refs (%d): they must be name/value pairs", i, len(d.refs))
	}
	labelsStart := len(d.labels)
	name := ""
	for j := 0; j < len(d.refs); j += 2 {
		ln, err := d.symbol(d.refs[j], i)
		if err != nil {
			return err
		}
		lv, err := d.symbol(d.refs[j+1], i)
		if err != nil {
			return err
		}
		if ln == "__name__" {
			name = lv
		}
		d.labels = append(d.labels, prompb.Label{Name: ln, Value: lv})
	}
	if md != nil {
		if err := d.appendMetadata(md, name, i); err != nil {
			return err
		}
	}
	if len(d.samples) == samplesStart {
		// Like VictoriaMetrics' own 1.0 decoder: a series without samples writes
		// nothing. Its labels were checked all the same.
		d.labels = d.labels[:labelsStart]
		return nil
	}
	if !d.budget.take(len(d.refs)/2*heldLabel + heldTS + heldSeries) {
		return d.budget.err("series and labels", len(d.wr.Timeseries)+1)
	}
	// Full slice expressions: a stage that appends to one series' labels must not
	// overwrite the next series' labels in the shared pool.
	d.wr.Timeseries = append(d.wr.Timeseries, prompb.TimeSeries{
		Labels:  d.labels[labelsStart:len(d.labels):len(d.labels)],
		Samples: d.samples[samplesStart:len(d.samples):len(d.samples)],
	})
	return nil
}

func (d *v2Decoder) symbol(ref uint32, i int) (string, error) {
	if int64(ref) >= int64(len(d.symbols)) {
		if err := d.readSymbols(int(ref)+1, true); err != nil {
			return "", err
		}
		if int64(ref) >= int64(len(d.symbols)) {
			return "", errorf(http.StatusBadRequest, "invalid remote write 2.0 timeseries[%d]: symbol reference %d out of range: the request has %d symbols", i, ref, d.nsym)
		}
	}
	return d.symbolAt(int(ref)), nil
}

// decodeV2Sample decodes message Sample { double value = 1; int64 timestamp = 2;
// int64 start_timestamp = 3; }; the start timestamp has no place in 1.0.
func decodeV2Sample(src []byte) (prompb.Sample, error) {
	var s prompb.Sample
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return s, err
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			if s.Value, ok = fc.Double(); !ok {
				return s, errorf(http.StatusBadRequest, "value is not a double")
			}
		case 2:
			if s.Timestamp, ok = fc.Int64(); !ok {
				return s, errorf(http.StatusBadRequest, "timestamp is not an int64")
			}
		}
	}
	return s, nil
}

// appendMetadata converts message Metadata { MetricType type = 1; uint32 help_ref = 3;
// uint32 unit_ref = 4; } of a series named name into one 1.0 MetricMetadata per
// metric family: 2.0 repeats the same metadata on every series of a family.
func (d *v2Decoder) appendMetadata(src []byte, name string, i int) error {
	var typ, helpRef, unitRef uint32
	var fc easyproto.FieldContext
	var err error
	for len(src) > 0 {
		if src, err = fc.NextField(src); err != nil {
			return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d] metadata: %v", i, err)
		}
		var ok bool
		switch fc.FieldNum {
		case 1:
			var e int32
			if e, ok = fc.Enum(); ok && e >= 0 {
				typ = uint32(e)
			}
		case 3:
			helpRef, ok = fc.Uint32()
		case 4:
			unitRef, ok = fc.Uint32()
		default:
			ok = true
		}
		if !ok {
			return errorf(http.StatusBadRequest, "cannot parse remote write 2.0 timeseries[%d] metadata: field %d has the wrong type", i, fc.FieldNum)
		}
	}
	help, err := d.symbol(helpRef, i)
	if err != nil {
		return err
	}
	unit, err := d.symbol(unitRef, i)
	if err != nil {
		return err
	}
	mt := prompb.MetricType(typ)
	if mt > prompb.MetricTypeStateset {
		mt = prompb.MetricTypeUnknown
	}
	if name == "" || (mt == prompb.MetricTypeUnknown && help == "" && unit == "") {
		return nil
	}
	family := metricFamily(name, mt)
	if _, ok := d.families[family]; ok {
		return nil
	}
	if d.families == nil {
		d.families = make(map[string]struct{})
	}
	// The key points into the request buffer: reset clears the map before that
	// buffer is reused.
	if !d.budget.take(heldMetadata) {
		return d.budget.err("metric families with metadata", len(d.families)+1)
	}
	d.families[family] = struct{}{}
	d.wr.Metadata = append(d.wr.Metadata, prompb.MetricMetadata{
		Type:             mt,
		MetricFamilyName: family,
		Help:             help,
		Unit:             unit,
	})
	return nil
}

// metricFamily names the family a series belongs to, as 1.0 metadata does: the
// _bucket, _count and _sum series of a histogram or summary share their family's
// metadata.
func metricFamily(name string, mt prompb.MetricType) string {
	switch mt {
	case prompb.MetricTypeHistogram, prompb.MetricTypeGaugeHistogram, prompb.MetricTypeSummary:
		for _, suffix := range [...]string{"_bucket", "_count", "_sum"} {
			if f, ok := strings.CutSuffix(name, suffix); ok && f != "" {
				return f
			}
		}
	}
	return name
}
