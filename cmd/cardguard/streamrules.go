package main

import (
	"context"
	"sync"
	"time"

	"github.com/cardguard/cardguard/internal/state"
	"github.com/cardguard/cardguard/internal/streamrules"
)

// newStreamRules builds the stream aggregation rules of the aggregate section
// and of the API. With shared state the rules set through the API live in
// Redis, with a copy in the data directory; otherwise in the data directory.
func (a *app) newStreamRules(sink *foldSink) (*streamrules.Rules, error) {
	var store streamrules.Store = streamrules.NewFileStore(a.opts.dataDir)
	if a.shared != nil {
		store = state.NewRulesStore(a.shared.redis, streamrules.NewFileStore(a.opts.dataDir), a.shared.cfg.Redis.SyncInterval, a.logger)
	}
	return streamrules.New(a.cfg.Aggregate, streamrules.Options{
		Sink:         sink,
		Store:        store,
		FlushTimeout: foldFlushTimeout,
		Registerer:   a.reg,
		Logger:       a.logger,
	})
}

// syncStreamRules applies the rules other replicas set through the API: at
// once when Redis announces a change, and every sync interval in case an
// announcement was missed. Without shared state there is nothing to sync.
func (a *app) syncStreamRules(ctx context.Context) {
	if a.shared == nil {
		return
	}
	store := state.NewRulesStore(a.shared.redis, nil, a.shared.cfg.Redis.SyncInterval, a.logger)
	reload := func() {
		if err := a.streams.Reload(); err != nil {
			a.logger.Warn("cannot reload aggregation rules from the shared state", "err", err)
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for ctx.Err() == nil {
			if err := store.Watch(ctx, reload); err != nil {
				a.logger.Debug("aggregation rules subscription ended", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	})
	tick := time.NewTicker(a.shared.cfg.Redis.SyncInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			reload()
		}
	}
}
