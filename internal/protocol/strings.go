package protocol

import "unsafe"

// bytesString is b as a string, without a copy: the parsers read the body
// this way, and ingest.Builder keeps what points into the body as it is.
func bytesString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}
