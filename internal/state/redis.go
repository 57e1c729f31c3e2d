package state

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is the Backend of replicas sharing one Redis or one Redis Cluster; the
// key layout is in the package documentation. Every command touches one key, or
// keys of one slot, so that the same code runs on both: several keys are read
// and written in pipelines, which a cluster client splits by node. It is safe for
// concurrent use.
type Redis struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedis returns a client for cfg (defaults applied). It does not connect:
// cardguard starts whether Redis is up or not. Every call is bounded by its
// context; the socket timeouts below only catch a server that stopped answering.
func NewRedis(cfg RedisConfig) (*Redis, error) {
	cfg = Config{Backend: BackendRedis, Redis: cfg}.WithDefaults().Redis
	tlsCfg, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	o := &redis.Options{
		Addr:                  cfg.Addr,
		Username:              cfg.Username,
		Password:              cfg.Password,
		DB:                    cfg.DB,
		TLSConfig:             tlsCfg,
		Protocol:              2,
		DisableIdentity:       true,
		ContextTimeoutEnabled: true,
		DialTimeout:           max(cfg.Timeout, time.Second),
		ReadTimeout:           max(cfg.SyncInterval, 5*time.Second),
		WriteTimeout:          max(cfg.SyncInterval, 5*time.Second),
		PoolTimeout:           cfg.Timeout,
		// A request waits at most Timeout for Redis; retrying inside it only helps
		// with a connection that broke since its last use.
		MaxRetries:      1,
		MinRetryBackoff: time.Millisecond,
		MaxRetryBackoff: 10 * time.Millisecond,
	}
	if !cfg.Cluster() {
		return &Redis{c: redis.NewClient(o), prefix: cfg.KeyPrefix}, nil
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{
		Addrs:                 cfg.ClusterAddrs,
		Username:              o.Username,
		Password:              o.Password,
		TLSConfig:             o.TLSConfig,
		Protocol:              o.Protocol,
		DisableIdentity:       o.DisableIdentity,
		ContextTimeoutEnabled: o.ContextTimeoutEnabled,
		DialTimeout:           o.DialTimeout,
		ReadTimeout:           o.ReadTimeout,
		WriteTimeout:          o.WriteTimeout,
		PoolTimeout:           o.PoolTimeout,
		MaxRetries:            o.MaxRetries,
		MinRetryBackoff:       o.MinRetryBackoff,
		MaxRetryBackoff:       o.MaxRetryBackoff,
	})
	return &Redis{c: c, prefix: cfg.KeyPrefix}, nil
}

// Close closes the connections.
func (r *Redis) Close() error { return r.c.Close() }

// Ping checks that Redis answers.
func (r *Redis) Ping(ctx context.Context) error { return r.c.Ping(ctx).Err() }

func (r *Redis) key(parts ...string) string {
	k := r.prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

// Instance implements Presence: SET NX of a random token, then read it back.
func (r *Redis) Instance(ctx context.Context, ttl time.Duration) (string, error) {
	k := r.key("instance")
	p := r.c.TxPipeline()
	p.SetNX(ctx, k, randomToken(), ttl)
	get := p.Get(ctx, k)
	p.PExpire(ctx, k, ttl)
	if _, err := p.Exec(ctx); err != nil {
		return "", err
	}
	return get.Val(), nil
}

// Heartbeat implements Presence with a sorted set scored by the last heartbeat.
func (r *Redis) Heartbeat(ctx context.Context, replica string, now time.Time, ttl time.Duration) ([]string, error) {
	k := r.key("replicas")
	p := r.c.TxPipeline()
	p.ZAdd(ctx, k, redis.Z{Score: float64(now.UnixMilli()), Member: replica})
	p.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(now.Add(-ttl).UnixMilli(), 10))
	alive := p.ZRange(ctx, k, 0, -1)
	p.PExpire(ctx, k, 2*ttl)
	if _, err := p.Exec(ctx); err != nil {
		return nil, err
	}
	return alive.Val(), nil
}

// Announce implements Presence with one hash of replica → URL.
func (r *Redis) Announce(ctx context.Context, replica, url string, alive []string, ttl time.Duration) (map[string]string, error) {
	k := r.key("peers")
	p := r.c.TxPipeline()
	p.HSet(ctx, k, replica, url)
	p.PExpire(ctx, k, 2*ttl)
	all := p.HGetAll(ctx, k)
	if _, err := p.Exec(ctx); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(alive))
	var gone []string
	for id, u := range all.Val() {
		if slices.Contains(alive, id) || id == replica {
			out[id] = u
		} else {
			gone = append(gone, id)
		}
	}
	if len(gone) > 0 {
		if err := r.c.HDel(ctx, k, gone...).Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PutSketches implements SketchStore: one string per bucket, expiring with it,
// and a hash of digests per replica.
func (r *Redis) PutSketches(ctx context.Context, replica string, put []Blob, del []string, indexTTL time.Duration) error {
	idx := r.key("sketches", replica)
	p := r.c.Pipeline()
	for _, b := range put {
		p.Set(ctx, r.key("sketch", replica, b.Name), b.Data, 0)
		p.PExpireAt(ctx, r.key("sketch", replica, b.Name), b.ExpireAt)
		p.HSet(ctx, idx, b.Name, strconv.FormatUint(b.Digest, 16))
	}
	if len(del) > 0 {
		p.HDel(ctx, idx, del...)
		for _, n := range del {
			p.Del(ctx, r.key("sketch", replica, n)) // one key a DEL: buckets spread over slots
		}
	}
	p.PExpire(ctx, idx, indexTTL)
	_, err := p.Exec(ctx)
	return err
}

// SketchIndex implements SketchStore.
func (r *Redis) SketchIndex(ctx context.Context, replica string) (map[string]uint64, error) {
	m, err := r.c.HGetAll(ctx, r.key("sketches", replica)).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(m))
	for n, d := range m {
		v, err := strconv.ParseUint(d, 16, 64)
		if err == nil {
			out[n] = v
		}
	}
	return out, nil
}

