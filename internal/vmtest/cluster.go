package vmtest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// ClusterDir returns the folder of the VictoriaMetrics cluster binaries
// (vmstorage, vminsert, vmselect): $CARDGUARD_VM_CLUSTER_DIR, or ../shared/vm-cluster
// beside the module root, where CI and the development machines keep them. They
// are read-only: tests run them in place and write only their own data folders.
func ClusterDir(tb testing.TB) string {
	tb.Helper()
	if d := os.Getenv("CARDGUARD_VM_CLUSTER_DIR"); d != "" {
		return d
	}
	return filepath.Join(filepath.Dir(moduleRoot(tb)), "shared", "vm-cluster")
}

// Cluster is a running VictoriaMetrics cluster: one vmstorage, one vminsert, one
// vmselect, each on a free loopback port.
type Cluster struct {
	tb         testing.TB
	InsertURL  string // vminsert: /insert/<tenant>/prometheus/api/v1/write
	SelectURL  string // vmselect: /select/<tenant>/prometheus/api/v1/...
	StorageURL string // vmstorage's HTTP port: /internal/force_flush
}

// StartCluster starts a cluster and stops it when the test ends. vminsertArgs are
// added to vminsert's command line (a listener of its own protocol, for example).
// It is skipped under -short and fails when the binaries are missing, so that a
// cluster test never passes by not running.
func StartCluster(tb testing.TB, vminsertArgs ...string) *Cluster {
	tb.Helper()
	if testing.Short() {
		tb.Skip("integration test needs the VictoriaMetrics cluster binaries; skipped with -short")
	}
	dir := ClusterDir(tb)
	bin := func(name string) string {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err != nil {
			tb.Fatalf("VictoriaMetrics cluster binary %s missing (want vmstorage, vminsert and vmselect v1.150.0-cluster in %s, or set CARDGUARD_VM_CLUSTER_DIR): %v", name, dir, err)
		}
		return p
	}
	data := tb.TempDir()
	stHTTP, stInsert, stSelect := FreeAddr(tb), FreeAddr(tb), FreeAddr(tb)
	insHTTP, selHTTP := FreeAddr(tb), FreeAddr(tb)
	c := &Cluster{tb: tb, InsertURL: "http://" + insHTTP, SelectURL: "http://" + selHTTP, StorageURL: "http://" + stHTTP}
	startProc(tb, bin("vmstorage"), c.StorageURL, "-storageDataPath="+filepath.Join(data, "vmstorage"),
		"-httpListenAddr="+stHTTP, "-vminsertAddr="+stInsert, "-vmselectAddr="+stSelect,
		"-retentionPeriod=100y", "-loggerLevel=ERROR", "-memory.allowedBytes=256MiB")
	startProc(tb, bin("vminsert"), c.InsertURL, append([]string{"-httpListenAddr=" + insHTTP, "-storageNode=" + stInsert,
		"-loggerLevel=ERROR", "-memory.allowedBytes=128MiB"}, vminsertArgs...)...)
	startProc(tb, bin("vmselect"), c.SelectURL, "-httpListenAddr="+selHTTP, "-storageNode="+stSelect,
		"-search.latencyOffset=0s", "-search.disableCache", "-cacheDataPath="+filepath.Join(data, "vmselect"),
		"-loggerLevel=ERROR", "-memory.allowedBytes=256MiB")
	return c
}

// Flush makes every sample vminsert has passed on searchable. vminsert buffers
// for up to a second before sending to vmstorage, so Flush waits that long first.
func (c *Cluster) Flush() {
	c.tb.Helper()
	time.Sleep(1100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.StorageURL+"/internal/force_flush", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.tb.Fatalf("force_flush: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		c.tb.Fatalf("force_flush: %d %s", resp.StatusCode, b)
	}
}

// startProc runs bin with args until the test ends, once baseURL/health answers 200.
func startProc(tb testing.TB, bin, baseURL string, args ...string) {
	tb.Helper()
	var log bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			tb.Fatalf("%s exited at start; log:\n%s", filepath.Base(bin), log.String())
		default:
		}
		resp, err := http.Get(baseURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("%s did not become healthy at %s; log:\n%s", filepath.Base(bin), baseURL, log.String())
}
