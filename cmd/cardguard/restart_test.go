package main

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/tenant"
)

// TestRestartKeepsStateWithoutRedis: with in-memory state, a restart on the same
// data directory keeps the estimates and the series-limit membership: a tenant at
// its limit keeps accepting exactly the series it accepted before, even when new
// series arrive first after the restart.
func TestRestartKeepsStateWithoutRedis(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Limits.Defaults.MaxSeries = 10 })
	base := time.Now().Add(-2 * time.Minute).UnixMilli()
	if code, body := e.push("/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("kept", 10, base)}); code != 204 {
		t.Fatalf("first push: %d %s", code, body)
	}
	e.app.tracker.Refresh()
	before, _ := e.app.tracker.Tenant(tenant.ID{})
	e.app.stop() // what SIGTERM does after the server drained: snapshots are written

	a2, err := newApp(e.app.cfg, e.app.opts, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a2.stop)
	srv := httptest.NewServer(a2.routes())
	t.Cleanup(srv.Close)
	e2 := &env{t: t, vm: e.vm, app: a2, srv: srv}

	a2.tracker.Refresh()
	if after, ok := a2.tracker.Tenant(tenant.ID{}); !ok || after.ActiveSeries != before.ActiveSeries {
		t.Errorf("estimate after restart %+v, before %+v", after, before)
	}
	// New series first: they must not take the places of the admitted ones.
	if code, body := e2.push("/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("newcomer", 5, base+30_000)}); code != 204 {
		t.Fatalf("push of new series: %d %s", code, body)
	}
	if code, body := e2.push("/api/v1/write", &prompb.WriteRequest{Timeseries: genSeries("kept", 10, base+30_000)}); code != 204 {
		t.Fatalf("push of kept series: %d %s", code, body)
	}
	e.vm.Flush()
	if got := vmScalar(t, e2, `sum(count_over_time(kept[10m]))`); got != 20 {
		t.Errorf("kept series got %v samples across the restart, want 20", got)
	}
	if got := vmScalar(t, e2, `count(newcomer)`); got != -1 {
		t.Errorf("%v new series took places of admitted ones after the restart", got)
	}
}
