package cardinality

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/VictoriaMetrics/VictoriaMetrics/lib/prompb"
	"github.com/cespare/xxhash/v2"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Level says which sketches a Bucket carries and how wide it is.
type Level string

// Bucket levels.
const (
	// LevelSeries buckets (Window/Buckets wide) carry the tenant and metric series
	// sketches.
	LevelSeries Level = "series"
	// LevelLabels buckets (Window/LabelBuckets wide) carry the label sketches of the
	// tenant and of its metrics.
	LevelLabels Level = "labels"
	// LevelChurn buckets (ChurnWindow/ChurnBuckets wide) carry the tenant's long-window
	// series sketch.
	LevelChurn Level = "churn"
	// LevelMetricChurn buckets (ChurnWindow/MetricChurnBuckets wide) carry the
	// long-window series sketches of the tenant's metrics.
	LevelMetricChurn Level = "metric_churn"
)

// Bucket is one bucket of one tenant at one level, with its sketches in the axiomhq
// binary encoding. It is the unit replicas exchange and snapshots store: merging a
// Bucket into a tracker is idempotent and commutative, as HLL merges are.
type Bucket struct {
	Tenant tenant.ID `json:"tenant"`
	// Overflow marks the shared entry of the tenants over the cap; Tenant is then zero.
	Overflow bool          `json:"overflow,omitempty"`
	Level    Level         `json:"level"`
	Start    time.Time     `json:"start"`
	Width    time.Duration `json:"width"`
	// Series is the tenant's series sketch (series and churn levels).
	Series  []byte         `json:"series,omitempty"`
	Metrics []MetricBucket `json:"metrics,omitempty"`
	// Labels are the tenant-level label sketches (labels level).
	Labels []LabelBucket `json:"labels,omitempty"`
}

// MetricBucket is one metric's part of a Bucket: Series at the series and metric
// churn levels, Labels at the labels level.
type MetricBucket struct {
	Name     string        `json:"name"`
	Overflow bool          `json:"overflow,omitempty"`
	Series   []byte        `json:"series,omitempty"`
	Labels   []LabelBucket `json:"labels,omitempty"`
}

// LabelBucket is one label name's sketches: distinct values, and for tenant-level
// labels the series carrying it.
type LabelBucket struct {
	Name     string `json:"name"`
	Overflow bool   `json:"overflow,omitempty"`
	Values   []byte `json:"values,omitempty"`
	Series   []byte `json:"series,omitempty"`
}

func (t *Tracker) levelWidth(l Level) (time.Duration, error) {
	switch l {
	case LevelSeries:
		return t.width, nil
	case LevelLabels:
		return t.width * time.Duration(t.labelDiv), nil
	case LevelChurn:
		return t.width * time.Duration(t.dayDiv), nil
	case LevelMetricChurn:
		return t.width * time.Duration(t.metricDayDiv), nil
	}
	return 0, fmt.Errorf("unknown bucket level %q", truncate(string(l)))
}

// ExportBuckets returns every bucket of tn that is still in its window. The
// overflow tenant is exported with ExportOverflowBuckets.
func (t *Tracker) ExportBuckets(tn tenant.ID) []Bucket {
	t.mu.RLock()
	ts := t.tenants[tn]
	t.mu.RUnlock()
	return t.export(ts, false)
}

// ExportLocalBuckets is ExportBuckets leaving out the sketches that hold only
// what other replicas' buckets merged in: what a replica shares of its own.
// With writes routed to the owner of their metric, a replica observes a
// metric only if it owns it, so each metric's sketches travel once, from
// their owner, instead of from every replica that merged them; the union of
// every replica's own buckets is the whole.
func (t *Tracker) ExportLocalBuckets(tn tenant.ID) []Bucket {
	t.mu.RLock()
	ts := t.tenants[tn]
	t.mu.RUnlock()
	return t.export(ts, true)
}

// TenantIDs returns the tracked tenants, the overflow entry left out: what a
// replica walks to export its buckets with ExportBuckets.
func (t *Tracker) TenantIDs() []tenant.ID {
	t.mu.RLock()
	defer t.mu.RUnlock()
	ids := make([]tenant.ID, 0, len(t.tenants))
	for id := range t.tenants {
		ids = append(ids, id)
	}
	return ids
}

