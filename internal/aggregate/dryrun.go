package aggregate

import (
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// DryRun counts, for tenants in dry run, what aggregation would do: every input
// series that a relabel rule or the guard would fold, under the output series it
// would become, in the current window. Series that a rule rewrites into an output
// of their own are not aggregated and not counted. Bounded: past max inputs in
// all, new ones are not counted, and Counts says so. Safe for concurrent use.
type DryRun struct {
	window time.Duration
	max    int

	mu      sync.Mutex
	n       int
	gen     int64
	tenants map[tenant.ID]*dryTenant
}

type dryTenant struct {
	gen     int64
	inputs  map[uint64]uint64 // input → output
	outputs map[uint64]dryOutput
	full    bool
}

type dryOutput struct {
	inputs int
	guard  bool // the guard folds into it: aggregated whatever the count
}

// NewDryRun counts at most max inputs in all, per window.
func NewDryRun(window time.Duration, max int) *DryRun {
	if window <= 0 {
		window = DefaultStaleness
	}
	return &DryRun{window: window, max: max, tenants: map[tenant.ID]*dryTenant{}}
}

// Record notes that input in would become output out; byGuard when the label
// guard would fold it.
func (d *DryRun) Record(t tenant.ID, out, in uint64, byGuard bool, now time.Time) {
	gen := now.UnixNano() / int64(d.window)
	d.mu.Lock()
	defer d.mu.Unlock()
	if gen != d.gen {
		// A tenant that left dry run must not keep its counts.
		d.gen = gen
		for id, dt := range d.tenants {
			if dt.gen != gen {
				d.n -= len(dt.inputs)
				delete(d.tenants, id)
			}
		}
	}
	dt := d.tenants[t]
	if dt == nil || dt.gen != gen {
		if dt != nil {
			d.n -= len(dt.inputs)
		}
		dt = &dryTenant{gen: gen, inputs: map[uint64]uint64{}, outputs: map[uint64]dryOutput{}}
		d.tenants[t] = dt
	}
	if _, ok := dt.inputs[in]; ok {
		return
	}
	if d.n >= d.max {
		dt.full = true
		return
	}
	d.n++
	dt.inputs[in] = out
	o := dt.outputs[out]
	o.inputs++
	o.guard = o.guard || byGuard
	dt.outputs[out] = o
}

// DryRunCounts is what aggregation would do to a tenant in dry run.
type DryRunCounts struct {
	// InputSeries would be folded into OutputSeries.
	InputSeries  int `json:"input_series"`
	OutputSeries int `json:"output_series"`
	// Incomplete: the count hit its cap and is a lower bound.
	Incomplete bool `json:"incomplete"`
}

// Counts returns tenant t's counts in the current window.
func (d *DryRun) Counts(t tenant.ID, now time.Time) DryRunCounts {
	d.mu.Lock()
	defer d.mu.Unlock()
	dt := d.tenants[t]
	if dt == nil || dt.gen != now.UnixNano()/int64(d.window) {
		return DryRunCounts{}
	}
	c := DryRunCounts{Incomplete: dt.full}
	for _, o := range dt.outputs {
		if o.guard || o.inputs >= 2 {
			c.InputSeries += o.inputs
			c.OutputSeries++
		}
	}
	return c
}
