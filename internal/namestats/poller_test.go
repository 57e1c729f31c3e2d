package namestats

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cardguard/cardguard/internal/tenant"
	"github.com/cardguard/cardguard/internal/upstream"
	"github.com/cardguard/cardguard/internal/vmtest"
)

type tenantList []tenant.ID

func (l tenantList) TenantIDs() []tenant.ID { return append([]tenant.ID(nil), l...) }

func single(t *testing.T, u string) *upstream.Scheme {
	t.Helper()
	s, err := upstream.New(upstream.Config{Mode: upstream.ModeSingle, URL: u})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func post(t *testing.T, u, body string) {
	t.Helper()
	resp, err := http.Post(u, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("POST %s: %d", u, resp.StatusCode)
	}
}

// query reads a metric the way a client pointed at VictoriaMetrics does,
// bypassing cardguard, until it returns a series.
func query(t *testing.T, base, q string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(base + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		b.Write(buf[:n])
		resp.Body.Close()
		if strings.Contains(b.String(), `"__name__"`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("query %s: no series: %s", q, b.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPollSingleNode(t *testing.T) {
	t.Parallel()
	vm := vmtest.StartVM(t, "-storage.trackMetricNamesStats=true")
	post(t, vm.URL+"/api/v1/import/prometheus", "read_me_total{a=\"1\"} 1\nnever_read_total{a=\"1\"} 1\n")
	vm.Flush()
	before := time.Now().Add(-time.Second).Truncate(time.Second)
	query(t, vm.URL, `read_me_total`)

	reg := prometheus.NewRegistry()
	t1, t2 := tenant.MustParse("1"), tenant.MustParse("2:3")
	p := New(Config{}, single(t, vm.URL), tenantList{t1, t2}, nil, reg, nil)
	p.Poll(context.Background())

	for _, tn := range []tenant.ID{t1, t2} {
		names, st := p.Stats(tn)
		if !st.Available || !st.Complete || !st.Shared || st.Reason != "" || st.LastSuccess.IsZero() || st.CollectedSince.IsZero() {
			t.Errorf("tenant %s status %+v, want available, complete and shared", tn, st)
		}
		if got := names["read_me_total"]; got.Requests == 0 || got.LastRequest.Before(before) {
			t.Errorf("tenant %s read_me_total = %+v, want counted since %s", tn, got, before)
		}
		if got, ok := names["never_read_total"]; !ok || got.Requests != 0 || !got.LastRequest.IsZero() {
			t.Errorf("tenant %s never_read_total = %+v (listed %v), want listed with 0 reads", tn, got, ok)
		}
	}
	if got := counter(t, p.polls.WithLabelValues("ok")); got != 2 {
		t.Errorf("ok polls = %v, want 2", got)
	}

	// A tenant no longer known is forgotten.
	p.tenants = tenantList{t1}
	p.Poll(context.Background())
	if _, st := p.Stats(t2); st.Reason != "not polled yet" {
		t.Errorf("forgotten tenant status %+v", st)
	}
}

func TestPollTrackingOff(t *testing.T) {
	t.Parallel()
	vm := vmtest.StartVM(t, "-storage.trackMetricNamesStats=false")
	post(t, vm.URL+"/api/v1/import/prometheus", "some_total 1\n")
	vm.Flush()
	query(t, vm.URL, `some_total`)
	reg := prometheus.NewRegistry()
	p := New(Config{}, single(t, vm.URL), tenantList{{}}, nil, reg, nil)
	p.Poll(context.Background())
	names, st := p.Stats(tenant.ID{})
	if st.Available || names != nil || !strings.Contains(st.Reason, "-storage.trackMetricNamesStats") || st.LastPoll.IsZero() {
		t.Errorf("tracking off: names %v status %+v, want unavailable naming the flag", names, st)
	}
	if got := counter(t, p.polls.WithLabelValues("unavailable")); got != 1 {
		t.Errorf("unavailable polls = %v, want 1", got)
	}
}

func TestPollCluster(t *testing.T) {
	t.Parallel()
	c := vmtest.StartCluster(t)
	a, b := tenant.MustParse("5:1"), tenant.MustParse("6")
	post(t, c.InsertURL+"/insert/5:1/prometheus/api/v1/import/prometheus", "five_total 1\nfive_unread_total 1\n")
	post(t, c.InsertURL+"/insert/6:0/prometheus/api/v1/import/prometheus", "six_total 1\n")
	c.Flush()
	query(t, c.SelectURL+"/select/5:1/prometheus", `five_total`)

	s, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: c.InsertURL, SelectURL: c.SelectURL})
	if err != nil {
		t.Fatal(err)
	}
	p := New(Config{}, s, tenantList{a, b}, nil, prometheus.NewRegistry(), nil)
	p.Poll(context.Background())
	names, st := p.Stats(a)
	if !st.Available || st.Shared || !st.Complete {
		t.Fatalf("tenant 5:1 status %+v", st)
	}
	if names["five_total"].Requests == 0 || names["five_unread_total"].Requests != 0 {
		t.Errorf("tenant 5:1 names %+v", names)
	}
	if _, ok := names["six_total"]; ok {
		t.Error("tenant 5:1 sees tenant 6's metric")
	}
	names, _ = p.Stats(b)
	if _, ok := names["six_total"]; !ok || names["six_total"].Requests != 0 {
		t.Errorf("tenant 6:0 names %+v", names)
	}
}

// Bad answers are errors, counted by reason, and keep the last good names.
func TestPollBadAnswers(t *testing.T) {
	t.Parallel()
	good := `{"status":"success","statsCollectedSince":1700000000,"statsCollectedRecordsTotal":1,"trackerMemoryMaxSizeBytes":100,"trackerCurrentMemoryUsageBytes":1,"records":[{"metricName":"x","queryRequestsCount":3,"lastQueryRequestTimestamp":1700000100}]}`
	answers := []struct {
		code   int
		body   string
		reason string
	}{
		{200, good, ""},
		{500, "boom", reasonStatus},
		{200, `{"status":`, reasonDecode},
		{200, `{"status":"success","records":[` + strings.Repeat(`{"metricName":"y"},`, 200) + `]}`, reasonTooLarge},
	}
	i := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/prometheus/"+APIPath || r.URL.Query().Get("limit") != "10" {
			t.Errorf("request %s", r.URL)
		}
		a := answers[i]
		w.WriteHeader(a.code)
		_, _ = w.Write([]byte(a.body))
	}))
	defer srv.Close()
	reg := prometheus.NewRegistry()
	p := New(Config{MaxNames: 10, MaxResponseBytes: 1024}, single(t, srv.URL), tenantList{{}}, nil, reg, nil)
	for i = range answers {
		p.Poll(context.Background())
		names, st := p.Stats(tenant.ID{})
		if names["x"].Requests != 3 || !names["x"].LastRequest.Equal(time.Unix(1700000100, 0)) {
			t.Errorf("answer %d: names %+v, want the last good ones", i, names)
		}
		if a := answers[i]; a.reason != "" {
			if st.Available || st.Reason == "" || st.LastSuccess.IsZero() {
				t.Errorf("answer %d: status %+v", i, st)
			}
			if got := counter(t, p.errors.WithLabelValues(a.reason)); got != 1 {
				t.Errorf("answer %d: errors{reason=%q} = %v, want 1", i, a.reason, got)
			}
		}
	}
	srv.Close()
	p.Poll(context.Background())
	if _, st := p.Stats(tenant.ID{}); st.Available || !strings.Contains(st.Reason, "cannot reach") {
		t.Errorf("upstream down: status %+v", st)
	}
}

