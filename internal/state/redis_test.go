package state

import (
	"context"
	"testing"
	"time"

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
