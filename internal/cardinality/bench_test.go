package cardinality

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// workload builds nMetrics metrics of perMetric series each, with 10 labels (__name__
// included) of varied cardinality, the shape of a typical Kubernetes scrape.
type workload struct {
	labels [][]prompb.Label
	hashes []uint64
}

func newWorkload(nMetrics, perMetric int) *workload {
	w := &workload{}
	for m := range nMetrics {
		name := fmt.Sprintf("app_metric_%d_total", m)
		for s := range perMetric {
			ls := series(name,
				"cluster", "eu-1",
				"code", strconv.Itoa(200+s%5),
				"container", "app",
				"instance", "10.0.0."+strconv.Itoa(s%250)+":9100",
				"job", "app",
				"method", []string{"GET", "POST", "PUT"}[s%3],
				"namespace", "ns-"+strconv.Itoa(s%20),
				"pod", "app-"+strconv.Itoa(s),
				"route", "/api/"+strconv.Itoa(s%40),
			)
			w.labels = append(w.labels, ls)
			w.hashes = append(w.hashes, hashLabels(ls))
		}
	}
	return w
}

func (w *workload) observe(tr *Tracker, tn tenant.ID, i int) {
	i %= len(w.labels)
	tr.Observe(tn, w.labels[i][0].Value, w.labels[i], w.hashes[i])
}

// BenchmarkObserve is the steady state: every series was already seen in the bucket.
func BenchmarkObserve(b *testing.B) {
	w := newWorkload(100, 1000)
	tr, _ := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			w.observe(tr, tn, i)
			i += 7919
		}
	})
}

// BenchmarkObserveFirstSight is a series new to the bucket: dedup miss and inserts
// into 22 sketches. The bucket rotates every len(series) iterations so that every
// observation is a first sight.
func BenchmarkObserveFirstSight(b *testing.B) {
	w := newWorkload(100, 1000)
	tr, c := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%len(w.labels) == 0 && i > 0 {
			c.Add(10 * time.Minute)
			tr.Rotate(c.Now())
		}
		w.observe(tr, tn, i)
	}
}

// BenchmarkRefresh recomputes every estimate (the window moved) for 100 metrics of
// 1000 series.
func BenchmarkRefresh(b *testing.B) {
	w := newWorkload(100, 1000)
	tr, _ := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tr.lastRefresh = -1 // force a full recompute
		tr.Refresh()
	}
}

// BenchmarkRefreshAfterInserts is a Refresh under load: since the last one,
// every metric took 20 new series (2%), whose sketches must be estimated again.
func BenchmarkRefreshAfterInserts(b *testing.B) {
	w := newWorkload(100, 1000)
	more := newWorkload(100, 20*(b.N+1))
	tr, _ := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	tr.Refresh()
	next := 0
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		for m := range 100 {
			for j := range 20 {
				// Series m*per+j.. of more are metric m's.
				more.observe(tr, tn, m*20*(b.N+1)+next+j)
			}
		}
		next += 20
		b.StartTimer()
		tr.Refresh()
	}
}

// BenchmarkRefreshIdle is the common case between rotations: nothing changed since
// the last Refresh, so only the view is rebuilt.
func BenchmarkRefreshIdle(b *testing.B) {
	w := newWorkload(100, 1000)
	tr, _ := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	tr.Refresh()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tr.Refresh()
	}
}

// BenchmarkMemory1MSeries reports the heap held for 1M active series across 1000
// metrics with 10 labels each, after a full window of rotations (every bucket full).
func BenchmarkMemory1MSeries(b *testing.B) {
	for range b.N {
		b.StopTimer()
		w := newWorkload(1000, 1000)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		tr, c := newTracker(b, Config{})
		tn := tenant.ID{AccountID: 1}
		b.StartTimer()
		for range 6 {
			for i := range w.labels {
				w.observe(tr, tn, i)
			}
			c.Add(10 * time.Minute)
			tr.Refresh()
		}
		b.StopTimer()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/(1<<20), "MiB-heap/1M-series")
		b.ReportMetric(float64(tr.MemoryBytes())/(1<<20), "MiB-estimated/1M-series")
		sum, _ := tr.Tenant(tn)
		b.ReportMetric(float64(sum.ActiveSeries), "active-series")
		runtime.KeepAlive(w)
	}
}

// BenchmarkRefreshMerged is the Refresh that follows an exchange between
// replicas: 100 metrics of 1000 series that another replica observed were
// merged in again since the last one.
func BenchmarkRefreshMerged(b *testing.B) {
	w := newWorkload(100, 1000)
	src, _ := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for i := range w.labels {
		w.observe(src, tn, i)
	}
	bs := src.ExportBuckets(tn)
	tr, _ := newTracker(b, Config{})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		if err := tr.MergeBucketsFrom("other", bs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		tr.Refresh()
	}
}

// BenchmarkRefreshFullWindow is BenchmarkRefresh after an hour: every bucket of
// the window holds the same series, as in steady state, so that each estimate
// is of a union of buckets.
func BenchmarkRefreshFullWindow(b *testing.B) {
	w := newWorkload(100, 1000)
	tr, c := newTracker(b, Config{})
	tn := tenant.ID{AccountID: 1}
	for range 6 {
		for i := range w.labels {
			w.observe(tr, tn, i)
		}
		c.Add(10 * time.Minute)
		tr.Rotate(c.Now())
	}
	for i := range w.labels {
		w.observe(tr, tn, i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		tr.lastRefresh = -1 // force a full recompute
		tr.Refresh()
	}
}
