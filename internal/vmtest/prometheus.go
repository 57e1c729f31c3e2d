package vmtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Prometheus is a running Prometheus server (built by `make tools` into .cache/bin
// from the version pinned in tools/prometheus/go.mod), used to test remote write
// with the real sender: its queue, retries and 2.0 encoder.
type Prometheus struct {
	tb   testing.TB
	Addr string // host:port
	URL  string // http://host:port

	mu  sync.Mutex
	cmd *exec.Cmd
	log *syncBuffer
}

// AddrPlaceholder in a configuration given to StartPrometheus is replaced by the
// address Prometheus listens on, so that it can scrape itself.
const AddrPlaceholder = "{{addr}}"

// StartPrometheus starts Prometheus with configYAML on a free loopback port and a
// temporary data directory, waits until it is ready and stops it when the test
// ends. It skips under -short and fails when the binary has not been built.
// extraArgs are appended to the defaults.
func StartPrometheus(tb testing.TB, configYAML string, extraArgs ...string) *Prometheus {
	tb.Helper()
	bin := Binary(tb, "prometheus")
	dir := tb.TempDir()
	p := &Prometheus{tb: tb, Addr: FreeAddr(tb), log: &syncBuffer{}}
	p.URL = "http://" + p.Addr
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(strings.ReplaceAll(configYAML, AddrPlaceholder, p.Addr)), 0o600); err != nil {
		tb.Fatal(err)
	}
	args := append([]string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + p.Addr,
		"--log.level=warn",
		// Nothing outlives the test: no lock file to clean up.
		"--storage.tsdb.no-lockfile",
	}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start prometheus: %v", err)
	}
	p.cmd = cmd
	tb.Cleanup(p.Stop)
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(p.URL + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("prometheus did not become ready at %s; log:\n%s", p.URL, p.Log())
	return nil
}

// Stop stops Prometheus gracefully; it is safe to call twice.
func (p *Prometheus) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	p.cmd = nil
}

// Get fetches path from Prometheus and returns the body, failing the test on a
// non-2xx answer.
func (p *Prometheus) Get(path string) []byte {
	p.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		p.tb.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	return b
}

// Log returns what Prometheus has logged so far.
func (p *Prometheus) Log() string { return p.log.String() }

// syncBuffer is a bytes.Buffer the process writes to while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(b)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
