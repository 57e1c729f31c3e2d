package ingest

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"net/http"
	"slices"
	"unsafe"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/klauspost/compress/s2"
)

// A remote-write 1.0 request is scanned rather than decoded: samples are checked
// and counted but not copied, everything is remembered as byte ranges, and the
// labels of a series are read only when something needs them (parseLabels; as
// strings aliasing the decompressed request, the way lib/prompb reads them).
// When some series were dropped or rewritten, the request is encoded again by
// splicing: kept series are copied as they came, and a rewritten series gets its
// new labels followed by its other fields (samples, exemplars) copied as they
// came. Nothing is decoded into values that are encoded again, which is what
// decoding with lib/prompb and marshalling its WriteRequest cost, and fields
// lib/prompb does not keep (exemplars, fields of later versions) survive a
// rewrite.
//
// A request with native histograms is left to lib/prompb (see handler.go): it
// expands each histogram into several series, which no longer map to one series
// of the request.

// series is one series as the stages see it: 72 bytes.
type series struct {
	Labels []prompb.Label
	// raw is the series' field as received (key, length, message) and msg the
	// offset of the message in it; rest is the offset in raw of the first field
	// after the labels when all labels come first (as every client writes them),
	// or 0. Unset for a request decoded by lib/prompb.
	raw       []byte
	msg, rest uint32
	// mask: see out.
	mask uint32
	// idx is the series' index in batch.wr when the request was decoded by
	// lib/prompb or converted from 2.0.
	idx     int32
	Samples int32
	// out says how the series is encoded when the request is: as received, with
	// Labels, or as received without the label fields whose bit is set in mask
	// (by position in raw; only when all labels come first).
	out uint8
	// parsed: Labels were read (see parseLabels).
	parsed bool
}

// How a series is encoded again.
const (
	outRaw uint8 = iota
	outLabels
	outMasked
)

// batch is a decoded request: the series the stages run over, and what encoding
// it again needs.
type batch struct {
	series []series
	// From a scan: the fields of the request that are not series (metadata, and
	// fields this version does not know), in order, as byte ranges of the request.
	// Fields that follow each other are one range: a request of millions of tiny
	// unknown fields costs one entry, not one each (see budget).
	others   [][]byte
	metadata int // metadata entries
	arena    []prompb.Label
	owners   []int32 // scratch of route: the peer of each series, -1 for this replica
	// extra are encoded series that other replicas decided (see route),
	// forwarded after b's own.
	extra [][]byte
	// wr is set when the request was decoded by lib/prompb (native histograms) or
	// converted from 2.0; it is encoded from wr then.
	wr *prompb.WriteRequest
	// budget bounds what scan and parseLabels keep.
	budget budget
}

// reset empties b for the next request. What b holds points into the
// decompressed request of the same pooled context, which stays allocated anyway,
// so it is not cleared (release does, when the context lets that buffer go).
func (b *batch) reset() {
	b.series = b.series[:0]
	b.others = b.others[:0]
	b.metadata = 0
	b.arena = b.arena[:0]
	clear(b.extra) // other requests' buffers
	b.extra = b.extra[:0]
	b.wr = nil
	b.budget = budget{}
}

// release drops b's memory and with it every reference into the request's
// buffers.
func (b *batch) release() { *b = batch{} }

// fromWriteRequest fills b with the series of a decoded request.
func (b *batch) fromWriteRequest(wr *prompb.WriteRequest) {
	b.reset()
	b.wr = wr
	b.metadata = len(wr.Metadata)
	for i := range wr.Timeseries {
		ts := &wr.Timeseries[i]
		b.series = append(b.series, series{Labels: ts.Labels, Samples: int32(len(ts.Samples)), idx: int32(i), parsed: true})
	}
}

func parseError(format string, args ...any) error {
	return errorf(http.StatusBadRequest, "cannot parse remote write request: "+format, args...)
}

// field is one protobuf field: its number, wire type, and where its value
// starts and ends (for a length-delimited field, its data; for the others, the
// encoded value).
type field struct {
	num        uint64
	wt         uint8
	start, end int
}