// ExportOverflowBuckets returns the buckets of the shared overflow tenant.
func (t *Tracker) ExportOverflowBuckets() []Bucket {
	t.mu.RLock()
	ts := t.overflow
	t.mu.RUnlock()
	return t.export(ts, false)
}

// ExportLocalOverflowBuckets is ExportOverflowBuckets as ExportLocalBuckets is
// ExportBuckets.
func (t *Tracker) ExportLocalOverflowBuckets() []Bucket {
	t.mu.RLock()
	ts := t.overflow
	t.mu.RUnlock()
	return t.export(ts, true)
}

func (t *Tracker) export(ts *tenantState, onlyLocal bool) []Bucket {
	if ts == nil {
		return nil
	}
	cur := t.epoch.Load()
	labelCur, dayCur, metricDayCur := floorDiv(cur, t.labelDiv), floorDiv(cur, t.dayDiv), floorDiv(cur, t.metricDayDiv)
	out := map[[2]int64]*Bucket{} // (level, epoch)
	bucket := func(l Level, li, epoch int64) *Bucket {
		b := out[[2]int64{li, epoch}]
		if b == nil {
			w, _ := t.levelWidth(l)
			b = &Bucket{Tenant: ts.id, Overflow: ts.overflow, Level: l, Width: w, Start: time.Unix(0, epoch*int64(w)).UTC()}
			out[[2]int64{li, epoch}] = b
		}
		return b
	}
	each := func(r *ring, cur int64, fn func(epoch int64, data []byte)) {
		for i := range r.slots {
			s := &r.slots[i]
			if s.sk == nil || s.inserts == 0 || !inWindow(s.epoch, cur, len(r.slots)) || (onlyLocal && !s.local) {
				continue
			}
			// Estimate folds a sparse sketch's insert buffer into its list.
			// Done here, once, the sketch travels without it: every replica
			// that merges it would otherwise fold it again in each copy it
			// estimates (the exchange's Refresh was 1.3 of the 3 replicas'
			// 15.5 CPU s in a make bench-scale profile), and so would this
			// replica's next Refresh.
			s.sk.Estimate()
			if data, err := s.sk.MarshalBinary(); err == nil {
				fn(s.epoch, data)
			}
		}
	}
	exportLabel := func(ls *labelState, withSeries bool) map[int64]*LabelBucket {
		m := map[int64]*LabelBucket{}
		get := func(e int64) *LabelBucket {
			if m[e] == nil {
				m[e] = &LabelBucket{Name: ls.name, Overflow: ls.overflow}
			}
			return m[e]
		}
		each(&ls.values, labelCur, func(e int64, d []byte) { get(e).Values = d })
		if withSeries {
			each(&ls.series, labelCur, func(e int64, d []byte) { get(e).Series = d })
		}
		return m
	}

	ts.mu.Lock()
	each(&ts.series, cur, func(e int64, d []byte) { bucket(LevelSeries, keySeries, e).Series = d })
	each(&ts.daily, dayCur, func(e int64, d []byte) { bucket(LevelChurn, keyChurn, e).Series = d })
	tenantLabels := make([]*labelState, 0, len(ts.labels)+1)
	for _, ls := range ts.labels {
		tenantLabels = append(tenantLabels, ls)
	}
	if ts.overflowLabel != nil {
		tenantLabels = append(tenantLabels, ts.overflowLabel)
	}
	for _, ls := range tenantLabels {
		for e, lb := range exportLabel(ls, true) {
			b := bucket(LevelLabels, keyLabels, e)
			b.Labels = append(b.Labels, *lb)
		}
	}
	metrics := make([]*metricState, 0, len(ts.metrics)+1)
	for _, ms := range ts.metrics {
		metrics = append(metrics, ms)
	}
	if ts.overflowMetric != nil {
		metrics = append(metrics, ts.overflowMetric)
	}
	ts.mu.Unlock()

	for _, ms := range metrics {
		ms.mu.Lock()
		each(&ms.series, cur, func(e int64, d []byte) {
			b := bucket(LevelSeries, keySeries, e)
			b.Metrics = append(b.Metrics, MetricBucket{Name: ms.name, Overflow: ms.overflow, Series: d})
		})
		each(&ms.daily, metricDayCur, func(e int64, d []byte) {
			b := bucket(LevelMetricChurn, keyMetricChurn, e)
			b.Metrics = append(b.Metrics, MetricBucket{Name: ms.name, Overflow: ms.overflow, Series: d})
		})
		labels := map[int64][]LabelBucket{}
		add := func(ls *labelState) {
			for e, lb := range exportLabel(ls, false) {
				labels[e] = append(labels[e], *lb)
			}
		}
		for _, ls := range ms.labels {
			add(ls)
		}
		if ms.overflowLabel != nil {
			add(ms.overflowLabel)
		}
		ms.mu.Unlock()
		for e, lbs := range labels {
			b := bucket(LevelLabels, keyLabels, e)
			b.Metrics = append(b.Metrics, MetricBucket{Name: ms.name, Overflow: ms.overflow, Labels: lbs})
		}
	}

	res := make([]Bucket, 0, len(out))
	for _, b := range out {
		res = append(res, *b)
	}
	return res
}

