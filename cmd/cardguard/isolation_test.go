package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"

	"github.com/cardguard/cardguard/internal/auth"
	"github.com/cardguard/cardguard/internal/tenant"
)

const (
	adminTok = "admin-very-secret-token"
	tokA     = "tenant-a-secret-token"
	tokB     = "tenant-b-secret-token"
)

// lockedBuffer collects the log of the app under test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func authEnv(t *testing.T, logw *lockedBuffer) *env {
	return authEnvOn(t, layoutSingle, logw)
}

// authEnvOn is cardguard with tokens for tenants 1 and 2 and an admin token, in
// front of a VictoriaMetrics of the given layout.
func authEnvOn(t *testing.T, layout string, logw *lockedBuffer) *env {
	return newEnvOn(t, layout, func(c *Config) {
		multiTenant("")(c)
		c.Auth = auth.Config{AdminToken: adminTok, Tenants: []auth.TenantToken{
			{Token: tokA, Tenant: tenant.MustParse("1")},
			{Token: tokB, Tenant: tenant.MustParse("2")},
		}}
	}, logw)
}

var (
	writePaths = func(t string) []string {
		return []string{"/insert/" + t + "/prometheus/api/v1/write", "/insert/" + t + "/prometheus/api/v1/push"}
	}
	defaultWritePaths = []string{"/api/v1/write", "/api/v1/push", "/prometheus/api/v1/write", "/prometheus/api/v1/push"}
	readEndpoints     = []string{"api/v1/query?query=iso_secret", "api/v1/query_range?query=iso_secret&step=15s&start=%d&end=%d",
		"api/v1/series?match[]=iso_secret&start=%d&end=%d", "api/v1/labels?start=%d&end=%d", "api/v1/label/__name__/values?start=%d&end=%d",
		"api/v1/label/owner/values?match[]=iso_secret", "api/v1/export?match[]=iso_secret", "api/v1/query_exemplars?query=iso_secret",
		"api/v1/status/tsdb?topN=5", "federate?match[]=iso_secret"}
)

func readURLs(prefix string, start, end int64) []string {
	var out []string
	for _, ep := range readEndpoints {
		if strings.Count(ep, "%d") == 2 {
			ep = fmt.Sprintf(ep, start, end)
		}
		if prefix == "" && strings.HasPrefix(ep, "federate") {
			out = append(out, "/"+ep)
			continue
		}
		out = append(out, prefix+ep)
	}
	return out
}

// TestTenantIsolation: with auth on, a token for tenant 1 cannot write or read
// tenant 2 on any path, whatever path tricks or query arguments it adds; the
// admin API needs the admin token; tokens never appear in the log. It runs
// against a single node and against a cluster.
func TestTenantIsolation(t *testing.T) {
	for _, layout := range layouts {
		t.Run(layout, func(t *testing.T) {
			logw := &lockedBuffer{}
			testTenantIsolation(t, authEnvOn(t, layout, logw), logw)
		})
	}
}

