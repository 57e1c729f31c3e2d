package main

import (
	"context"
	"os"
	"os/signal"
	"reflect"
	"syscall"
)

// reload applies a new policy file to the running app: limits (defaults and file
// overrides), relabel rules and aggregation rules take effect at once. Upstream
// and auth settings need a restart; a change to them is reported, not applied.
func (a *app) reload(cfg Config) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	if err := a.registry.Reload(cfg.Limits.Defaults, cfg.Limits.Overrides); err != nil {
		return err
	}
	if err := a.streams.SetFile(cfg.Aggregate); err != nil {
		return err
	}
	a.setRelabel(cfg.Relabel)
	if !reflect.DeepEqual(cfg.Upstream, a.cfg.Upstream) || !reflect.DeepEqual(cfg.Auth, a.cfg.Auth) ||
		cfg.DefaultTenant != a.cfg.DefaultTenant || !reflect.DeepEqual(cfg.Cardinality, a.cfg.Cardinality) ||
		!reflect.DeepEqual(cfg.State, a.cfg.State) || !reflect.DeepEqual(cfg.QueryAudit, a.cfg.QueryAudit) ||
		!reflect.DeepEqual(cfg.Usage, a.cfg.Usage) {
		a.logger.Warn("config reload: changes to upstream, auth, default_tenant, cardinality, query_audit, usage and state take effect only after a restart")
	}
	return nil
}

// reloadOnHUP reloads -config whenever SIGHUP arrives, until ctx ends. A file that
// does not load or validate changes nothing.
func (a *app) reloadOnHUP(ctx context.Context, o options) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		cfg, err := loadConfig(o.configPath)
		if err == nil {
			err = applyFlags(&cfg, o)
		}
		if err == nil {
			err = a.reload(cfg)
		}
		if err != nil {
			a.logger.Error("config reload failed; keeping the running config", "file", o.configPath, "err", err)
			continue
		}
		a.logger.Info("config reloaded", "file", o.configPath)
	}
}
