// Package cardinality estimates, per tenant, how many series, metrics and label values
// the write path sees, with HyperLogLog sketches (github.com/axiomhq/hyperloglog) over
// sliding windows.
//
// # What is counted
//
// For each tenant: distinct series (the caller's 64-bit series hash), in the window
// and in the churn window; per metric name: distinct series, in the window and in the
// churn window; per metric and label
// name: distinct values; per label name across the tenant's metrics: distinct values
// and distinct series carrying it. Label values are hashed here with xxhash. A label
// with an empty value is absent.
//
// # Windows and rotation
//
// Config.Window (1h) is made of Config.Buckets (6) series buckets of 10 min; label
// sketches use Config.LabelBuckets (2) buckets of 30 min over the same window, and the
// churn window (24h) ChurnBuckets (24) buckets of 1h for the tenant and
// MetricChurnBuckets (4) buckets of 6h for each metric. A window covers the current,
// partial bucket and the previous ones, so between Window minus one bucket and Window
// of history: "active series" are the distinct series seen in it. Churn is churn-window
// series divided by window series, per tenant and per metric.
//
// Observe never reads the clock: it uses the current bucket set by Rotate, which Run
// and Refresh call. The lead process runs Run(ctx, every few seconds). Sketch slots
// are recycled lazily by the first insert of a newer bucket, so rotation never walks
// every sketch; it only clears the dedup set.
//
// # Hot path
//
// Every scrape repeats the same series, and sparse HLL inserts of a repeated key are
// slow, so Observe first looks the (tenant, series) key up in a set of the keys already
// inserted in the current series bucket, sharded 256 ways with a mutex per shard. A
// repeated series costs that lookup and nothing else (no allocation). Only the first
// sight of a series in a bucket inserts into its sketches: the tenant's two series
// sketches, its label sketches, the metric's two series sketches and its label
// sketches.
// Estimate is never called per request: Refresh computes every estimate that changed
// and publishes an immutable view that the read methods, the HTTP handlers and the
// metrics collector use without locks.
//
// # Bounded memory
//
// Tenants, metrics per tenant, label names per metric and label names per tenant are
// capped (Config.Max*); past a cap, new names share one overflow entry per level,
// named OverflowName and flagged in the API, and first sights routed there are counted
// in cardguard_cardinality_overflow_total{level}. Entries with no data left in their
// window are dropped by Refresh and free their place under the cap.
//
// Series sketches use p=14 (0.81% standard error, 16 KiB dense); label value sketches
// p=16 (0.41%, 64 KiB dense). Every sketch starts sparse: axiomhq's sparse form keeps
// 25-bit register indexes as sorted varint deltas, about 3 bytes per distinct value
// plus a small insert buffer, and counts them almost exactly (linear counting over
// 2^25 registers). It turns dense only when the sparse list outgrows 2^p bytes: about
// 5k values at p=14 and 20k at p=16, which is why label counts under 10k are within
// 1%. A dense sketch slot goes back to sparse when its bucket is recycled.
//
// Memory for the sizing target, one tenant with 1M active series across 1,000
// metrics of 1,000 series and 10 labels each (__name__ included), every bucket full:
//
//	dedup set        1M keys x ~15 B (8 B key + 1 B control, swiss table 44-88% full)  ~15 MiB
//	metric series    1,000 metrics x 6 buckets x ~4.8 KiB (sparse, 1k values)          ~28 MiB
//	metric churn     1,000 metrics x 4 buckets x ~7 KiB (sparse, 1k values, repeated)   ~27 MiB
//	metric labels    9,000 labels x 2 buckets x 0.2-8 KiB (sparse, by value count)      ~24 MiB
//	tenant sketches  (6 + 24) x 16 KiB dense + 10 labels x 2 x (values + series)        ~1 MiB
//	bookkeeping      states, names, map entries: ~320 B x ~10k                           ~3 MiB
//
// (Per-sketch sizes are HeapInuse per sparse sketch, measured for 1 to 3,000 values.)
// (A churn sketch takes every series again each series bucket, which leaves its sparse
// insert buffer larger: ~7 KiB for 1k values against ~4.2 KiB inserted once.) That
// sums to about 100 MiB with all four metric churn buckets full, a day into the
// load. BenchmarkMemory1MSeries runs one hour of it, so one metric churn bucket: it
// measures 141 MiB of HeapInuse (122 MiB before metric churn existed, so ~18 MiB for
// one bucket; a full day adds up to three more buckets, at most ~55 MiB more, ~200 MiB).
// The difference to the itemised sum is not itemised (growth slack of regrown slices
// and maps, allocator fragmentation, most likely). Both are far inside the 512 MiB
// budget of the whole process. A dense p=14 sketch per (metric, label, bucket)
// would instead cost 9,000 x 6 x 16 KiB = 844 MiB. The worst case is every label of
// every tracked metric exploding past 20k values: MaxMetricsPerTenant x
// MaxLabelsPerMetric x LabelBuckets x 64 KiB per tenant; keep the caps at what the
// deployment can hold. MemoryBytes reports an estimate of the current heap (within
// about 30% of HeapInuse in the benchmark, on the low side).
//
// # Sharing state
//
// A Bucket is one bucket of one tenant at one level, with its sketches in axiomhq's
// binary encoding: ExportBuckets and MergeBuckets move them between trackers (Merge
// does both), and WriteSnapshot/ReadSnapshot and SaveFile/LoadFile store them (every
// bucket, or a replica's own: Scope), in the encoding of AppendBucket. HLL
// merges are idempotent and commutative, so replaying a bucket is harmless.
package cardinality
