package main

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func scrape(t *testing.T, e *exporter, tick int64) map[string]int {
	t.Helper()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	e.write(bw, tick)
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(&buf)
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	n := map[string]int{}
	for name, f := range fams {
		n[name] = len(f.GetMetric())
	}
	return n
}

func TestExposition(t *testing.T) {
	t.Parallel()
	e := &exporter{o: options{users: 30, sessions: 7}}
	got := scrape(t, e, 3)
	want := map[string]int{
		"demo_http_requests_total": len(routes) * len(statuses),
		"demo_user_requests_total": len(routes) * 30,
		"demo_session_active":      7,
	}
	for name, n := range want {
		if got[name] != n {
			t.Errorf("%s: %d series, want %d", name, got[name], n)
		}
	}
}

func TestSessionsChurn(t *testing.T) {
	t.Parallel()
	e := &exporter{o: options{users: 1, sessions: 3}}
	ids := func(tick int64) string {
		var buf bytes.Buffer
		bw := bufio.NewWriter(&buf)
		e.write(bw, tick)
		_ = bw.Flush()
		var s []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.HasPrefix(l, "demo_session_active{") {
				s = append(s, l)
			}
		}
		return strings.Join(s, ",")
	}
	if a, b := ids(1), ids(1); a != b {
		t.Errorf("same tick gives different series: %s vs %s", a, b)
	}
	if a, b := ids(1), ids(2); a == b {
		t.Errorf("session IDs did not change between ticks: %s", a)
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args []string
		ok   bool
	}{
		{nil, true},
		{[]string{"-users=0"}, false},
		{[]string{"-users=1000000"}, false},
		{[]string{"-sessions=-1"}, false},
		{[]string{"-churn=10ms"}, false},
		{[]string{"extra"}, false},
	}
	for _, tt := range tests {
		_, err := parseFlags(tt.args, io.Discard)
		if (err == nil) != tt.ok {
			t.Errorf("%v: err %v, want ok=%v", tt.args, err, tt.ok)
		}
	}
}
