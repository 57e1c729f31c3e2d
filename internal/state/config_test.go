package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	redis := func(f func(*RedisConfig)) Config {
		c := Config{Backend: BackendRedis, Redis: RedisConfig{Addr: "redis:6379"}}
		f(&c.Redis)
		return c
	}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"zero is memory", Config{}, ""},
		{"memory", Config{Backend: BackendMemory}, ""},
		{"redis", redis(func(*RedisConfig) {}), ""},
		{"unknown backend", Config{Backend: "etcd"}, `state.backend "etcd"`},
		{"redis settings ignored with memory", Config{Redis: RedisConfig{Addr: "x"}}, ""},
		{"no addr", Config{Backend: BackendRedis}, "addr is required"},
		{"addr without port", redis(func(r *RedisConfig) { r.Addr = "redis" }), "want host:port"},
		{"negative db", redis(func(r *RedisConfig) { r.DB = -1 }), "db -1"},
		{"cluster", Config{Backend: BackendRedis, Redis: RedisConfig{ClusterAddrs: []string{"r1:6379", "r2:6379"}}}, ""},
		{"addr and cluster", redis(func(r *RedisConfig) { r.ClusterAddrs = []string{"r1:6379"} }), "set one"},
		{"cluster addr without port", Config{Backend: BackendRedis, Redis: RedisConfig{ClusterAddrs: []string{"r1:6379", "r2"}}}, "cluster_addrs[1]"},
		{"cluster db", Config{Backend: BackendRedis, Redis: RedisConfig{ClusterAddrs: []string{"r1:6379"}, DB: 1}}, "only database 0"},
		{"interval too short", redis(func(r *RedisConfig) { r.SyncInterval = time.Millisecond }), "sync_interval 1ms"},
		{"sketch interval under sync interval", redis(func(r *RedisConfig) { r.SketchInterval = time.Second }), "sketch_interval 1s"},
		{"sketch interval", redis(func(r *RedisConfig) { r.SketchInterval = time.Minute }), ""},
		{"timeout over interval", redis(func(r *RedisConfig) { r.Timeout = 3 * time.Second }), "timeout 3s"},
		{"negative timeout", redis(func(r *RedisConfig) { r.Timeout = -time.Second }), "timeout -1s"},
		{"ca without tls", redis(func(r *RedisConfig) { r.TLSCAFile = notPEM }), "need tls: true"},
		{"ca not pem", redis(func(r *RedisConfig) { r.TLS, r.TLSCAFile = true, notPEM }), "no PEM certificate"},
		{"ca missing", redis(func(r *RedisConfig) { r.TLS, r.TLSCAFile = true, filepath.Join(dir, "nope") }), "tls_ca_file"},
		{"tls", redis(func(r *RedisConfig) { r.TLS, r.TLSInsecureSkipVerify = true, true }), ""},
		{"long replica id", Config{ReplicaID: strings.Repeat("x", 129)}, "replica_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.cfg.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
	d := Config{Backend: BackendRedis}.WithDefaults().Redis
	if d.KeyPrefix != "cardguard:" || d.SyncInterval != 2*time.Second || d.SketchInterval != 30*time.Second || d.Timeout != 100*time.Millisecond {
		t.Fatalf("defaults %+v", d)
	}
}
