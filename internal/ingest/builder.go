package ingest

import (
	"net/http"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
)

// Builder is where the decoder of a protocol other than remote write puts what
// it decoded: series of labels and samples, as remote write 1.0 has them, which
// then enter the pipeline the way converted remote write 2.0 does. It applies
// the label rules VictoriaMetrics' ingestion applies to every protocol
// (app/vminsert/common.InsertCtx and lib/storage.MetricName): a label without a
// value is no label, the name "" is __name__, and of two labels with one name
// the last wins (which is how extra_label overrides a label of the data).
//
// Strings given to it may point into the request body, which it keeps as they
// are, or anywhere else (a parser's reused buffers), which it copies. What it
// holds counts against the request's budget: a request over it is a 413.
//
// A Builder is owned by one request and is not safe for concurrent use.
type Builder struct {
	body    []byte
	now     int64
	extra   []prompb.Label
	labels  []prompb.Label
	samples []prompb.Sample
	spans   []span
	meta    []prompb.MetricMetadata
	blocks  [][]byte // copied strings; the last is being filled
	cur     span
	open    bool
	budget  budget
	wr      prompb.WriteRequest
}

// span is where a series' labels and samples are in Builder.labels and .samples.
type span struct{ l0, l1, s0, s1 int32 }

// heldPerByteProtocol bounds what a request of another protocol may make
// cardguard hold, per decoded byte. Text formats are dense: "a 1\n" is a series
// of one label and a sample in 4 bytes, held in ~220; an OTLP data point of a
// few bytes repeats every attribute of its resource and scope. Real requests
// hold 5–20×; a request over the budget is refused with 413.
const heldPerByteProtocol = 64

// blockSize is the size of the blocks copied strings are kept in.
const blockSize = 64 << 10

// Reset makes b ready for a request whose decoded body is body, received at
// now (milliseconds). ServeProtocol does it; tests and benchmarks of decoders
// call it themselves.
func (b *Builder) Reset(body []byte, now int64) {
	b.body, b.now = body, now
	b.extra = b.extra[:0]
	b.labels = b.labels[:0]
	b.samples = b.samples[:0]
	b.spans = b.spans[:0]
	b.meta = b.meta[:0]
	for i := range b.blocks {
		b.blocks[i] = b.blocks[i][:0]
	}
	if len(b.blocks) > 1 {
		b.blocks = b.blocks[:1]
	}
	b.open = false
	b.budget = newBudget(len(body), heldPerByteProtocol)
	b.wr.Reset()
}

// release drops everything b holds.
func (b *Builder) release() { *b = Builder{} }

// Now is the time of the request in milliseconds, for samples without a
// timestamp (VictoriaMetrics gives them the time they arrive).
func (b *Builder) Now() int64 { return b.now }

// Extra adds a label to every series that ends after it (extra_label).
func (b *Builder) Extra(name, value string) {
	if value == "" {
		return
	}
	b.extra = append(b.extra, prompb.Label{Name: b.keep(name), Value: b.keep(value)})
}

// Begin starts a series.
func (b *Builder) Begin() {
	n, s := int32(len(b.labels)), int32(len(b.samples))
	b.cur = span{l0: n, l1: n, s0: s, s1: s}
	b.open = true
}

// Label adds a label to the series begun last.
func (b *Builder) Label(name, value string) {
	if value == "" {
		return
	}
	if name == "" {
		name = "__name__"
	}
	b.labels = append(b.labels, prompb.Label{Name: b.keep(name), Value: b.keep(value)})
}

// Sample adds a sample, timestamp in milliseconds, to the series begun last.
func (b *Builder) Sample(timestamp int64, value float64) {
	b.samples = append(b.samples, prompb.Sample{Timestamp: timestamp, Value: value})
}

