// Package state shares cardguard's state between replicas: series membership
// for the series limits, cardinality sketches, query usage and the limits
// overrides set through the API. cardguard is stateless, so it runs as many
// replicas as the write load needs; with state.backend redis their limits and
// estimates are global. The default backend, memory, shares nothing: one replica
// keeps its state in memory with file snapshots in its data directory.
//
// go-redis is imported only in redis.go; memory.go implements the same Backend in
// one process, for tests and as the executable description of the contract.
//
// # Series membership: existing series keep flowing on every replica
//
// A series limit refuses only series that are new in the window (invariant 4),
// which needs an exact "seen before?" answer. Each replica keeps the exact set
// (limits.Enforcer) of every replica's series, not only its own:
//
//   - Publishing. Every admission and every refresh (a series of the previous
//     generation seen again) is queued in the Enforcer and appended, in batches,
//     to the log of its generation (a Redis stream per window generation). The
//     flush loop sends as soon as something is queued, one batch in flight; a
//     write request waits for its own admissions to be flushed before it answers
//     (WaitFlushed, bounded by state.redis.timeout).
//   - Reading. A replica reads the logs of the current and previous generations
//     from its cursor and adds the other replicas' series to its set
//     (Enforcer.AddRemoteSeries): every second in the background, and before it
//     decides about a series it does not know, once per request (Sync, coalesced:
//     concurrent requests share one read, bounded by the timeout).
//   - Counting. The count a limit is checked against is the size of the union
//     the replica holds: exact, no SCARD, no probabilistic count.
//
// Why an admitted series is never refused elsewhere: a client sends a series'
// next sample only after the request that carried the previous one was answered
// (a Prometheus remote-write shard sends its batches one after the other, and a
// series always goes to the same shard). Replica A answers after its admissions
// are in the log; replica B reads the log after its request began, before it
// decides about any series it does not know. So B knows every series A admitted
// in earlier requests. With the backend unreachable (the read fails or times
// out; after a failure further reads fail at once for a second), B cannot know:
// it then admits a series that looks new over the limit as long as the tenant
// is under Replicas x limit, the most all replicas together can have admitted.
// A series is therefore never refused because the backend could not be asked,
// and memory stays bounded (invariant 8).
//
// Overshoot bound. Requests answered one after the other are decided exactly:
// the union is exact and B reads A's admissions before deciding. Requests in
// flight at the same time on different replicas do not see each other's
// admissions, so the tenant may exceed its limit by at most the new series of
// the requests processed concurrently on the other replicas (typically a few
// remote-write batches). While the backend is unreachable, up to Replicas x
// limit. Both are corrected at the next generation, as series expire.
//
// Recovery. Admissions that could not be published (backend down) are
// dropped from the queue and the replica publishes its whole membership again
// once the backend answers; the same happens when the backend lost its data
// (a new instance token, as after a restart of Redis without persistence).
// Cursors restart from the beginning then.
//
// # Sketches
//
// Every SyncInterval each replica exports its cardinality buckets
// (Tracker.ExportBuckets) and stores those whose digest changed since it last
// stored them. It then reads the digests of every other live replica and fetches
// and merges (Tracker.MergeBuckets) the buckets that changed. Merging goes into
// the replica's own tracker: HyperLogLog union is idempotent and commutative, so
// a bucket merged twice, or a replica's own data coming back inside another
// replica's union, counts once; the estimate is that of the union of every
// replica's series, not their sum. Bucket encodings are sorted so that unchanged
// content does not travel again.
//
// # Query usage
//
// Usage counts are sums, so they are never merged into the recording Recorder
// (every sync would count them again). Each replica stores its own snapshot
// (Recorder.Export) under its replica ID, and rebuilds a separate view from its
// own snapshot plus everyone else's (Recorder.ReplaceWith), which serves the
// reports. The replica ID is kept in the data directory so that a restarted
// replica replaces its snapshot instead of adding a second one.
//
// # Limits overrides
//
// LimitsStore keeps the API overrides in a Redis hash and announces each change
// on a channel; every replica reloads on the announcement and every
// SyncInterval (the safety net for missed announcements), and applies what
// changed (Registry.Apply): a change reaches every replica within moments, at
// worst SyncInterval. A change is refused (500) when Redis cannot be written,
// since the other replicas would never see it. The data directory keeps a copy,
// used when a replica starts while Redis is unreachable. After Redis lost its
// data, replicas write back the overrides they hold.
//
// # Redis unreachable
//
// Nothing waits on Redis for more than state.redis.timeout (default 100ms) on
// the request path, and after a failure nothing waits at all for a second.
// Ingestion, queries, estimates and usage go on with local state; every failed
// exchange counts in cardguard_state_sync_errors_total{op};
// cardguard_state_backend_up says whether the last one worked. /readyz does not
// look at Redis.
//
// # Key layout
//
// The same layout serves one Redis and a Redis Cluster (state.redis.cluster_addrs):
// no command names keys of two slots. Several keys are read and written one
// command each, in pipelines (the cluster client sends each node its part):
// XREAD per generation stream, GET and DEL per sketch and usage key. MULTI is
// used only on one key (instance, replicas, peers, limits, aggregate_rules); the
// usage snapshot and its index are written without it. No hash tags, so key
// names did not change; the price is that one generation's admissions stream is
// one key, on one master.
//
// Every key starts with state.redis.key_prefix (default "cardguard:"). W is the
// series window (cardinality.window, 1h), C the churn window (24h), R the query
// usage retention (30 days), I the sync interval.
//
//	instance                 string  token of the data set (lost data → new token); expires after max(C, R)
//	replicas                 zset    replica → last heartbeat (ms); members older than 3I+1s removed; expires 2x that
//	series:<gen>             stream  admissions of generation <gen> (Unix time / W): fields r (replica), d (batch);
//	                                 expires at the end of generation <gen>+1, plus a minute
//	sketches:<replica>       hash    bucket name → digest (hex); expires C+1h after the last write
//	sketch:<replica>:<name>  string  one gob-encoded cardinality.Bucket, <name> = <tenant>|<level>|<start ns>;
//	                                 expires when the bucket leaves its window
//	usage                    zset    replica → last usage write (ms); expires after R
//	usage:<replica>          string  the replica's query usage snapshot (JSON); expires after R
//	limits                   hash    tenant → API override (JSON); no expiry: it is configuration,
//	                                 one field per tenant with an override
//	limits:changed           channel announcements of limits changes (pub/sub, no storage)
//	aggregate_rules          hash    "global" or tenant → stream aggregation rules set through the API
//	                                 (as sent), and ".known" once any were set; no expiry: configuration
//	aggregate_rules:changed  channel announcements of aggregation rules changes
//
// Memory therefore follows the traffic of the last windows: about 40 bytes per
// series per replica that published it in each of two generations, the sketches
// of each replica (the data directory snapshot size, per replica), and the
// usage snapshots.
package state