const (
	wtVarint = 0
	wtI64    = 1
	wtLen    = 2
	wtI32    = 5
)

// nextField reads the field at b[i:], accepting what easyproto (lib/prompb's
// reader) accepts.
func nextField(b []byte, i int) (field, error) {
	// Fast path: a length-delimited field with a one-byte key and a length of
	// one or two bytes (up to 16 KiB), as nearly every field of a request is.
	if i+2 < len(b) && b[i] < 0x80 && b[i]&7 == wtLen {
		l, n := int(b[i+1]), 2
		if l >= 0x80 {
			if b[i+2] >= 0x80 {
				return nextFieldSlow(b, i)
			}
			l, n = l&0x7f|int(b[i+2])<<7, 3
		}
		if end := i + n + l; end <= len(b) {
			return field{num: uint64(b[i] >> 3), wt: wtLen, start: i + n, end: end}, nil
		}
	}
	return nextFieldSlow(b, i)
}

func nextFieldSlow(b []byte, i int) (field, error) {
	var f field
	key, n := uvarint(b[i:])
	if n <= 0 {
		return f, fmt.Errorf("cannot read field key at offset %d", i)
	}
	i += n
	f.num, f.wt = key>>3, uint8(key&7)
	if f.num > math.MaxUint32 {
		return f, fmt.Errorf("field number %d out of range", f.num)
	}
	switch f.wt {
	case wtLen:
		l, n := uvarint(b[i:])
		if n <= 0 {
			return f, fmt.Errorf("cannot read length of field #%d", f.num)
		}
		i += n
		if l > uint64(len(b)-i) {
			return f, fmt.Errorf("field #%d needs %d bytes, %d left", f.num, l, len(b)-i)
		}
		f.start, f.end = i, i+int(l)
	case wtVarint:
		_, n := uvarint(b[i:])
		if n <= 0 {
			return f, fmt.Errorf("cannot read varint of field #%d", f.num)
		}
		f.start, f.end = i, i+n
	case wtI64:
		if len(b)-i < 8 {
			return f, fmt.Errorf("cannot read 8 bytes of field #%d", f.num)
		}
		f.start, f.end = i, i+8
	case wtI32:
		if len(b)-i < 4 {
			return f, fmt.Errorf("cannot read 4 bytes of field #%d", f.num)
		}
		f.start, f.end = i, i+4
	default:
		return f, fmt.Errorf("unsupported wire type %d of field #%d", f.wt, f.num)
	}
	return f, nil
}

func uvarint(b []byte) (uint64, int) {
	if len(b) > 0 && b[0] < 0x80 {
		return uint64(b[0]), 1
	}
	return binary.Uvarint(b)
}

// scan reads a remote-write 1.0 request into b. It accepts and refuses what
// lib/prompb does; histograms reports a series with native histograms, in which
// case b is unusable and the request must be decoded by lib/prompb.
func (b *batch) scan(src []byte) (histograms bool, err error) {
	b.reset()
	b.budget = newBudget(len(src), heldPerByteV1)
	otherEnd := -1 // where the last range of others ends in src
	addOther := func(i, end int) bool {
		if n := len(b.others); n > 0 && otherEnd == i {
			b.others[n-1] = b.others[n-1][:len(b.others[n-1])+end-i]
		} else {
			if !b.budget.take(heldRange) {
				return false
			}
			b.others = append(b.others, src[i:end])
		}
		otherEnd = end
		return true
	}
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			return false, parseError("%v", err)
		}
		switch f.num {
		case 1:
			if f.wt != wtLen {
				return false, parseError("cannot read timeseries data")
			}
			n := len(b.series)
			hist, err := b.scanSeries(src[i:f.end], f.start-i)
			if err != nil {
				return false, parseError("cannot unmarshal timeseries: %v", err)
			}
			if hist {
				return true, nil
			}
			if len(b.series) > n && !b.budget.take(heldSeries) {
				return false, b.budget.err("series", len(b.series))
			}
		case 3:
			if f.wt != wtLen {
				return false, parseError("cannot read metricMetadata data")
			}
			if err := checkMetadata(src[f.start:f.end]); err != nil {
				return false, parseError("cannot unmarshal metricMetadata: %v", err)
			}
			b.metadata++
			if !addOther(i, f.end) {
				return false, b.budget.err("ranges of metadata and unknown fields", len(b.others)+1)
			}
		default:
			if !addOther(i, f.end) {
				return false, b.budget.err("ranges of metadata and unknown fields", len(b.others)+1)
			}
		}
		i = f.end
	}
	return false, nil
}

