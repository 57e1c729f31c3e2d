package streamrules

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/cardguard/cardguard/internal/atomicfile"
)

// RulesFile is the name of the file FileStore keeps in its directory.
const RulesFile = "aggregate_rules.json"

// FileStore keeps the rules set through the API in one JSON file, {"<key>":
// "<rules as sent>"}, rewritten atomically on every change (temporary file,
// fsync, rename, fsync of the directory). It is safe for concurrent use within
// one process; replicas share rules through the state backend instead.
type FileStore struct {
	path string
	mu   sync.Mutex
}

// NewFileStore returns a store writing dir/aggregate_rules.json; dir is created
// on the first Save.
func NewFileStore(dir string) *FileStore {
	return &FileStore{path: filepath.Join(dir, RulesFile)}
}

// Load implements Store. A missing file holds no rules.
func (f *FileStore) Load() (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.loadLocked()
}

func (f *FileStore) loadLocked() (map[string][]byte, error) {
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

// Save implements Store.
func (f *FileStore) Save(key string, rules []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := f.loadLocked()
	if err != nil {
		return err
	}
	if rules == nil {
		delete(m, key)
	} else {
		m[key] = rules
	}
	s := make(map[string]string, len(m))
	for k, v := range m {
		s[k] = string(v)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(f.path, append(b, '\n'))
}
