package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
)

// fileHeader is a decoded file header.
type fileHeader struct {
	kind   uint8  // kindSegment or kindSnapshot
	number uint64 // the file's number
	lsn    uint64 // segment: LSN of its first record; snapshot: LSN its segments continue after
}

// parseFileHeader decodes and checks a file header.
func parseFileHeader(b []byte) (fileHeader, error) {
	if len(b) < fileHeaderSize {
		return fileHeader{}, fmt.Errorf("file header of %d bytes, want %d", len(b), fileHeaderSize)
	}
	if string(b[:8]) != fileMagic {
		return fileHeader{}, errors.New("not a log file (bad magic)")
	}
	if crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
		return fileHeader{}, errors.New("file header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != fileVersion {
		return fileHeader{}, fmt.Errorf("file format version %d, this build reads %d", v, fileVersion)
	}
	h := fileHeader{kind: b[10], number: binary.LittleEndian.Uint64(b[12:]), lsn: binary.LittleEndian.Uint64(b[20:])}
	if (h.kind != kindSegment && h.kind != kindSnapshot) || b[11] != 0 {
		return fileHeader{}, fmt.Errorf("unknown file kind %d", h.kind)
	}
	return h, nil
}

// frameHeader is a decoded frame header.
type frameHeader struct {
	length int    // stored payload bytes
	crc    uint32 // checksum the frame claims
	typ    uint8  // frameBatch or frameCommit
	comp   comp   // how the payload is compressed
	rawLen int    // decompressed payload bytes
}

// parseFrameHeader decodes a frame header and checks that it is plausible:
// known type and compression, zero reserved bytes, sizes within bounds.
func parseFrameHeader(b []byte) (frameHeader, error) {
	h := frameHeader{
		length: int(binary.LittleEndian.Uint32(b[0:])),
		crc:    binary.LittleEndian.Uint32(b[4:]),
		typ:    b[8],
		comp:   comp(b[9]),
		rawLen: int(binary.LittleEndian.Uint32(b[12:])),
	}
	switch {
	case h.typ != frameBatch && h.typ != frameCommit:
		return h, fmt.Errorf("unknown frame type %d", h.typ)
	case h.comp > compZstd:
		return h, fmt.Errorf("unknown compression %d", h.comp)
	case b[10] != 0 || b[11] != 0:
		return h, errors.New("reserved frame header bytes are not zero")
	case h.length > MaxFrameBytes || h.rawLen > MaxFrameBytes:
		return h, fmt.Errorf("frame of %d bytes (%d raw) exceeds %d", h.length, h.rawLen, MaxFrameBytes)
	case h.typ == frameCommit && (h.comp != compNone || h.length != commitSize || h.rawLen != commitSize):
		return h, errors.New("malformed commit frame header")
	case h.comp == compNone && h.rawLen != h.length:
		return h, errors.New("uncompressed frame whose raw length differs from its length")
	}
	return h, nil
}

// validFrameAt reports whether b starts with a whole frame whose header is
// plausible and whose checksum matches: how recovery tells mid-log corruption
// (valid frames follow the bad one) from a torn tail (nothing valid follows).
func validFrameAt(b []byte) bool {
	if len(b) < frameHeaderSize {
		return false
	}
	// Cheap rejections first: this runs at every byte offset of a torn tail.
	if (b[8] != frameBatch && b[8] != frameCommit) || b[9] > byte(compZstd) || b[10] != 0 || b[11] != 0 {
		return false
	}
	h, err := parseFrameHeader(b)
	if err != nil || h.length > len(b)-frameHeaderSize {
		return false
	}
	return frameCRC(b, b[frameHeaderSize:frameHeaderSize+h.length]) == h.crc
}

// commitInfo is a decoded commit frame.
type commitInfo struct {
	firstLSN uint64 // LSN of the group's first record; 0 in a snapshot
	count    int    // records in the group
	frames   int    // batch frames in the group
}

func parseCommit(p []byte) commitInfo {
	return commitInfo{
		firstLSN: binary.LittleEndian.Uint64(p),
		count:    int(binary.LittleEndian.Uint32(p[8:])),
		frames:   int(binary.LittleEndian.Uint32(p[12:])),
	}
}

// errTorn marks a frame cut short by the end of the file.
var errTorn = errors.New("frame cut short by the end of the file")

// ioError is a failure to read the file, as opposed to bytes that are wrong.
type ioError struct{ err error }

func (e ioError) Error() string { return e.err.Error() }

// frameReader reads the frames of one file sequentially. It is owned by the
// goroutine running Load or a test.
type frameReader struct {
	r       *bufio.Reader
	off     int64 // offset of the next frame in the file
	hdr     [frameHeaderSize]byte
	payload []byte        // stored payload of the last frame; reused
	zdec    *zstd.Decoder // made on first use
}

// newFrameReader reads frames from r, which is at offset off of a file of
// size bytes.
func newFrameReader(r io.Reader, off, size int64) *frameReader {
	return &frameReader{r: bufio.NewReaderSize(r, int(min(max(size-off, 4096), 1<<20))), off: off}
}

// next reads the frame at fr.off. It returns io.EOF at a clean end of file,
// errTorn when the file ends inside the frame, and another error when the
// header is implausible or the checksum does not match. On success fr.off
// moves past the frame and the payload is valid until the next call.
func (fr *frameReader) next() (frameHeader, []byte, error) {
	n, err := io.ReadFull(fr.r, fr.hdr[:])
	if err == io.EOF {
		return frameHeader{}, nil, io.EOF
	}
	if err != nil {
		if n > 0 && err == io.ErrUnexpectedEOF {
			return frameHeader{}, nil, errTorn
		}
		return frameHeader{}, nil, ioError{err}
	}
	h, err := parseFrameHeader(fr.hdr[:])
	if err != nil {
		return h, nil, err
	}
	if cap(fr.payload) < h.length {
		fr.payload = make([]byte, h.length)
	}
	p := fr.payload[:h.length]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		if err == io.ErrUnexpectedEOF || err == io.EOF {
			return h, nil, errTorn
		}
		return h, nil, ioError{err}
	}
	if frameCRC(fr.hdr[:], p) != h.crc {
		return h, nil, errors.New("frame checksum mismatch")
	}
	fr.off += int64(frameHeaderSize + h.length)
	return h, p, nil
}

// decompress returns the raw payload of a batch frame in dst (reused when
// large enough).
func (fr *frameReader) decompress(h frameHeader, p, dst []byte) ([]byte, error) {
	switch h.comp {
	case compNone:
		return append(dst[:0], p...), nil
	case compS2:
		n, err := s2.DecodedLen(p)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		if n != h.rawLen {
			return nil, fmt.Errorf("s2 payload decodes to %d bytes, header says %d", n, h.rawLen)
		}
		if cap(dst) < n {
			dst = make([]byte, n)
		}
		out, err := s2.Decode(dst[:n], p)
		if err != nil {
			return nil, fmt.Errorf("s2: %w", err)
		}
		return out, nil
	case compZstd:
		if fr.zdec == nil {
			d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxFrameBytes))
			if err != nil {
				return nil, err
			}
			fr.zdec = d
		}
		out, err := fr.zdec.DecodeAll(p, dst[:0])
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) != h.rawLen {
			return nil, fmt.Errorf("zstd payload decodes to %d bytes, header says %d", len(out), h.rawLen)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression %d", h.comp)
}

func (fr *frameReader) close() {
	if fr.zdec != nil {
		fr.zdec.Close()
	}
}
