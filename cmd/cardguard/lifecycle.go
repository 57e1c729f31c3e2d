package main

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/cardinality"
)

// Snapshot files under -dataDir.
const (
	cardinalityFile = "cardinality.snapshot"
	usageFile       = "query_usage.json"
	membershipFile  = "series_membership.snapshot"
	selectorsFile   = "series_usage_selectors.json"
)

// snapshotInterval is how often state is written to the data directory, so that
// a crash loses at most this much of estimates, usage and series-limit membership.
const snapshotInterval = time.Minute

// loops tracks the background goroutines of an app.
type loops struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func (l *loops) goLoop(ctx context.Context, f func(context.Context)) {
	l.wg.Add(1)
	go func() { defer l.wg.Done(); f(ctx) }()
}

// start restores state from the data directory and starts background loops.
func (a *app) start(ctx context.Context) error {
	if err := os.MkdirAll(a.opts.dataDir, 0o755); err != nil {
		return err
	}
	loadMembership := func(p string) error {
		n, err := a.enforcer.LoadMembership(p)
		if n > 0 {
			a.logger.Info("restored series-limit membership", "series", n)
		}
		return err
	}
	for name, load := range map[string]func(string) error{
		cardinalityFile: a.tracker.LoadFile,
		usageFile:       a.usage.LoadFile,
		membershipFile:  loadMembership,
		selectorsFile:   a.seriesUsage.LoadFile,
	} {
		p := filepath.Join(a.opts.dataDir, name)
		if err := load(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// A damaged snapshot must not keep the proxy from starting: the
			// estimates rebuild themselves from traffic within one window.
			a.logger.Warn("cannot restore snapshot; starting empty", "file", p, "err", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	a.loops.cancel = cancel
	a.loops.goLoop(ctx, func(ctx context.Context) { a.tracker.Run(ctx, 5*time.Second) })
	a.loops.goLoop(ctx, a.usage.Run)
	a.loops.goLoop(ctx, a.folds.Run)
	a.loops.goLoop(ctx, a.syncStreamRules)
	a.loops.goLoop(ctx, a.ui.history.Run)
	a.loops.goLoop(ctx, a.runSeriesUsage)
	a.startAdaptive(ctx)
	a.shared.start(ctx, &a.loops)
	a.sources.start(ctx, &a.loops)
	a.loops.goLoop(ctx, func(ctx context.Context) {
		tick := time.NewTicker(snapshotInterval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				a.saveSnapshots()
			}
		}
	})
	return nil
}

// stop ends background loops and saves state; it is safe to call twice.
func (a *app) stop() {
	if a.loops.cancel == nil {
		return
	}
	a.loops.cancel()
	a.loops.wg.Wait()
	a.loops.cancel = nil
	// Every write was answered by now: what the aggregator holds was
	// acknowledged, so it goes to VictoriaMetrics before the process exits.
	ctx, cancel := context.WithTimeout(context.Background(), foldFlushTimeout)
	if err := a.folds.Stop(ctx); err != nil {
		a.logger.Error("cannot write aggregated series on shutdown", "err", err)
	}
	cancel()
	a.streams.Stop()
	a.saveSnapshots()
	a.shared.close()
}

func (a *app) saveSnapshots() {
	// Sharing replicas keep what they observed: the rest is the others'
	// (see cardinality.LocalBuckets), and writing it every minute would
	// make each replica write every replica's sketches.
	scope := cardinality.AllBuckets
	if a.shared != nil {
		scope = cardinality.LocalBuckets
	}
	if err := a.tracker.SaveFile(filepath.Join(a.opts.dataDir, cardinalityFile), scope); err != nil {
		a.logger.Warn("cannot save cardinality snapshot", "err", err)
	}
	if err := a.usage.SaveFile(filepath.Join(a.opts.dataDir, usageFile)); err != nil {
		a.logger.Warn("cannot save query usage snapshot", "err", err)
	}
	if err := a.enforcer.SaveMembership(filepath.Join(a.opts.dataDir, membershipFile)); err != nil {
		a.logger.Warn("cannot save series-limit membership", "err", err)
	}
	if err := a.seriesUsage.SaveFile(filepath.Join(a.opts.dataDir, selectorsFile)); err != nil {
		a.logger.Warn("cannot save series usage selectors", "err", err)
	}
}
