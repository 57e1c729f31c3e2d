package limits

import (
	"bytes"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// TestMembershipSurvivesRestart: a tenant at its limit keeps admitting exactly the
// series it admitted before a restart, and refuses the others.
func TestMembershipSurvivesRestart(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { return now }
	l := Default()
	l.MaxSeries = 100
	l.MaxSeriesPerMetric = 60
	t1, t2 := tenant.MustParse("1"), tenant.MustParse("2:3")
	before := NewEnforcer(EnforcerOptions{Now: clock})
	adm := before.Admitter(t1, &l, now)
	for i := 0; i < 150; i++ {
		metric := "m" + strconv.Itoa(i%3)
		r := adm.Admit(metric, uint64(i))
		if (r == "") != (i < 100) {
			t.Fatalf("before restart, series %d: %q", i, r)
		}
	}
	before.Admitter(t2, &l, now).Admit("other", 7)

	path := filepath.Join(t.TempDir(), "membership")
	if err := before.SaveMembership(path); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	after := NewEnforcer(EnforcerOptions{Now: clock})
	n, err := after.LoadMembership(path)
	if err != nil || n != 101 {
		t.Fatalf("loaded %d series, %v; want 101", n, err)
	}
	if got := after.SeriesCount(t1); got != 100 {
		t.Fatalf("tenant 1 has %d series after restart, want 100", got)
	}
	if got := after.MetricSeriesCount(t1, "m0"); got != before.MetricSeriesCount(t1, "m0") {
		t.Errorf("m0 has %d series after restart, %d before", got, before.MetricSeriesCount(t1, "m0"))
	}
	adm = after.Admitter(t1, &l, now)
	for i := 149; i >= 0; i-- { // newest first: order must not matter any more
		r := adm.Admit("m"+strconv.Itoa(i%3), uint64(i))
		if (r == "") != (i < 100) {
			t.Fatalf("after restart, series %d: %q", i, r)
		}
	}
	if r := after.Admitter(t2, &l, now).Admit("other", 7); r != "" {
		t.Errorf("tenant 2's series refused after restart: %s", r)
	}
}

func TestReadMembershipRejectsDamage(t *testing.T) {
	t.Parallel()
	e := NewEnforcer(EnforcerOptions{})
	l := Default()
	l.MaxSeries = 10
	e.Admitter(tenant.MustParse("1"), &l, time.Now()).Admit("up", 1)
	var buf bytes.Buffer
	if err := e.WriteMembership(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	for name, b := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("xxxxxx\n"), good[7:]...),
		"truncated": good[:len(good)-1],
		"bad ref":   append(append([]byte{}, good[:7+24]...), 9),
	} {
		if _, err := NewEnforcer(EnforcerOptions{}).ReadMembership(bytes.NewReader(b)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
