// Package guard is the automatic high-cardinality label guard: per tenant, per
// metric and label, it admits at most MaxValuesPerLabel distinct values in a
// window and rewrites or drops what comes beyond. Its policy is a tenant's
// *limits.LabelGuard, which the guard only reads; a Checker keeps the pointer
// for as long as it is used, so the policy must not change meanwhile.
//
// # Semantics
//
// For every (metric, label) pair of a tenant the guard keeps the exact set of
// value hashes (xxhash) admitted in the current window. A value already in the
// set passes. A new value is admitted, first come, while the set holds fewer
// than MaxValuesPerLabel values. Any other value makes the pair "guarded" and the
// policy's Action (overflow_value when empty) applies to that series:
//
//   - overflow_value: the label's value becomes OverflowValue
//     (limits.DefaultGuardOverflowValue when empty);
//   - drop_label: the label is removed from the series;
//   - drop_series: the series is dropped, and none of its other values are
//     admitted (a dropped series does not take room from other labels).
//
// So a guarded label contributes at most MaxValuesPerLabel+1 distinct values
// (the admitted ones and the overflow marker) downstream per window.
// `__name__`, ExemptLabels and ExemptMetrics are never guarded.
//
// Series that existed before the guard tripped keep flowing unchanged: their
// values were admitted when first seen, and an admitted value always passes for
// the rest of the window. Windows are aligned to multiples of Options.Window on
// the injected clock; at each boundary the admitted sets start empty and values
// are admitted again first come, whether old or new. Under a sustained
// explosion an old series whose value arrives after the set filled up again is
// therefore rewritten in the new window; once distinct values stay under the
// threshold, everything is admitted again as soon as the window turns.
//
// Two generations of counters are kept per pair: the current window and the one
// before. A pair is reported as guarded from its first rejection until a whole
// window ends without rejection; only then does the guard release it (Since is
// cleared). Pairs not seen in the current or previous window are forgotten.
//
// # Memory
//
// Per tenant at most Options.MaxPairsPerTenant pairs are tracked, each with at
// most MaxValuesPerLabel hashes; at most Options.MaxTenants tenants are tracked.
// Pairs and tenants beyond the caps pass unguarded and are counted in
// cardguard_guard_untracked_pairs_total and cardguard_guard_untracked_tenants_total.
// Worst case memory is about MaxTenants × MaxPairsPerTenant × MaxValuesPerLabel ×
// 16 bytes, so keep the caps realistic.
package guard
