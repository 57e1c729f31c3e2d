package ingest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// TestSlowBodiesHoldNoSlot: clients of tenant 1 that declare large bodies and
// never send them hold neither the processing slots nor more than tenant 1's
// share of the bytes bodies may reserve; tenant 2's writes are answered 204
// meanwhile, and tenant 1's extra slow clients get 503 once the queue wait is
// over.
func TestSlowBodiesHoldNoSlot(t *testing.T) {
	t.Parallel()
	up := newFakeUpstream(t)
	const maxBody = 1 << 20
	h := newTestHandler(t, up.srv.URL, Config{MaxConcurrent: 2, QueueWait: 300 * time.Millisecond, MaxRequestBytes: maxBody}, 5*time.Second)
	slow, other := tenant.MustParse("1"), tenant.MustParse("2")

	// Twice as many stalled bodies as slots, each declaring the largest body.
	var wg sync.WaitGroup
	var pipes []*io.PipeWriter
	codes := make(chan int, 4)
	for range 4 {
		pr, pw := io.Pipe()
		pipes = append(pipes, pw)
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", pr)
		req.ContentLength = maxBody
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			h.ServeWrite(rec, req, slow)
			codes <- rec.Code
		}()
	}
	time.Sleep(100 * time.Millisecond)

	body := makeRequest(5, 3)
	for i := range 3 {
		req := httptest.NewRequest(http.MethodPost, "/api/v1/write", bytes.NewReader(body))
		rec := httptest.NewRecorder()
		start := time.Now()
		h.ServeWrite(rec, req, other)
		t.Logf("tenant 2 write %d: %d in %s", i, rec.Code, time.Since(start))
		if rec.Code != http.StatusNoContent {
			t.Fatalf("tenant 2 write %d: %d %s, want 204 while tenant 1's bodies stall", i, rec.Code, rec.Body)
		}
	}
	// Tenant 1's share (a quarter of 2 × 1 MiB, at least one body) holds one
	// stalled body; the others waited for room and gave up.
	time.Sleep(400 * time.Millisecond)
	for range 3 {
		if c := <-codes; c != http.StatusServiceUnavailable {
			t.Errorf("stalled body beyond tenant 1's share: %d, want 503", c)
		}
	}
	for _, pw := range pipes {
		_ = pw.CloseWithError(io.ErrUnexpectedEOF)
	}
	wg.Wait()
}
