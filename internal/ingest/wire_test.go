package ingest

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"
)

// pb builds protobuf bytes by hand, for what prompb.WriteRequest cannot express:
// exemplars, labels after samples, unknown fields.
type pb []byte

func (p pb) bytes(num int, v []byte) pb {
	p = binary.AppendUvarint(p, uint64(num<<3|wtLen))
	p = binary.AppendUvarint(p, uint64(len(v)))
	return append(p, v...)
}

func (p pb) varint(num int, v uint64) pb {
	p = binary.AppendUvarint(p, uint64(num<<3|wtVarint))
	return binary.AppendUvarint(p, v)
}

func (p pb) double(num int, v float64) pb {
	p = binary.AppendUvarint(p, uint64(num<<3|wtI64))
	return binary.LittleEndian.AppendUint64(p, math.Float64bits(v))
}

func pbLabel(name, value string) []byte {
	return pb(nil).bytes(1, []byte(name)).bytes(2, []byte(value))
}

func pbSample(v float64, ts int64) []byte {
	return pb(nil).double(1, v).varint(2, uint64(ts))
}

// unusualRequest has a series with an exemplar and an unknown field, a series
// whose labels are split around its sample, a series without samples, metadata
// and an unknown top-level field.
func unusualRequest() []byte {
	exemplar := pb(nil).bytes(1, pbLabel("trace_id", "abc")).double(2, 1.5).varint(3, 1700000000000)
	s1 := pb(nil).bytes(1, pbLabel("__name__", "with_exemplar")).bytes(1, pbLabel("job", "a")).
		bytes(2, pbSample(1, 1700000000000)).bytes(3, exemplar).varint(99, 7)
	s2 := pb(nil).bytes(1, pbLabel("job", "b")).bytes(2, pbSample(2, 1700000000001)).
		bytes(1, pbLabel("__name__", "split")).bytes(2, pbSample(3, 1700000000002))
	s3 := pb(nil).bytes(1, pbLabel("__name__", "no_samples"))
	md := pb(nil).varint(1, 1).bytes(2, []byte("with_exemplar")).bytes(4, []byte("help text"))
	return pb(nil).bytes(1, s1).bytes(1, s2).bytes(1, s3).bytes(3, md).varint(42, 1)
}

