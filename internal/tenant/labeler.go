package tenant

import "sync"

// DefaultLabelCap is how many tenants get their own value of a "tenant" metric label
// before the rest share OverflowLabel.
const DefaultLabelCap = 1000

// OverflowLabel is the tenant label value for tenants beyond the cap.
const OverflowLabel = "other"

// Labeler turns tenant IDs into metric label values with a bounded number of
// distinct values, so that a flood of tenants cannot blow up cardguard's own
// metrics. It is safe for concurrent use; the steady state does not allocate.
type Labeler struct {
	max    int
	mu     sync.RWMutex
	labels map[ID]string
}

// NewLabeler returns a Labeler admitting at most max tenants.
func NewLabeler(max int) *Labeler {
	return &Labeler{max: max, labels: make(map[ID]string)}
}

// Label returns the label value for t.
func (l *Labeler) Label(t ID) string {
	l.mu.RLock()
	s, ok := l.labels[t]
	n := len(l.labels)
	l.mu.RUnlock()
	if ok {
		return s
	}
	if n >= l.max {
		return OverflowLabel
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.labels[t]; ok {
		return s
	}
	if len(l.labels) >= l.max {
		return OverflowLabel
	}
	s = t.String()
	l.labels[t] = s
	return s
}