// MergeBuckets merges buckets into the tracker: sketches are unioned with what the
// tracker holds for the same bucket; buckets already out of their window are skipped.
// New tenants, metrics and labels count against the caps like observed ones. It stops
// at the first bucket that does not fit this tracker's configuration.
func (t *Tracker) MergeBuckets(bs []Bucket) error { return t.mergeBuckets(bs, mergeFrom{}) }

// MergeBucketsFrom is MergeBuckets for buckets that replica source shared
// (Syncer): a bucket of a source only grows, so a newer copy of it replaces
// the one merged before instead of being merged into it, as long as nothing
// else went into that sketch. Merging a sparse sketch re-inserts every value
// of it: in a 3-replica make bench-scale profile, merging again the owners'
// grown buckets at every exchange took 1.2 of the replicas' 15.5 CPU s.
func (t *Tracker) MergeBucketsFrom(source string, bs []Bucket) error {
	return t.mergeBuckets(bs, mergeFrom{source: xxhash.Sum64String(source) | 1})
}

// AdoptBuckets is MergeBuckets for buckets that are this replica's own: a
// snapshot it saved, or what it shared before it restarted. They count as
// observed here (LocalChanges, ExportLocalBuckets), so that the replica shares
// them again.
func (t *Tracker) AdoptBuckets(bs []Bucket) error { return t.mergeBuckets(bs, mergeFrom{local: true}) }

// mergeFrom says whose buckets are merged: this replica's own (local), or
// another replica's (source, a hash of its name; 0 when not known).
type mergeFrom struct {
	local  bool
	source uint64
}

func (t *Tracker) mergeBuckets(bs []Bucket, from mergeFrom) error {
	for i := range bs {
		if err := t.mergeBucket(&bs[i], from); err != nil {
			return fmt.Errorf("bucket %d (tenant %s, %s at %s): %w", i, bs[i].Tenant, bs[i].Level, bs[i].Start.Format(time.RFC3339), err)
		}
	}
	return nil
}

