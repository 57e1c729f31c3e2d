package streamrules

import (
	"path/filepath"

	"github.com/cardguard/cardguard/internal/atomicfile"
)

// RulesFile is the name of the file FileStore keeps in its directory.
const RulesFile = "aggregate_rules.json"

// FileStore keeps the rules set through the API in one JSON file, {"<key>":
// "<rules as sent>"}, rewritten atomically on every change (temporary file,
// fsync, rename, fsync of the directory). It is safe for concurrent use within
// one process; replicas share rules through the state backend instead.
type FileStore = atomicfile.KeyFile

// NewFileStore returns a store writing dir/aggregate_rules.json; dir is created
// on the first Save.
func NewFileStore(dir string) *FileStore {
	return atomicfile.NewKeyFile(filepath.Join(dir, RulesFile))
}
