package vmtest

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// VMAlert is a running vmalert (built by `make tools` into .cache/bin from the
// version pinned in tools/vm/go.mod): a rule evaluator that queries its
// datasource itself, as one pointed at VictoriaMetrics rather than at
// cardguard does.
type VMAlert struct {
	tb   testing.TB
	Addr string // host:port
	URL  string // http://host:port

	mu  sync.Mutex
	cmd *exec.Cmd
	log *syncBuffer
}

// StartVMAlert starts vmalert evaluating rulesYAML (Prometheus or vmalert rule
// groups) against the Prometheus API at datasourceURL every second, sending no
// notifications, and stops it when the test ends. Rules are evaluated at the
// current time (no -rule.evalDelay), so what was just written is read.
// extraArgs are appended to the defaults.
func StartVMAlert(tb testing.TB, datasourceURL, rulesYAML string, extraArgs ...string) *VMAlert {
	tb.Helper()
	bin := Binary(tb, "vmalert")
	dir := tb.TempDir()
	rules := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(rules, []byte(rulesYAML), 0o600); err != nil {
		tb.Fatal(err)
	}
	a := &VMAlert{tb: tb, Addr: FreeAddr(tb), log: &syncBuffer{}}
	a.URL = "http://" + a.Addr
	args := append([]string{
		"-rule=" + rules,
		"-datasource.url=" + datasourceURL,
		"-notifier.blackhole",
		"-evaluationInterval=1s",
		"-rule.evalDelay=0s",
		"-httpListenAddr=" + a.Addr,
		"-loggerLevel=WARN",
	}, extraArgs...)
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Stdout = a.log
	cmd.Stderr = a.log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start vmalert: %v", err)
	}
	a.cmd = cmd
	tb.Cleanup(a.Stop)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(a.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return a
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("vmalert did not become healthy at %s; log:\n%s", a.URL, a.Log())
	return nil
}

// Stop stops vmalert; it is safe to call twice.
func (a *VMAlert) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cmd == nil {
		return
	}
	_ = a.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = a.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-done
	}
	a.cmd = nil
}

// Log returns what vmalert has logged so far.
func (a *VMAlert) Log() string { return a.log.String() }
