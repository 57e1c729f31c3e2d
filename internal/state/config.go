package state

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

// Backends.
const (
	// BackendMemory keeps state in this process, with file snapshots under the data
	// directory: one replica, the embedded default.
	BackendMemory = "memory"
	// BackendRedis shares state between replicas through Redis.
	BackendRedis = "redis"
)

// Defaults of RedisConfig.
const (
	DefaultKeyPrefix    = "cardguard:"
	DefaultSyncInterval = 2 * time.Second
	// DefaultSketchInterval paces the exchange of cardinality sketches.
	DefaultSketchInterval = 30 * time.Second
	DefaultTimeout        = 100 * time.Millisecond
)

// Config is the state section of the policy file.
type Config struct {
	// Backend is "memory" (default) or "redis".
	Backend string `yaml:"backend"`
	// ReplicaID names this replica in the shared state. Default: an ID generated
	// once and kept in the data directory, so that a restarted replica takes its
	// place again instead of counting its query usage twice.
	ReplicaID string `yaml:"replica_id"`
	// AdvertiseURL is where the other replicas reach this one (its own
	// http://host:port). With several replicas it is required for the label
	// guard, relabel collisions and aggregation to be right: the series of one
	// metric of a tenant with a guard or rules are processed by the replica that
	// owns that metric, whichever replica received them.
	AdvertiseURL string      `yaml:"advertise_url"`
	Redis        RedisConfig `yaml:"redis"`
}

// RedisConfig says how to reach Redis and how often to exchange state. It is
// read only with backend redis.
type RedisConfig struct {
	// Addr is host:port of a single Redis (or of a proxy in front of several).
	Addr string `yaml:"addr"`
	// ClusterAddrs are host:port of some nodes of a Redis Cluster (one is
	// enough, more survive one being down); the client finds the others and
	// follows the slots. Exactly one of Addr and ClusterAddrs is set.
	ClusterAddrs []string `yaml:"cluster_addrs"`
	Username     string   `yaml:"username"`
	Password     string   `yaml:"password"`
	// DB is the database number; Redis Cluster has only 0.
	DB int `yaml:"db"`
	// TLS turns TLS on; TLSCAFile adds a CA bundle (PEM) to trust, and
	// TLSInsecureSkipVerify turns certificate checks off (tests only).
	TLS                   bool   `yaml:"tls"`
	TLSCAFile             string `yaml:"tls_ca_file"`
	TLSInsecureSkipVerify bool   `yaml:"tls_insecure_skip_verify"`
	// KeyPrefix starts every key cardguard writes (default "cardguard:"), so that
	// several deployments can share one Redis.
	KeyPrefix string `yaml:"key_prefix"`
	// SyncInterval is how often presence, query usage and limits are exchanged
	// (default 2s). Series membership is decided in Redis per request (see the
	// package documentation).
	SyncInterval time.Duration `yaml:"sync_interval"`
	// SketchInterval is how often cardinality sketches are exchanged (default
	// 30s, at least sync_interval): merging every other replica's sketches is
	// the largest part of a replica's work for sharing, and estimates over a
	// one-hour window gain little from fresher remote parts. Each replica's
	// own part of the estimates is live.
	SketchInterval time.Duration `yaml:"sketch_interval"`
	// Timeout bounds every Redis call a request waits for (default 100ms); past
	// it the request goes on with local state. Background calls get SyncInterval.
	Timeout time.Duration `yaml:"timeout"`
}

// Shared reports whether state is shared between replicas.
func (c Config) Shared() bool { return c.Backend == BackendRedis }

// WithDefaults returns c with the documented defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Backend == "" {
		c.Backend = BackendMemory
	}
	r := &c.Redis
	if c.Backend == BackendRedis {
		if r.KeyPrefix == "" {
			r.KeyPrefix = DefaultKeyPrefix
		}
		if r.SyncInterval == 0 {
			r.SyncInterval = DefaultSyncInterval
		}
		if r.SketchInterval == 0 {
			r.SketchInterval = max(DefaultSketchInterval, r.SyncInterval)
		}
		if r.Timeout == 0 {
			r.Timeout = DefaultTimeout
		}
	}
	return c
}

