package atomicfile

import (
	"os"
	"path/filepath"
	"testing"
)

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "keys.json")
	f := NewKeyFile(path)
	if m, err := f.Load(); err != nil || len(m) != 0 {
		t.Fatalf("missing file: %v %v", m, err)
	}
	if err := f.Save("a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.Save("b", []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := f.Save("a", nil); err != nil {
		t.Fatal(err)
	}
	m, err := NewKeyFile(path).Load()
	if err != nil || len(m) != 1 || string(m["b"]) != "two" {
		t.Fatalf("after saves and a delete: %q %v", m, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Load(); err == nil {
		t.Error("a torn file loaded without error")
	}
	if err := f.Save("c", []byte("3")); err == nil {
		t.Error("a save over a file that does not read replaced it")
	}
}
