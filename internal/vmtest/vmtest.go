// Package vmtest starts real processes for integration tests: a VictoriaMetrics
// single node (built by `make test` into .cache/bin from the version pinned in
// tools/vm/go.mod) on a free loopback port with its own data directory.
//
// Tests that need it call Start; under `go test -short` they are skipped, otherwise
// a missing binary fails the test with the command that builds it, so an integration
// test can never pass by not running.
package vmtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// BinDir returns the folder holding the test binaries: $CARDGUARD_BIN_DIR, or
// .cache/bin at the module root.
func BinDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("CARDGUARD_BIN_DIR"); d != "" {
		return d
	}
	return filepath.Join(moduleRoot(tb), ".cache", "bin")
}

// moduleRoot is the nearest folder above the working directory holding go.mod
// beside tools/.
func moduleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "tools")); err == nil {
				return dir
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("vmtest: cannot find the module root (go.mod beside tools/)")
		}
		dir = parent
	}
}

// Binary returns the path of a test binary by name, skipping under -short and
// failing when it has not been built.
func Binary(tb testing.TB, name string) string {
	tb.Helper()
	if testing.Short() {
		tb.Skipf("integration test needs %s; skipped with -short", name)
	}
	p := filepath.Join(BinDir(tb), name)
	if _, err := os.Stat(p); err != nil {
		tb.Fatalf("%s not built: run `make tools` (or `make test`, which builds it): %v", name, err)
	}
	return p
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// VM is a running VictoriaMetrics single node.
type VM struct {
	tb      testing.TB
	bin     string
	dataDir string
	Addr    string // host:port
	URL     string // http://host:port
	args    []string

	mu  sync.Mutex
	cmd *exec.Cmd
	log *bytes.Buffer
}

// StartVM starts VictoriaMetrics and stops it when the test ends. extraArgs are
// appended to the defaults (which make written data searchable at once).
func StartVM(tb testing.TB, extraArgs ...string) *VM {
	tb.Helper()
	vm := &VM{
		tb:      tb,
		bin:     Binary(tb, "victoria-metrics"),
		dataDir: tb.TempDir(),
	}
	vm.Addr = FreeAddr(tb)
	vm.URL = "http://" + vm.Addr
	vm.args = append([]string{
		"-storageDataPath=" + vm.dataDir,
		"-httpListenAddr=" + vm.Addr,
		"-retentionPeriod=100y",
		"-search.latencyOffset=0s",
		"-search.disableCache",
		"-loggerLevel=ERROR",
		"-memory.allowedBytes=512MiB",
	}, extraArgs...)
	vm.Start()
	tb.Cleanup(vm.Stop)
	return vm
}

// Start (re)starts the process on the same address and data directory and waits
// until it answers /health.
func (vm *VM) Start() {
	vm.tb.Helper()
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd != nil {
		return
	}
	vm.log = &bytes.Buffer{}
	cmd := exec.Command(vm.bin, vm.args...)
	cmd.Stdout = vm.log
	cmd.Stderr = vm.log
	if err := cmd.Start(); err != nil {
		vm.tb.Fatalf("start victoria-metrics: %v", err)
	}
	vm.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(vm.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	vm.tb.Fatalf("victoria-metrics did not become healthy at %s; log:\n%s", vm.URL, vm.log.String())
}

// Stop stops the process gracefully; it is safe to call twice.
func (vm *VM) Stop() {
	vm.mu.Lock()
	defer vm.mu.Unlock()
	if vm.cmd == nil {
		return
	}
	_ = vm.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = vm.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = vm.cmd.Process.Kill()
		<-done
	}
	vm.cmd = nil
}

// Flush makes every accepted sample searchable.
func (vm *VM) Flush() {
	vm.tb.Helper()
	vm.Get("/internal/force_flush")
}

// Get fetches path from VictoriaMetrics and returns the body, failing the test on a
// non-2xx answer.
func (vm *VM) Get(path string) []byte {
	vm.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, vm.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		vm.tb.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		vm.tb.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, b)
	}
	return b
}

// Port returns the port number VictoriaMetrics listens on.
func (vm *VM) Port() int {
	_, p, _ := net.SplitHostPort(vm.Addr)
	n, _ := strconv.Atoi(p)
	return n
}

func (vm *VM) String() string { return fmt.Sprintf("victoria-metrics at %s", vm.URL) }