// scanSeries reads one TimeSeries field (raw: key, length, message starting at
// msg) and appends it to b unless it has no samples (lib/prompb skips those).
func (b *batch) scanSeries(raw []byte, msg int) (histograms bool, err error) {
	samples, rest := 0, 0
	labelsFirst := true
	for i := msg; i < len(raw); {
		// Fast path: labels and samples shorter than 128 bytes, one-byte key and
		// length, which is nearly every field of every real request.
		if i+1 < len(raw) && raw[i+1] < 0x80 && i+2+int(raw[i+1]) <= len(raw) {
			data := raw[i+2 : i+2+int(raw[i+1])]
			switch raw[i] {
			case 1<<3 | wtLen:
				if !labelsFirst {
					rest = 0
				}
				i += 2 + len(data)
				continue
			case 2<<3 | wtLen:
				if !isPlainSample(data) {
					if err := checkSample(data); err != nil {
						return false, fmt.Errorf("cannot unmarshal sample: %v", err)
					}
				}
				samples++
				if labelsFirst {
					labelsFirst, rest = false, i
				}
				i += 2 + len(data)
				continue
			}
		}
		f, err := nextField(raw, i)
		if err != nil {
			return false, err
		}
		switch f.num {
		case 1:
			if f.wt != wtLen {
				return false, fmt.Errorf("cannot read label data")
			}
			if !labelsFirst {
				rest = 0
			}
		case 2:
			if f.wt != wtLen {
				return false, fmt.Errorf("cannot read sample data")
			}
			if err := checkSample(raw[f.start:f.end]); err != nil {
				return false, fmt.Errorf("cannot unmarshal sample: %v", err)
			}
			samples++
		case 4:
			if f.wt != wtLen {
				return false, fmt.Errorf("cannot read native histogram data")
			}
			return true, nil
		}
		if f.num != 1 && labelsFirst {
			labelsFirst, rest = false, i
		}
		i = f.end
	}
	if samples == 0 {
		// lib/prompb skips the series, after reading its labels: check them
		// without keeping them.
		return false, checkLabels(raw, msg, len(raw))
	}
	if labelsFirst {
		rest = len(raw)
	}
	b.series = append(b.series, series{
		Samples: int32(samples),
		raw:     raw,
		msg:     uint32(msg),
		rest:    uint32(rest),
	})
	return false, nil
}

// parseLabels reads the labels of a scanned series, once: a series the cache
// knows and whose decisions all hold is forwarded without its labels ever
// being read. This is also where a malformed label is found, with the error
// lib/prompb would give for it.
func (b *batch) parseLabels(s *series) error {
	if s.parsed {
		return nil
	}
	end := len(s.raw)
	if s.rest != 0 {
		end = int(s.rest)
	}
	start := len(b.arena)
	var err error
	if b.arena, err = readLabels(b.arena, s.raw, int(s.msg), end, &b.budget); err != nil {
		b.arena = b.arena[:start]
		if err == errBudget {
			return b.budget.err("labels", start+1)
		}
		return parseError("cannot unmarshal timeseries: %v", err)
	}
	s.Labels, s.parsed = b.arena[start:len(b.arena):len(b.arena)], true
	return nil
}

// readLabels appends the labels among the fields raw[from:to] (checked by scan)
// to dst, charging each to bud: errBudget when it is spent.
func readLabels(dst []prompb.Label, raw []byte, from, to int, bud *budget) ([]prompb.Label, error) {
	for i := from; i < to; {
		f, _ := nextField(raw, i)
		if f.num == 1 {
			if !bud.take(heldLabel) {
				return dst, errBudget
			}
			l, err := scanLabel(raw[f.start:f.end])
			if err != nil {
				return dst, fmt.Errorf("cannot unmarshal label: %v", err)
			}
			dst = append(dst, l)
		}
		i = f.end
	}
	return dst, nil
}