// Validate checks c as written (defaults are applied first).
func (c Config) Validate() error {
	c = c.WithDefaults()
	if len(c.ReplicaID) > 128 || strings.ContainsAny(c.ReplicaID, ": \t\n") {
		return fmt.Errorf("state.replica_id %q: at most 128 bytes, without colons or spaces", truncate(c.ReplicaID))
	}
	if c.AdvertiseURL != "" {
		u, err := url.Parse(c.AdvertiseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return fmt.Errorf("state.advertise_url %q: want http(s)://host:port of this replica", truncate(c.AdvertiseURL))
		}
	}
	switch c.Backend {
	case BackendMemory:
		return nil // the redis section is read only with backend redis
	case BackendRedis:
	default:
		return fmt.Errorf("state.backend %q: want memory or redis", c.Backend)
	}
	r := c.Redis
	switch {
	case r.Addr == "" && len(r.ClusterAddrs) == 0:
		return errors.New("state.redis.addr is required with backend redis (or state.redis.cluster_addrs for Redis Cluster)")
	case r.Addr != "" && len(r.ClusterAddrs) > 0:
		return errors.New("state.redis.addr and state.redis.cluster_addrs: set one, addr for a single Redis, cluster_addrs for Redis Cluster")
	}
	if r.Addr != "" {
		if _, _, err := net.SplitHostPort(r.Addr); err != nil {
			return fmt.Errorf("state.redis.addr %q: want host:port: %w", r.Addr, err)
		}
	}
	for i, a := range r.ClusterAddrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("state.redis.cluster_addrs[%d] %q: want host:port: %w", i, truncate(a), err)
		}
	}
	if r.DB < 0 {
		return fmt.Errorf("state.redis.db %d: must not be negative", r.DB)
	}
	if r.DB != 0 && r.Cluster() {
		return fmt.Errorf("state.redis.db %d: Redis Cluster has only database 0", r.DB)
	}
	if r.SyncInterval < 100*time.Millisecond || r.SyncInterval > 10*time.Minute {
		return fmt.Errorf("state.redis.sync_interval %s: want between 100ms and 10m", r.SyncInterval)
	}
	if r.SketchInterval != 0 && (r.SketchInterval < r.SyncInterval || r.SketchInterval > time.Hour) {
		return fmt.Errorf("state.redis.sketch_interval %s: want between sync_interval (%s) and 1h", r.SketchInterval, r.SyncInterval)
	}
	if r.Timeout <= 0 || r.Timeout > r.SyncInterval {
		return fmt.Errorf("state.redis.timeout %s: want above 0 and at most sync_interval (%s)", r.Timeout, r.SyncInterval)
	}
	if !r.TLS && (r.TLSCAFile != "" || r.TLSInsecureSkipVerify) {
		return errors.New("state.redis.tls_ca_file and tls_insecure_skip_verify need tls: true")
	}
	if _, err := r.tlsConfig(); err != nil {
		return err
	}
	return nil
}

// Cluster reports whether r names a Redis Cluster.
func (r RedisConfig) Cluster() bool { return len(r.ClusterAddrs) > 0 }

// tlsConfig builds the client TLS configuration; nil without TLS.
func (r RedisConfig) tlsConfig() (*tls.Config, error) {
	if !r.TLS {
		return nil, nil
	}
	// A cluster's nodes are reached at the addresses the cluster announces: with
	// no ServerName, each connection checks the certificate against its own host.
	var host string
	if !r.Cluster() {
		host, _, _ = net.SplitHostPort(r.Addr)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: host, InsecureSkipVerify: r.TLSInsecureSkipVerify} //nolint:gosec // opt-in, documented as for tests
	if r.TLSCAFile != "" {
		pem, err := os.ReadFile(r.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("state.redis.tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("state.redis.tls_ca_file %s: no PEM certificate in it", r.TLSCAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