// checkScan compares scan with lib/prompb on data: the same acceptance, series,
// labels, sample counts and metadata; then re-encodes with every series
// rewritten (its last label dropped) and checks lib/prompb reads back exactly
// that, with the samples unchanged.
func checkScan(t *testing.T, data []byte) {
	t.Helper()
	var wru prompb.WriteRequestUnmarshaler
	want, wantErr := wru.UnmarshalProtobuf(slices.Clone(data))
	var b batch
	hist, err := b.scan(data)
	if hist {
		return // decoded by lib/prompb instead
	}
	if err == nil {
		err = parseAll(&b)
	}
	if (err != nil) != (wantErr != nil) {
		t.Fatalf("scan error %v, lib/prompb error %v", err, wantErr)
	}
	if err != nil {
		if statusOf(err) != 400 {
			t.Fatalf("scan error %v has status %d", err, statusOf(err))
		}
		return
	}
	if len(b.series) != len(want.Timeseries) || b.metadata != len(want.Metadata) {
		t.Fatalf("scan: %d series, %d metadata; lib/prompb: %d, %d", len(b.series), b.metadata, len(want.Timeseries), len(want.Metadata))
	}
	for i := range b.series {
		s, w := &b.series[i], &want.Timeseries[i]
		if !slices.Equal(s.Labels, w.Labels) || int(s.Samples) != len(w.Samples) {
			t.Fatalf("series %d: scan %v × %d, lib/prompb %v × %d", i, s.Labels, s.Samples, w.Labels, len(w.Samples))
		}
	}
	if out := b.marshal(nil); !bytes.Equal(out, keptFields(data)) {
		t.Fatalf("unchanged re-encode differs from the input")
	}
	var chunk []byte
	if got, err := snappy.Decode(nil, b.appendSnappy(nil, &chunk)); err != nil || !bytes.Equal(got, keptFields(data)) {
		t.Fatalf("appendSnappy: %v", err)
	}
	wantLabels := make([][]prompb.Label, len(b.series))
	for i := range b.series {
		s := &b.series[i]
		if n := len(s.Labels); n > 0 {
			s.Labels = s.Labels[: n-1 : n-1]
		}
		s.out = outLabels
		wantLabels[i] = s.Labels
	}
	out := b.marshal(nil)
	var wru2 prompb.WriteRequestUnmarshaler
	got, err := wru2.UnmarshalProtobuf(out)
	if err != nil {
		t.Fatalf("re-encoded request does not parse: %v", err)
	}
	// A series whose labels were all dropped still has its samples.
	if len(got.Timeseries) != len(want.Timeseries) || len(got.Metadata) != len(want.Metadata) {
		t.Fatalf("re-encoded: %d series, %d metadata; want %d, %d", len(got.Timeseries), len(got.Metadata), len(want.Timeseries), len(want.Metadata))
	}
	for i := range got.Timeseries {
		g, w := &got.Timeseries[i], &want.Timeseries[i]
		if !sameLabels(g.Labels, wantLabels[i]) {
			t.Fatalf("series %d: labels %v, want %v", i, g.Labels, wantLabels[i])
		}
		if !sameSamples(g.Samples, w.Samples) {
			t.Fatalf("series %d: samples %v, want %v", i, g.Samples, w.Samples)
		}
	}
	if !slices.Equal(got.Metadata, want.Metadata) {
		t.Fatalf("metadata %v, want %v", got.Metadata, want.Metadata)
	}

	// Masks: every other label field removed where labels come first.
	var bm batch
	if _, err := bm.scan(data); err != nil {
		t.Fatal(err)
	}
	if err := parseAll(&bm); err != nil {
		t.Fatal(err)
	}
	for i := range bm.series {
		s := &bm.series[i]
		wantLabels[i] = s.Labels
		if s.rest == 0 {
			continue
		}
		s.out, s.mask = outMasked, 0x55555555
		wantLabels[i] = maskLabels(s.Labels, s.mask, nil)
	}
	var wru3 prompb.WriteRequestUnmarshaler
	got, err = wru3.UnmarshalProtobuf(bm.marshal(nil))
	if err != nil {
		t.Fatalf("masked request does not parse: %v", err)
	}
	if len(got.Timeseries) != len(want.Timeseries) {
		t.Fatalf("masked: %d series, want %d", len(got.Timeseries), len(want.Timeseries))
	}
	for i := range got.Timeseries {
		g, w := &got.Timeseries[i], &want.Timeseries[i]
		if !sameLabels(g.Labels, wantLabels[i]) || !sameSamples(g.Samples, w.Samples) {
			t.Fatalf("masked series %d: %v %v, want %v %v", i, g.Labels, g.Samples, wantLabels[i], w.Samples)
		}
	}
}

// parseAll reads the labels of every series of a scanned request.
func parseAll(b *batch) error {
	for i := range b.series {
		if err := b.parseLabels(&b.series[i]); err != nil {
			return err
		}
	}
	return nil
}

// keptFields is data without the series lib/prompb skips (no samples), the
// series first, then the other fields: what an unchanged re-encode gives.
func keptFields(data []byte) []byte {
	var series, others []byte
	for i := 0; i < len(data); {
		f, _ := nextField(data, i)
		if f.num != 1 {
			others = append(others, data[i:f.end]...)
		} else {
			var b batch
			if _, _ = b.scanSeries(data[i:f.end], f.start-i); len(b.series) == 1 {
				series = append(series, data[i:f.end]...)
			}
		}
		i = f.end
	}
	return append(series, others...)
}

// sameLabels compares label sets as encoded: an empty value is the same as none.
func sameLabels(a, b []prompb.Label) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Value != b[i].Value {
			return false
		}
	}
	return true
}

func sameSamples(a, b []prompb.Sample) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Timestamp != b[i].Timestamp || math.Float64bits(a[i].Value) != math.Float64bits(b[i].Value) {
			return false
		}
	}
	return true
}

func TestScanMatchesPrompb(t *testing.T) {
	cases := map[string][]byte{
		"generated": mustDecode(makeRequest(50, 10)),
		"unusual":   unusualRequest(),
		"empty":     {},
		"truncated": mustDecode(makeRequest(3, 4))[:40],
		"bad label": pb(nil).bytes(1, pb(nil).bytes(1, pb(nil).varint(1, 5))),
		"bad sample": pb(nil).bytes(1, pb(nil).bytes(1, pbLabel("__name__", "x")).
			bytes(2, pb(nil).varint(1, 5))),
		"bad metadata": pb(nil).bytes(3, pb(nil).bytes(1, []byte("x"))),
		"group":        {0x0b, 0x0c},
		"no labels":    pb(nil).bytes(1, pb(nil).bytes(2, pbSample(1, 2))),
	}
	for _, p := range realPayloads(t, "prometheus-rw1-*.snappy") {
		cases["prometheus"+string(rune('0'+len(cases)))] = mustDecode(p)
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) { checkScan(t, data) })
	}
}

