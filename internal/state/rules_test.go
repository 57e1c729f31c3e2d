package state

import (
	"context"
	"maps"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// localRules is a LocalRules in memory.
type localRules struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (l *localRules) Load() (map[string][]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return maps.Clone(l.m), nil
}

func (l *localRules) Save(key string, rules []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]byte{}
	}
	if rules == nil {
		delete(l.m, key)
	} else {
		l.m[key] = rules
	}
	return nil
}

func TestRulesReachOtherReplicas(t *testing.T) {
	t.Parallel()
	backends(t, testRulesReachOtherReplicas)
}

// testRulesReachOtherReplicas: what one replica stores, the other loads and
// hears of; a backend that lost its data gets a replica's copy back; with the
// backend away, changes fail and loads fall back to the local copy.
func testRulesReachOtherReplicas(t *testing.T, b testBackend) {
	la, lb := &localRules{}, &localRules{}
	a, bb := NewRulesStore(b, la, time.Second, nil), NewRulesStore(b, lb, time.Second, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var heard atomic.Int64
	go func() { _ = bb.Watch(ctx, func() { heard.Add(1) }) }()
	time.Sleep(50 * time.Millisecond) // let the watcher subscribe

	rule := []byte("- interval: 1m\n  outputs: [total]\n")
	if err := a.Save("1", rule); err != nil {
		t.Fatal(err)
	}
	if err := a.Save("global", rule); err != nil {
		t.Fatal(err)
	}
	if err := a.Save("global", nil); err != nil {
		t.Fatal(err)
	}
	m, err := bb.Load()
	if err != nil || len(m) != 1 || string(m["1"]) != string(rule) {
		t.Fatalf("b loads %q, %v", m, err)
	}
	if own, _ := lb.Load(); len(own) != 1 {
		t.Errorf("b's local copy: %q", own)
	}
	deadline := time.Now().Add(5 * time.Second)
	for heard.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if heard.Load() < 3 {
		t.Errorf("b heard of %d changes, want 3", heard.Load())
	}
	// The last list deleted: the backend still knows rules were set, so no
	// replica's stale copy comes back.
	if err := a.Save("1", nil); err != nil {
		t.Fatal(err)
	}
	_ = lb.Save("1", rule) // as if b had missed the delete
	if m, err := bb.Load(); err != nil || len(m) != 0 {
		t.Fatalf("after the delete b loads %q, %v", m, err)
	}

	// Lost: b's copy is published again.
	_ = lb.Save("2", rule)
	b.Reset()
	if m, err := bb.Load(); err != nil || string(m["2"]) != string(rule) {
		t.Fatalf("after the backend lost its data b loads %q, %v", m, err)
	}
	if m, err := a.Load(); err != nil || string(m["2"]) != string(rule) {
		t.Fatalf("after b published its copy a loads %q, %v", m, err)
	}

	b.SetDown(true)
	if err := a.Save("3", rule); err == nil {
		t.Error("Save succeeded while the backend was down: other replicas would never see it")
	}
	if m, err := a.Load(); err != nil || string(m["2"]) != string(rule) {
		t.Errorf("with the backend down a loads %q, %v; want its local copy", m, err)
	}
}