// checkLabels is readLabels for labels that are not kept.
func checkLabels(raw []byte, from, to int) error {
	for i := from; i < to; {
		f, _ := nextField(raw, i)
		if f.num == 1 {
			if _, err := scanLabel(raw[f.start:f.end]); err != nil {
				return fmt.Errorf("cannot unmarshal label: %v", err)
			}
		}
		i = f.end
	}
	return nil
}

func scanLabel(src []byte) (prompb.Label, error) {
	// Fast path: name then value, each shorter than 128 bytes.
	if len(src) >= 4 && src[0] == 1<<3|wtLen && src[1] < 0x80 {
		n := 2 + int(src[1])
		if n+2 <= len(src) && src[n] == 2<<3|wtLen && src[n+1] < 0x80 && n+2+int(src[n+1]) == len(src) {
			return prompb.Label{Name: bytesString(src[2:n]), Value: bytesString(src[n+2:])}, nil
		}
	}
	var l prompb.Label
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			return l, err
		}
		switch f.num {
		case 1:
			if f.wt != wtLen {
				return l, fmt.Errorf("cannot read label name")
			}
			l.Name = bytesString(src[f.start:f.end])
		case 2:
			if f.wt != wtLen {
				return l, fmt.Errorf("cannot read label value")
			}
			l.Value = bytesString(src[f.start:f.end])
		}
		i = f.end
	}
	return l, nil
}

// isPlainSample reports a sample written as every client writes it: value, then
// a timestamp varint that ends the message.
func isPlainSample(src []byte) bool {
	if len(src) < 11 || src[0] != 1<<3|wtI64 || src[9] != 2<<3|wtVarint {
		return false
	}
	_, n := uvarint(src[10:])
	return n > 0 && 10+n == len(src)
}

func checkSample(src []byte) error {
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			return err
		}
		switch {
		case f.num == 1 && f.wt != wtI64:
			return fmt.Errorf("cannot read sample value")
		case f.num == 2 && f.wt != wtVarint:
			return fmt.Errorf("cannot read sample timestamp")
		}
		i = f.end
	}
	return nil
}

func checkMetadata(src []byte) error {
	for i := 0; i < len(src); {
		f, err := nextField(src, i)
		if err != nil {
			return err
		}
		switch f.num {
		case 1, 11, 12:
			if v, _ := uvarint(src[f.start:f.end]); f.wt != wtVarint || v > math.MaxUint32 {
				return fmt.Errorf("cannot read uint32 field #%d", f.num)
			}
		case 2, 4, 5:
			if f.wt != wtLen {
				return fmt.Errorf("cannot read string field #%d", f.num)
			}
		}
		i = f.end
	}
	return nil
}

// bytesString aliases b, which must not change while the string is in use (the
// decompressed request does not change until the request is done).
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// append appends s's field as it is to be forwarded.
func (s *series) append(dst []byte) []byte {
	switch s.out {
	case outRaw:
		return append(dst, s.raw...)
	case outMasked:
		return s.appendMasked(dst)
	}
	n := labelsSize(s.Labels)
	if s.rest != 0 {
		n += len(s.raw) - int(s.rest)
	} else {
		n += s.otherFieldsSize()
	}
	dst = append(dst, 1<<3|wtLen)
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = appendLabels(dst, s.Labels)
	if s.rest != 0 {
		return append(dst, s.raw[s.rest:]...)
	}
	return s.appendOtherFields(dst)
}

// snappyBlock is the most of the encoded request compressed in one piece: the
// largest block s2's encoders are documented for. A request is compressed whole
// (most are far smaller), so that the encoder finds the repeats that lie far apart
// in it, such as the labels every series of one target or one metric shares: on
// the requests of the benchmark's load generator, compressing in 64 KiB pieces
// instead took a third longer and came out 28% larger (BenchmarkSnappyEncode).
const snappyBlock = 4 << 20