// GetSketches implements SketchStore.
func (r *Redis) GetSketches(ctx context.Context, replica string, names []string) ([][]byte, error) {
	if len(names) == 0 {
		return nil, nil
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = r.key("sketch", replica, n)
	}
	return r.getAll(ctx, keys)
}

// getAll returns the values of keys, nil for a missing one. It is MGET for keys
// that may be in different slots of a cluster: GETs in one pipeline.
func (r *Redis) getAll(ctx context.Context, keys []string) ([][]byte, error) {
	gets := make([]*redis.StringCmd, len(keys))
	p := r.c.Pipeline()
	for i, k := range keys {
		gets[i] = p.Get(ctx, k)
	}
	if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([][]byte, len(keys))
	for i, g := range gets {
		b, err := g.Bytes()
		switch {
		case errors.Is(err, redis.Nil):
		case err != nil:
			return nil, err
		default:
			out[i] = b
		}
	}
	return out, nil
}

// PutUsage implements UsageStore (putPerReplica).
func (r *Redis) PutUsage(ctx context.Context, replica string, data []byte, now time.Time, retention time.Duration) error {
	return r.putPerReplica(ctx, "usage", replica, data, now, retention)
}

// AllUsage implements UsageStore.
func (r *Redis) AllUsage(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error) {
	return r.allPerReplica(ctx, "usage", now, retention)
}

// PutSelectors implements SelectorStore, as PutUsage under its own keys.
func (r *Redis) PutSelectors(ctx context.Context, replica string, data []byte, now time.Time, retention time.Duration) error {
	return r.putPerReplica(ctx, "selectors", replica, data, now, retention)
}

// AllSelectors implements SelectorStore.
func (r *Redis) AllSelectors(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error) {
	return r.allPerReplica(ctx, "selectors", now, retention)
}

// putPerReplica stores one replica's blob of kind for retention: a string per
// replica and a sorted set of the replicas by last write. They are in different
// slots of a cluster, so not in one transaction: a reader that comes between the
// two writes sees the previous blob, or misses a new replica for one round.
func (r *Redis) putPerReplica(ctx context.Context, kind, replica string, data []byte, now time.Time, retention time.Duration) error {
	idx := r.key(kind)
	p := r.c.Pipeline()
	p.Set(ctx, r.key(kind, replica), data, retention)
	p.ZAdd(ctx, idx, redis.Z{Score: float64(now.UnixMilli()), Member: replica})
	p.ZRemRangeByScore(ctx, idx, "-inf", "("+strconv.FormatInt(now.Add(-retention).UnixMilli(), 10))
	p.PExpire(ctx, idx, retention)
	_, err := p.Exec(ctx)
	return err
}

// allPerReplica returns every replica's blob of kind written within retention.
func (r *Redis) allPerReplica(ctx context.Context, kind string, now time.Time, retention time.Duration) (map[string][]byte, error) {
	reps, err := r.c.ZRangeArgs(ctx, redis.ZRangeArgs{
		Key: r.key(kind), ByScore: true,
		Start: strconv.FormatInt(now.Add(-retention).UnixMilli(), 10), Stop: "+inf",
	}).Result()
	if err != nil || len(reps) == 0 {
		return map[string][]byte{}, err
	}
	keys := make([]string, len(reps))
	for i, rep := range reps {
		keys[i] = r.key(kind, rep)
	}
	vals, err := r.getAll(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(vals))
	for i, v := range vals {
		if v != nil {
			out[reps[i]] = v
		}
	}
	return out, nil
}

// LoadLimits implements LimitsBackend.
func (r *Redis) LoadLimits(ctx context.Context) (map[string][]byte, error) {
	m, err := r.c.HGetAll(ctx, r.key("limits")).Result()
	if err != nil {
		return nil, err
	}
	out := make(map[string][]byte, len(m))
	for t, v := range m {
		out[t] = []byte(v)
	}
	return out, nil
}

