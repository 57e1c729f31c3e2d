package atomicfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// KeyFile keeps a set of keyed values in one JSON file, {"<key>": "<value>"},
// rewritten with Write on every change, so that a crash leaves the old or the
// new file, never a torn one. It is safe for concurrent use within one
// process; replicas share such values through the state backend instead. The
// stream aggregation rules and the applied recommendations are kept this way.
type KeyFile struct {
	path string
	mu   sync.Mutex
}

// NewKeyFile returns a KeyFile at path; its directory is created on the first
// Save.
func NewKeyFile(path string) *KeyFile { return &KeyFile{path: path} }

// Load returns every key's value. A missing file holds nothing.
func (f *KeyFile) Load() (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *KeyFile) loadLocked() (map[string][]byte, error) {
	b, err := os.ReadFile(f.path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read %s: %w", f.path, err)
	}
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out, nil
}

// Save sets key's value; a nil value deletes the key.
func (f *KeyFile) Save(key string, value []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.loadLocked()
	if err != nil {
		return err
	}
	if value == nil {
		delete(m, key)
	} else {
		m[key] = value
	}
	s := make(map[string]string, len(m))
	for k, v := range m {
		s[k] = string(v)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return Write(f.path, append(b, '\n'))
}
