// Command generator serves Prometheus metrics with deliberately high and churning
// cardinality, for the docker-compose demo (e2e/docker-compose.yml): Prometheus
// scrapes it and remote-writes the series through cardguard, whose label guard and
// series limits then have something to act on and its dashboard something to show.
//
// Three metrics, from tame to wild:
//
//   - demo_http_requests_total{route,status}: a few dozen series, what a well-behaved
//     service exports.
//   - demo_user_requests_total{route,user_id}: -users distinct user IDs per route, a
//     label that never belongs on a metric.
//   - demo_session_active{session_id}: -sessions series whose IDs are replaced by new
//     ones at every -churn tick, the series churn of an unbounded label.
//
// Values are derived from the tick count, so two scrapes of the same tick agree and
// nothing here needs a lock beyond the tick counter.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

type options struct {
	listenAddr string
	users      int
	sessions   int
	churn      time.Duration
}

// Bounds that keep a typo from turning the demo into a load test.
const (
	maxUsers    = 100_000
	maxSessions = 100_000
)

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("generator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listenAddr, "httpListenAddr", ":9100", "address to serve /metrics on")
	fs.IntVar(&o.users, "users", 2000, "distinct user_id values per route of demo_user_requests_total")
	fs.IntVar(&o.sessions, "sessions", 1000, "series of demo_session_active; all replaced at every churn tick")
	fs.DurationVar(&o.churn, "churn", time.Minute, "how often session IDs are replaced by new ones")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected arguments: %v", fs.Args())
	case o.users < 1 || o.users > maxUsers:
		return o, fmt.Errorf("-users %d: want 1..%d", o.users, maxUsers)
	case o.sessions < 0 || o.sessions > maxSessions:
		return o, fmt.Errorf("-sessions %d: want 0..%d", o.sessions, maxSessions)
	case o.churn < time.Second:
		return o, fmt.Errorf("-churn %s: want at least 1s", o.churn)
	}
	return o, nil
}

var (
	routes   = [...]string{"/", "/cart", "/checkout", "/login", "/search"}
	statuses = [...]string{"200", "404", "500"}
)

// exporter writes the metrics for the current tick. It is safe for concurrent use.
type exporter struct {
	o    options
	tick atomic.Int64
}

func (e *exporter) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	bw := bufio.NewWriterSize(w, 64<<10)
	e.write(bw, e.tick.Load())
	_ = bw.Flush() // a scraper that went away is not our problem
}

func (e *exporter) write(w *bufio.Writer, tick int64) {
	w.WriteString("# HELP demo_http_requests_total Requests by route and status.\n# TYPE demo_http_requests_total counter\n")
	for i, r := range routes {
		for j, s := range statuses {
			fmt.Fprintf(w, "demo_http_requests_total{route=%q,status=%q} %d\n", r, s, (tick+1)*int64(100/(1+i+3*j)))
		}
	}
	w.WriteString("# HELP demo_user_requests_total Requests by route and user: an unbounded label.\n# TYPE demo_user_requests_total counter\n")
	for i, r := range routes {
		for u := range e.o.users {
			fmt.Fprintf(w, "demo_user_requests_total{route=%q,user_id=\"u%06d\"} %d\n", r, u, tick+int64(u%7+i))
		}
	}
	w.WriteString("# HELP demo_session_active Sessions by ID: new IDs at every churn tick.\n# TYPE demo_session_active gauge\n")
	for s := range e.o.sessions {
		w.WriteString("demo_session_active{session_id=\"s")
		w.WriteString(strconv.FormatInt(tick, 10))
		w.WriteByte('-')
		w.WriteString(strconv.Itoa(s))
		w.WriteString("\"} 1\n")
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "generator:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	e := &exporter{o: o}
	go func() {
		t := time.NewTicker(o.churn)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				e.tick.Add(1)
			}
		}
	}()
	mux := http.NewServeMux()
	mux.Handle("/metrics", e)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	srv := &http.Server{Addr: o.listenAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fmt.Fprintf(stderr, "generator: serving %d series on %s/metrics\n",
		len(routes)*len(statuses)+len(routes)*o.users+o.sessions, o.listenAddr)
	select {
	case err := <-errc:
		fmt.Fprintln(stderr, "generator:", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return 0
}