// TestRewriteKeepsExemplars: a rewritten series keeps the fields lib/prompb
// does not decode, byte for byte.
func TestRewriteKeepsExemplars(t *testing.T) {
	data := unusualRequest()
	var b batch
	if _, err := b.scan(data); err != nil {
		t.Fatal(err)
	}
	if len(b.series) != 2 || b.series[0].rest == 0 || b.series[1].rest != 0 {
		t.Fatalf("scan: %+v", b.series)
	}
	b.series[0].Labels = []prompb.Label{{Name: "__name__", Value: "renamed"}}
	b.series[0].out = outLabels
	out := b.marshal(nil)
	exemplar := pb(nil).bytes(1, pbLabel("trace_id", "abc")).double(2, 1.5).varint(3, 1700000000000)
	if !bytes.Contains(out, exemplar) || !bytes.Contains(out, []byte("renamed")) || bytes.Contains(out, []byte("with_exemplar\x12")) {
		t.Fatalf("re-encoded request lost the exemplar or kept the old name: %q", out)
	}
}

// FuzzScan: the scanner accepts exactly what lib/prompb accepts, reads the same
// series, and its re-encoding is read back by lib/prompb as intended.
func FuzzScan(f *testing.F) {
	f.Add(mustDecode(makeRequest(5, 4)))
	f.Add(unusualRequest())
	for _, p := range realPayloads(f, "prometheus-rw1-*.snappy") {
		f.Add(mustDecode(p))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkScan(t, data) })
}

