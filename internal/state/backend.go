package state

import (
	"context"
	"errors"
	"time"
)

// Backend is what replicas share state through. Redis (redis.go) is the real one;
// Memory (memory.go) holds the same in one process, for tests and as the
// executable description of the contract. Every method must be safe for
// concurrent use and honour ctx.
type Backend interface {
	Presence
	Membership
	SketchStore
	UsageStore
	SelectorStore
	LimitsBackend
	RulesBackend
}

// Presence tells replicas apart and detects a backend that lost its data.
type Presence interface {
	// Instance returns the token of the backend's data set, creating it when
	// missing: a new token means the data was lost (a restarted Redis without
	// persistence) and replicas must publish what they hold again.
	Instance(ctx context.Context, ttl time.Duration) (string, error)
	// Heartbeat marks replica alive at now and returns the replicas alive within
	// ttl, replica included.
	Heartbeat(ctx context.Context, replica string, now time.Time, ttl time.Duration) ([]string, error)
	// Announce stores the URL other replicas reach replica at, for ttl, forgets
	// the URLs of replicas not in alive, and returns the URLs of those in alive.
	Announce(ctx context.Context, replica, url string, alive []string, ttl time.Duration) (map[string]string, error)
}

// Blob is one named value of a replica with a digest of its content.
type Blob struct {
	Name     string
	Digest   uint64
	Data     []byte
	ExpireAt time.Time
}

// SketchStore holds each replica's cardinality buckets and an index of their
// digests, so that readers fetch only what changed.
type SketchStore interface {
	// PutSketches stores put, removes del and keeps replica's index for indexTTL.
	PutSketches(ctx context.Context, replica string, put []Blob, del []string, indexTTL time.Duration) error
	// SketchIndex returns replica's bucket names and digests.
	SketchIndex(ctx context.Context, replica string) (map[string]uint64, error)
	// GetSketches returns the named buckets of replica; nil for one that expired.
	GetSketches(ctx context.Context, replica string, names []string) ([][]byte, error)
}

// UsageStore holds each replica's query usage snapshot for the retention.
type UsageStore interface {
	PutUsage(ctx context.Context, replica string, data []byte, now time.Time, retention time.Duration) error
	// AllUsage returns every replica's snapshot written within retention.
	AllUsage(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error)
}

// SelectorStore holds each replica's series usage selectors (the matchers its
// reads used) for the retention.
type SelectorStore interface {
	PutSelectors(ctx context.Context, replica string, data []byte, now time.Time, retention time.Duration) error
	// AllSelectors returns every replica's selectors written within retention.
	AllSelectors(ctx context.Context, now time.Time, retention time.Duration) (map[string][]byte, error)
}

// LimitsBackend holds the limits overrides set through the API, by tenant.
type LimitsBackend interface {
	LoadLimits(ctx context.Context) (map[string][]byte, error)
	// SaveLimit stores (nil: deletes) a tenant's override and tells every watcher.
	SaveLimit(ctx context.Context, tenant string, override []byte) error
	// SeedLimits stores the overrides of tenants that have none stored.
	SeedLimits(ctx context.Context, overrides map[string][]byte) error
	// WatchLimits calls changed after every SaveLimit, of any replica, until ctx
	// is done. It may miss changes while the backend is unreachable.
	WatchLimits(ctx context.Context, changed func()) error
}

// errDown is returned by Memory while it pretends to be unreachable.
var errDown = errors.New("state backend unavailable")

// errBadReply is a reply of the backend that does not have the expected shape.
var errBadReply = errors.New("unexpected reply from the state backend")
