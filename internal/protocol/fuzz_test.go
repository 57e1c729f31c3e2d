package protocol

import (
	"testing"

	"github.com/cardguard/cardguard/internal/ingest"
)

// FuzzDecode feeds every decoder arbitrary bodies: none may panic, and what a
// decoder accepts is series with labels and samples.
func FuzzDecode(f *testing.F) {
	cases := benchCases(f)
	for i, c := range cases {
		f.Add(uint8(i), c.body[:min(len(c.body), 512)])
	}
	f.Fuzz(func(t *testing.T, which uint8, body []byte) {
		c := cases[int(which)%len(cases)]
		var b ingest.Builder
		b.Reset(body, 1)
		if err := c.p.Decode(c.req, body, &b); err != nil {
			return
		}
		if b.Samples() < b.Series() {
			t.Fatalf("%s: %d series with %d samples", c.name, b.Series(), b.Samples())
		}
	})
}
