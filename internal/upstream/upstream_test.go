package upstream

import (
	"net/url"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

func TestWriteURL(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cfg  Config
		t    string
		want string
	}{
		{"cluster", Config{Mode: ModeCluster, InsertURL: "http://vminsert:8480", SelectURL: "http://vmselect:8481"}, "42:7", "http://vminsert:8480/insert/42:7/prometheus/api/v1/write"},
		{"cluster with prefix", Config{Mode: ModeCluster, InsertURL: "https://lb/vm/", SelectURL: "https://lb/vm/"}, "1", "https://lb/vm/insert/1:0/prometheus/api/v1/write"},
		{"single", Config{Mode: ModeSingle, URL: "http://vm:8428"}, "3", "http://vm:8428/api/v1/write"},
		{"single with tenant label", Config{Mode: ModeSingle, URL: "http://vm:8428", TenantLabel: "vm_account_id"}, "3:1", "http://vm:8428/api/v1/write?extra_label=vm_account_id%3D3%3A1"},
	}
	for _, tt := range tests {
		s, err := New(tt.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := s.WriteURL(tenant.MustParse(tt.t)); got != tt.want {
			t.Errorf("%s: WriteURL = %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestReadURLStripsClientTenantArgs(t *testing.T) {
	t.Parallel()
	cluster, _ := New(Config{Mode: ModeCluster, InsertURL: "http://i:8480", SelectURL: "http://s:8481"})
	single, _ := New(Config{Mode: ModeSingle, URL: "http://vm:8428", TenantLabel: "tenant"})
	q := func() url.Values {
		return url.Values{
			"query":           {"up"},
			"extra_label":     {"tenant=2"},
			"EXTRA_FILTERS[]": {`{tenant="2"}`},
			"extra_filters":   {`{x="y"}`},
		}
	}
	got := cluster.ReadURL(tenant.MustParse("1"), "api/v1/query", q()).String()
	if want := "http://s:8481/select/1:0/prometheus/api/v1/query?query=up"; got != want {
		t.Errorf("cluster: %s, want %s", got, want)
	}
	got = single.ReadURL(tenant.MustParse("1"), "api/v1/query", q()).String()
	if want := "http://vm:8428/prometheus/api/v1/query?extra_label=tenant%3D1%3A0&query=up"; got != want {
		t.Errorf("single: %s, want %s", got, want)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	bad := []Config{
		{},
		{Mode: "both"},
		{Mode: ModeSingle},
		{Mode: ModeSingle, URL: "vm:8428"},
		{Mode: ModeSingle, URL: "http://vm:8428?x=1"},
		{Mode: ModeSingle, URL: "http://vm:8428", InsertURL: "http://i"},
		{Mode: ModeCluster, InsertURL: "http://i"},
		{Mode: ModeCluster, InsertURL: "http://i", SelectURL: "http://s", TenantLabel: "t"},
		{Mode: ModeSingle, URL: "http://vm", Timeout: 30 * time.Second},
	}
	for i, c := range bad {
		if _, err := New(c); err == nil {
			t.Errorf("config %d (%+v): want error", i, c)
		}
	}
}
