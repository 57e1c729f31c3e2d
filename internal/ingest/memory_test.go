package ingest

import (
	"bytes"
	"encoding/binary"
	"math"
	"net/http"
	"runtime"
	"testing"
	"unsafe"
)

// Memory bombs and other requests whose decoded values would be much larger than
// their bytes, built the way a hostile client would.

// appendField appends a length-delimited field.
func appendField(dst []byte, num int, data []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(num)<<3|wtLen)
	dst = binary.AppendUvarint(dst, uint64(len(data)))
	return append(dst, data...)
}

// unknownFieldsBomb is a legal 1.0 request of n two-byte unknown fields (field 2,
// varint 0): 2n bytes, 15M of them compress to ~1.4 MB.
func unknownFieldsBomb(n int) []byte { return bytes.Repeat([]byte{2 << 3, 0}, n) }

// emptySymbolsBomb is a 2.0 request of n empty symbols and nothing else.
func emptySymbolsBomb(n int) []byte { return bytes.Repeat([]byte{4<<3 | wtLen, 0}, n) }

// tinySeries is n 1.0 series without labels and with one empty sample: 4 bytes
// each, 72 as a series entry.
func tinySeries(n int) []byte { return bytes.Repeat([]byte{1<<3 | wtLen, 2, 2<<3 | wtLen, 0}, n) }

// interleaved alternates tiny series and unknown fields, so that no two unknown
// fields are next to each other.
func interleaved(n int) []byte {
	return bytes.Repeat([]byte{1<<3 | wtLen, 2, 2<<3 | wtLen, 0, 2 << 3, 0}, n)
}

// emptyLabels is one 1.0 series with n empty labels (2 bytes each, 32 bytes as
// a prompb.Label) and a sample.
func emptyLabels(n int) []byte {
	msg := bytes.Repeat([]byte{1<<3 | wtLen, 0}, n)
	msg = append(msg, 2<<3|wtLen, 0)
	return appendField(nil, 1, msg)
}

// v2LabelRefs is a 2.0 request with symbols "" and "a" and one series of n
// label pairs a="a" (2 bytes each, 32 as a label).
func v2LabelRefs(n int) []byte {
	src := appendField(nil, 4, nil)
	src = appendField(src, 4, []byte("a"))
	refs := bytes.Repeat([]byte{1}, 2*n)
	msg := appendField(nil, 1, refs)
	msg = appendField(msg, 2, nil)
	return appendField(src, 5, msg)
}

// v2TinySeries is a 2.0 request of n series without labels, one empty sample each.
func v2TinySeries(n int) []byte {
	src := appendField(nil, 4, nil)
	return append(src, bytes.Repeat([]byte{5<<3 | wtLen, 2, 2<<3 | wtLen, 0}, n)...)
}

// v2FarSymbol is a 2.0 request of n empty symbols, the last of them referred to.
func v2FarSymbol(n int) []byte {
	src := emptySymbolsBomb(n)
	ref := binary.AppendUvarint(nil, uint64(n-1))
	refs := append(append([]byte{}, ref...), ref...)
	msg := appendField(nil, 1, refs)
	msg = appendField(msg, 2, nil)
	return appendField(src, 5, msg)
}

// nativeHistogram is a 1.0 series of labels labels with a native histogram of n
// buckets, each a one-byte delta: lib/prompb expands it into n series, each
// with every label.
func nativeHistogram(labels, n int) []byte {
	msg := appendField(nil, 1, appendField(appendField(nil, 1, []byte("__name__")), 2, []byte("h")))
	for i := range labels {
		msg = appendField(msg, 1, appendField(appendField(nil, 1, []byte{'a' + byte(i%26), 'a' + byte(i/26)}), 2, []byte("v")))
	}
	span := binary.AppendUvarint([]byte{1 << 3, 0, 2 << 3}, uint64(n)) // offset 0, length n
	h := appendField(nil, 11, span)
	h = appendField(h, 12, append([]byte{2}, bytes.Repeat([]byte{0}, n-1)...))
	msg = appendField(msg, 4, h)
	return appendField(nil, 1, msg)
}