func testTenantIsolation(t *testing.T, e *env, logw *lockedBuffer) {
	now := time.Now().Add(-time.Minute)
	start, end := now.Add(-10*time.Minute).Unix(), now.Add(5*time.Minute).Unix()
	owned := func(owner string) *prompb.WriteRequest {
		return &prompb.WriteRequest{Timeseries: genSeries("iso_secret", 3, now.UnixMilli(), prompb.Label{Name: "owner", Value: owner})}
	}

	// Writes: each tenant through its own paths; everything else refused.
	for _, p := range append(writePaths("1"), defaultWritePaths...) {
		if code, body := e.push(p, owned("tenant-one"), "Authorization", "Bearer "+tokA); code != 204 {
			t.Errorf("tenant 1 writing %s: %d %s", p, code, body)
		}
	}
	for _, p := range writePaths("2") {
		if code, body := e.push(p, owned("tenant-two"), "Authorization", "Bearer "+tokB); code != 204 {
			t.Errorf("tenant 2 writing %s: %d %s", p, code, body)
		}
		if code, _ := e.push(p, owned("intruder"), "Authorization", "Bearer "+tokA); code != 403 {
			t.Errorf("tenant 1 writing %s: %d, want 403", p, code)
		}
		if code, _ := e.push(p, owned("anonymous"), "Authorization", ""); code != 401 {
			t.Errorf("no token writing %s: %d, want 401", p, code)
		}
		if code, _ := e.push(p, owned("guess"), "Authorization", "Bearer wrong"); code != 401 {
			t.Errorf("bad token writing %s: %d, want 401", p, code)
		}
	}
	// A client's extra_label on a write must not move data into another tenant.
	if code, body := e.push("/api/v1/write?extra_label=vm_account_id%3D2%3A0", owned("smuggled"), "Authorization", "Bearer "+tokA); code != 204 {
		t.Errorf("write with extra_label: %d %s", code, body)
	}
	e.be.flush()
	if got := e.be.scalar("1", `count(iso_secret{owner="tenant-one"})`); got != 3 {
		t.Errorf("tenant 1 series in VictoriaMetrics: %v, want 3", got)
	}
	if got := e.be.scalar("", `count(iso_secret{owner="tenant-one"})`); got != 3 {
		t.Errorf("tenant 1's series in VictoriaMetrics across tenants: %v, want 3, all in tenant 1", got)
	}
	if got := e.be.scalar("2", `count(iso_secret{owner="tenant-two"})`); got != 3 {
		t.Errorf("tenant 2 series in VictoriaMetrics: %v, want 3", got)
	}
	for _, bad := range []string{"intruder", "anonymous", "guess"} {
		if got := e.be.scalar("", `count(iso_secret{owner="`+bad+`"})`); got != -1 {
			t.Errorf("refused write %q reached VictoriaMetrics: %v series", bad, got)
		}
	}
	if in1, all := e.be.scalar("1", `count(iso_secret{owner="smuggled"})`), e.be.scalar("", `count(iso_secret{owner="smuggled"})`); in1 != 3 || all != 3 {
		t.Errorf("a write with extra_label: %v series in tenant 1, %v in all tenants; want 3 and 3", in1, all)
	}

	// Reads: tenant 1 sees only its own data on every path, with or without
	// arguments that try to widen the selection.
	tricks := []string{"", "&extra_label=vm_account_id%3D2%3A0", "&extra_filters[]=%7Bvm_account_id%3D%222%3A0%22%7D", "&extra_filters=%7Bowner%3D%22tenant-two%22%7D"}
	for _, prefix := range []string{"/select/1/prometheus/", "/api/v1/../", "/prometheus/"} {
		if prefix == "/api/v1/../" {
			prefix = "/"
		}
		for _, u := range readURLs(prefix, start, end) {
			for _, trick := range tricks {
				code, body := get(t, e.srv.URL+u+trick, "Authorization", "Bearer "+tokA)
				if code/100 != 2 && !strings.Contains(u, "query_exemplars") {
					t.Errorf("tenant 1 reading %s%s: %d %s", u, trick, code, body)
				}
				if bytes.Contains(body, []byte("tenant-two")) || bytes.Contains(body, []byte(`2:0`)) {
					t.Errorf("tenant 1 reading %s%s saw tenant 2's data: %s", u, trick, body)
				}
			}
		}
	}
	// Form POST with the same tricks in the body.
	code, body := postForm(t, e.srv.URL+"/api/v1/query", url.Values{"query": {"iso_secret"}, "extra_label": {"vm_account_id=2:0"}, "extra_filters[]": {`{owner="tenant-two"}`}}, "Authorization", "Bearer "+tokA)
	if code != 200 || bytes.Contains(body, []byte("tenant-two")) || !bytes.Contains(body, []byte("tenant-one")) {
		t.Errorf("form POST with tenant args: %d %s", code, body)
	}
	for _, u := range readURLs("/select/2/prometheus/", start, end) {
		if code, _ := get(t, e.srv.URL+u, "Authorization", "Bearer "+tokA); code != 403 {
			t.Errorf("tenant 1 reading %s: %d, want 403", u, code)
		}
		if code, _ := get(t, e.srv.URL+u); code != 401 {
			t.Errorf("anonymous reading %s: %d, want 401", u, code)
		}
	}
	// The admin reads any tenant.
	if code, body := get(t, e.srv.URL+"/select/2/prometheus/api/v1/query?query=iso_secret", "Authorization", "Bearer "+adminTok); code != 200 || !bytes.Contains(body, []byte("tenant-two")) {
		t.Errorf("admin reading tenant 2: %d %s", code, body)
	}

	// Path tricks, sent raw so no client cleans them: never a 2xx, never tenant 2.
	for _, p := range []string{
		"/select/1/prometheus/../../2/prometheus/api/v1/query?query=iso_secret",
		"/select/1/prometheus/api/v1/../../../../select/2/prometheus/api/v1/query?query=iso_secret",
		"/select/1/prometheus/api/v1/..%2F..%2F..%2F2%2Fprometheus%2Fapi%2Fv1%2Fquery?query=iso_secret",
		"/select/1%2F..%2F2/prometheus/api/v1/query?query=iso_secret",
		"/select/1/prometheus//api/v1/query?query=iso_secret",
		"//select/2/prometheus/api/v1/query?query=iso_secret",
		"/select/multitenant/prometheus/api/v1/query?query=iso_secret",
		"/select/2/prometheus/api/v1/query?query=iso_secret",
		"/select/1:0%00/prometheus/api/v1/query?query=iso_secret",
		"/insert/1/prometheus/../../2/prometheus/api/v1/write",
		"/select/%31/prometheus/api/v1/query?query=iso_secret",
	} {
		code, body := rawGet(t, e.srv.Listener.Addr().String(), p, tokA)
		if code/100 == 2 && !strings.HasPrefix(p, "/select/%31/") || bytes.Contains(body, []byte("tenant-two")) {
			t.Errorf("raw %s: %d %s", p, code, body)
		}
	}

	// The cardguard API: tenant tokens only on their own tenant's paths.
	api := e.srv.URL + "/api/cardguard/v1"
	for _, c := range []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/limits", tokA, 403},
		{"GET", "/limits", "", 401},
		{"GET", "/limits", adminTok, 200},
		{"GET", "/limits/1", tokA, 200},
		{"GET", "/limits/2", tokA, 403},
		{"PUT", "/limits/1", tokA, 403},
		{"PATCH", "/limits/2", tokA, 403},
		{"DELETE", "/limits/1", tokA, 403},
		{"GET", "/cardinality/tenants", tokA, 403},
		{"GET", "/cardinality/tenants", adminTok, 200},
		{"GET", "/cardinality/tenants/1/metrics", tokA, 200},
		{"GET", "/cardinality/tenants/2/metrics", tokA, 403},
		{"GET", "/cardinality/tenants/2:0/status/tsdb", tokA, 403},
		{"GET", "/usage/tenants/2/metrics", tokA, 403},
		{"GET", "/usage/tenants/1/metrics", tokA, 200},
		{"GET", "/usage/tenants/2/series", tokA, 403},
		{"GET", "/usage/tenants/2/metrics/iso_secret/series", tokA, 403},
		{"GET", "/usage/tenants/1/series", tokA, 200},
		{"GET", "/usage/tenants/1/series", "", 401},
		{"GET", "/guard/tenants/2", tokA, 403},
		{"POST", "/relabel/debug", tokA, 403},
	} {
		req, _ := http.NewRequest(c.method, api+c.path, strings.NewReader(`{"max_series":1}`))
		req.Header.Set("Content-Type", "application/json")
		if c.token != "" {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s with %q: %d, want %d", c.method, c.path, c.token, resp.StatusCode, c.want)
		}
	}

	for _, secret := range []string{adminTok, tokA, tokB} {
		if strings.Contains(logw.String(), secret) {
			t.Errorf("a token appears in the log")
		}
	}
}

// rawGet sends a request line exactly as given, so that neither Go's client nor a
// URL parser normalises the path first.
func rawGet(t *testing.T, addr, path, token string) (int, []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	method := "GET"
	if strings.Contains(path, "/write") {
		method = "POST"
	}
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path, token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

// TestPprofNeedsAdmin: profiles show internals and cost CPU.
func TestPprofNeedsAdmin(t *testing.T) {
	e := authEnv(t, &lockedBuffer{})
	for _, c := range []struct {
		token string
		want  int
	}{{"", 401}, {tokA, 403}, {adminTok, 200}} {
		code, _ := get(t, e.srv.URL+"/debug/pprof/cmdline", "Authorization", "Bearer "+c.token)
		if code != c.want {
			t.Errorf("pprof with %q: %d, want %d", c.token, code, c.want)
		}
	}
}
