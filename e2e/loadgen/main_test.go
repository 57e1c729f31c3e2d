package main

import (
	"strings"
	"testing"
)

func TestCheckLoopback(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		url string
		ok  bool
	}{
		{"http://127.0.0.1:8428/api/v1/write", true},
		{"http://127.0.0.2:8428/api/v1/write", true},
		{"http://localhost:8490/api/v1/write", true},
		{"http://[::1]:8490/api/v1/write", true},
		{"http://10.0.0.1:8428/api/v1/write", false},
		{"http://example.com/api/v1/write", false},
		{"https://127.0.0.1/api/v1/write", false},
		{"http://0.0.0.0:8428/", false},
	} {
		if err := checkLoopback(tc.url); (err == nil) != tc.ok {
			t.Errorf("checkLoopback(%q) = %v, want ok=%v", tc.url, err, tc.ok)
		}
	}
}

func TestParseFlagsNeedsABound(t *testing.T) {
	t.Parallel()
	var sink strings.Builder
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write"}, &sink); err == nil {
		t.Error("no -duration, -requests or -passes: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-duration=20m"}, &sink); err == nil {
		t.Error("-duration over the bound: want an error")
	}
	if _, err := parseFlags([]string{"-url=http://127.0.0.1:1/api/v1/write", "-passes=1"}, &sink); err != nil {
		t.Error(err)
	}
}