// decodeCost decodes src as the handler does (labels of 1.0 series read, as the
// series loop reads them), and reports the bytes allocated meanwhile and what
// the decoded values still hold after a GC. The peak heap of a decode is at most
// what it allocated.
func decodeCost(proto int, src []byte) (allocated, held int64, err error) {
	wc := &writeCtx{decoded: src}
	var m0, m1, m2 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	err = wc.decode(proto)
	if err == nil {
		b := &wc.batch
		for i := range b.series {
			if err = b.parseLabels(&b.series[i]); err != nil {
				break
			}
		}
	}
	runtime.ReadMemStats(&m1)
	runtime.GC()
	runtime.ReadMemStats(&m2)
	runtime.KeepAlive(wc)
	return int64(m1.TotalAlloc - m0.TotalAlloc), int64(m2.HeapAlloc) - int64(m0.HeapAlloc), err
}

// heldFactor is what a decode may hold per decoded byte (budget.go), with the
// quarter a large slice's capacity may exceed its length by.
func heldFactor(proto int, histograms bool) float64 {
	switch {
	case proto == protoV2:
		return 1.25 * heldPerByteV2
	case histograms:
		return 1.25 * heldPerByteHistograms
	}
	return 1.25 * heldPerByteV1
}

// allocFactor bounds the bytes a decode allocates per decoded byte: a slice that
// grows by copying to 1.25 times its size allocates 5 times its final capacity
// in all.
func allocFactor(proto int, histograms bool) int64 {
	return int64(5 * heldFactor(proto, histograms))
}

// allocSlack covers the fixed costs of a decode (first slices, errors).
const allocSlack = 4*heldFloor + 64<<10

// TestDecodeMemoryIsBounded: whatever a request contains, decoding it allocates
// at most a fixed multiple of its decoded size, and the two memory bombs of issue
// 18 (15M tiny unknown fields in a 1.0 request, 15M empty symbols in a 2.0 one)
// cost next to nothing: they are refused or decoded without holding a value per
// field.
func TestDecodeMemoryIsBounded(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name       string
		proto      int
		src        []byte
		histograms bool
		// maxAllocated, when set, is a bound far below the general one.
		maxAllocated int64
		status       int // 0: decoded
	}{
		{name: "unknown fields bomb", proto: protoV1, src: unknownFieldsBomb(15_000_000), maxAllocated: mib},
		{name: "empty symbols bomb", proto: protoV2, src: emptySymbolsBomb(15_000_000), maxAllocated: mib},
		{name: "tiny series", proto: protoV1, src: tinySeries(1_000_000), status: http.StatusRequestEntityTooLarge},
		{name: "series between unknown fields", proto: protoV1, src: interleaved(1_000_000), status: http.StatusRequestEntityTooLarge},
		{name: "empty labels", proto: protoV1, src: emptyLabels(1_000_000), status: http.StatusRequestEntityTooLarge},
		{name: "2.0 label refs", proto: protoV2, src: v2LabelRefs(1_000_000)}, // 16×: within 2.0's budget
		{name: "2.0 tiny series", proto: protoV2, src: v2TinySeries(1_000_000), status: http.StatusRequestEntityTooLarge},
		{name: "2.0 far symbol", proto: protoV2, src: v2FarSymbol(1_000_000)},
		{name: "histogram buckets", proto: protoV1, src: nativeHistogram(40, 200_000), histograms: true, status: http.StatusRequestEntityTooLarge},
		{name: "real 1.0 request", proto: protoV1, src: decodedRequest(t, 2000, 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			allocated, held, err := decodeCost(tc.proto, tc.src)
			status := 0
			if err != nil {
				status = statusOf(err)
			}
			if status != tc.status {
				t.Errorf("status %d (%v), want %d", status, err, tc.status)
			}
			limit := allocFactor(tc.proto, tc.histograms)*int64(len(tc.src)) + allocSlack
			if tc.maxAllocated > 0 {
				limit = tc.maxAllocated
			}
			t.Logf("%d decoded bytes: allocated %d (%.2f×), held %d after GC; limit %d; %v",
				len(tc.src), allocated, float64(allocated)/float64(len(tc.src)), held, limit, err)
			if allocated > limit {
				t.Errorf("decoding %d bytes allocated %d bytes, over the bound of %d", len(tc.src), allocated, limit)
			}
			if maxHeld := int64(heldFactor(tc.proto, tc.histograms)*float64(len(tc.src))) + allocSlack; held > maxHeld {
				t.Errorf("decoding %d bytes holds %d bytes, over the bound of %d", len(tc.src), held, maxHeld)
			}
		})
	}
}

