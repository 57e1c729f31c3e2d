// Package readme_test runs what README.md tells an operator to run, where that
// needs no Docker: the sh blocks marked runnable, the command behind `make run`
// (started, checked on /readyz, stopped), and the flag table against
// `cardguard -help`. A README that drifts from the code fails here.
//
// A block is runnable when the line before its ```sh fence is
// "<!-- runnable -->". Runnable blocks run in order with bash -euo pipefail, in a
// directory where bin/cardguard is a fresh build and configs/ is the repository's,
// against one cardguard started with configs/cardguard.yml; http://localhost:8490
// in a block means that cardguard.
package readme_test

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const repoRoot = "../.."

type block struct {
	line int
	body string
}

// runnableBlocks returns the ```sh blocks preceded by <!-- runnable -->.
func runnableBlocks(t *testing.T, readme []byte) []block {
	t.Helper()
	var (
		blocks []block
		cur    *block
		marked bool
	)
	sc := bufio.NewScanner(bytes.NewReader(readme))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.body += line + "\n"
		case marked && strings.TrimSpace(line) == "```sh":
			cur = &block{line: n}
		case marked && strings.TrimSpace(line) != "":
			t.Errorf("README.md:%d: <!-- runnable --> must be followed by a ```sh block, got %q", n, line)
		}
		if strings.TrimSpace(line) == "<!-- runnable -->" {
			marked = true
		} else if strings.TrimSpace(line) != "" {
			marked = false
		}
	}
	if cur != nil {
		t.Errorf("README.md:%d: unterminated code block", cur.line)
	}
	return blocks
}

func buildCardguard(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin", "cardguard")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/cardguard")
	cmd.Dir = repoRoot
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startCardguard runs bin with args and waits until /readyz answers 200. It stops
// the process with SIGTERM at cleanup and fails the test if it does not exit 0.
func startCardguard(t *testing.T, bin, addr string, args ...string) *bytes.Buffer {
	t.Helper()
	var out syncBuffer
	cmd := exec.Command(bin, append([]string{"-httpListenAddr=" + addr, "-dataDir=" + t.TempDir()}, args...)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("cardguard did not stop cleanly: %v\n%s", err, out.String())
			}
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			t.Errorf("cardguard did not stop within 30s of SIGTERM\n%s", out.String())
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return out.snapshot()
			}
		}
		select {
		case err := <-done:
			t.Fatalf("cardguard exited before it was ready: %v\n%s", err, out.String())
		case <-ctx.Done():
			t.Fatalf("cardguard not ready within 60s\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestRunnableBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts cardguard")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := runnableBlocks(t, readme)
	if len(blocks) == 0 {
		t.Fatal("README.md has no runnable blocks")
	}
	bin := buildCardguard(t)
	configs, err := filepath.Abs(filepath.Join(repoRoot, "configs"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	for name, target := range map[string]string{"bin": filepath.Dir(bin), "configs": configs} {
		if err := os.Symlink(target, filepath.Join(work, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The reference config needs no reachable VictoriaMetrics to serve the
	// cardguard API: the upstream is only contacted by traffic.
	addr := freeAddr(t)
	startCardguard(t, bin, addr, "-config="+filepath.Join(configs, "cardguard.yml"))
	for _, b := range blocks {
		script := strings.ReplaceAll(b.body, "localhost:8490", addr)
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", script)
		cmd.Dir = work
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("README.md:%d: block failed: %v\n--- block\n%s--- output\n%s", b.line, err, b.body, out)
		}
	}
}

// TestMakeRun starts what `make run` starts, on free ports, checks that it becomes
// ready and prints the URLs the README promises, and stops it.
func TestMakeRun(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and starts cardguard and VictoriaMetrics")
	}
	vm, err := filepath.Abs(filepath.Join(repoRoot, ".cache", "bin", "victoria-metrics"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(vm); err != nil {
		t.Skipf("%v: run make tools (make test does) first", err)
	}
	makefile, err := os.ReadFile(filepath.Join(repoRoot, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	// The recipe of run, so that this test follows the Makefile.
	m := regexp.MustCompile(`(?m)^run:.*\n\t(\S+) (.*)$`).FindStringSubmatch(string(makefile))
	if m == nil || m[1] != "./bin/cardguard" {
		t.Fatalf("Makefile: cannot find the run recipe ./bin/cardguard ... (got %q)", m)
	}
	var args []string
	for _, a := range strings.Fields(m[2]) {
		switch {
		case strings.HasPrefix(a, "-vm.binary="):
			args = append(args, "-vm.binary="+vm)
		case strings.HasPrefix(a, "-dataDir="), strings.HasPrefix(a, "-httpListenAddr="):
			// startCardguard gives its own.
		default:
			args = append(args, a)
		}
	}
	args = append(args, "-vm.httpListenAddr="+freeAddr(t))
	bin := buildCardguard(t)
	addr := freeAddr(t)
	banner := startCardguard(t, bin, addr, args...)
	for _, want := range []string{
		"cardguard is listening on http://" + addr,
		"Prometheus remote_write url: http://" + addr + "/api/v1/write",
		"Grafana Prometheus datasource url: http://" + addr,
	} {
		if !strings.Contains(banner.String(), want) {
			t.Errorf("banner does not say %q:\n%s", want, banner)
		}
	}
}

// TestFlagTable checks that the README's flag table lists every flag of
// `cardguard -help`, and nothing cardguard does not have.
func TestFlagTable(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cardguard")
	}
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	bin := buildCardguard(t)
	out, _ := exec.Command(bin, "-help").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([\w.-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if len(flags) == 0 {
		t.Fatalf("no flags in -help output:\n%s", out)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `-([\\w.-]+)`").FindAllStringSubmatch(string(readme), -1) {
		documented[m[1]] = true
	}
	for f := range flags {
		if !documented[f] {
			t.Errorf("flag -%s is not in the README's flag table", f)
		}
	}
	for f := range documented {
		if !flags[f] {
			t.Errorf("README's flag table has -%s, which cardguard does not know", f)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the process' writers and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *syncBuffer) snapshot() *bytes.Buffer { return bytes.NewBufferString(b.String()) }
