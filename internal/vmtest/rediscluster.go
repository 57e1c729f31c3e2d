package vmtest

import (
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a running Redis Cluster of three masters without replicas or
// persistence, each a redis-server with its own directory on free loopback
// ports. Stop and Start give a cluster that lost every key but kept its slots,
// as a production cluster restarted without persistence would.
type RedisCluster struct {
	tb    testing.TB
	cli   string
	Nodes []*Redis
	Addrs []string // host:port of every master
}

// StartRedisCluster starts three cluster-enabled redis-servers, joins them with
// redis-cli --cluster create (Debian's redis-server package ships both) and waits
// until every node says cluster_state:ok. Everything stops when the test ends.
// It skips under -short and fails when redis-server or redis-cli is missing.
func StartRedisCluster(tb testing.TB) *RedisCluster {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test needs redis-server; skipped with -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found: install it (apt-get install -y redis-server): %v", err)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redis-cli not found: install it (apt-get install -y redis-server): %v", err)
	}
	c := &RedisCluster{tb: tb, cli: cli}
	for range 3 {
		dir := tb.TempDir()
		n := &Redis{tb: tb, bin: bin, dir: dir}
		n.startOnFreePorts(func() {
			// The cluster bus defaults to port+10000, which may not exist or
			// be free: give it a free port of its own.
			_, bus, _ := net.SplitHostPort(FreeAddr(tb))
			n.Addr = FreeAddr(tb)
			n.args = []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-port", bus,
			}
		})
		tb.Cleanup(n.Stop)
		c.Nodes = append(c.Nodes, n)
		c.Addrs = append(c.Addrs, n.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	out, err := exec.CommandContext(ctx, cli, append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redis-cli --cluster create %v: %v\n%s", c.Addrs, err, out)
	}
	c.waitOK()
	return c
}

// Stop stops every node; safe to call twice.
func (c *RedisCluster) Stop() {
	for _, n := range c.Nodes {
		n.Stop()
	}
}

// Start (re)starts every node on its address, with its slots and without data,
// and waits until the cluster serves every slot again.
func (c *RedisCluster) Start() {
	c.tb.Helper()
	for _, n := range c.Nodes {
		n.Start()
	}
	c.waitOK()
}

// waitOK waits until every node reports cluster_state:ok, so that each serves
// its slots and redirects for the others.
func (c *RedisCluster) waitOK() {
	c.tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range c.Nodes {
		host, port, _ := net.SplitHostPort(n.Addr)
		for {
			out, err := exec.Command(c.cli, "-h", host, "-p", port, "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				c.tb.Fatalf("Redis Cluster node %s not ok after 30s: %v\n%s", n.Addr, err, out)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}
