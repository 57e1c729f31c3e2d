package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/cardguard/cardguard/internal/upstream"
)

// localVM is a VictoriaMetrics single node started by cardguard itself
// (-vm.binary): the embedded default for trying cardguard on one machine.
type localVM struct {
	cmd    *exec.Cmd
	done   chan struct{}
	logger *slog.Logger
}

func startVM(ctx context.Context, o options, logger *slog.Logger) (*localVM, error) {
	dir := filepath.Join(o.dataDir, "victoria-metrics")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(o.vmBinary,
		"-storageDataPath="+dir,
		"-httpListenAddr="+o.vmListenAddr,
		"-retentionPeriod=30d",
		"-loggerLevel=WARN",
	)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cannot start %s: %w", o.vmBinary, err)
	}
	vm := &localVM{cmd: cmd, done: make(chan struct{}), logger: logger}
	go func() { _ = cmd.Wait(); close(vm.done) }()
	url := "http://" + o.vmListenAddr + "/health"
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-vm.done:
			return nil, fmt.Errorf("victoria-metrics exited at start (is %s already in use?)", o.vmListenAddr)
		case <-ctx.Done():
			vm.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				logger.Info("started local VictoriaMetrics", "addr", o.vmListenAddr, "data", dir)
				return vm, nil
			}
		}
	}
	vm.stop()
	return nil, fmt.Errorf("victoria-metrics did not answer %s within 30s", url)
}

func (vm *localVM) stop() {
	_ = vm.cmd.Process.Signal(os.Interrupt)
	select {
	case <-vm.done:
	case <-time.After(20 * time.Second):
		_ = vm.cmd.Process.Kill()
		<-vm.done
	}
}

func describeUpstream(c upstream.Config) string {
	if c.Mode == upstream.ModeCluster {
		return fmt.Sprintf("VictoriaMetrics cluster (vminsert %s, vmselect %s)", c.InsertURL, c.SelectURL)
	}
	return "VictoriaMetrics single node at " + c.URL
}
