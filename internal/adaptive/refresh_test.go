package adaptive

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// gatedCounter blocks every count until open is closed.
type gatedCounter struct {
	*counter
	open chan struct{}
}

func (g gatedCounter) Count(ctx context.Context, t tenant.ID, m string, sc Scope, without []string) (int64, error) {
	<-g.open
	return g.counter.Count(ctx, t, m, sc, without)
}

// TestRefreshOnDemandJoins: any tenant token may ask for a refresh, which
// queries VictoriaMetrics; asked for many times while one runs, it runs once.
func TestRefreshOnDemandJoins(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, c, _ := newTestEngine(t, workload(), &epoch, queriesUsing())
	e.Recommendations(context.Background(), tn, true)
	once := c.calls.Swap(0)
	if once == 0 {
		t.Fatal("a refresh asked VictoriaMetrics for nothing: the test tests nothing")
	}
	g := gatedCounter{counter: c, open: make(chan struct{})}
	e.o.Counter = g
	var wg sync.WaitGroup
	lists := make([]*List, 20)
	for i := range lists {
		wg.Go(func() { lists[i] = e.Recommendations(context.Background(), tn, true) })
	}
	time.Sleep(100 * time.Millisecond)
	close(g.open)
	wg.Wait()
	if n := c.calls.Load(); n != once {
		t.Errorf("20 refreshes asked at once made %d upstream counts, want %d (one refresh)", n, once)
	}
	for i, l := range lists {
		if l == nil || len(l.Items) == 0 {
			t.Errorf("caller %d got %+v", i, l)
		}
	}
}

// TestListsOfUnknownTenantsNotKept: asking for the recommendations of
// tenants that have no series nor rules keeps nothing.
func TestListsOfUnknownTenantsNotKept(t *testing.T) {
	t.Parallel()
	var epoch atomic.Int64
	e, _, _ := newTestEngine(t, series{}, &epoch, queriesUsing())
	for i := range 1000 {
		if l := e.Recommendations(context.Background(), tenant.ID{AccountID: uint32(i + 100)}, false); l == nil || len(l.Items) != 0 {
			t.Fatalf("tenant %d: %+v", i+100, l)
		}
	}
	e.mu.Lock()
	n := len(e.lists)
	e.mu.Unlock()
	if n != 0 {
		t.Errorf("%d lists kept for tenants with nothing", n)
	}
}