func counter(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Stats is read while polls replace the answers; run with -race.
func TestStatsWhilePolling(t *testing.T) {
	t.Parallel()
	body := `{"status":"success","statsCollectedSince":1700000000,"trackerMemoryMaxSizeBytes":100,"records":[{"metricName":"x","queryRequestsCount":1}]}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(body)) }))
	defer srv.Close()
	s, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: srv.URL, SelectURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ids := tenantList{tenant.MustParse("1"), tenant.MustParse("2"), tenant.MustParse("3")}
	p := New(Config{}, s, ids, nil, prometheus.NewRegistry(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			p.Poll(ctx)
		}
	}()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, id := range ids {
			if names, st := p.Stats(id); st.Available && names["x"].Requests != 1 {
				t.Fatalf("tenant %s: %+v", id, names)
			}
		}
	}
	cancel()
	<-done
}

// growingTenants is a tenant list that grows while the poller runs.
type growingTenants struct {
	mu  sync.Mutex
	ids []tenant.ID
}

func (g *growingTenants) TenantIDs() []tenant.ID {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.ids)
}

func (g *growingTenants) add(t tenant.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ids = append(g.ids, t)
}

// A tenant that first writes after the first poll is polled within
// NewTenantsEvery, not a whole Interval later; the tenants already polled
// wait for the Interval.
func TestRunPollsNewTenantsPromptly(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	asked := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked[strings.Split(r.URL.Path, "/")[2]]++
		mu.Unlock()
		_, _ = w.Write([]byte(`{"status":"success","statsCollectedSince":1700000000,"trackerMemoryMaxSizeBytes":100,"records":[{"metricName":"x","queryRequestsCount":1}]}`))
	}))
	defer srv.Close()
	s, err := upstream.New(upstream.Config{Mode: upstream.ModeCluster, InsertURL: srv.URL, SelectURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	first, late := tenant.MustParse("1"), tenant.MustParse("2")
	ids := &growingTenants{ids: []tenant.ID{first}}
	p := New(Config{Interval: time.Hour, NewTenantsEvery: 10 * time.Millisecond}, s, ids, nil, prometheus.NewRegistry(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	waitStats := func(tn tenant.ID) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			if _, st := p.Stats(tn); st.Available {
				return
			}
			if time.Now().After(deadline) {
				_, st := p.Stats(tn)
				t.Fatalf("tenant %s not polled within 5s (interval 1h): %+v", tn, st)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitStats(first)
	ids.add(late)
	waitStats(late)
	time.Sleep(50 * time.Millisecond) // several checks for new tenants
	mu.Lock()
	defer mu.Unlock()
	if asked["1:0"] != 1 || asked["2:0"] != 1 {
		t.Errorf("requests per tenant %v: want one each, the known tenant not polled again before the interval", asked)
	}
}
