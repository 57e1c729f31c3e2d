package state

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/tenant"
)

// LimitsStore is the limits.Store of replicas sharing a Backend: the overrides
// set through the API live in the backend, and every replica applies a change
// within moments (Syncer watches and reloads them). A local store, the file in the
// data directory, mirrors them, so that a replica that starts while the backend
// is unreachable still enforces the last overrides it knew. Save fails when the
// backend cannot be written: a change only one replica knew would be undone by the
// next reload. It is safe for concurrent use.
type LimitsStore struct {
	b        LimitsBackend
	fallback limits.Store
	timeout  time.Duration
	log      *slog.Logger
	// saves counts Save calls started and finished: odd while one runs. A reload
	// that saw it change skips applying what it read, which may predate the save.
	saves atomic.Uint64
}

// NewLimitsStore returns the store; fallback may be nil, timeout bounds each call.
func NewLimitsStore(b LimitsBackend, fallback limits.Store, timeout time.Duration, logger *slog.Logger) *LimitsStore {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &LimitsStore{b: b, fallback: fallback, timeout: timeout, log: logger}
}

// Load implements limits.Store.
func (l *LimitsStore) Load() (map[tenant.ID]json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	m, err := l.b.LoadLimits(ctx)
	if err != nil {
		if l.fallback == nil {
			return nil, fmt.Errorf("shared state: %w", err)
		}
		l.log.Warn("cannot load limits overrides from the shared state; using the local copy until it answers", "err", err)
		return l.fallback.Load()
	}
	out := decodeOverrides(m, l.log)
	l.mirror(out)
	return out, nil
}

// Save implements limits.Store.
func (l *LimitsStore) Save(t tenant.ID, override json.RawMessage) error {
	l.saves.Add(1)
	defer l.saves.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	if err := l.b.SaveLimit(ctx, t.String(), override); err != nil {
		return fmt.Errorf("shared state: %w", err)
	}
	if l.fallback != nil {
		if err := l.fallback.Save(t, override); err != nil {
			l.log.Warn("cannot update the local copy of the limits overrides", "err", err)
		}
	}
	return nil
}

// mirror makes the local copy equal to m.
func (l *LimitsStore) mirror(m map[tenant.ID]json.RawMessage) {
	if l.fallback == nil {
		return
	}
	old, err := l.fallback.Load()
	if err != nil {
		old = map[tenant.ID]json.RawMessage{}
	}
	for t, o := range m {
		if !bytes.Equal(old[t], o) {
			err = l.fallback.Save(t, o)
		}
	}
	for t := range old {
		if _, ok := m[t]; !ok {
			err = l.fallback.Save(t, nil)
		}
	}
	if err != nil {
		l.log.Warn("cannot update the local copy of the limits overrides", "err", err)
	}
}
