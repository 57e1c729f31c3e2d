package readpath

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardguard/cardguard/internal/queryaudit"
	"github.com/cardguard/cardguard/internal/tenant"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// costs records RecordCost calls.
type costs struct {
	mu  sync.Mutex
	got []queryaudit.Cost
}

func (c *costs) Record(tenant.ID, string, url.Values, http.Header, time.Time) {}

func (c *costs) RecordCost(_ tenant.ID, _ string, _ url.Values, _ http.Header, _ time.Time, k queryaudit.Cost) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, k)
}

func TestStatsBody(t *testing.T) {
	t.Parallel()
	big := `{"status":"success","data":{"resultType":"matrix","result":[` + strings.Repeat(`{"metric":{"seriesFetched":"999","stats":"x"},"values":[[1,"1"]]},`, 2000) +
		`{"metric":{},"values":[]}]},"stats":{"seriesFetched": "12345","executionTimeMsec":67}}`
	for _, tt := range []struct {
		name          string
		body          string
		gzip          bool
		chunk         int
		series, msecs int64
	}{
		{"small", `{"status":"success","data":{},"stats":{"seriesFetched": "1","executionTimeMsec":0}}`, false, 7, 1, 0},
		{"large in small reads", big, false, 100, 12345, 67},
		{"large in large reads", big, false, 64 << 10, 12345, 67},
		{"gzip", big, true, 1000, 12345, 67},
		{"no stats", `{"status":"success","data":{}}`, false, 1000, -1, -1},
		{"unquoted number", `{"stats":{"seriesFetched":42,"executionTimeMsec":5}}`, false, 3, 42, 5},
	} {
		raw := []byte(tt.body)
		if tt.gzip {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			_, _ = zw.Write(raw)
			_ = zw.Close()
			raw = b.Bytes()
		}
		sb := newStatsBody(io.NopCloser(bytes.NewReader(raw)), tt.gzip)
		var out bytes.Buffer
		buf := make([]byte, tt.chunk)
		for {
			n, err := sb.Read(buf)
			out.Write(buf[:n])
			if err != nil {
				break
			}
		}
		_ = sb.Close()
		if !bytes.Equal(out.Bytes(), raw) {
			t.Errorf("%s: the body was changed", tt.name)
		}
		if st := sb.stats(); st.seriesFetched != tt.series || st.execMsec != tt.msecs {
			t.Errorf("%s: %+v, want %d %d", tt.name, st, tt.series, tt.msecs)
		}
	}
	// A broken gzip stream gives no figures and blocks nothing.
	sb := newStatsBody(io.NopCloser(strings.NewReader("not gzip at all")), true)
	_, _ = io.Copy(io.Discard, sb)
	_ = sb.Close()
	if st := sb.stats(); st.seriesFetched != -1 {
		t.Errorf("broken gzip: %+v", st)
	}
}