// End ends the series begun last. A series without labels or samples is
// skipped, as VictoriaMetrics skips it.
func (b *Builder) End() error {
	if !b.open {
		return nil
	}
	b.open = false
	b.labels = append(b.labels, b.extra...)
	c := b.cur
	c.l1, c.s1 = int32(len(b.labels)), int32(len(b.samples))
	ls := b.labels[c.l0:c.l1]
	if len(ls) == len(b.extra) || c.s1 == c.s0 {
		b.labels, b.samples = b.labels[:c.l0], b.samples[:c.s0]
		return nil
	}
	if !b.budget.take(heldTS + heldSeries + len(ls)*heldLabel + int(c.s1-c.s0)*heldSample) {
		return b.budget.err("series", len(b.spans)+1)
	}
	sortLabels(ls) // stable: of duplicates, the last one stays last
	if n := dedupLast(ls); n < len(ls) {
		b.labels = b.labels[:int(c.l0)+n]
		c.l1 = int32(len(b.labels))
	}
	b.spans = append(b.spans, c)
	return nil
}

// dedupLast removes from sorted ls every label followed by one of the same
// name, and returns how many are left.
func dedupLast(ls []prompb.Label) int {
	k := 0
	for i := range ls {
		if i+1 < len(ls) && ls[i+1].Name == ls[i].Name {
			continue
		}
		ls[k] = ls[i]
		k++
	}
	return k
}

// Metadata adds the metadata of a metric family.
func (b *Builder) Metadata(family, help, unit string, typ prompb.MetricType) error {
	if !b.budget.take(heldMetadata) {
		return b.budget.err("metadata entries", len(b.meta)+1)
	}
	b.meta = append(b.meta, prompb.MetricMetadata{
		MetricFamilyName: b.keep(family), Help: b.keep(help), Unit: b.keep(unit), Type: typ,
	})
	return nil
}

// Series is the number of series ended so far.
func (b *Builder) Series() int { return len(b.spans) }

// Samples is the number of samples of the series ended so far.
func (b *Builder) Samples() int {
	if len(b.spans) == 0 {
		return 0
	}
	return int(b.spans[len(b.spans)-1].s1)
}

// keep returns s as it can be kept for the request: as it is when it points
// into the body, else copied.
func (b *Builder) keep(s string) string {
	if s == "" {
		return ""
	}
	p := uintptr(unsafe.Pointer(unsafe.StringData(s)))
	if len(b.body) > 0 {
		start := uintptr(unsafe.Pointer(&b.body[0]))
		if p >= start && p+uintptr(len(s)) <= start+uintptr(len(b.body)) {
			return s
		}
	}
	var blk []byte
	if n := len(b.blocks); n > 0 {
		blk = b.blocks[n-1]
	}
	if cap(blk)-len(blk) < len(s) {
		size := max(blockSize, len(s))
		// A string that does not fit is charged with its block; the budget
		// fails on the next series at the latest.
		b.budget.take(size)
		blk = make([]byte, 0, size)
		b.blocks = append(b.blocks, blk)
	}
	n := len(blk)
	blk = append(blk, s...)
	b.blocks[len(b.blocks)-1] = blk
	return bytesString(blk[n:])
}

// writeRequest is what was built, as a WriteRequest that points into b.
func (b *Builder) writeRequest() (*prompb.WriteRequest, error) {
	if b.open {
		if err := b.End(); err != nil {
			return nil, err
		}
	}
	tss := b.wr.Timeseries[:0]
	for _, c := range b.spans {
		tss = append(tss, prompb.TimeSeries{Labels: b.labels[c.l0:c.l1:c.l1], Samples: b.samples[c.s0:c.s1:c.s1]})
	}
	b.wr.Timeseries = tss
	b.wr.Metadata = b.meta
	return &b.wr, nil
}

// decodeError is how Decode errors that are not a *statusError are answered.
func decodeError(protocol string, err error) error {
	var se *statusError
	if asStatus(err, &se) {
		return err
	}
	return errorf(http.StatusBadRequest, "cannot parse %s request: %s", protocol, truncate(err.Error(), 1024))
}
