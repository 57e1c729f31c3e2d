package adaptive

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/tenant"
)

// Replicas behind a load balancer each proxy some of the reads: a read that
// counts or averages a metric's series, seen by one replica, must keep every
// replica from aggregating that metric. sharedReads publishes each such
// (tenant, metric) through a Store (Redis), one field per pair so that
// replicas never overwrite each other's, at most once per publishEvery, and
// reads them all back for the evidence.

const (
	publishEvery    = time.Hour
	sharedCacheTime = 10 * time.Second
	pendingReads    = 1024
)

type sharedReads struct {
	store Store
	log   *slog.Logger

	pending chan sharedRead

	mu        sync.Mutex
	published map[readerKey]time.Time
	cache     map[string][]byte
	cachedAt  time.Time
}

type sharedRead struct {
	key readerKey
	ref Ref
}

// Share publishes the reads that do not sum first through store, and adds
// those other replicas published to the evidence. Call it before serving and
// run Run.
func (rs *Readers) Share(store Store, logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	rs.shared = &sharedReads{store: store, log: logger, pending: make(chan sharedRead, pendingReads),
		published: make(map[readerKey]time.Time)}
}

// publish queues a read for the other replicas; it never blocks. rs.mu held.
func (rs *Readers) publish(k readerKey, r Ref) {
	s := rs.shared
	if s == nil {
		return
	}
	s.mu.Lock()
	last, ok := s.published[k]
	due := !ok || r.Last.Sub(last) >= publishEvery
	if due {
		if len(s.published) >= maxReaderKeys {
			clear(s.published)
		}
		s.published[k] = r.Last
	}
	s.mu.Unlock()
	if !due {
		return
	}
	select {
	case s.pending <- sharedRead{k, r}:
	default: // the store is slow or away: the next read of the pair tries again
		s.mu.Lock()
		delete(s.published, k)
		s.mu.Unlock()
	}
}

// Run writes the queued reads to the store until ctx is done. Without Share
// it returns at once.
func (rs *Readers) Run(ctx context.Context) {
	s := rs.shared
	if s == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case sr := <-s.pending:
			b, _ := json.Marshal(sr.ref)
			if err := s.store.Save(sr.key.t.String()+"|"+sr.key.metric, b); err != nil {
				s.log.Warn("cannot share a read that does not sum first", "tenant", sr.key.t, "metric", sr.key.metric, "err", err)
				s.mu.Lock()
				delete(s.published, sr.key)
				s.mu.Unlock()
			}
		}
	}
}

// sharedNotSummed returns what every replica published for t, read no longer
// than sharedCacheTime ago, of reads since since: metric -> reads.
func (rs *Readers) sharedNotSummed(t tenant.ID, since time.Time) map[string][]Ref {
	s := rs.shared
	if s == nil {
		return nil
	}
	s.mu.Lock()
	if s.cache == nil || time.Since(s.cachedAt) > sharedCacheTime {
		m, err := s.store.Load()
		if err != nil {
			s.log.Warn("cannot read the reads other replicas shared; using this replica's", "err", err)
		} else {
			s.cache, s.cachedAt = m, time.Now()
		}
	}
	cache := s.cache
	s.mu.Unlock()
	prefix := t.String() + "|"
	out := map[string][]Ref{}
	for k, v := range cache {
		metric, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		var r Ref
		if json.Unmarshal(v, &r) != nil || r.Last.Before(since) {
			continue
		}
		out[metric] = append(out[metric], r)
	}
	return out
}
