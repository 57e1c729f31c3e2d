package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// vmCluster is a VictoriaMetrics cluster: one vmstorage, one vminsert and one
// vmselect, as the cluster-mode tests run them (internal/vmtest).
type vmCluster struct {
	storage, insert, sel             *process
	storageURL, insertURL, selectURL string
}

func (c *vmCluster) procs() []*process { return []*process{c.storage, c.insert, c.sel} }

func (c *vmCluster) stop() {
	for _, p := range []*process{c.sel, c.insert, c.storage} {
		p.stop(15 * time.Second)
	}
}

// clusterDir is where the cluster binaries are: -vmcluster.dir, else
// $CARDGUARD_VM_CLUSTER_DIR, else ../shared/vm-cluster beside the checkout.
func (c config) clusterDir() string {
	if c.vmClusterDir != "" {
		return c.vmClusterDir
	}
	if d := os.Getenv("CARDGUARD_VM_CLUSTER_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "shared", "vm-cluster")
}

// startCluster starts a cluster on an empty data directory, dir under the work
// directory, stopping the single node or cluster started before. From then on
// the benchmark's VictoriaMetrics is the cluster: its rows are what vmstorage
// received, its CPU and memory the three processes'.
func (e *env) startCluster(dir string) error {
	if e.vm != nil {
		e.vm.stop(15 * time.Second)
		e.vm = nil
	}
	if e.cluster != nil {
		e.cluster.stop()
		e.cluster = nil
	}
	bin := e.cfg.clusterDir()
	var addrs [5]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		addrs[i] = a
	}
	stHTTP, stInsert, stSelect, insHTTP, selHTTP := addrs[0], addrs[1], addrs[2], addrs[3], addrs[4]
	data := filepath.Join(e.work, dir)
	c := &vmCluster{storageURL: "http://" + stHTTP, insertURL: "http://" + insHTTP, selectURL: "http://" + selHTTP}
	start := func(name string, args ...string) (*process, error) {
		p, err := startProcess(name, filepath.Join(bin, name), append(args, "-loggerLevel=ERROR"), filepath.Join(e.work, name+".log"))
		if err != nil {
			return nil, fmt.Errorf("%w (the cluster binaries are in %s: -vmcluster.dir)", err, bin)
		}
		e.procs = append(e.procs, p)
		return p, nil
	}
	var err error
	if c.storage, err = start("vmstorage", "-storageDataPath="+filepath.Join(data, "vmstorage"), "-httpListenAddr="+stHTTP,
		"-vminsertAddr="+stInsert, "-vmselectAddr="+stSelect, "-retentionPeriod=1y"); err != nil {
		return err
	}
	if c.insert, err = start("vminsert", "-httpListenAddr="+insHTTP, "-storageNode="+stInsert); err != nil {
		return err
	}
	if c.sel, err = start("vmselect", "-httpListenAddr="+selHTTP, "-storageNode="+stSelect,
		"-cacheDataPath="+filepath.Join(data, "vmselect")); err != nil {
		return err
	}
	for _, p := range []struct {
		p   *process
		url string
	}{{c.storage, c.storageURL}, {c.insert, c.insertURL}, {c.sel, c.selectURL}} {
		if err := waitReady(context.Background(), p.p, p.url+"/health", 30*time.Second); err != nil {
			return err
		}
	}
	e.cluster = c
	return nil
}

// clusterConfig writes the benchmark's cardguard policy with the cluster as its
// upstream: the policy file leaves the upstream to -upstream.url, which only
// names a single node.
func (e *env) clusterConfig() (string, error) {
	policy, err := os.ReadFile(e.cfg.cardguardConfig)
	if err != nil {
		return "", err
	}
	path := filepath.Join(e.work, "cardguard-cluster.yml")
	up := fmt.Sprintf("\nupstream:\n  mode: cluster\n  insert_url: %s\n  select_url: %s\n", e.cluster.insertURL, e.cluster.selectURL)
	return path, os.WriteFile(path, append(policy, up...), 0o644)
}

// clusterWritePath is where a cluster and cardguard in cluster mode take remote
// write for the workload's tenant (0).
const clusterWritePath = "/insert/0/prometheus/api/v1/write"

