package aggregate

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cardguard/cardguard/internal/tenant"
)

type memSink struct {
	mu   sync.Mutex
	fail bool
	got  map[tenant.ID][]prompb.TimeSeries
}

func (s *memSink) Write(_ context.Context, t tenant.ID, series []prompb.TimeSeries) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return errors.New("upstream down")
	}
	if s.got == nil {
		s.got = map[tenant.ID][]prompb.TimeSeries{}
	}
	for _, ts := range series {
		s.got[t] = append(s.got[t], prompb.TimeSeries{Labels: ts.Labels, Samples: append([]prompb.Sample(nil), ts.Samples...)})
	}
	return nil
}

// values returns the values written for the series whose __name__ is name.
func (s *memSink) values(t tenant.ID, name string) []float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []float64
	for _, ts := range s.got[t] {
		for _, l := range ts.Labels {
			if l.Name == "__name__" && l.Value == name {
				for _, smp := range ts.Samples {
					out = append(out, smp.Value)
				}
			}
		}
	}
	return out
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTest(t *testing.T, cfg Config) (*Aggregator, *memSink, *clock) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a := New(cfg, sink, nil)
	a.SetClock(c.now)
	return a, sink, c
}

var tn = tenant.ID{AccountID: 1}

func out(name string) []prompb.Label { return []prompb.Label{{Name: "__name__", Value: name}} }

