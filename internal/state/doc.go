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
// # Series membership: one shared set per tenant, decided atomically
//
// A series limit refuses only series that are new in the window (invariant 4),
// which needs an exact "seen before?" answer. The answer lives in the backend,
// not in the replicas: per tenant and window generation (Unix time / W), the set
// of series hashes admitted or seen again in that generation, with per-metric
// counts. A tenant's active series are those of the previous generation plus
// those new in the current one.
//
//   - Deciding. A replica decides alone only about series it knows: those in its
//     own set for the current generation pass at once; those of the previous
//     generation pass too, and are queued to be recorded in the current one
//     (Pending; published in batches by the flush loop, no request waits).
//     Every other series of a request is collected, and after the request's
//     loop they are all decided in one exchange (AdmitShared → AdmitSeries): a
//     Lua script that checks membership, counts and limits and adds the
//     admitted series, as one atomic step on the tenant's Redis master. Admitted
//     ones join the replica's own set.
//   - Counting. The counts are the backend's, so concurrent requests on any
//     number of replicas never push a tenant past its limit while Redis answers
//     within the timeout: the overshoot is 0. A slower answer counts as none.
//   - Partitioning. With state.advertise_url, writes are routed to the replica
//     that owns their metric (package ring, ingest's route.go), so each
//     replica's own set, like its series cache, holds its share of the series:
//     memory per replica falls as replicas are added. Without it, a replica's
//     own set holds the series it received.
//
// Why an admitted series is never refused: it is in the shared set of its
// generation or the previous one, whichever replica asks, including one that
// just took over its metric from a replica that left. A refresh not yet
// published is no exception: the series is then still in the previous
// generation's set. An owner that cannot be connected to (killed, not yet
// expired from the ring) has its part of a request processed by the receiving
// replica, for tenants whose series do not need their owner (no label guard,
// relabel rules or aggregation, which answer 503 so that the sender retries).
//
// With the backend unreachable (the call fails or times out; after a failure
// further calls fail at once for a second), a replica decides alone and fails
// open: a series it does not know is admitted as long as it holds fewer than
// FailOpenFactor x limit series, because it may have been admitted elsewhere.
// FailOpenFactor is 1 with routing, so all replicas together stay under
// Replicas x limit; without routing it is the number of replicas, per replica.
// Those admissions are queued and published when the backend answers again.
// A series is therefore never refused because the backend could not be asked,
// and memory stays bounded (invariant 8).
//
// Recovery. Refreshes and admissions that could not be published (backend down)
// are dropped from the queue and the replica publishes its whole own set again
// once the backend answers; the same happens when the backend lost its data (a
// new instance token, as after a restart of Redis without persistence).
//
// # Sketches
//
// Every SketchInterval each replica exports the cardinality buckets it
// observed itself (Tracker.ExportLocalBuckets: sketches that only merged other
// replicas' buckets stay home) and stores those whose digest changed since it
// last stored them. It then reads the digests of every other live replica and
// fetches and merges (Tracker.MergeBuckets) the buckets that changed. Merging
// goes into the replica's own tracker: HyperLogLog union is idempotent and
// commutative, so a bucket merged twice counts once; the estimate is that of
// the union of every replica's series, not their sum. With writes routed to
// the owner of their metric, a metric's sketches travel once, from its owner.
// Bucket encodings are sorted so that unchanged content does not travel again.
//
// What a replica shared stays in the backend until its buckets leave their
// window. A replica restarted with its ID (kept in the data directory) takes
// its own back as its own (Tracker.AdoptBuckets) before it shares anything;
// when a replica is gone from the live ones, the first live one by ID adopts
// its buckets, so that replicas started later still see what it observed.
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
// no command names keys of two slots. The membership keys of one tenant share
// the hash tag {<tenant>}, so the admission script, which reads and writes five
// of them, runs on one master; different tenants spread over the masters.
// Several other keys are read and written one command each, in pipelines (the
// cluster client sends each node its part): GET and DEL per sketch and usage
// key. MULTI is used only on one key (instance, replicas, peers, limits,
// aggregate_rules); the usage snapshot and its index are written without it.
//
// Every key starts with state.redis.key_prefix (default "cardguard:"). W is the
// series window (cardinality.window, 1h), C the churn window (24h), R the query
// usage retention (30 days), I the sync interval.
//
//	instance                 string  token of the data set (lost data → new token); expires after max(C, R)
//	replicas                 zset    replica → last heartbeat (ms); members older than 3I+1s removed; expires 2x that
//	peers                    hash    replica → its advertise URL; expires with replicas
//	members:{<t>}:<gen>      set     hashes (8 bytes) of tenant <t>'s series admitted or seen in generation
//	                                 <gen> (Unix time / W); expires at the end of generation <gen>+1, plus a minute
//	members:{<t>}:<gen>:metrics  hash  metric → series of the set above
//	members:{<t>}:<gen>:new  hash    metric → series new in <gen> (not in <gen>-1), "" → all of them
//	sketches:<replica>       hash    bucket name → digest (hex); expires C+1h after the last write
//	sketch:<replica>:<name>  string  one cardinality.Bucket (cardinality.AppendBucket; gob from versions
//	                                 before it, still read), <name> = <tenant>|<level>|<start ns>;
//	                                 expires when the bucket leaves its window
//	usage                    zset    replica → last usage write (ms); expires after R
//	usage:<replica>          string  the replica's query usage snapshot (JSON); expires after R
//	selectors, selectors:<replica>  zset, string  the same for series usage selectors
//	limits                   hash    tenant → API override (JSON); no expiry: it is configuration,
//	                                 one field per tenant with an override
//	limits:changed           channel announcements of limits changes (pub/sub, no storage)
//	aggregate_rules          hash    "global" or tenant → stream aggregation rules set through the API
//	                                 (as sent), and ".known" once any were set; no expiry: configuration
//	aggregate_rules:changed  channel announcements of aggregation rules changes
//
// Memory therefore follows the active series, once each whatever the number of
// replicas: a set member per series and generation it was seen in (measured
// in BENCHMARKS.md, "Scale-out"), the sketches of each replica (the data
// directory snapshot size, per replica), and the usage snapshots. The price of
// the per-tenant hash tag is that one tenant's membership lives on one master.
package state
