package wal

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/smprelay/smprelay/store"
)

// File format constants (see doc.go). Part of the file format: never change
// them without a new version.
const (
	fileMagic      = "smp-wal\x00"
	fileVersion    = 1
	fileHeaderSize = 32
	kindSegment    = 1
	kindSnapshot   = 2

	frameHeaderSize = 16
	frameBatch      = 1
	frameCommit     = 2
	commitSize      = 16 // firstLSN u64, count u32, frames u32

	// MaxFrameBytes bounds a frame's stored and decompressed payload; a
	// header claiming more is invalid.
	MaxFrameBytes = 8 << 20
)

// comp is the comp byte of a frame: how its payload is compressed. The
// values are part of the file format.
type comp uint8

const (
	compNone comp = 0 // stored as is
	compS2   comp = 1 // s2 block format (github.com/klauspost/compress/s2)
	compZstd comp = 2 // one zstd frame (github.com/klauspost/compress/zstd)
)

// Compression selects how the writer compresses batch frames. Every build
// reads all of them, whatever it writes.
type Compression uint8

const (
	CompressDefault Compression = iota // s2: see docs/performance.md for the measurements behind the choice
	CompressS2                         // s2 block format, default speed
	CompressZstd                       // zstd, fastest level
	CompressNone                       // no compression
)

// frameComp maps an option to the comp byte the writer uses.
func (c Compression) frameComp() comp {
	switch c {
	case CompressZstd:
		return compZstd
	case CompressNone:
		return compNone
	}
	return compS2
}

func (c Compression) String() string {
	switch c.frameComp() {
	case compNone:
		return "none"
	case compZstd:
		return "zstd"
	}
	return "s2"
}

// targetFrameRaw is where the encoder closes a batch frame: records are
// added until the raw payload reaches it. Not part of the format (a reader
// accepts anything up to MaxFrameBytes); it keeps frames small enough to
// decompress into reused buffers and large enough to compress well.
const targetFrameRaw = 256 << 10

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFileHeader appends a file header.
func appendFileHeader(dst []byte, kind uint8, number, lsn uint64) []byte {
	start := len(dst)
	dst = append(dst, fileMagic...)
	dst = binary.LittleEndian.AppendUint16(dst, fileVersion)
	dst = append(dst, kind, 0)
	dst = binary.LittleEndian.AppendUint64(dst, number)
	dst = binary.LittleEndian.AppendUint64(dst, lsn)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

// frameCRC is the checksum of a frame: its length field, bytes 8–15 of the
// header and the payload.
func frameCRC(hdr, payload []byte) uint32 {
	c := crc32.Update(0, castagnoli, hdr[0:4])
	c = crc32.Update(c, castagnoli, hdr[8:frameHeaderSize])
	return crc32.Update(c, castagnoli, payload)
}

// finishFrame fills in the header of the frame that starts at dst[start:],
// whose payload runs to the end of dst.
func finishFrame(dst []byte, start int, typ uint8, c comp, rawLen int) []byte {
	hdr := dst[start : start+frameHeaderSize]
	payload := dst[start+frameHeaderSize:]
	binary.LittleEndian.PutUint32(hdr[0:], uint32(len(payload)))
	hdr[8], hdr[9], hdr[10], hdr[11] = typ, byte(c), 0, 0
	binary.LittleEndian.PutUint32(hdr[12:], uint32(rawLen))
	binary.LittleEndian.PutUint32(hdr[4:], frameCRC(hdr, payload))
	return dst
}

// encoder turns records into batch frames and commit frames. It is owned by
// one goroutine at a time: the writer for segments, the compaction goroutine
// for a snapshot.
type encoder struct {
	comp    comp          // compression of batch frames
	zenc    *zstd.Encoder // made on first use when comp is compZstd
	raw     []byte        // records of the batch frame being filled
	out     []byte        // finished frames not yet written
	records int           // records in the group so far (frames finished and raw)
	frames  int           // batch frames finished in the group
	rawSize int64         // record bytes in the group so far, for the log's logical size
}

// add appends r to the batch being filled, closing the frame once it is big enough.
func (e *encoder) add(r *store.Record) {
	e.raw = appendRecord(e.raw, r)
	e.records++
	if len(e.raw) >= targetFrameRaw {
		e.closeFrame()
	}
}

// closeFrame compresses the raw records into a batch frame at the end of out.
// A payload that does not shrink is stored uncompressed.
func (e *encoder) closeFrame() {
	if len(e.raw) == 0 {
		return
	}
	e.rawSize += int64(len(e.raw))
	start := len(e.out)
	e.out = append(e.out, make([]byte, frameHeaderSize)...)
	c := e.comp
	switch c {
	case compS2:
		need := s2.MaxEncodedLen(len(e.raw))
		e.out = grow(e.out, need)
		enc := s2.Encode(e.out[len(e.out):len(e.out)+need], e.raw)
		e.out = e.out[:len(e.out)+len(enc)]
	case compZstd:
		if e.zenc == nil {
			e.zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
				zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true))
		}
		e.out = e.zenc.EncodeAll(e.raw, e.out)
	}
	if c == compNone || len(e.out)-start-frameHeaderSize >= len(e.raw) {
		c = compNone
		e.out = append(e.out[:start+frameHeaderSize], e.raw...)
	}
	e.out = finishFrame(e.out, start, frameBatch, c, len(e.raw))
	e.raw = e.raw[:0]
	e.frames++
}

// commit closes the group: its last batch frame, then a commit frame naming
// firstLSN. It returns the group's record count.
func (e *encoder) commit(firstLSN uint64) int {
	e.closeFrame()
	start := len(e.out)
	e.out = append(e.out, make([]byte, frameHeaderSize)...)
	e.out = binary.LittleEndian.AppendUint64(e.out, firstLSN)
	e.out = binary.LittleEndian.AppendUint32(e.out, uint32(e.records))
	e.out = binary.LittleEndian.AppendUint32(e.out, uint32(e.frames))
	e.out = finishFrame(e.out, start, frameCommit, compNone, commitSize)
	n := e.records
	e.records, e.frames = 0, 0
	return n
}

// takeRaw returns the record bytes counted since the last call.
func (e *encoder) takeRaw() int64 {
	n := e.rawSize
	e.rawSize = 0
	return n
}

// grow makes room for n more bytes after len(b).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), 2*cap(b)+n)
	copy(nb, b)
	return nb
}
