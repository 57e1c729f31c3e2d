package ingest

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Bodies are read before a request takes a processing slot, so that a client
// trickling its body holds no slot: sixteen slow clients once held all sixteen
// slots for the whole read timeout, and every other tenant's writes got 503.
// What bodies being read may hold is bounded instead, in bytes: in all, and per
// tenant, so that one tenant's slow or hostile clients can take at most its
// share and never what another tenant needs.
//
// A request reserves the size it declares (Content-Length), or the largest
// body it may send when it declares none, before its body is read; the buffer
// itself grows with what arrives, so a slow client that declares 32 MiB holds a
// 32 MiB reservation but not 32 MiB of memory.

// inflight counts the bytes reserved by bodies being read. It is safe for
// concurrent use.
type inflight struct {
	limit, perTenant int64

	mu      sync.Mutex
	used    int64
	tenants map[tenant.ID]int64 // only tenants with bytes reserved
	freed   chan struct{}       // closed and replaced when bytes are given back
	waiting bool                // someone waits on freed
}

func newInflight(limit, perTenant int64) *inflight {
	return &inflight{limit: limit, perTenant: perTenant, tenants: make(map[tenant.ID]int64), freed: make(chan struct{})}
}

// tryAcquire reserves n bytes for t if they fit; otherwise it returns a channel
// closed when some are given back.
func (f *inflight) tryAcquire(t tenant.ID, n int64) (bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used+n > f.limit || f.tenants[t]+n > f.perTenant {
		f.waiting = true
		return false, f.freed
	}
	f.used += n
	f.tenants[t] += n
	return true, nil
}

// acquire reserves n bytes for t, waiting up to wait for them.
func (f *inflight) acquire(ctx context.Context, t tenant.ID, n int64, wait time.Duration) error {
	ok, freed := f.tryAcquire(t, n)
	if ok {
		return nil
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-freed:
		case <-timer.C:
			return f.busy(t, n, wait)
		case <-ctx.Done():
			return &statusError{status: 499, msg: "client closed the request while it waited to send its body"}
		}
		if ok, freed = f.tryAcquire(t, n); ok {
			return nil
		}
	}
}

// busy is the 503 for a request that found no room for its body.
func (f *inflight) busy(t tenant.ID, n int64, wait time.Duration) error {
	f.mu.Lock()
	used, tenantUsed := f.used, f.tenants[t]
	f.mu.Unlock()
	msg := fmt.Sprintf("too many remote-write bodies being received: %d bytes in flight for this tenant, the limit is %d; a body of %d bytes waited %s (slow clients?); retry later",
		tenantUsed, f.perTenant, n, wait)
	if tenantUsed+n <= f.perTenant {
		msg = fmt.Sprintf("too many remote-write bodies being received: %d bytes in flight, the limit is %d; a body of %d bytes waited %s; retry later or raise -ingest.maxConcurrentRequests",
			used, f.limit, n, wait)
	}
	return &statusError{status: http.StatusServiceUnavailable, msg: msg, retryAfter: 5 * time.Second}
}

// release gives back n bytes of t's.
func (f *inflight) release(t tenant.ID, n int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.used -= n
	if f.tenants[t] -= n; f.tenants[t] <= 0 {
		delete(f.tenants, t)
	}
	if f.waiting {
		close(f.freed)
		f.freed, f.waiting = make(chan struct{}), false
	}
}
