package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/vmtest"
)

// TestSIGHUPReloadsLimits: editing the file and sending SIGHUP changes the limits
// in force without a restart; a broken file changes nothing.
func TestSIGHUPReloadsLimits(t *testing.T) {
	path := writeFile(t, "limits:\n  defaults:\n    max_series: 100\n")
	addr := vmtest.FreeAddr(t)
	o, err := parseFlags([]string{"-dataDir=" + t.TempDir(), "-httpListenAddr=" + addr, "-config=" + path, "-upstream.url=http://127.0.0.1:1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	_ = applyFlags(&cfg, o)
	var logs lockedBuffer
	a, err := newApp(cfg, o, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.reloadOnHUP(ctx, o)
	time.Sleep(50 * time.Millisecond) // let signal.Notify register

	maxSeries := func() int { return a.registry.For(tenant.ID{}).MaxSeries }
	if got := maxSeries(); got != 100 {
		t.Fatalf("max_series = %d before reload", got)
	}
	hupAndWait := func(wantLog string) {
		t.Helper()
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(logs.String(), wantLog) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in log: %s", wantLog, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := os.WriteFile(path, []byte("limits:\n  defaults:\n    max_series: 250\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hupAndWait("config reloaded")
	if got := maxSeries(); got != 250 {
		t.Fatalf("max_series = %d after reload, want 250", got)
	}
	if err := os.WriteFile(path, []byte("limits:\n  defaults:\n    max_seriez: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hupAndWait("config reload failed")
	if got := maxSeries(); got != 250 {
		t.Fatalf("a broken file changed max_series to %d", got)
	}
}