// appendSnappy appends the request with its current series, compressed in the
// snappy block format, to dst: series that were not rewritten as they came,
// rewritten ones with their new labels and their other fields as they came, then
// the request's other fields. buf is scratch space for the encoded request, up to
// snappyBlock bytes of it at a time.
func (b *batch) appendSnappy(dst []byte, buf *[]byte) []byte {
	return b.appendSnappyBlocks(dst, buf, snappyBlock)
}

// appendSnappyBlocks is appendSnappy compressing at most block bytes at a time. A
// snappy block is a sequence of elements whose copies may refer to anything
// before them, so compressing pieces one after the other, cut anywhere, gives a
// valid block.
func (b *batch) appendSnappyBlocks(dst []byte, buf *[]byte, block int) []byte {
	const hdr = binary.MaxVarintLen32 // room for the block header: at most 4 GiB
	start := len(dst)
	dst = append(dst, make([]byte, hdr)...)
	c, total := (*buf)[:0], 0
	// flush compresses the whole blocks in c, or all of c when final, and moves
	// what is left to its start.
	flush := func(final bool) {
		n := 0
		for len(c)-n >= block || (final && n < len(c)) {
			m := min(block, len(c)-n)
			dst = appendSnappyElements(dst, c[n:n+m])
			n += m
		}
		total += n
		c = c[:copy(c, c[n:])]
	}
	if b.wr != nil {
		c = b.marshalDecoded(c)
	} else {
		for i := range b.series {
			if c = b.series[i].append(c); len(c) >= block {
				flush(false)
			}
		}
		for _, x := range b.extra {
			if c = append(c, x...); len(c) >= block {
				flush(false)
			}
		}
		for _, o := range b.others {
			if c = append(c, o...); len(c) >= block {
				flush(false)
			}
		}
	}
	flush(true)
	*buf = c
	// The header is the total length; what follows moves up to meet it.
	n := binary.PutUvarint(dst[start:], uint64(total))
	m := copy(dst[start+n:], dst[start+hdr:])
	return dst[:start+n+m]
}

// appendSeries appends b's current series, encoded as remote-write 1.0 series
// fields (what an owner answers for a part it decided).
func (b *batch) appendSeries(dst []byte) []byte {
	for i := range b.series {
		dst = b.series[i].append(dst)
	}
	return dst
}

// appendSnappyBlock appends src compressed as one snappy block to dst, in
// pieces of snappyBlock bytes (see appendSnappyBlocks).
func appendSnappyBlock(dst, src []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(src)))
	for len(src) > 0 {
		n := min(len(src), snappyBlock)
		dst = appendSnappyElements(dst, src[:n])
		src = src[n:]
	}
	return dst
}

// appendSnappyElements appends the snappy elements of src, without a block
// header, to dst.
func appendSnappyElements(dst, src []byte) []byte {
	if len(src) == 0 {
		return dst
	}
	need := s2.MaxEncodedLen(len(src))
	dst = slices.Grow(dst, need)
	// s2 writes the snappy block format, faster and smaller than
	// github.com/golang/snappy (BenchmarkSnappyEncode).
	enc := s2.EncodeSnappy(dst[len(dst):len(dst)+need], src)
	h := varintSize(uint64(len(src)))
	n := copy(enc, enc[h:])
	return dst[:len(dst)+n]
}

