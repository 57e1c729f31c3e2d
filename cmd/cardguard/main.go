// Command cardguard is a transparent proxy in front of VictoriaMetrics that
// estimates, limits and explains cardinality per tenant.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/cardguard/cardguard/internal/ingest"
)

// options are the process settings, from flags.
type options struct {
	listenAddr      string
	configPath      string
	checkConfig     bool
	dataDir         string
	upstreamURL     string
	vmBinary        string
	vmListenAddr    string
	logLevel        string
	logFormat       string
	maxRequestBytes int64
	maxDecodedBytes int64
	maxConcurrent   int
	maxQueueWait    time.Duration
	readTimeout     time.Duration
	shutdownTimeout time.Duration
	// metricsAddr, when set, serves /metrics there instead of on listenAddr.
	metricsAddr         string
	metricsRequireAdmin bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("cardguard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listenAddr, "httpListenAddr", ":8490", "address to serve remote write, the Prometheus query API, the cardguard API and /ui on")
	fs.StringVar(&o.configPath, "config", "", "path to the YAML policy file; without it cardguard runs with defaults")
	fs.BoolVar(&o.checkConfig, "check-config", false, "validate -config and exit: 0 when valid")
	fs.StringVar(&o.dataDir, "dataDir", "cardguard-data", "directory for state snapshots (sketches, limits overrides, query usage)")
	fs.StringVar(&o.upstreamURL, "upstream.url", "", "single-node VictoriaMetrics URL; overrides upstream in -config and sets mode single")
	fs.StringVar(&o.vmBinary, "vm.binary", "", "path to a victoria-metrics binary to start and use as the upstream (the embedded default for trying cardguard out)")
	fs.StringVar(&o.vmListenAddr, "vm.httpListenAddr", "127.0.0.1:8428", "address for the VictoriaMetrics started by -vm.binary")
	fs.StringVar(&o.logLevel, "loggerLevel", "info", "log level: debug, info, warn, error")
	fs.StringVar(&o.logFormat, "loggerFormat", "text", "log format: text or json")
	fs.Int64Var(&o.maxRequestBytes, "ingest.maxRequestBytes", ingest.DefaultMaxRequestBytes, "largest compressed remote-write body accepted, unless a tenant's max_request_bytes is lower")
	fs.Int64Var(&o.maxDecodedBytes, "ingest.maxDecodedBytes", ingest.DefaultMaxDecodedBytes, "largest decompressed remote-write body accepted")
	fs.IntVar(&o.maxConcurrent, "ingest.maxConcurrentRequests", ingest.DefaultMaxConcurrent(), "remote-write requests processed at once; more wait up to -ingest.maxQueueDuration, then get 503")
	fs.DurationVar(&o.maxQueueWait, "ingest.maxQueueDuration", ingest.DefaultQueueWait, "how long a remote-write request may wait for a processing slot before it gets 503")
	fs.DurationVar(&o.readTimeout, "http.readTimeout", time.Minute, "time allowed to read a whole request, body included (guards against slow clients)")
	fs.DurationVar(&o.shutdownTimeout, "http.shutdownTimeout", 30*time.Second, "time in-flight requests get to finish on SIGTERM")
	fs.StringVar(&o.metricsAddr, "metricsListenAddr", "", "serve /metrics on this address instead of -httpListenAddr (e.g. 127.0.0.1:8491, reachable by Prometheus only)")
	fs.BoolVar(&o.metricsRequireAdmin, "metrics.requireAdmin", false, "require the admin token for /metrics, which lists tenant IDs and their traffic (off by default so that existing scrapes keep working)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if o.upstreamURL != "" && o.vmBinary != "" {
		return o, errors.New("-upstream.url and -vm.binary exclude each other")
	}
	return o, nil
}

func newLogger(o options, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("-loggerLevel: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: lvl}
	switch o.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	}
	return nil, fmt.Errorf("-loggerFormat %q: want text or json", o.logFormat)
}

func main() {
	if p, ok := defaultGCPercent(os.Getenv); ok {
		debug.SetGCPercent(p)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultGCPercent is the GC percent cardguard runs with unless GOGC is set: 30,
// as VictoriaMetrics' own binaries use. Nearly all of cardguard's heap is
// long-lived series state (about 260 MiB for a million series) and the write path
// allocates little, so collecting when the heap has grown 30% instead of 100%
// keeps RSS near 1.3x what is live rather than twice it, for little CPU.
func defaultGCPercent(getenv func(string) string) (int, bool) {
	if getenv("GOGC") != "" {
		return 0, false
	}
	return 30, true
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "cardguard:", err)
		return 2
	}
	logger, err := newLogger(o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "cardguard:", err)
		return 2
	}
	cfg, err := loadConfig(o.configPath)
	if err == nil {
		err = applyFlags(&cfg, o)
	}
	if err == nil {
		err = cfg.validate()
	}
	if err != nil {
		fmt.Fprintln(stderr, "cardguard:", err)
		return 1
	}
	if o.checkConfig {
		fmt.Fprintf(stdout, "config %s is valid\n", o.configPath)
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, cfg, o, logger, stdout); err != nil {
		logger.Error("cardguard stopped", "err", err)
		return 1
	}
	return 0
}

// applyFlags lets the flags that choose the upstream override the file.
func applyFlags(cfg *Config, o options) error {
	switch {
	case o.upstreamURL != "":
		cfg.Upstream.Mode, cfg.Upstream.URL = "single", o.upstreamURL
		cfg.Upstream.InsertURL, cfg.Upstream.SelectURL = "", ""
	case o.vmBinary != "":
		cfg.Upstream.Mode, cfg.Upstream.URL = "single", "http://"+o.vmListenAddr
		cfg.Upstream.InsertURL, cfg.Upstream.SelectURL = "", ""
	}
	return nil
}

func serve(ctx context.Context, cfg Config, o options, logger *slog.Logger, stdout io.Writer) error {
	if o.vmBinary != "" {
		vm, err := startVM(ctx, o, logger)
		if err != nil {
			return err
		}
		defer vm.stop()
	}
	a, err := newApp(cfg, o, logger)
	if err != nil {
		return err
	}
	if err := a.start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listenAddr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           a.routes(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       o.readTimeout,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	printBanner(stdout, ln.Addr().String(), a)
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(ln) }()
	if o.metricsAddr != "" {
		mln, err := net.Listen("tcp", o.metricsAddr)
		if err != nil {
			return err
		}
		msrv := &http.Server{Handler: a.metricsRoutes(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: o.readTimeout}
		go func() { errc <- msrv.Serve(mln) }()
		defer msrv.Close()
		logger.Info("serving /metrics on its own address", "addr", mln.Addr().String())
	}
	go a.reloadOnHUP(ctx, o)
	a.ready.Store(true)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Info("shutting down: finishing in-flight requests", "timeout", o.shutdownTimeout)
	a.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	err = srv.Shutdown(sctx)
	a.stop()
	return err
}

func printBanner(w io.Writer, addr string, a *app) {
	host, port, _ := net.SplitHostPort(addr)
	if host == "" || host == "::" || host == "0.0.0.0" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, port)
	fmt.Fprintf(w, `cardguard is listening on %s
  Prometheus remote_write url: %s/api/v1/write   (tenant N: %s/insert/N/prometheus/api/v1/write)
  Grafana Prometheus datasource url: %s   (tenant N: %s/select/N/prometheus)
  dashboard: %s/ui/   metrics: %s/metrics
  upstream: %s
`, base, base, base, base, base, base, base, describeUpstream(a.cfg.Upstream))
}
