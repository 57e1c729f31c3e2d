package adaptive

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
)

// TestPreviewsBounded: a script previewing every metric of every tenant
// cannot make the write path walk thousands of previews per series or hold
// their series: past MaxPreviews running, a preview is refused with 409.
func TestPreviewsBounded(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, workload(), &epoch)
	ctx := context.Background()
	for i := range MaxPreviews {
		if _, err := e.StartPreview(ctx, tn, fmt.Sprintf("m_%d", i), RuleSpec{Kind: KindDrop}); err != nil {
			t.Fatalf("preview %d: %v", i, err)
		}
	}
	if _, err := e.StartPreview(ctx, tn, "one_more", RuleSpec{Kind: KindDrop}); statusOf(err) != http.StatusConflict {
		t.Errorf("preview %d: %v, want 409", MaxPreviews+1, err)
	}
	// Restarting a running preview replaces it.
	if _, err := e.StartPreview(ctx, tn, "m_0", RuleSpec{Kind: KindDrop}); err != nil {
		t.Errorf("restart of a running preview: %v", err)
	}
	// Once their bucket is over they make room.
	for range 2 { // waiting, measuring, done
		epoch.Add(1)
		e.preview.tick()
	}
	if _, err := e.StartPreview(ctx, tn, "one_more", RuleSpec{Kind: KindDrop}); err != nil {
		t.Errorf("preview after the others finished: %v", err)
	}
	if n := e.preview.running(); n != 1 {
		t.Errorf("%d previews running, want 1", n)
	}
}
