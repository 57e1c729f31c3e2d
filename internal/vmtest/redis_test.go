package vmtest

import (
	"net"
	"os/exec"
	"testing"
)

// A port found free and taken before redis-server binds it makes the server
// start again on another one, not fail the test.
func TestRedisStartsAgainOnAPortTaken(t *testing.T) {
	if testing.Short() {
		t.Skip("needs redis-server; skipped with -short")
	}
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redis-server not found: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	taken := l.Addr().String()
	r := &Redis{tb: t, bin: bin, dir: t.TempDir()}
	picks := 0
	r.startOnFreePorts(func() {
		picks++
		r.Addr = taken
		if picks > 1 {
			r.Addr = FreeAddr(t)
		}
	})
	t.Cleanup(r.Stop)
	if picks != 2 || r.Addr == taken {
		t.Errorf("started on %s after %d picks; want a second address", r.Addr, picks)
	}
}
