package state

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"
)

// RulesBackend holds the stream aggregation rules set through the API, by key
// (a tenant, or "global"), as sent.
type RulesBackend interface {
	// LoadRules returns the stored lists; known is false when the backend holds
	// no trace of rules ever set (never set, or the backend lost its data).
	LoadRules(ctx context.Context) (rules map[string][]byte, known bool, err error)
	// SaveRules stores (nil: deletes) the list of key and tells every watcher.
	SaveRules(ctx context.Context, key string, rules []byte) error
	// SeedRules stores the lists of keys that have none stored.
	SeedRules(ctx context.Context, rules map[string][]byte) error
	// WatchRules calls changed after every SaveRules, of any replica, until ctx
	// is done. It may miss changes while the backend is unreachable.
	WatchRules(ctx context.Context, changed func()) error
}

// LocalRules is the copy of the rules a replica keeps in its data directory
// (streamrules.FileStore).
type LocalRules interface {
	Load() (map[string][]byte, error)
	Save(key string, rules []byte) error
}

// RulesStore is the streamrules.Store of replicas sharing a backend: the rules
// live in the backend, a local copy mirrors them so that a replica starting
// while the backend is away runs the last rules it knew, and a backend that
// lost its data gets the local copy back. Save fails when the backend cannot be
// written: a change only one replica knew would be undone by the next reload.
// It is safe for concurrent use.
type RulesStore struct {
	b       RulesBackend
	local   LocalRules
	timeout time.Duration
	log     *slog.Logger
}

// NewRulesStore returns the store; local may be nil, timeout bounds each call.
func NewRulesStore(b RulesBackend, local LocalRules, timeout time.Duration, logger *slog.Logger) *RulesStore {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &RulesStore{b: b, local: local, timeout: timeout, log: logger}
}

// Load implements streamrules.Store.
func (s *RulesStore) Load() (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	m, known, err := s.b.LoadRules(ctx)
	if err != nil {
		if s.local == nil {
			return nil, fmt.Errorf("shared state: %w", err)
		}
		s.log.Warn("cannot load aggregation rules from the shared state; using the local copy until it answers", "err", err)
		return s.local.Load()
	}
	if !known && s.local != nil {
		own, err := s.local.Load()
		if err != nil || len(own) == 0 {
			return m, err
		}
		s.log.Warn("the shared state holds no aggregation rules; publishing the local copy", "lists", len(own))
		if err := s.b.SeedRules(ctx, own); err != nil {
			return nil, fmt.Errorf("shared state: %w", err)
		}
		if m, _, err = s.b.LoadRules(ctx); err != nil {
			return nil, fmt.Errorf("shared state: %w", err)
		}
	}
	s.mirror(m)
	return m, nil
}

// Save implements streamrules.Store.
func (s *RulesStore) Save(key string, rules []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	if err := s.b.SaveRules(ctx, key, rules); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	if s.local != nil {
		if err := s.local.Save(key, rules); err != nil {
			s.log.Warn("cannot update the local copy of the aggregation rules", "err", err)
		}
	}
	return nil
}

// Watch calls changed after every change of the rules until ctx is done.
func (s *RulesStore) Watch(ctx context.Context, changed func()) error {
	return s.b.WatchRules(ctx, changed)
}

// mirror makes the local copy equal to m.
func (s *RulesStore) mirror(m map[string][]byte) {
	if s.local == nil {
		return
	}
	old, err := s.local.Load()
	if err != nil {
		old = map[string][]byte{}
	}
	for k, v := range m {
		if !bytes.Equal(old[k], v) {
			err = s.local.Save(k, v)
		}
	}
	for k := range old {
		if _, ok := m[k]; !ok {
			err = s.local.Save(k, nil)
		}
	}
	if err != nil {
		s.log.Warn("cannot update the local copy of the aggregation rules", "err", err)
	}
}