func decodedRequest(tb testing.TB, series, labels int) []byte {
	tb.Helper()
	d, err := decompress(nil, makeRequest(series, labels), math.MaxInt32)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// FuzzDecodeMemory: for any input, in either protocol, decoding allocates at most
// allocFactor × its size (plus a constant), so the peak heap of a request is a
// fixed multiple of its decoded size.
func FuzzDecodeMemory(f *testing.F) {
	f.Add(false, unknownFieldsBomb(1000))
	f.Add(true, emptySymbolsBomb(1000))
	f.Add(false, tinySeries(1000))
	f.Add(false, interleaved(1000))
	f.Add(false, emptyLabels(1000))
	f.Add(true, v2LabelRefs(1000))
	f.Add(true, v2TinySeries(1000))
	f.Add(true, v2FarSymbol(1000))
	f.Add(false, nativeHistogram(10, 100))
	f.Add(false, decodedRequest(f, 20, 5))
	f.Fuzz(func(t *testing.T, v2 bool, src []byte) {
		proto := protoV1
		if v2 {
			proto = protoV2
		}
		allocated, _, _ := decodeCost(proto, src)
		// The histogram path is taken for any input with one; its bound is the
		// largest, and applies to the others too.
		limit := allocFactor(proto, !v2)*int64(len(src)) + allocSlack
		if allocated > limit {
			t.Fatalf("decoding %d bytes allocated %d bytes, over the bound of %d", len(src), allocated, limit)
		}
	})
}

// retained is what a pooled context keeps between requests.
func (wc *writeCtx) retained() int {
	n := cap(wc.body) + cap(wc.decoded) + cap(wc.chunk) + cap(wc.out)
	size := func(c, elem int) int { return c * elem }
	b, s, d := &wc.batch, &wc.series, &wc.v2
	n += size(cap(b.series), int(unsafe.Sizeof(series{}))) + size(cap(b.others), heldRange) + size(cap(b.arena), heldLabel)
	n += size(cap(s.buf), heldLabel) + size(cap(s.buf2), heldLabel) + size(cap(s.arena), heldLabel) + cap(s.hashBuf)
	n += size(cap(s.entries), int(unsafe.Sizeof(requestEntry{}))) + size(cap(s.order), 4)
	n += size(cap(d.symbols), 4) + size(cap(d.refs), 4) + size(cap(d.labels), heldLabel) + size(cap(d.samples), heldSample)
	n += size(cap(d.wr.Timeseries), heldTS) + size(cap(d.wr.Metadata), int(unsafe.Sizeof(d.wr.Metadata[:1][0])))
	return n
}

// TestPooledContextGivesBack: after a request of every shape and size, what a
// pooled context keeps stays under the keep caps.
func TestPooledContextGivesBack(t *testing.T) {
	h := &Handler{}
	for _, tc := range []struct {
		name  string
		proto int
		src   []byte
	}{
		{"large 1.0", protoV1, decodedRequest(t, 200_000, 10)},
		{"large 2.0", protoV2, v2FarSymbol(3_000_000)},
		{"unknown fields", protoV1, unknownFieldsBomb(15_000_000)},
	} {
		wc := &writeCtx{decoded: tc.src}
		_ = wc.decode(tc.proto)
		for i := range wc.batch.series {
			_ = wc.batch.parseLabels(&wc.batch.series[i])
		}
		before := wc.retained()
		h.putCtx(wc)
		// 4 buffers, 21 slices.
		const limit = 2*keepBody + 2*keepDecoded + 21*keepSlice
		if got := wc.retained(); got > limit {
			t.Errorf("%s: pooled context keeps %d bytes (%d before putCtx), over %d", tc.name, got, before, limit)
		} else {
			t.Logf("%s: pooled context keeps %d bytes (%d before putCtx)", tc.name, got, before)
		}
	}
}
