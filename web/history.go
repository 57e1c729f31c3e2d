package web

import (
	"context"
	"slices"
	"sync"
	"time"
)

// History keeps rejections by reason over a bounded recent past (samples discarded
// per sampling interval, all tenants together), sampled from the cumulative counts
// of Tenants. Its memory is bounded by the number of points times the number of
// reasons, plus one small map per tenant seen in the last Points intervals. It is
// safe for concurrent use.
type History struct {
	src      Tenants
	interval time.Duration
	size     int

	mu     sync.Mutex
	points []Point // oldest first, at most size
	prev   map[string]prevTotals
}

// Point is the samples discarded by reason in the interval ending At.
type Point struct {
	At       time.Time
	ByReason map[string]int64
}

type prevTotals struct {
	seen   time.Time
	totals map[string]int64
}

// NewHistory returns a History of size points sampled every interval from src.
func NewHistory(src Tenants, interval time.Duration, size int) *History {
	return &History{src: src, interval: interval, size: max(size, 2), prev: map[string]prevTotals{}}
}

// Run samples every interval until ctx is done.
func (h *History) Run(ctx context.Context) {
	tick := time.NewTicker(h.interval)
	defer tick.Stop()
	h.Sample(time.Now())
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			h.Sample(now)
		}
	}
}

// Sample records the discards since the previous sample, at now. The first sample
// of a tenant only sets its baseline: what it discarded before cardguard's
// history began is not drawn as a spike.
func (h *History) Sample(now time.Time) {
	rows := h.src.Tenants()
	h.mu.Lock()
	defer h.mu.Unlock()
	by := map[string]int64{}
	for _, r := range rows {
		p, known := h.prev[r.Tenant]
		for reason, n := range r.Discarded {
			if !known {
				continue
			}
			d := n - p.totals[reason]
			if d < 0 { // counters restarted
				d = n
			}
			if d > 0 {
				by[reason] += d
			}
		}
		h.prev[r.Tenant] = prevTotals{seen: now, totals: cloneMap(r.Discarded)}
	}
	// Forget tenants gone for longer than the history: their counts would only
	// come back as a spike.
	for t, p := range h.prev {
		if now.Sub(p.seen) > h.interval*time.Duration(h.size) {
			delete(h.prev, t)
		}
	}
	h.points = append(h.points, Point{At: now, ByReason: by})
	if len(h.points) > h.size {
		h.points = slices.Delete(h.points, 0, len(h.points)-h.size)
	}
}

// Points returns a copy of the history, oldest first.
func (h *History) Points() []Point {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]Point, len(h.points))
	for i, p := range h.points {
		out[i] = Point{At: p.At, ByReason: cloneMap(p.ByReason)}
	}
	return out
}

// Interval is the time between samples.
func (h *History) Interval() time.Duration { return h.interval }

// Span is how much time the history covers when full.
func (h *History) Span() time.Duration { return h.interval * time.Duration(h.size) }

func cloneMap(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
