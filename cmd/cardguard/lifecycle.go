package main

import "context"

// start restores state and starts background loops.
func (a *app) start(ctx context.Context) error { return nil }

// stop ends background loops and saves state.
func (a *app) stop() {}
