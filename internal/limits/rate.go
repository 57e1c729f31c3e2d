package limits

import (
	"math"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// MaxRetryAfter caps the Retry-After AllowSamples suggests.
const MaxRetryAfter = time.Minute

// rateMeterSlot is the width of the two slots the ingestion rate is measured over.
const rateMeterSlot = int64(10 * time.Second)

// rateState is a tenant's token bucket plus a meter of accepted samples. It is
// touched once per request, so one mutex is enough.
type rateState struct {
	mu     sync.Mutex
	tokens float64
	last   int64 // unix nanoseconds of the last refill
	filled bool  // false until the first limited request: the bucket starts full
	// meter: samples accepted in slot and in the slot before it
	slot      int64
	cur, prev float64
}

// AllowSamples takes n samples of tenant t from its token bucket (ingestion_rate
// samples/s, ingestion_burst samples). A request over the rate is refused whole:
// ok is false and retryAfter is the time until n tokens are back, rounded up to whole
// seconds, at least 1 s and at most MaxRetryAfter; the refused request takes no
// tokens.
//
// A request larger than the burst can never find n tokens; it is allowed when the
// bucket is full and leaves the bucket in debt, so the tenant's later requests wait
// until the rate has paid for it. Over time the rate still holds.
//
// The decision does not depend on l.Mode: in dry run the caller forwards the request
// anyway and records ReasonRateLimited as "would drop". With no ingestion_rate every
// request is allowed. Accepted samples feed IngestionRate either way.
func (e *Enforcer) AllowSamples(t tenant.ID, l *Limits, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	if n <= 0 {
		return true, 0
	}
	st := e.tenant(t)
	return st.rate.allow(l, float64(n), now.UnixNano())
}

func (r *rateState) allow(l *Limits, n float64, now int64) (bool, time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l == nil || l.IngestionRate <= 0 {
		r.filled = false // a limit set later starts with a full bucket
		r.meter(n, now)
		return true, 0
	}
	rate, burst := l.IngestionRate, l.Burst()
	switch {
	case !r.filled:
		r.tokens, r.last, r.filled = burst, now, true
	case now > r.last:
		r.tokens = math.Min(burst, r.tokens+float64(now-r.last)/1e9*rate)
		r.last = now
	default:
		// Clock went back or two calls share a timestamp: no refill.
		r.tokens = math.Min(burst, r.tokens)
	}
	need := math.Min(n, burst)
	if r.tokens >= need {
		r.tokens -= n
		r.meter(n, now)
		return true, 0
	}
	wait := (need - r.tokens) / rate // seconds
	secs := math.Ceil(wait)
	if secs < 1 {
		secs = 1
	}
	if secs > MaxRetryAfter.Seconds() {
		return false, MaxRetryAfter
	}
	return false, time.Duration(secs) * time.Second
}

func (r *rateState) meter(n float64, now int64) {
	slot := now / rateMeterSlot
	switch {
	case slot == r.slot:
		r.cur += n
	case slot == r.slot+1:
		r.prev, r.cur = r.cur, n
	case slot > r.slot+1:
		r.prev, r.cur = 0, n
	default: // clock went back: count it in the current slot
		r.cur += n
		return
	}
	r.slot = slot
}

// perSecond estimates the accepted samples per second over the last slot width: the
// current slot plus the part of the previous slot still inside the window.
func (r *rateState) perSecond(now int64) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	slot := now / rateMeterSlot
	cur, prev := r.cur, r.prev
	switch {
	case slot == r.slot+1:
		cur, prev = 0, r.cur
	case slot > r.slot+1:
		return 0
	}
	frac := float64(now%rateMeterSlot) / float64(rateMeterSlot)
	return (prev*(1-frac) + cur) / (float64(rateMeterSlot) / 1e9)
}