// BenchmarkDecode compares scanning a 2,000-series request with decoding it by
// lib/prompb, side by side.
func BenchmarkDecode(b *testing.B) {
	data := mustDecode(makeRequest(2000, 10))
	b.Run("scan", func(b *testing.B) {
		var bt batch
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			// With every label read, as lib/prompb reads them.
			if _, err := bt.scan(data); err != nil {
				b.Fatal(err)
			}
			if err := parseAll(&bt); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("prompb", func(b *testing.B) {
		var wru prompb.WriteRequestUnmarshaler
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := wru.UnmarshalProtobuf(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkEncode compares re-encoding a 2,000-series request whose every series
// lost one label: spliced from the scan, and marshalled by lib/prompb.
func BenchmarkEncode(b *testing.B) {
	data := mustDecode(makeRequest(2000, 10))
	b.Run("splice", func(b *testing.B) {
		var bt batch
		if _, err := bt.scan(data); err != nil {
			b.Fatal(err)
		}
		if err := parseAll(&bt); err != nil {
			b.Fatal(err)
		}
		for i := range bt.series {
			s := &bt.series[i]
			s.Labels = s.Labels[:len(s.Labels)-1]
			s.out = outLabels
		}
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			out = bt.marshal(out[:0])
		}
	})
	b.Run("prompb", func(b *testing.B) {
		var wru prompb.WriteRequestUnmarshaler
		wr, err := wru.UnmarshalProtobuf(data)
		if err != nil {
			b.Fatal(err)
		}
		for i := range wr.Timeseries {
			ts := &wr.Timeseries[i]
			ts.Labels = ts.Labels[:len(ts.Labels)-1]
		}
		var out []byte
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			out = wr.MarshalProtobuf(out[:0])
		}
	})
}

// TestAppendSnappy: compressing chunk by chunk gives a snappy block of exactly
// what marshal encodes, for requests of one chunk, many chunks and none.
func TestAppendSnappy(t *testing.T) {
	for _, data := range [][]byte{{}, unusualRequest(), mustDecode(makeRequest(2000, 10)), mustDecode(makeRequest(1, 300))} {
		var b batch
		if _, err := b.scan(data); err != nil {
			t.Fatal(err)
		}
		for i := range b.series {
			if s := &b.series[i]; i%3 == 0 && s.rest != 0 {
				s.out, s.mask = outMasked, 1
			}
		}
		want := b.marshal(nil)
		// Whole, and in pieces cut inside series and fields: a piece of 1 byte,
		// pieces smaller than a series, pieces a little larger than 64 KiB.
		for _, size := range []int{snappyBlock, 1, 7, 1000, 64<<10 + 3} {
			if size == 1 && len(want) > 20_000 {
				continue
			}
			var buf []byte
			block := b.appendSnappyBlocks([]byte("prefix"), &buf, size)
			if !bytes.HasPrefix(block, []byte("prefix")) {
				t.Fatalf("dst's bytes were not kept")
			}
			got, err := snappy.Decode(nil, block[len("prefix"):])
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes in blocks of %d: decoded %d bytes, %v; want %d bytes", len(data), size, len(got), err, len(want))
			}
			if size >= 64<<10 && len(want) > 100_000 && len(block) > len(want)/3 {
				t.Errorf("%d bytes in blocks of %d compressed to %d", len(want), size, len(block))
			}
		}
	}
}

// TestS2WritesSnappy: what the handler forwards after a rewrite is encoded by s2;
// it must be the snappy block format every remote-write receiver reads.
func TestS2WritesSnappy(t *testing.T) {
	for _, data := range [][]byte{{}, []byte("x"), mustDecode(makeRequest(2000, 10)), unusualRequest()} {
		got, err := snappy.Decode(nil, s2.EncodeSnappy(nil, data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("golang/snappy cannot read s2's block of %d bytes: %v", len(data), err)
		}
	}
}

// BenchmarkSnappyEncode compares the block encoders, side by side, on the
// requests of benchRequests taken in turn (uncompressed, about 490 KiB each):
// golang/snappy, s2 on the whole request, and s2 on 64 KiB pieces of it, as
// golang/snappy splits its input. bytes is the compressed size of the last one.
func BenchmarkSnappyEncode(b *testing.B) {
	bodies, err := benchRequests()
	if err != nil {
		b.Fatal(err)
	}
	var data [][]byte
	size := 0
	for _, body := range bodies {
		data = append(data, mustDecode(body))
		size += len(data[len(data)-1])
	}
	pieces := func(dst, src []byte) []byte {
		dst = dst[:0]
		for p := 0; p < len(src); p += 64 << 10 {
			dst = appendSnappyElements(dst, src[p:min(p+64<<10, len(src))])
		}
		return dst
	}
	for _, enc := range []struct {
		name string
		fn   func(dst, src []byte) []byte
	}{{"golang-snappy", snappy.Encode}, {"s2-snappy", s2.EncodeSnappy}, {"s2-snappy-64KiB-pieces", pieces}} {
		b.Run(enc.name, func(b *testing.B) {
			out := make([]byte, snappy.MaxEncodedLen(2*size/len(data)))
			b.SetBytes(int64(size / len(data)))
			b.ReportAllocs()
			n := 0
			for i := 0; i < b.N; i++ {
				n = len(enc.fn(out, data[i%len(data)]))
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}

// BenchmarkSnappyDecodeForwarded is what VictoriaMetrics (golang/snappy) pays to
// read a request, side by side: as the load generator compressed it
// (golang/snappy, 64 KiB blocks), as cardguard forwards it (s2, whole), and as
// cardguard forwarded it before (s2, 64 KiB pieces); the requests of
// benchRequests in turn.
func BenchmarkSnappyDecodeForwarded(b *testing.B) {
	bodies, err := benchRequests()
	if err != nil {
		b.Fatal(err)
	}
	var whole, pieces [][]byte
	size := 0
	for _, body := range bodies {
		p := mustDecode(body)
		size += len(p)
		whole = append(whole, s2.EncodeSnappy(nil, p))
		block := binary.AppendUvarint(nil, uint64(len(p)))
		for q := 0; q < len(p); q += 64 << 10 {
			block = appendSnappyElements(block, p[q:min(q+64<<10, len(p))])
		}
		pieces = append(pieces, block)
	}
	out := make([]byte, 2*size/len(bodies))
	for _, v := range []struct {
		name   string
		blocks [][]byte
	}{{"client-golang-snappy", bodies}, {"s2-whole", whole}, {"s2-64KiB-pieces", pieces}} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(size / len(bodies)))
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				if _, err := snappy.Decode(out, v.blocks[i%len(v.blocks)]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// marshal is the request with its current series, uncompressed: the splice
// appendSnappy compresses chunk by chunk, in one piece, as the reference the
// tests compare with. Series that were not rewritten come as they came,
// rewritten ones with their new labels and their other fields as they came,
// then the request's other fields.
func (b *batch) marshal(dst []byte) []byte {
	if b.wr != nil {
		return b.marshalDecoded(dst)
	}
	for i := range b.series {
		dst = b.series[i].append(dst)
	}
	for _, o := range b.others {
		dst = append(dst, o...)
	}
	return dst
}
