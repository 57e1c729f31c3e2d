package vmtest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Redis is a running redis-server without persistence: Stop and Start give a
// Redis that lost every key, as a restarted production Redis without
// persistence would.
type Redis struct {
	tb   testing.TB
	bin  string
	dir  string
	Addr string // host:port
	// args are added to the command line (cluster mode, for RedisCluster).
	args []string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *bytes.Buffer
}

// StartRedis starts redis-server (from PATH; Debian's redis-server package) on a
// free loopback port with its own directory, and stops it when the test ends. It
// skips under -short and fails when redis-server is missing.
func StartRedis(tb testing.TB) *Redis {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test needs redis-server; skipped with -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		tb.Fatalf("redis-server not found: install it (apt-get install -y redis-server): %v", err)
	}
	r := &Redis{tb: tb, bin: bin, dir: tb.TempDir(), Addr: FreeAddr(tb)}
	r.Start()
	tb.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on the same address and waits until it answers.
func (r *Redis) Start() {
	r.tb.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	host, port, _ := net.SplitHostPort(r.Addr)
	r.log = &bytes.Buffer{}
	cmd := exec.Command(r.bin, append([]string{
		"--bind", host, "--port", port, "--dir", r.dir,
		"--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--loglevel", "warning",
	}, r.args...)...)
	cmd.Stdout, cmd.Stderr = r.log, r.log
	if err := cmd.Start(); err != nil {
		r.tb.Fatalf("start redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 7)
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.tb.Fatalf("redis-server did not answer at %s; log:\n%s", r.Addr, r.log.String())
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s); safe to call twice.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.cmd = nil
}

// Port returns the port number.
func (r *Redis) Port() int {
	_, p, _ := net.SplitHostPort(r.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