// push adds one sample of input key in to the output named name at the clock's time.
func push(t *testing.T, a *Aggregator, c *clock, name string, in uint64, v float64) {
	t.Helper()
	err := a.Add(tn, &Input{
		Labels: out(name), Hash: uint64(len(name)) << 40, Metric: name, Key: in, Kind: KindOf(name),
		Samples: []prompb.Sample{{Value: v, Timestamp: c.t.UnixMilli()}},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func flush(t *testing.T, a *Aggregator, c *clock) {
	t.Helper()
	if err := a.Flush(context.Background(), c.t, false); err != nil {
		t.Fatal(err)
	}
}

// The output of a folded counter rises by exactly the sum of its inputs'
// increases, through resets, inputs that come and go, and a pause of every input.
func TestCounterTotal(t *testing.T) {
	a, sink, c := newTest(t, Config{Interval: 10 * time.Second, Staleness: time.Hour})
	const name = "req_total"
	step := func(d time.Duration) { c.t = c.t.Add(d) }
	// Two inputs start with values a restart of cardguard would see: baselines.
	push(t, a, c, name, 1, 100)
	push(t, a, c, name, 2, 500)
	flush(t, a, c)
	truth := 0.0
	for i := 1; i <= 6; i++ {
		step(10 * time.Second)
		push(t, a, c, name, 1, 100+float64(i))
		push(t, a, c, name, 2, 500+2*float64(i))
		truth += 3
		flush(t, a, c)
	}
	// Input 1 resets to 0 and counts 4 from there.
	step(10 * time.Second)
	push(t, a, c, name, 1, 4)
	push(t, a, c, name, 2, 514)
	truth += 4 + 2
	flush(t, a, c)
	// Input 2 vanishes; input 3 appears (a baseline only: cardguard has run for
	// less than the staleness interval, so it may have been running all along).
	step(10 * time.Second)
	push(t, a, c, name, 1, 5)
	push(t, a, c, name, 3, 1000)
	truth++
	flush(t, a, c)
	// Every input pauses for two minutes, then goes on where it was.
	step(2 * time.Minute)
	flush(t, a, c)
	step(10 * time.Second)
	push(t, a, c, name, 1, 7)
	push(t, a, c, name, 3, 1010)
	truth += 2 + 10
	flush(t, a, c)

	vs := sink.values(tn, name)
	if len(vs) == 0 {
		t.Fatal("nothing written")
	}
	for i := 1; i < len(vs); i++ {
		if vs[i] < vs[i-1] {
			t.Fatalf("output went down from %v to %v: %v", vs[i-1], vs[i], vs)
		}
	}
	if got := vs[len(vs)-1] - vs[0]; got != truth {
		t.Fatalf("output rose by %v, inputs by %v: %v", got, truth, vs)
	}
}

// A series that joins an aggregate long after the aggregator started (the label
// guard's window turned and folded a value it had admitted before, or a rule
// changed) only sets its baseline: its whole value must not land in the total.
func TestCounterLateInputIsABaseline(t *testing.T) {
	a, sink, c := newTest(t, Config{Interval: 10 * time.Second, Staleness: time.Minute})
	push(t, a, c, "x_total", 1, 10)
	flush(t, a, c)
	c.t = c.t.Add(2 * time.Minute)
	push(t, a, c, "x_total", 1, 12)
	push(t, a, c, "x_total", 2, 5000)
	flush(t, a, c)
	c.t = c.t.Add(10 * time.Second)
	push(t, a, c, "x_total", 2, 5003)
	flush(t, a, c)
	vs := sink.values(tn, "x_total")
	if len(vs) != 3 || vs[2]-vs[0] != 5 {
		t.Fatalf("want a rise of 2+3, got %v", vs)
	}
}

func TestGaugeOutputs(t *testing.T) {
	for _, tc := range []struct {
		out  GaugeOutput
		want float64
	}{
		{"", 6}, {GaugeSum, 6}, {GaugeMin, 1}, {GaugeMax, 3}, {GaugeAvg, 2}, {GaugeCount, 3}, {GaugeLast, 3},
	} {
		t.Run(string(tc.out), func(t *testing.T) {
			a, sink, c := newTest(t, Config{Interval: 10 * time.Second})
			for i, v := range []float64{1, 2, 3} {
				// An older value of the same input in the interval is replaced.
				for _, x := range []float64{100, v} {
					err := a.Add(tn, &Input{Labels: out("g"), Hash: 7, Metric: "g", Key: uint64(i), Kind: Gauge, Gauge: tc.out,
						Samples: []prompb.Sample{{Value: x, Timestamp: c.t.UnixMilli() + int64(i)}}})
					if err != nil {
						t.Fatal(err)
					}
				}
			}
			flush(t, a, c)
			// An interval without samples writes nothing.
			c.t = c.t.Add(10 * time.Second)
			flush(t, a, c)
			if vs := sink.values(tn, "g"); len(vs) != 1 || vs[0] != tc.want {
				t.Fatalf("got %v, want [%v]", vs, tc.want)
			}
		})
	}
}

func TestNaNAndOldSamplesIgnored(t *testing.T) {
	a, sink, c := newTest(t, Config{Interval: 10 * time.Second})
	push(t, a, c, "c_total", 1, 10)
	ts := c.t.UnixMilli()
	err := a.Add(tn, &Input{Labels: out("c_total"), Hash: uint64(len("c_total")) << 40, Metric: "c_total", Key: 1, Kind: Counter,
		Samples: []prompb.Sample{{Value: math.Float64frombits(0x7ff0000000000002), Timestamp: ts + 1}, {Value: 1, Timestamp: ts - 1000}, {Value: 15, Timestamp: ts + 2}}})
	if err != nil {
		t.Fatal(err)
	}
	flush(t, a, c)
	if vs := sink.values(tn, "c_total"); len(vs) != 1 || vs[0] != 5 {
		t.Fatalf("got %v, want [5]", vs)
	}
}

func TestCaps(t *testing.T) {
	a, _, c := newTest(t, Config{Interval: 10 * time.Second, MaxOutputs: 1, MaxInputs: 2})
	push(t, a, c, "a_total", 1, 1)
	push(t, a, c, "a_total", 2, 1)
	if err := a.Add(tn, &Input{Labels: out("a_total"), Hash: uint64(len("a_total")) << 40, Key: 3, Kind: Counter, Samples: []prompb.Sample{{Value: 1}}}); !errors.Is(err, ErrFull) {
		t.Fatalf("third input: got %v, want ErrFull", err)
	}
	if err := a.Add(tn, &Input{Labels: out("b"), Hash: 99, Key: 1, Kind: Gauge, Samples: []prompb.Sample{{Value: 1}}}); !errors.Is(err, ErrFull) {
		t.Fatalf("second output: got %v, want ErrFull", err)
	}
	if a.Has(tn, 99) {
		t.Fatal("a refused output must not be held")
	}
}

// A flush VictoriaMetrics did not take is written with the next one, and inputs
// stale past the staleness interval are forgotten with their outputs.
func TestFlushRetryAndExpiry(t *testing.T) {
	a, sink, c := newTest(t, Config{Interval: 10 * time.Second, Staleness: time.Minute})
	push(t, a, c, "g", 1, 42)
	sink.fail = true
	if err := a.Flush(context.Background(), c.t, false); err == nil {
		t.Fatal("want the sink's error")
	}
	sink.fail = false
	c.t = c.t.Add(10 * time.Second)
	flush(t, a, c)
	if vs := sink.values(tn, "g"); len(vs) != 1 || vs[0] != 42 {
		t.Fatalf("retried flush: got %v", vs)
	}
	c.t = c.t.Add(2 * time.Minute)
	flush(t, a, c)
	if a.Has(tn, uint64(len("g"))<<40) {
		t.Fatal("stale output still held")
	}
	if in, o := a.TenantSeries(tn); in != 0 || o != 0 {
		t.Fatalf("per-tenant series after expiry: %d in, %d out", in, o)
	}
}

func TestClaims(t *testing.T) {
	c := NewClaims(time.Hour, 3)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e1 := c.Epoch(tn, now)
	if u, _ := c.Claim(tn, 10, 1, now); !u {
		t.Fatal("one input claims its output alone")
	}
	if u, _ := c.Claim(tn, 10, 1, now); !u {
		t.Fatal("and again")
	}
	if c.Epoch(tn, now) != e1 {
		t.Fatal("epoch moved without a collision")
	}
	if u, prev := c.Claim(tn, 10, 2, now); u || prev != 1 {
		t.Fatalf("second input of the same output is a collision with the first: got %v, %d", u, prev)
	}
	e2 := c.Epoch(tn, now)
	if e2 == e1 {
		t.Fatal("a collision must move the epoch")
	}
	other := tenant.ID{AccountID: 2}
	if u, _ := c.Claim(other, 10, 2, now); !u {
		t.Fatal("tenants are apart")
	}
	c.Claim(tn, 11, 1, now)
	if u, _ := c.Claim(tn, 12, 1, now); u {
		t.Fatal("past the cap, nothing can be told apart: aggregate")
	}
	next := now.Add(time.Hour)
	if e3 := c.Epoch(tn, next); e3 == e2 || e3 == e1 {
		t.Fatal("a new window must move the epoch")
	}
	if u, _ := c.Claim(tn, 12, 1, next); !u {
		t.Fatal("a new window starts empty")
	}
}

func TestKindOf(t *testing.T) {
	for name, want := range map[string]Kind{
		"http_requests_total": Counter, "rpc_duration_seconds_bucket": Counter, "rpc_duration_seconds_count": Counter,
		"rpc_duration_seconds_sum": Counter, "node_memory_bytes": Gauge, "up": Gauge, "total": Gauge,
	} {
		if got := KindOf(name); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", name, got, want)
		}
	}
}

// When a second input collides with one that had the output to itself (and was
// forwarded raw), the output continues from the first input's raw value, and is
// not written before that value is known, so that it never goes down.
func TestSeedContinuesRawSeries(t *testing.T) {
	a, sink, c := newTest(t, Config{Interval: 10 * time.Second})
	add := func(in, seed uint64, v float64) {
		t.Helper()
		err := a.Add(tn, &Input{Labels: out("r_total"), Hash: 5, Metric: "r_total", Key: in, Seed: seed, Kind: Counter,
			Samples: []prompb.Sample{{Value: v, Timestamp: c.t.UnixMilli()}}})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Input 1 was forwarded raw up to 700; input 2 collides with it.
	add(2, 1, 50)
	flush(t, a, c)
	if vs := sink.values(tn, "r_total"); len(vs) != 0 {
		t.Fatalf("written before the seed's value came: %v", vs)
	}
	c.t = c.t.Add(10 * time.Second)
	add(1, 0, 703)
	add(2, 0, 55)
	flush(t, a, c)
	if vs := sink.values(tn, "r_total"); len(vs) != 1 || vs[0] != 703+5 {
		t.Fatalf("got %v, want [708]: the raw 703 plus input 2's increase", vs)
	}
	// Without the seed's value, the output is written after two intervals.
	a.Add(tn, &Input{Labels: out("s_total"), Hash: 6, Metric: "s_total", Key: 3, Seed: 9, Kind: Counter,
		Samples: []prompb.Sample{{Value: 1, Timestamp: c.t.UnixMilli()}}})
	for range 3 {
		c.t = c.t.Add(10 * time.Second)
		flush(t, a, c)
	}
	a.Add(tn, &Input{Labels: out("s_total"), Hash: 6, Metric: "s_total", Key: 3, Kind: Counter,
		Samples: []prompb.Sample{{Value: 4, Timestamp: c.t.UnixMilli()}}})
	c.t = c.t.Add(10 * time.Second)
	flush(t, a, c)
	if vs := sink.values(tn, "s_total"); len(vs) == 0 || vs[len(vs)-1] != 3 {
		t.Fatalf("got %v, want the output written with 3", vs)
	}
}

// Each output counts as one collision when its second distinct input claims it,
// not again for a third input or the same input again, once more in a new
// window, and per tenant; /metrics shows the counts.
func TestClaimsCountCollisions(t *testing.T) {
	c := NewClaims(time.Hour, 100)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	other := tenant.ID{AccountID: 2}
	claim := func(id tenant.ID, out, in uint64, at time.Time) { c.Claim(id, out, in, at) }
	claim(tn, 10, 1, now)
	claim(tn, 10, 1, now) // the same input again: no collision
	if n := c.Collisions(tn); n != 0 {
		t.Fatalf("%d collisions with one input", n)
	}
	claim(tn, 10, 2, now)
	claim(tn, 10, 3, now) // a third input of an output that collided already
	claim(tn, 10, 2, now)
	claim(tn, 20, 4, now)
	claim(other, 10, 5, now) // the same output hash in another tenant is apart
	if n := c.Collisions(tn); n != 1 {
		t.Fatalf("%d collisions after one output's second, third and repeated inputs, want 1", n)
	}
	claim(tn, 20, 5, now)
	claim(other, 10, 6, now)
	if n, o := c.Collisions(tn), c.Collisions(other); n != 2 || o != 1 {
		t.Fatalf("collisions %d and %d, want 2 and 1", n, o)
	}
	next := now.Add(time.Hour)
	claim(tn, 10, 1, next)
	claim(tn, 10, 2, next)
	if n := c.Collisions(tn); n != 3 {
		t.Fatalf("%d collisions after the output collided again in a new window, want 3", n)
	}

	reg := prometheus.NewPedanticRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	if got, want := gatherCollisions(t, reg), map[string]float64{"1:0": 3, "2:0": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("cardguard_series_collisions_total %v, want %v", got, want)
	}
}

// gatherCollisions returns cardguard_series_collisions_total by tenant label.
func gatherCollisions(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "cardguard_series_collisions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != 1 || m.GetLabel()[0].GetName() != "tenant" || m.GetCounter() == nil {
				t.Fatalf("unexpected series %v", m)
			}
			out[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
		}
	}
	return out
}

// However many tenants have collisions, the counts stay bounded: tenants past
// the cap share the overflow label.
func TestClaimsCollisionsBounded(t *testing.T) {
	c := NewClaims(time.Hour, 10*maxCollisionTenants)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxCollisionTenants + 5 {
		id := tenant.ID{AccountID: uint32(i + 1)}
		c.Claim(id, 1, 1, now)
		c.Claim(id, 1, 2, now)
	}
	if n := len(c.collisions); n != maxCollisionTenants {
		t.Fatalf("%d tenants counted apart, want the cap %d", n, maxCollisionTenants)
	}
	if c.collisionsOther != 5 {
		t.Fatalf("%d collisions past the cap, want 5", c.collisionsOther)
	}
	reg := prometheus.NewPedanticRegistry()
	if err := c.Register(reg); err != nil {
		t.Fatal(err)
	}
	got := gatherCollisions(t, reg)
	if len(got) != maxCollisionTenants+1 || got[tenant.OverflowLabel] != 5 {
		t.Fatalf("%d series, %v for %q; want %d tenants and %q with 5", len(got), got[tenant.OverflowLabel], tenant.OverflowLabel, maxCollisionTenants, tenant.OverflowLabel)
	}
}

// Held counts what is folded now, before any flush; TenantSeries waits for one.
func TestHeldIsLive(t *testing.T) {
	a, _, c := newTest(t, Config{Interval: 10 * time.Second})
	push(t, a, c, "a_total", 1, 1)
	push(t, a, c, "a_total", 2, 1)
	push(t, a, c, "g", 1, 1)
	if got := a.Held()[tn]; got != (SeriesCount{Inputs: 3, Outputs: 2}) {
		t.Fatalf("held %+v, want 3 inputs in 2 outputs", got)
	}
	if in, o := a.TenantSeries(tn); in != 0 || o != 0 {
		t.Fatalf("TenantSeries before a flush: %d, %d", in, o)
	}
	if got := a.Held()[tenant.ID{AccountID: 9}]; got != (SeriesCount{}) {
		t.Fatalf("a tenant without folds holds %+v", got)
	}
}

func TestTypesFromMetadata(t *testing.T) {
	ts := NewTypes(3)
	ts.Learn(tn, "node_cpu", prompb.MetricTypeCounter)
	ts.Learn(tn, "rpc", prompb.MetricTypeSummary)
	ts.Learn(tn, "queue", prompb.MetricTypeGaugeHistogram)
	ts.Learn(tn, "over_cap", prompb.MetricTypeCounter) // past the cap: by name
	for metric, want := range map[string]Kind{
		"node_cpu": Counter, "rpc": Gauge, "rpc_sum": Counter, "rpc_count": Counter,
		"queue_bucket": Gauge, "over_cap": Gauge, "http_requests_total": Counter, "temperature": Gauge,
	} {
		if got := ts.KindOf(tn, metric); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", metric, got, want)
		}
	}
	if got := ts.KindOf(tenant.ID{AccountID: 9}, "node_cpu"); got != Gauge {
		t.Errorf("another tenant's metadata must not type this one's series: got %v", got)
	}
}

func TestDryRunCounts(t *testing.T) {
	d := NewDryRun(time.Hour, 5)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	d.Record(tn, 100, 1, false, now) // a rewrite without a collision
	d.Record(tn, 200, 2, false, now)
	d.Record(tn, 200, 3, false, now)
	d.Record(tn, 200, 3, false, now) // the same input again
	d.Record(tn, 300, 4, true, now)  // the guard folds even one
	if got := d.Counts(tn, now); got != (DryRunCounts{InputSeries: 3, OutputSeries: 2}) {
		t.Fatalf("got %+v, want 3 inputs into 2 outputs", got)
	}
	d.Record(tn, 400, 5, false, now)
	d.Record(tn, 400, 6, false, now) // past the cap of 5 inputs
	if got := d.Counts(tn, now); !got.Incomplete || got.InputSeries != 3 {
		t.Fatalf("past the cap: %+v", got)
	}
	if got := d.Counts(tn, now.Add(time.Hour)); got != (DryRunCounts{}) {
		t.Fatalf("next window: %+v", got)
	}
}
