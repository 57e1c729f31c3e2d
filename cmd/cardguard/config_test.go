package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cardguard.yml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		body    string
		code    int
		wantErr string
	}{
		{name: "empty file means defaults", body: "", code: 0},
		{name: "cluster", body: "upstream:\n  mode: cluster\n  insert_url: http://vminsert:8480\n  select_url: http://vmselect:8481\n", code: 0},
		{name: "unknown key", body: "upstream:\n  mode: single\n  url: http://vm:8428\n  urll: x\n", code: 1, wantErr: "field urll not found"},
		{name: "unknown top-level key", body: "limitz: {}\n", code: 1, wantErr: "field limitz not found"},
		{name: "bad mode", body: "upstream:\n  mode: both\n", code: 1, wantErr: "upstream.mode"},
		{name: "bad tenant", body: "default_tenant: abc\n", code: 1, wantErr: "accountID"},
		{name: "tenant tokens need isolation", body: "upstream:\n  mode: single\n  url: http://vm:8428\nauth:\n  admin_token: a\n  tenants:\n  - token: t\n    tenant: \"1\"\n", code: 1, wantErr: "tenant_label"},
		{name: "timeout over 30s", body: "upstream:\n  mode: single\n  url: http://vm:8428\n  timeout: 45s\n", code: 1, wantErr: "remote_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out, errOut bytes.Buffer
			code := run([]string{"-check-config", "-config", writeFile(t, tt.body)}, &out, &errOut)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tt.code, errOut.String())
			}
			if tt.wantErr != "" && !strings.Contains(errOut.String(), tt.wantErr) {
				t.Errorf("stderr %q does not mention %q", errOut.String(), tt.wantErr)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	var out, errOut bytes.Buffer
	if code := run([]string{"-nosuchflag"}, &out, &errOut); code != 2 {
		t.Errorf("unknown flag: exit %d", code)
	}
	if code := run([]string{"-upstream.url=http://a", "-vm.binary=/x"}, &out, &errOut); code != 2 {
		t.Errorf("conflicting flags: exit %d", code)
	}
	if code := run([]string{"-loggerLevel=loud", "-check-config"}, &out, &errOut); code != 2 {
		t.Errorf("bad log level: exit %d", code)
	}
}

// TestDefaultGCPercent: 30 unless GOGC is set, which is then left to the runtime.
func TestDefaultGCPercent(t *testing.T) {
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if p, ok := defaultGCPercent(getenv); !ok || p != 30 {
		t.Fatalf("without GOGC: %d, %v; want 30, true", p, ok)
	}
	env["GOGC"] = "off"
	if _, ok := defaultGCPercent(getenv); ok {
		t.Fatalf("GOGC=off was overridden")
	}
}