// appendMasked appends s without the label fields masked out: the label fields
// come first (s.rest != 0) and were checked by scan. What is kept is copied in
// runs between the removed fields.
func (s *series) appendMasked(dst []byte) []byte {
	raw := s.raw
	var ends [32]int // end of each label field, up to the last one removed
	n, last := 0, bits.Len32(s.mask)
	for i := int(s.msg); i < int(s.rest) && n < last; n++ {
		if l := raw[i+1]; l < 0x80 {
			i += 2 + int(l)
		} else {
			f, _ := nextField(raw, i)
			i = f.end
		}
		ends[n] = i
	}
	start := func(j int) int {
		if j == 0 {
			return int(s.msg)
		}
		return ends[j-1]
	}
	m := s.mask
	if n < 32 {
		m &= 1<<n - 1
	}
	removed := 0
	for r := m; r != 0; r &= r - 1 {
		j := bits.TrailingZeros32(r)
		removed += ends[j] - start(j)
	}
	dst = append(dst, 1<<3|wtLen)
	dst = binary.AppendUvarint(dst, uint64(len(raw)-int(s.msg)-removed))
	from := int(s.msg)
	for r := m; r != 0; r &= r - 1 {
		j := bits.TrailingZeros32(r)
		dst = append(dst, raw[from:start(j)]...)
		from = ends[j]
	}
	return append(dst, raw[from:]...)
}

// otherFieldsSize is the size of the fields of s that are not labels; the
// message was checked by scan.
func (s *series) otherFieldsSize() int {
	n := 0
	for i := int(s.msg); i < len(s.raw); {
		f, _ := nextField(s.raw, i)
		if f.num != 1 {
			n += f.end - i
		}
		i = f.end
	}
	return n
}

func (s *series) appendOtherFields(dst []byte) []byte {
	for i := int(s.msg); i < len(s.raw); {
		f, _ := nextField(s.raw, i)
		if f.num != 1 {
			dst = append(dst, s.raw[i:f.end]...)
		}
		i = f.end
	}
	return dst
}

func varintSize(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func labelSize(l *prompb.Label) int {
	n := 1 + varintSize(uint64(len(l.Name))) + len(l.Name)
	if l.Value != "" {
		n += 1 + varintSize(uint64(len(l.Value))) + len(l.Value)
	}
	return n
}

// shortLabel reports the size of l's message when it and its name and value
// are shorter than 128 bytes, so that every length fits in one byte.
func shortLabel(l *prompb.Label) (int, bool) {
	n := 2 + len(l.Name)
	if l.Value != "" {
		n += 2 + len(l.Value)
	}
	return n, n < 0x80
}

// labelsSize is the encoded size of labels as fields of a TimeSeries.
func labelsSize(ls []prompb.Label) int {
	n := 0
	for i := range ls {
		if m, ok := shortLabel(&ls[i]); ok {
			n += 2 + m
			continue
		}
		m := labelSize(&ls[i])
		n += 1 + varintSize(uint64(m)) + m
	}
	return n
}

func appendLabels(dst []byte, ls []prompb.Label) []byte {
	for i := range ls {
		l := &ls[i]
		if m, ok := shortLabel(l); ok {
			dst = append(dst, 1<<3|wtLen, byte(m), 1<<3|wtLen, byte(len(l.Name)))
			dst = append(dst, l.Name...)
			if l.Value != "" {
				dst = append(dst, 2<<3|wtLen, byte(len(l.Value)))
				dst = append(dst, l.Value...)
			}
			continue
		}
		dst = append(dst, 1<<3|wtLen)
		dst = binary.AppendUvarint(dst, uint64(labelSize(l)))
		dst = append(dst, 1<<3|wtLen)
		dst = binary.AppendUvarint(dst, uint64(len(l.Name)))
		dst = append(dst, l.Name...)
		if l.Value != "" {
			dst = append(dst, 2<<3|wtLen)
			dst = binary.AppendUvarint(dst, uint64(len(l.Value)))
			dst = append(dst, l.Value...)
		}
	}
	return dst
}

// marshalDecoded encodes a request decoded by lib/prompb or converted from 2.0
// with its current series, keeping their order.
func (b *batch) marshalDecoded(dst []byte) []byte {
	tss := b.wr.Timeseries
	// b.series is a subsequence of tss in order, so tss[s.idx] is read before
	// position idx is written.
	for k := range b.series {
		s := &b.series[k]
		ts := tss[s.idx]
		ts.Labels = s.Labels
		tss[k] = ts
	}
	clear(tss[len(b.series):])
	b.wr.Timeseries = tss[:len(b.series)]
	return b.wr.MarshalProtobuf(dst)
}
