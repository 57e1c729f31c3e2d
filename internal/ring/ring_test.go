package ring

import (
	"fmt"
	"math"
	"testing"

	"github.com/cardguard/cardguard/internal/tenant"
)

func members(ids ...string) []Member {
	out := make([]Member, len(ids))
	for i, id := range ids {
		out[i] = Member{ID: id, URL: "http://" + id}
	}
	return out
}

func TestAloneOwnsEverything(t *testing.T) {
	r := New("a")
	for k := range uint64(100) {
		if m, self := r.Owner(k); !self || m.ID != "a" {
			t.Fatalf("alone, key %d went to %v", k, m)
		}
	}
	// A list that forgets this replica does not make it give its work away.
	r.Set(members("b"))
	if r.Size() != 2 {
		t.Fatalf("size %d, want 2 (b and self)", r.Size())
	}
}

// Keys spread evenly, and a member leaving moves only its own keys.
func TestSpreadAndStability(t *testing.T) {
	r := New("a")
	r.Set(members("a", "b", "c"))
	const n = 30000
	owner := make([]string, n)
	count := map[string]int{}
	for i := range n {
		m, _ := r.OwnerOf(tenant.ID{AccountID: uint32(i % 7)}, fmt.Sprintf("metric_%d", i))
		owner[i] = m.ID
		count[m.ID]++
	}
	for id, c := range count {
		if math.Abs(float64(c)-n/3) > 0.05*n/3 {
			t.Errorf("%s owns %d of %d keys, want about %d", id, c, n, n/3)
		}
	}
	r.Set(members("a", "c"))
	moved := 0
	for i := range n {
		m, _ := r.OwnerOf(tenant.ID{AccountID: uint32(i % 7)}, fmt.Sprintf("metric_%d", i))
		if m.ID != owner[i] {
			moved++
			if owner[i] != "b" {
				t.Fatalf("key %d moved from %s, which did not leave", i, owner[i])
			}
		}
	}
	if moved != count["b"] {
		t.Fatalf("moved %d keys, want exactly b's %d", moved, count["b"])
	}
}

func TestSelfFlag(t *testing.T) {
	a, b := New("a"), New("b")
	a.Set(members("a", "b"))
	b.Set(members("a", "b"))
	for k := range uint64(1000) {
		ma, selfA := a.Owner(k)
		mb, selfB := b.Owner(k)
		if ma != mb || selfA == selfB {
			t.Fatalf("key %d: replicas disagree: %v/%v %v/%v", k, ma, selfA, mb, selfB)
		}
	}
}
