package cardinality

import (
	"github.com/axiomhq/hyperloglog"
)

// ring holds one sketch per bucket of a window. Slot i holds the bucket whose epoch is
// congruent to i; a slot is recycled lazily, on the first insert of a newer epoch, so
// rotation never has to walk every sketch. A ring has no lock: its owner's mutex
// guards it.
type ring struct {
	p     uint8
	slots []slot
}

type slot struct {
	epoch   int64
	inserts int // since the last recycle: a bound on how far the sketch has grown
	// local: the sketch holds something this replica observed (or adopted as its
	// own), not only what other replicas' buckets merged into it.
	local bool
	// source is the one replica whose buckets alone were merged into the
	// sketch (MergeBucketsFrom), mixedSources once there were others, 0 for
	// none or unknown.
	source uint64
	// folded: the sketch is sparse with an empty insert buffer, so that
	// Estimate costs nothing (a copy merged in as it was exported, or one
	// whose buffer window folded); cleared by what may change that.
	folded bool
	sk     *hyperloglog.Sketch
}

// mixedSources marks a slot into which more than one source merged: a source's
// hash always has its lowest bit set, so it is never this.
const mixedSources = ^uint64(0) - 1

func newRing(p uint8, n int) ring { return ring{p: p, slots: make([]slot, n)} }

func newSketch(p uint8) *hyperloglog.Sketch {
	sk, err := hyperloglog.NewSketch(p, true)
	if err != nil {
		panic(err) // precision was validated with the config
	}
	return sk
}

// at returns the sketch for epoch, recycling an older bucket's slot, or nil when the
// slot already holds a newer bucket (a caller that read the epoch before a rotation).
func (r *ring) at(epoch int64) *slot {
	s := &r.slots[mod(epoch, len(r.slots))]
	switch {
	case s.sk == nil:
		s.sk = newSketch(r.p)
	case s.epoch == epoch:
		return s
	case s.epoch > epoch:
		return nil
	case s.inserts > 1<<r.p/8:
		// It may have gone dense; start sparse again rather than keep 2^p bytes
		// for what may now be a handful of values.
		s.sk = newSketch(r.p)
	default:
		s.sk.Reset() // keeps the sparse buffers
	}
	s.epoch = epoch
	s.inserts = 0
	s.local = false
	s.source = 0
	s.folded = false
	return s
}

func (r *ring) insert(epoch int64, h uint64) {
	if s := r.at(epoch); s != nil {
		s.sk.InsertHash(h)
		s.inserts++
		s.local = true
		s.folded = false
	}
}

// merge unions sk, of precision p, into the bucket of epoch. sk is the ring's
// from then on: into an empty bucket (a metric another replica owns) it goes
// as it is, which costs nothing, where merging a sparse sketch re-inserts
// every value of it; so does a newer copy of what one source alone put there,
// since a source's bucket only grows (MergeBucketsFrom). folded says that sk
// is sparse with an empty insert buffer.
func (r *ring) merge(epoch int64, sk *hyperloglog.Sketch, p uint8, from mergeFrom, folded bool) error {
	s := r.at(epoch)
	if s == nil {
		return nil
	}
	var err error
	switch {
	case p == r.p && s.inserts == 0:
		s.sk = sk
		s.source = from.source
		s.folded = folded
	case p == r.p && !s.local && !from.local && from.source != 0 && s.source == from.source:
		s.sk = sk
		s.folded = folded
	default:
		err = s.sk.Merge(sk)
		s.source = mixedSources
		s.folded = false
	}
	s.inserts += 1 << r.p // merged content may be dense
	s.local = s.local || from.local
	return err
}

// windowed is the union of a window's buckets, to estimate: a private copy
// (sk), estimated outside the owner's lock, or the estimate itself (est) when
// that cost nothing to take under it.
type windowed struct {
	sk  *hyperloglog.Sketch
	est int64
}

func (w windowed) estimate() int64 {
	if w.sk == nil {
		return w.est
	}
	return int64(w.sk.Estimate())
}

// window returns the union of the buckets in (cur-n, cur]. With one sparse
// bucket, the common case of a metric another replica owns or of a young
// one, the union is that bucket: its estimate, taken in place, costs nothing
// once its buffer is folded, where a copy cost an allocation of the whole
// list to be estimated the same (the clones were 0.19 of the 1.2 GB three
// replicas allocated in a make bench-scale run).
func (r *ring) window(cur int64) windowed {
	var only *slot
	n := 0
	for i := range r.slots {
		s := &r.slots[i]
		if s.sk == nil || s.inserts == 0 || !inWindow(s.epoch, cur, len(r.slots)) {
			continue
		}
		n++
		only = s
	}
	if n == 0 {
		return windowed{}
	}
	if n == 1 && (only.folded || only.inserts <= 1<<r.p/8) {
		est := int64(only.sk.Estimate())
		only.folded = true
		return windowed{est: est}
	}
	var u *hyperloglog.Sketch
	for i := range r.slots {
		s := &r.slots[i]
		if s.sk == nil || s.inserts == 0 || !inWindow(s.epoch, cur, len(r.slots)) {
			continue
		}
		if s.folded || s.inserts <= 1<<r.p/8 {
			// Still sparse: fold its insert buffer into its list here, once,
			// rather than in every copy estimated until the next insert (the
			// fold sorts the buffer and rewrites the list; a sparse sketch
			// of this size does it in microseconds).
			s.sk.Estimate()
			s.folded = true
		}
		if u == nil {
			u = s.sk.Clone()
			continue
		}
		_ = u.Merge(s.sk) // same ring, same precision
	}
	return windowed{sk: u}
}

// newest returns the newest epoch with data, or -1.
func (r *ring) newest() int64 {
	n := int64(-1)
	for i := range r.slots {
		if r.slots[i].sk != nil && r.slots[i].inserts > 0 && r.slots[i].epoch > n {
			n = r.slots[i].epoch
		}
	}
	return n
}

// bytes approximates the heap held by the ring's sketches. buf is scratch space.
func (r *ring) bytes(buf []byte) (int64, []byte) {
	var n int64
	for i := range r.slots {
		sk := r.slots[i].sk
		if sk == nil {
			continue
		}
		buf, _ = sk.AppendBinary(buf[:0])
		if len(buf) >= 1<<r.p {
			n += int64(len(buf)) + 96 // dense: registers plus the struct
		} else {
			// sparse: the varint list and the tmp set, both grown by doubling,
			// plus the structs; calibrated against HeapInuse (p=14 and p=16,
			// 1 to 3000 values: within 20%).
			n += 5*int64(len(buf))/2 + 160
		}
	}
	return n, buf
}

func inWindow(epoch, cur int64, n int) bool { return epoch <= cur && epoch > cur-int64(n) }

func mod(e int64, n int) int {
	m := e % int64(n)
	if m < 0 {
		m += int64(n)
	}
	return int(m)
}

type sketch = hyperloglog.Sketch
