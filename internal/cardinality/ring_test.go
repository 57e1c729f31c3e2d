package cardinality

import (
	"testing"

	"github.com/axiomhq/hyperloglog"
)

// The window's estimate is the union's, whether it was taken in place (one
// sparse bucket, inserted here or merged in as exported) or from a copy.
func TestWindowEstimates(t *testing.T) {
	t.Parallel()
	const p = 14
	fill := func(sk *hyperloglog.Sketch, from, n int) {
		for i := range n {
			sk.InsertHash(mix(uint64(from + i)))
		}
	}
	exported := func(from, n int) (*hyperloglog.Sketch, bool) {
		sk := newSketch(p)
		fill(sk, from, n)
		sk.Estimate()
		data, err := sk.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back hyperloglog.Sketch
		if err := back.UnmarshalBinary(data); err != nil {
			t.Fatal(err)
		}
		return &back, data[3] == 1 && data[7] == 0 && data[6] == 0 && data[5] == 0 && data[4] == 0
	}
	union := func(parts ...[2]int) int64 {
		sk := newSketch(p)
		for _, pt := range parts {
			fill(sk, pt[0], pt[1])
		}
		return int64(sk.Estimate())
	}
	for _, tc := range []struct {
		name  string
		build func(r *ring)
		want  int64
		copy  bool
	}{
		{"one local sparse bucket", func(r *ring) {
			for i := range 700 {
				r.insert(5, mix(uint64(i)))
			}
		}, union([2]int{0, 700}), false},
		{"one merged bucket", func(r *ring) {
			sk, folded := exported(0, 900)
			if !folded {
				t.Fatal("an exported sparse sketch is not seen as folded")
			}
			if err := r.merge(5, sk, p, mergeFrom{source: 3}, folded); err != nil {
				t.Fatal(err)
			}
		}, union([2]int{0, 900}), false},
		{"merged then inserted", func(r *ring) {
			sk, folded := exported(0, 900)
			_ = r.merge(5, sk, p, mergeFrom{source: 3}, folded)
			for i := range 300 {
				r.insert(5, mix(uint64(5000+i)))
			}
		}, union([2]int{0, 900}, [2]int{5000, 300}), true},
		{"one dense bucket", func(r *ring) {
			for i := range 50000 {
				r.insert(5, mix(uint64(i)))
			}
		}, union([2]int{0, 50000}), true},
		{"two buckets", func(r *ring) {
			for i := range 400 {
				r.insert(4, mix(uint64(i)))
				r.insert(5, mix(uint64(200+i)))
			}
		}, union([2]int{0, 600}), true},
	} {
		r := newRing(p, 6)
		tc.build(&r)
		for range 2 { // the second time from what the first folded
			w := r.window(5)
			if got := w.estimate(); got != tc.want {
				t.Errorf("%s: window estimate %d, want %d", tc.name, got, tc.want)
			}
			if (w.sk != nil) != tc.copy {
				t.Errorf("%s: estimated from a copy: %v, want %v", tc.name, w.sk != nil, tc.copy)
			}
		}
	}
}