// clusterScenario measures remote write into a VictoriaMetrics cluster,
// directly to vminsert and through cardguard in cluster mode, each on a
// cluster of its own started afresh, pass after pass in alternating order as
// the single-node targets are.
func (e *env) clusterScenario(ctx context.Context) ([]scenarioResult, error) {
	saved := e.cfg
	defer func() { e.cfg = saved }()
	e.cfg.duration = saved.clusterDuration
	targets := []string{"cluster direct", "cluster cardguard"}
	var out []scenarioResult
	for pass := 1; pass <= e.cfg.passes; pass++ {
		order := slices.Clone(targets)
		if pass%2 == 0 {
			slices.Reverse(order)
		}
		for _, name := range order {
			r, err := e.runClusterTarget(ctx, name, pass)
			if err != nil {
				return out, err
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func (e *env) runClusterTarget(ctx context.Context, name string, pass int) (scenarioResult, error) {
	suffix := fmt.Sprintf("%s-%d", strings.ReplaceAll(name, " ", "-"), pass)
	if err := e.startCluster("vm-data-" + suffix); err != nil {
		return scenarioResult{}, err
	}
	var (
		r   scenarioResult
		err error
	)
	switch name {
	case "cluster direct":
		r, err = e.measure(ctx, name, e.cluster.insertURL+clusterWritePath, nil, nil)
	case "cluster cardguard":
		var cfg string
		if cfg, err = e.clusterConfig(); err != nil {
			return r, err
		}
		cg, base, err := e.startCardguard(ctx, "cardguard-"+suffix, cfg)
		if err != nil {
			return r, err
		}
		defer cg.stop(15 * time.Second)
		if r, err = e.measure(ctx, name, base+clusterWritePath, cg, nil); err != nil {
			return r, err
		}
		r.Dropped, _ = scrapeSum(base+"/metrics", "cardguard_discarded_samples_total")
	}
	r.Pass = pass
	return r, err
}

// renderCluster writes the cluster scenario.
func renderCluster(b *strings.Builder, all []scenarioResult, c config) {
	rs := combine(all)
	fmt.Fprintf(b, "\n## Remote write into a VictoriaMetrics cluster: direct to vminsert, through cardguard\n\n")
	fmt.Fprintf(b, "Same run, after the single-node targets. The same payloads, %s per target and pass, into vmstorage + vminsert + vmselect v1.150.0-cluster (`%s`), each target on a cluster of its own started afresh; tenant 0 at `%s`; cardguard with the policy above and `upstream.mode: cluster`. The VictoriaMetrics columns are the three processes together, rows counted by vmstorage (`vm_rows_received_by_storage_total`); for the direct target its CPU is the cluster's. vminsert buffers up to a second before it sends to vmstorage, which the delivered rate counts. Order: %s.\n\n",
		c.clusterDuration, c.clusterDir(), clusterWritePath, passOrder(all))
	targetTable(b, rs)
	byName := map[string]scenarioResult{}
	for _, r := range rs {
		byName[r.Name] = r
	}
	cg, ok1 := byName["cluster cardguard"]
	di, ok2 := byName["cluster direct"]
	if ok1 && ok2 && di.Measured.SamplesPerSecond > 0 && di.VMCPUSeconds > 0 {
		fmt.Fprintf(b, "| ratio | value |\n|---|---:|\n")
		fmt.Fprintf(b, "| cardguard throughput ÷ direct throughput | %.2f |\n", cg.Measured.SamplesPerSecond/di.Measured.SamplesPerSecond)
		fmt.Fprintf(b, "| cardguard CPU per sample ÷ the cluster's, written directly | %.2f |\n\n", (cg.ProxyCPUSeconds/cg.MSamples())/(di.VMCPUSeconds/di.MSamples()))
	}
	for _, r := range rs {
		for _, n := range r.Notes {
			fmt.Fprintf(b, "- %s: %s\n", r.Name, n)
		}
		if r.Dropped > 0 {
			fmt.Fprintf(b, "- %s: reported %.0f samples dropped\n", r.Name, r.Dropped)
		}
	}
}