// SaveLimit implements LimitsBackend: HSET or HDEL, then PUBLISH the tenant.
func (r *Redis) SaveLimit(ctx context.Context, tenant string, override []byte) error {
	p := r.c.TxPipeline()
	if override == nil {
		p.HDel(ctx, r.key("limits"), tenant)
	} else {
		p.HSet(ctx, r.key("limits"), tenant, override)
	}
	p.Publish(ctx, r.key("limits", "changed"), tenant)
	_, err := p.Exec(ctx)
	return err
}

// SeedLimits implements LimitsBackend with HSETNX.
func (r *Redis) SeedLimits(ctx context.Context, overrides map[string][]byte) error {
	if len(overrides) == 0 {
		return nil
	}
	p := r.c.Pipeline()
	for t, o := range overrides {
		p.HSetNX(ctx, r.key("limits"), t, o)
	}
	_, err := p.Exec(ctx)
	return err
}

// WatchLimits implements LimitsBackend with SUBSCRIBE; go-redis resubscribes after
// a broken connection, and the messages published meanwhile are lost (the
// periodic reload catches up).
func (r *Redis) WatchLimits(ctx context.Context, changed func()) error {
	return r.watch(ctx, r.key("limits", "changed"), changed)
}

// watch calls changed for every message on channel until ctx is done.
func (r *Redis) watch(ctx context.Context, channel string, changed func()) error {
	sub := r.c.Subscribe(ctx, channel)
	defer sub.Close()
	ch := sub.Channel()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-ch:
			if !ok {
				return errors.New("subscription to " + channel + " closed")
			}
			changed()
		}
	}
}

// rulesKnown is the field of the rules hash that is always there once rules
// were set: without it, Redis never held rules or lost them. Tenant keys never
// begin with a dot.
const rulesKnown = ".known"

// LoadRules implements RulesBackend with HGETALL of the aggregate_rules hash.
func (r *Redis) LoadRules(ctx context.Context) (map[string][]byte, bool, error) {
	return r.RulesIn("aggregate_rules").LoadRules(ctx)
}

// SaveRules implements RulesBackend: HSET or HDEL, then PUBLISH the key.
func (r *Redis) SaveRules(ctx context.Context, key string, rules []byte) error {
	return r.RulesIn("aggregate_rules").SaveRules(ctx, key, rules)
}

// SeedRules implements RulesBackend with HSETNX.
func (r *Redis) SeedRules(ctx context.Context, rules map[string][]byte) error {
	return r.RulesIn("aggregate_rules").SeedRules(ctx, rules)
}

// WatchRules implements RulesBackend with SUBSCRIBE, as WatchLimits.
func (r *Redis) WatchRules(ctx context.Context, changed func()) error {
	return r.RulesIn("aggregate_rules").WatchRules(ctx, changed)
}

// RulesIn is a RulesBackend over the hash name (and its channel name:changed),
// for another kind of rules than the aggregation rules: the adaptive rules.
func (r *Redis) RulesIn(name string) RulesBackend { return redisRules{r: r, name: name} }

type redisRules struct {
	r    *Redis
	name string
}

func (h redisRules) LoadRules(ctx context.Context) (map[string][]byte, bool, error) {
	m, err := h.r.c.HGetAll(ctx, h.r.key(h.name)).Result()
	if err != nil {
		return nil, false, err
	}
	_, known := m[rulesKnown]
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		if k != rulesKnown {
			out[k] = []byte(v)
		}
	}
	return out, known, nil
}

func (h redisRules) SaveRules(ctx context.Context, key string, rules []byte) error {
	k := h.r.key(h.name)
	p := h.r.c.TxPipeline()
	if rules == nil {
		p.HDel(ctx, k, key)
	} else {
		p.HSet(ctx, k, key, rules)
	}
	p.HSet(ctx, k, rulesKnown, "1")
	p.Publish(ctx, h.r.key(h.name, "changed"), key)
	_, err := p.Exec(ctx)
	return err
}

func (h redisRules) SeedRules(ctx context.Context, rules map[string][]byte) error {
	k := h.r.key(h.name)
	p := h.r.c.Pipeline()
	for key, v := range rules {
		p.HSetNX(ctx, k, key, v)
	}
	p.HSet(ctx, k, rulesKnown, "1")
	_, err := p.Exec(ctx)
	return err
}

func (h redisRules) WatchRules(ctx context.Context, changed func()) error {
	return h.r.watch(ctx, h.r.key(h.name, "changed"), changed)
}

// keys returns every key under the prefix, on every master of a cluster. For
// tests: it walks the whole key space.
func (r *Redis) keys(ctx context.Context) ([]string, error) {
	var (
		mu  sync.Mutex
		out []string
	)
	scan := func(ctx context.Context, c *redis.Client) error {
		ks, err := c.Keys(ctx, r.prefix+"*").Result()
		mu.Lock()
		out = append(out, ks...)
		mu.Unlock()
		return err
	}
	if cc, ok := r.c.(*redis.ClusterClient); ok {
		err := cc.ForEachMaster(ctx, scan)
		return out, err
	}
	err := scan(ctx, r.c.(*redis.Client))
	return out, err
}
