package ingest

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// Content encodings of request bodies, as VictoriaMetrics reads them
// (lib/protoparser/protoparserutil): remote write is snappy or zstd (what vmagent
// and vmalert send first); the other protocols may also be gzip, deflate (zlib)
// or not compressed at all.
const (
	encNone = iota
	encSnappy
	encZstd
	encGzip
	encDeflate
)

// parseEncoding reads Content-Encoding; anything unknown is a 415.
func parseEncoding(enc string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(enc)) {
	case "", "identity", "none":
		return encNone, nil
	case "snappy":
		return encSnappy, nil
	case "zstd":
		return encZstd, nil
	case "gzip", "x-gzip":
		return encGzip, nil
	case "deflate":
		return encDeflate, nil
	}
	return 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Encoding %q: want gzip, deflate, zstd, snappy or none", truncate(enc, 64))
}

// zstdDecoder decodes zstd bodies whole. DecodeAll is safe for concurrent use,
// and refuses a frame whose declared or actual size is over the decoder's
// maximum before and while decoding, so one decoder serves every request.
func newZstdDecoder(maxDecoded int64) *zstd.Decoder {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(uint64(maxDecoded)),
		zstd.WithDecoderMaxWindow(max(min(uint64(maxDecoded), zstd.MaxWindowSize), zstd.MinWindowSize)),
	)
	if err != nil {
		panic("zstd decoder options: " + err.Error()) // constant options: cannot fail
	}
	return d
}

// decodeBody decompresses src, encoded as enc, into dst (reused) and returns the
// result, which is src itself when enc is encNone. The decoded size is bounded
// by maxDecoded before anything is allocated when the encoding declares it
// (snappy, zstd frames), and while decoding otherwise: a small body that expands
// to gigabytes costs at most maxDecoded.
func (h *Handler) decodeBody(dst, src []byte, enc int) ([]byte, error) {
	maxDecoded := h.cfg.MaxDecodedBytes
	switch enc {
	case encNone:
		if int64(len(src)) > maxDecoded {
			return dst, tooLargeDecoded(int64(len(src)), maxDecoded)
		}
		return src, nil
	case encSnappy:
		return decompress(dst, src, maxDecoded)
	case encZstd:
		out, err := h.zstd.DecodeAll(src, dst[:0])
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return dst, tooLargeDecoded(-1, maxDecoded)
			}
			return dst, errorf(http.StatusBadRequest, "cannot decompress zstd request body: %v", err)
		}
		return out, nil
	}
	var (
		r   io.Reader
		err error
	)
	switch enc {
	case encGzip:
		r, err = gzip.NewReader(bytes.NewReader(src))
	case encDeflate:
		// VictoriaMetrics reads "deflate" as zlib (RFC 1950), as HTTP means
		// it; raw deflate is what some clients send instead.
		if r, err = zlib.NewReader(bytes.NewReader(src)); err != nil {
			r, err = flate.NewReader(bytes.NewReader(src)), nil
		}
	}
	if err != nil {
		return dst, errorf(http.StatusBadRequest, "cannot decompress request body: %v", err)
	}
	out, err := readBounded(dst[:0], r, maxDecoded)
	if err != nil {
		return out, err
	}
	return out, nil
}

// readBounded reads r to its end into dst, failing with 413 as soon as more
// than maxDecoded bytes come out.
func readBounded(dst []byte, r io.Reader, maxDecoded int64) ([]byte, error) {
	lr := io.LimitReader(r, maxDecoded+1)
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := lr.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > maxDecoded {
			return dst[:0], tooLargeDecoded(-1, maxDecoded)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst[:0], errorf(http.StatusBadRequest, "cannot decompress request body: %v", err)
		}
	}
}

func tooLargeDecoded(n, maxDecoded int64) error {
	if n < 0 {
		return errorf(http.StatusRequestEntityTooLarge, "decompressed request exceeds the limit of %d bytes (-ingest.maxDecodedBytes)", maxDecoded)
	}
	return errorf(http.StatusRequestEntityTooLarge, "decompressed request of %d bytes exceeds the limit of %d bytes (-ingest.maxDecodedBytes)", n, maxDecoded)
}
