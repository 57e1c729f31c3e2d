package ingest

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/golang/snappy"
)

// Protocol versions of a remote-write request, read from its Content-Type.
const (
	protoV1 = iota + 1
	protoV2
)

// contentProtocol reads Content-Type and Content-Encoding. A missing Content-Type or
// Content-Encoding is taken as remote write 1.0 with snappy, as VictoriaMetrics does;
// zstd is VictoriaMetrics' own remote-write protocol (vmagent and vmalert send it
// first, and fall back to snappy after a 415); anything else declared and unknown
// is a 415.
func contentProtocol(r *http.Request) (proto, enc int, err error) {
	enc = encSnappy
	switch e := r.Header.Get("Content-Encoding"); {
	case e == "" || strings.EqualFold(e, "snappy"):
	case strings.EqualFold(e, "zstd"):
		enc = encZstd
	case e == "identity" && decided(r.Context()):
		// A part another replica routed here to be decided (route).
		enc = encNone
	default:
		return 0, 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: remote write needs snappy or zstd", truncate(e, 64))
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return protoV1, enc, nil
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "application/x-protobuf" {
		return 0, 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: want application/x-protobuf", truncate(ct, 128))
	}
	switch params["proto"] {
	case "", "prometheus.WriteRequest":
		return protoV1, enc, nil
	case "io.prometheus.write.v2.Request":
		return protoV2, enc, nil
	default:
		return 0, 0, errorf(http.StatusUnsupportedMediaType, "unsupported remote write proto %q", truncate(params["proto"], 64))
	}
}

// readBody reads the compressed body into buf (reused across requests) and returns
// it. The size is bounded by maxBytes before anything is read when Content-Length is
// known, and while reading otherwise.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, maxBytes int64) ([]byte, error) {
	if r.ContentLength > maxBytes {
		return buf, errorf(http.StatusRequestEntityTooLarge, "request body of %d bytes exceeds the limit of %d bytes (max_request_bytes)", r.ContentLength, maxBytes)
	}
	body := http.MaxBytesReader(w, r.Body, maxBytes)
	// The declared size is allocated up to bodyPrealloc only: beyond it the
	// buffer grows with what arrives, so that a client declaring 32 MiB and
	// sending a byte now and then holds next to nothing.
	if r.ContentLength > 0 && int64(cap(buf)) < r.ContentLength {
		buf = make([]byte, 0, min(r.ContentLength, bodyPrealloc))
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return buf, errorf(http.StatusRequestEntityTooLarge, "request body exceeds the limit of %d bytes (max_request_bytes)", maxBytes)
			}
			return buf, errorf(http.StatusBadRequest, "cannot read request body: %v", err)
		}
	}
	if len(buf) == 0 {
		return buf, errorf(http.StatusBadRequest, "empty request body: want a snappy-compressed protobuf WriteRequest")
	}
	return buf, nil
}

// bodyPrealloc is the most readBody allocates before the bytes arrive.
const bodyPrealloc = 1 << 20

// decompress decodes a snappy block into dst (reused). The declared length is
// checked against maxDecoded before any allocation, so a small body claiming a huge
// size costs nothing.
func decompress(dst, src []byte, maxDecoded int64) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return dst, errorf(http.StatusBadRequest, "cannot decompress request body: not snappy block format: %v", err)
	}
	if int64(n) > maxDecoded {
		return dst, errorf(http.StatusRequestEntityTooLarge, "decompressed request of %d bytes exceeds the limit of %d bytes (-ingest.maxDecodedBytes)", n, maxDecoded)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out, err := snappy.Decode(dst[:cap(dst)], src)
	if err != nil {
		return dst, errorf(http.StatusBadRequest, "cannot decompress request body: %v", err)
	}
	return out, nil
}
