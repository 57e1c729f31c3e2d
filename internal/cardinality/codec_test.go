package cardinality

import (
	"bytes"
	"encoding/gob"
	"reflect"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// exported returns the buckets of a tracker that observed w, with tenant
// labels, metric labels and the overflow entries among them.
func exported(tb testing.TB, w *workload) []Bucket {
	tb.Helper()
	tr, _ := newTracker(tb, Config{})
	tn := tenant.ID{AccountID: 7, ProjectID: 3}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	bs := tr.ExportBuckets(tn)
	if len(bs) == 0 {
		tb.Fatal("nothing exported")
	}
	return bs
}

func TestBucketCodecRoundTrip(t *testing.T) {
	t.Parallel()
	bs := exported(t, newWorkload(20, 50))
	bs = append(bs, Bucket{Overflow: true, Level: LevelChurn, Start: time.Unix(0, -5).UTC(), Width: time.Hour},
		Bucket{Tenant: tenant.ID{AccountID: 1<<32 - 1, ProjectID: 1<<32 - 1}, Level: LevelLabels, Start: time.Unix(1e9, 0).UTC(),
			Labels:  []LabelBucket{{Name: "", Overflow: true, Values: []byte{1}}},
			Metrics: []MetricBucket{{Name: "m", Overflow: true, Labels: []LabelBucket{{Name: "x", Series: []byte{2, 3}}}}}})
	for i := range bs {
		b := &bs[i]
		data := AppendBucket(nil, b)
		if !IsBinaryBucket(data) {
			t.Fatalf("bucket %d: not recognised as binary", i)
		}
		if n := BucketSize(b); len(data) > n || len(data) < n-40 {
			t.Errorf("bucket %d: %d bytes, BucketSize says %d", i, len(data), n)
		}
		got, err := DecodeBucket(data)
		if err != nil {
			t.Fatalf("bucket %d: %v", i, err)
		}
		if !reflect.DeepEqual(got, *b) {
			t.Errorf("bucket %d: decoded\n%+v\nwant\n%+v", i, got, *b)
		}
		// Every cut of the encoding is refused, never half decoded.
		for cut := range len(data) {
			if _, err := DecodeBucket(data[:cut]); err == nil {
				t.Fatalf("bucket %d cut at %d of %d: decoded", i, cut, len(data))
			}
		}
		if _, err := DecodeBucket(append(data, 0)); err == nil {
			t.Errorf("bucket %d with a byte after its end: decoded", i)
		}
	}
}

// A merged decoded bucket gives the estimates the original gives.
func TestDecodedBucketsMerge(t *testing.T) {
	t.Parallel()
	w := newWorkload(30, 200)
	src, _ := newTracker(t, Config{})
	dst, _ := newTracker(t, Config{})
	tn := tenant.ID{AccountID: 7, ProjectID: 3}
	for i := range w.labels {
		w.observe(src, tn, i)
	}
	for _, b := range src.ExportBuckets(tn) {
		d, err := DecodeBucket(AppendBucket(nil, &b))
		if err != nil {
			t.Fatal(err)
		}
		if err := dst.MergeBucketsFrom("a", []Bucket{d}); err != nil {
			t.Fatal(err)
		}
	}
	src.Refresh()
	dst.Refresh()
	want, _ := src.Tenant(tn)
	got, _ := dst.Tenant(tn)
	if got.ActiveSeries != want.ActiveSeries || got.ActiveSeries == 0 || got.Metrics != want.Metrics {
		t.Errorf("merged from the decoded buckets: %+v; want %+v", got, want)
	}
}

func TestGobIsNotBinaryBucket(t *testing.T) {
	t.Parallel()
	for _, b := range exported(t, newWorkload(3, 10)) {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&b); err != nil {
			t.Fatal(err)
		}
		if IsBinaryBucket(buf.Bytes()) {
			t.Fatal("a gob-encoded bucket taken for a binary one")
		}
		if _, err := DecodeBucket(buf.Bytes()); err == nil {
			t.Fatal("a gob-encoded bucket decoded as binary")
		}
	}
}

func FuzzDecodeBucket(f *testing.F) {
	for _, b := range exported(f, newWorkload(2, 5)) {
		f.Add(AppendBucket(nil, &b))
	}
	f.Add(bucketMagic[:])
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := DecodeBucket(data)
		if err != nil {
			return
		}
		if again := AppendBucket(nil, &b); !bytes.Equal(again, data) {
			// Varints have one shortest form; a longer one decodes but
			// encodes shorter. Decoding that again must give the same.
			b2, err := DecodeBucket(again)
			if err != nil || !reflect.DeepEqual(b, b2) {
				t.Fatalf("re-encoded %x decodes to %+v (%v); first %+v", again, b2, err, b)
			}
		}
	})
}

// BenchmarkBucketCodec encodes and decodes the buckets of 100 metrics of 1000
// series, in gob as replicas exchanged them before and in the binary
// encoding.
func BenchmarkBucketCodec(b *testing.B) {
	bs := exported(b, newWorkload(100, 1000))
	var size int
	for i := range bs {
		size += BucketSize(&bs[i])
	}
	b.Run("encode=gob", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		for range b.N {
			for i := range bs {
				var buf bytes.Buffer
				buf.Grow(BucketSize(&bs[i]) + 1024)
				if err := gob.NewEncoder(&buf).Encode(&bs[i]); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("encode=binary", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		for range b.N {
			for i := range bs {
				_ = AppendBucket(make([]byte, 0, BucketSize(&bs[i])), &bs[i])
			}
		}
	})
	gobs := make([][]byte, len(bs))
	bins := make([][]byte, len(bs))
	for i := range bs {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(&bs[i]); err != nil {
			b.Fatal(err)
		}
		gobs[i] = buf.Bytes()
		bins[i] = AppendBucket(nil, &bs[i])
	}
	b.Run("decode=gob", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		for range b.N {
			for _, data := range gobs {
				var d Bucket
				if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&d); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("decode=binary", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(size))
		for range b.N {
			for _, data := range bins {
				if _, err := DecodeBucket(data); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