func (t *Tracker) mergeBucket(b *Bucket, from mergeFrom) error {
	w, err := t.levelWidth(b.Level)
	if err != nil {
		return err
	}
	if b.Width != w {
		return fmt.Errorf("bucket width %s, this tracker uses %s", b.Width, w)
	}
	epoch := floorDiv(b.Start.UnixNano(), int64(w))
	cur := t.epoch.Load()
	var curL, n int64
	switch b.Level {
	case LevelSeries:
		curL, n = cur, int64(t.cfg.Buckets)
	case LevelLabels:
		curL, n = floorDiv(cur, t.labelDiv), int64(t.cfg.LabelBuckets)
	case LevelChurn:
		curL, n = floorDiv(cur, t.dayDiv), int64(t.cfg.ChurnBuckets)
	case LevelMetricChurn:
		curL, n = floorDiv(cur, t.metricDayDiv), int64(t.cfg.MetricChurnBuckets)
	}
	if epoch <= curL-n || epoch > curL {
		return nil // out of window: nothing to keep
	}

	var ts *tenantState
	for {
		if b.Overflow {
			t.mu.Lock()
			if t.overflow == nil {
				t.overflow = t.newTenant(tenant.ID{}, true)
			}
			ts = t.overflow
			t.mu.Unlock()
		} else {
			ts = t.tenant(b.Tenant)
		}
		ts.mu.Lock()
		if !ts.evicted {
			break
		}
		ts.mu.Unlock()
	}
	mergeInto := func(r *ring, data []byte) error {
		if len(data) == 0 {
			return nil
		}
		sk := new(sketch)
		if err := sk.UnmarshalBinary(data); err != nil {
			return err
		}
		// Header (UnmarshalBinary checked it): version, precision, bias,
		// sparse flag, then for a sparse sketch the size of its insert
		// buffer, which export folds (ring.window may take it as it is).
		folded := data[3] == 1 && binary.BigEndian.Uint32(data[4:8]) == 0
		return r.merge(epoch, sk, data[1], from, folded)
	}
	ts.dirty = true
	if from.local {
		ts.local = t.localSeq.Add(1)
	}
	var metrics []MetricBucket
	switch b.Level {
	case LevelSeries:
		err = mergeInto(&ts.series, b.Series)
		metrics = b.Metrics
	case LevelChurn:
		err = mergeInto(&ts.daily, b.Series)
	case LevelMetricChurn:
		metrics = b.Metrics
	case LevelLabels:
		for i := 0; i < len(b.Labels) && err == nil; i++ {
			lb := &b.Labels[i]
			var ls *labelState
			if lb.Overflow {
				if ts.overflowLabel == nil {
					ts.overflowLabel = t.newLabel(OverflowName, true, true)
				}
				ls = ts.overflowLabel
			} else {
				ls, _ = t.tenantLabel(ts, &prompb.Label{Name: lb.Name})
			}
			ls.dirty = true
			if err = mergeInto(&ls.values, lb.Values); err == nil {
				err = mergeInto(&ls.series, lb.Series)
			}
		}
		metrics = b.Metrics
	}
	mss := make([]*metricState, len(metrics))
	for i := range metrics {
		if metrics[i].Overflow {
			if ts.overflowMetric == nil {
				ts.overflowMetric = t.newMetric(OverflowName, true)
			}
			mss[i] = ts.overflowMetric
		} else {
			mss[i] = t.metric(ts, metrics[i].Name)
		}
	}
	ts.mu.Unlock()
	if err != nil {
		return err
	}

	for i := range metrics {
		mb, ms := &metrics[i], mss[i]
		ms.mu.Lock()
		if ms.evicted {
			ms.mu.Unlock()
			continue // no data in its window until this very merge: rare, and harmless to skip
		}
		ms.dirty = true
		switch b.Level {
		case LevelSeries:
			err = mergeInto(&ms.series, mb.Series)
		case LevelMetricChurn:
			err = mergeInto(&ms.daily, mb.Series)
		}
		for j := 0; j < len(mb.Labels) && err == nil && b.Level == LevelLabels; j++ {
			lb := &mb.Labels[j]
			var ls *labelState
			if lb.Overflow {
				if ms.overflowLabel == nil {
					ms.overflowLabel = t.newLabel(OverflowName, true, false)
				}
				ls = ms.overflowLabel
			} else {
				ls, _ = t.metricLabel(ms, &prompb.Label{Name: lb.Name})
			}
			ls.dirty = true
			err = mergeInto(&ls.values, lb.Values)
		}
		ms.mu.Unlock()
		if err != nil {
			return fmt.Errorf("metric %q: %w", truncate(mb.Name), err)
		}
	}
	return nil
}

// Merge merges every in-window bucket of other into t. Both must use the same
// windows and precisions.
func (t *Tracker) Merge(other *Tracker) error {
	other.mu.RLock()
	ids := make([]tenant.ID, 0, len(other.tenants))
	for id := range other.tenants {
		ids = append(ids, id)
	}
	other.mu.RUnlock()
	for _, id := range ids {
		if err := t.MergeBuckets(other.ExportBuckets(id)); err != nil {
			return err
		}
	}
	return t.MergeBuckets(other.ExportOverflowBuckets())
}

// Scope says which buckets a snapshot holds.
type Scope int

const (
	// AllBuckets is everything the tracker holds.
	AllBuckets Scope = iota
	// LocalBuckets is what ExportLocalBuckets exports: what this replica
	// observed or adopted itself. With replicas sharing their buckets, the
	// others' are theirs to keep, and come back from the shared state after
	// a restart; a snapshot of them would only make this replica take them
	// as its own (ReadSnapshot adopts) and share them a second time.
	LocalBuckets
)

