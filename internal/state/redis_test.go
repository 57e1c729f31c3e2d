package state

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// realRedis is a Redis backend over a redis-server, or a Redis Cluster, this test
// owns: SetDown stops the processes, Reset restarts them empty.
type realRedis struct {
	*Redis
	srv interface {
		Start()
		Stop()
	}
}

func startRedis(t *testing.T) *realRedis {
	t.Helper()
	srv := vmtest.StartRedis(t)
	return newRealRedis(t, srv, RedisConfig{Addr: srv.Addr})
}

// startRedisCluster is startRedis on a 3-master Redis Cluster.
func startRedisCluster(t *testing.T) *realRedis {
	t.Helper()
	srv := vmtest.StartRedisCluster(t)
	return newRealRedis(t, srv, RedisConfig{ClusterAddrs: srv.Addrs})
}

func newRealRedis(t *testing.T, srv interface {
	Start()
	Stop()
}, cfg RedisConfig) *realRedis {
	t.Helper()
	cfg.Timeout = 500 * time.Millisecond
	r, err := NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return &realRedis{Redis: r, srv: srv}
}

func (r *realRedis) SetDown(down bool) {
	if down {
		r.srv.Stop()
	} else {
		r.srv.Start()
	}
}

func (r *realRedis) Reset() {
	r.srv.Stop()
	r.srv.Start()
}

// TestRedisKeysExpire checks that every key cardguard writes carries an expiry,
// except the limits overrides and the aggregation rules (configuration, bounded
// by the tenants).
func TestRedisKeysExpire(t *testing.T) {
	t.Parallel()
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		testRedisKeysExpire(t, startRedis(t))
	})
	t.Run("redis-cluster", func(t *testing.T) {
		t.Parallel()
		testRedisKeysExpire(t, startRedisCluster(t))
	})
}

func testRedisKeysExpire(t *testing.T, b *realRedis) {
	ra, rb := newReplica(t, b, "a"), newReplica(t, b, "b")
	ra.request(seriesLimit(10), hashes(0, 5)...)
	rb.request(seriesLimit(10), hashes(5, 8)...)
	if _, err := ra.reg.Set(tn, []byte(`{"max_series": 10}`)); err != nil {
		t.Fatal(err)
	}
	if err := NewRulesStore(b, nil, time.Second, nil).Save("1", []byte("- interval: 1m\n  outputs: [total]\n")); err != nil {
		t.Fatal(err)
	}
	observeAndSync(ra, rb)
	ctx := context.Background()
	keys, err := b.keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		ttl, err := b.c.PTTL(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if k == DefaultKeyPrefix+"limits" || k == DefaultKeyPrefix+"aggregate_rules" {
			continue
		}
		if ttl < 0 {
			t.Errorf("key %s has no expiry", k)
		}
	}
	if len(keys) < 6 {
		t.Fatalf("only %d keys written: %v", len(keys), keys)
	}
}

// TestRedisClusterSeriesLimitUnderConcurrency: three replicas sharing a Redis
// Cluster, 128 write requests in flight at once spread over them, more new
// series offered than the limit: each request's new series are decided in one
// atomic step on the tenant's master, so the union admitted is exactly the
// limit; afterwards every replica counts that union and passes all of it.
func TestRedisClusterSeriesLimitUnderConcurrency(t *testing.T) {
	t.Parallel()
	const (
		limit       = 200_000
		offered     = 300_000
		perRequest  = 100
		concurrency = 128
	)
	b := startRedisCluster(t)
	reps := []*replica{newReplica(t, b, "a"), newReplica(t, b, "b"), newReplica(t, b, "c")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, r := range reps {
		wg.Add(1)
		go func() { defer wg.Done(); r.s.Run(ctx) }()
	}
	defer func() { cancel(); wg.Wait() }()

	l := seriesLimit(limit)
	all := hashes(0, offered)
	reqs := make(chan int)
	var (
		mu       sync.Mutex
		admitted = make(map[uint64]bool, limit)
		workers  sync.WaitGroup
	)
	start := time.Now()
	for range concurrency {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for i := range reqs {
				ok := reps[i%len(reps)].requestConcurrent(l, all[i*perRequest:(i+1)*perRequest]...)
				mu.Lock()
				for _, h := range ok {
					admitted[h] = true
				}
				mu.Unlock()
			}
		}()
	}
	for i := range offered / perRequest {
		reqs <- i
	}
	close(reqs)
	workers.Wait()
	took := time.Since(start)
	over := len(admitted) - limit
	t.Logf("%d series offered in %d requests of %d, %d at once over 3 replicas, in %s: %d admitted for a limit of %d (%+.2f%%)",
		offered, offered/perRequest, perRequest, concurrency, took.Round(time.Millisecond), len(admitted), limit, 100*float64(over)/float64(limit))
	if over != 0 {
		t.Fatalf("admitted %d distinct series across 3 replicas; want exactly the limit, %d", len(admitted), limit)
	}
	existing := make([]uint64, 0, len(admitted))
	for h := range admitted {
		existing = append(existing, h)
	}
	for i, r := range reps {
		r.s.SyncOnce(context.Background())
		if n := r.enf.SeriesCount(tn); n != len(admitted) {
			t.Errorf("replica %d counts %d series; want the union, %d", i, n, len(admitted))
		}
		if got := r.requestConcurrent(l, existing...); len(got) != len(existing) {
			t.Errorf("replica %d refused %d admitted series", i, len(existing)-len(got))
		}
	}
}

// requestConcurrent is request as the write path does it while the Syncer
// runs: refreshes are published by the Syncer's own loop.
func (r *replica) requestConcurrent(l *limits.Limits, hashes ...uint64) []uint64 {
	return r.admit(l, hashes...)
}
