package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/cardguard/cardguard/internal/ingest"
	"github.com/cardguard/cardguard/internal/limits"
	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/ring"
	"github.com/cardguard/cardguard/internal/state"
)

// replicaIDFile keeps the generated replica ID under -dataDir.
const replicaIDFile = "replica_id"

// shared links an app to the state its replicas share (state.backend redis).
// A nil *shared is the memory backend: every method then does nothing.
type shared struct {
	cfg    state.Config
	redis  *state.Redis
	store  *state.LimitsStore
	syncer *state.Syncer
	// view serves the query usage reports: every replica's usage, rebuilt by the
	// syncer; the app's own Recorder records this replica's reads only.
	view *queryaudit.Recorder
	// ring is the live replicas, for the owner of each metric's series; nil
	// without state.advertise_url.
	ring *ring.Ring
}

// newShared connects to the shared state when the config asks for it. It does not
// wait for Redis: a replica starts, and serves with local state, while Redis is
// unreachable.
func newShared(cfg Config, opts options, a *app) (*shared, error) {
	if !cfg.State.Shared() {
		return nil, nil
	}
	sc := cfg.State.WithDefaults()
	r, err := state.NewRedis(sc.Redis)
	if err != nil {
		return nil, err
	}
	return &shared{
		cfg:   sc,
		redis: r,
		store: state.NewLimitsStore(r, limits.NewFileStore(opts.dataDir), sc.Redis.SyncInterval, a.logger),
	}, nil
}

// limitsStore is where API limits overrides are kept: Redis when shared, the
// data directory otherwise.
func (a *app) limitsStore() limits.Store {
	if a.shared != nil {
		return a.shared.store
	}
	return limits.NewFileStore(a.opts.dataDir)
}

// attach wires the syncer to the app's state; newApp calls it once everything
// it shares exists.
func (s *shared) attach(a *app, usageCfg queryaudit.RecorderConfig) error {
	if s == nil {
		return nil
	}
	id := s.cfg.ReplicaID
	if id == "" {
		var err error
		if id, err = loadReplicaID(a.opts.dataDir); err != nil {
			return err
		}
	}
	s.view = queryaudit.NewRecorder(usageCfg, a.tracker, nil, a.logger)
	var rs state.RingSetter
	if s.cfg.AdvertiseURL != "" {
		s.ring = ring.New(id)
		rs = s.ring
	} else {
		a.logger.Warn("state.advertise_url is not set: with several replicas, the label guard, relabel collisions and aggregation each see only the series a replica receives")
	}
	window, churn := a.cfg.Cardinality.Window, a.cfg.Cardinality.ChurnWindow
	var err error
	s.syncer, err = state.NewSyncer(state.Options{
		Backend:        s.redis,
		Replica:        id,
		SyncInterval:   s.cfg.Redis.SyncInterval,
		SketchInterval: s.cfg.Redis.SketchInterval,
		Timeout:        s.cfg.Redis.Timeout,
		Enforcer:       a.enforcer,
		Registry:       a.registry,
		Store:          s.store,
		Tracker:        a.tracker,
		SketchWindow:   window,
		ChurnWindow:    churn,
		Usage:          a.usage,
		UsageView:      s.view,
		UsageRetention: a.cfg.QueryAudit.Retention,
		Selectors:      a.seriesUsage,
		AdvertiseURL:   s.cfg.AdvertiseURL,
		Ring:           rs,
		Registerer:     a.reg,
		Logger:         a.logger.With("replica", id),
	})
	if err != nil {
		return err
	}
	a.logger.Info("sharing state through Redis", "addr", s.cfg.Redis.Addr, "cluster_addrs", s.cfg.Redis.ClusterAddrs, "replica", id, "key_prefix", s.cfg.Redis.KeyPrefix)
	return nil
}

// loadReplicaID returns the ID kept in dir, creating it on first use: a restarted
// replica keeps its place in the shared state.
func loadReplicaID(dir string) (string, error) {
	p := filepath.Join(dir, replicaIDFile)
	b, err := os.ReadFile(p)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read replica ID: %w", err)
	}
	host, _ := os.Hostname()
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := strings.NewReplacer(":", "-", " ", "-").Replace(host) + "-" + hex.EncodeToString(rnd[:])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(p, []byte(id+"\n"), 0o644); err != nil {
		return "", fmt.Errorf("write replica ID: %w", err)
	}
	return id, nil
}

// start exchanges state once (bounded: Redis may be away), so that the replica
// serves with the others' limits and joins the ring, then keeps syncing in the
// background. The series membership needs no catching up: it is asked per
// request.
func (s *shared) start(ctx context.Context, l *loops) {
	if s == nil {
		return
	}
	s.syncer.SyncOnce(ctx)
	l.goLoop(ctx, s.syncer.Run)
}

// close releases the Redis connections once the loops ended.
func (s *shared) close() {
	if s != nil {
		_ = s.redis.Close()
	}
}

// usageReports is the Recorder the usage reports read: every replica's usage
// when shared, this replica's otherwise.
func (a *app) usageReports() *queryaudit.Recorder {
	if a.shared != nil {
		return a.shared.view
	}
	return a.usage
}

// peers is the ring the ingest handler routes through, or nil.
func (s *shared) peers() ingest.Peers {
	if s == nil || s.ring == nil {
		return nil
	}
	return s.ring
}