// snapshotMagic opens a snapshot: the buckets follow in the encoding of
// AppendBucket, each after its length (uvarint). Snapshots written before it
// are one gob value (snapshotV1), still read.
var snapshotMagic = []byte("cardguard sketch snapshot 2\n")

const snapshotV1 = 1

type snapshot struct {
	Version int
	SavedAt time.Time
	Buckets []Bucket
}

// WriteSnapshot writes the in-window buckets of scope, of every tenant, to w.
func (t *Tracker) WriteSnapshot(w io.Writer, scope Scope) error {
	export, exportOverflow := t.ExportBuckets, t.ExportOverflowBuckets
	if scope == LocalBuckets {
		export, exportOverflow = t.ExportLocalBuckets, t.ExportLocalOverflowBuckets
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	if _, err := bw.Write(snapshotMagic); err != nil {
		return fmt.Errorf("write cardinality snapshot: %w", err)
	}
	var buf, size []byte
	write := func(bs []Bucket) error {
		for i := range bs {
			buf = AppendBucket(buf[:0], &bs[i])
			size = binary.AppendUvarint(size[:0], uint64(len(buf)))
			if _, err := bw.Write(size); err != nil {
				return err
			}
			if _, err := bw.Write(buf); err != nil {
				return err
			}
		}
		return nil
	}
	for _, id := range t.TenantIDs() {
		if err := write(export(id)); err != nil {
			return fmt.Errorf("write cardinality snapshot: %w", err)
		}
	}
	if err := write(exportOverflow()); err != nil {
		return fmt.Errorf("write cardinality snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write cardinality snapshot: %w", err)
	}
	return nil
}

// ReadSnapshot merges a snapshot written by WriteSnapshot into t, as its own
// (AdoptBuckets). Buckets that have left their window since are skipped. Call
// Refresh afterwards to see the estimates.
func (t *Tracker) ReadSnapshot(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read cardinality snapshot: %w", err)
	}
	return t.readSnapshot(data)
}

func (t *Tracker) readSnapshot(data []byte) error {
	if !bytes.HasPrefix(data, snapshotMagic) {
		return t.readSnapshotV1(data)
	}
	data = data[len(snapshotMagic):]
	for i := 0; len(data) > 0; i++ {
		n, k := binary.Uvarint(data)
		if k <= 0 || n > uint64(len(data)-k) {
			return fmt.Errorf("read cardinality snapshot: bucket %d: truncated", i)
		}
		b, err := DecodeBucket(data[k : k+int(n)])
		if err != nil {
			return fmt.Errorf("read cardinality snapshot: bucket %d: %w", i, err)
		}
		if err := t.AdoptBuckets([]Bucket{b}); err != nil {
			return fmt.Errorf("read cardinality snapshot: %w", err)
		}
		data = data[k+int(n):]
	}
	return nil
}

func (t *Tracker) readSnapshotV1(data []byte) error {
	var s snapshot
	if err := gob.NewDecoder(bytes.NewReader(data)).Decode(&s); err != nil {
		return fmt.Errorf("read cardinality snapshot: %w", err)
	}
	if s.Version != snapshotV1 {
		return fmt.Errorf("read cardinality snapshot: version %d, want %d", s.Version, snapshotV1)
	}
	if err := t.AdoptBuckets(s.Buckets); err != nil {
		return fmt.Errorf("read cardinality snapshot: %w", err)
	}
	return nil
}

// SaveFile writes a snapshot of scope to path atomically: a temporary file in
// the same directory, synced, then renamed over path.
func (t *Tracker) SaveFile(path string, scope Scope) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save cardinality snapshot: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = t.WriteSnapshot(f, scope); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return fmt.Errorf("save cardinality snapshot: %w", err)
	}
	if err = f.Close(); err != nil {
		return fmt.Errorf("save cardinality snapshot: %w", err)
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("save cardinality snapshot: %w", err)
	}
	return nil
}

// LoadFile merges the snapshot at path into t. A missing file is not an error: the
// first start has none.
func (t *Tracker) LoadFile(path string) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load cardinality snapshot: %w", err)
	}
	return t.readSnapshot(data)
}
