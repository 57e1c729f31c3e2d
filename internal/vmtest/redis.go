package vmtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
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

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has exited
	log    *bytes.Buffer
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
	r := &Redis{tb: tb, bin: bin, dir: tb.TempDir()}
	r.startOnFreePorts(func() { r.Addr = FreeAddr(tb) })
	tb.Cleanup(r.Stop)
	return r
}

// startOnFreePorts starts the server on the ports pick chooses, and again on
// others while the server finds one of them taken: a port free when FreeAddr
// found it may be taken before redis-server binds it, by another test's
// server or by an outgoing connection, whose ports come from the same range.
func (r *Redis) startOnFreePorts(pick func()) {
	r.tb.Helper()
	for attempt := 1; ; attempt++ {
		pick()
		err := r.start()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || attempt == 5 {
			r.tb.Fatal(err)
		}
	}
}

var errAddrInUse = errors.New("address already in use")

// Start (re)starts the server on the same address and waits until it answers.
func (r *Redis) Start() {
	r.tb.Helper()
	if err := r.start(); err != nil {
		r.tb.Fatal(err)
	}
}

func (r *Redis) start() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return nil
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
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	r.cmd, r.exited = cmd, exited
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			r.cmd = nil
			err := fmt.Errorf("redis-server at %s exited; log:\n%s", r.Addr, r.log.String())
			if strings.Contains(r.log.String(), "Address already in use") {
				err = fmt.Errorf("%w: %w", errAddrInUse, err)
			}
			return err
		default:
		}
		if c, err := net.DialTimeout("tcp", r.Addr, 100*time.Millisecond); err == nil {
			_, _ = c.Write([]byte("PING\r\n"))
			_ = c.SetReadDeadline(time.Now().Add(time.Second))
			buf := make([]byte, 7)
			n, _ := c.Read(buf)
			c.Close()
			if string(buf[:n]) == "+PONG\r\n" {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.stopLocked()
	return fmt.Errorf("redis-server did not answer at %s; log:\n%s", r.Addr, r.log.String())
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s); safe to call twice.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopLocked()
}

func (r *Redis) stopLocked() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(os.Interrupt)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
	}
	r.cmd = nil
}

// Port returns the port number.
func (r *Redis) Port() int {
	_, p, _ := net.SplitHostPort(r.Addr)
	n, _ := strconv.Atoi(p)
	return n
}
