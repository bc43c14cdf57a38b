package bodylog

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/smprelay/smprelay/store"
)

// File format constants (see doc.go). Part of the file format: never change
// them without a new version.
const (
	segmentMagic      = "smp-body"
	summaryMagic      = "smp-bcln"
	formatVersion     = 1
	segmentHeaderSize = 32 // also the offset of a segment's first record
	recordHeaderSize  = 32 // size u32, crc32c u32, rid [16], msgID [8]
	recordAlign       = 8  // records start at multiples of 8; padding is zeros

	// maxRecordSize bounds a record's size field: a reader takes a larger
	// one for garbage.
	maxRecordSize = 1 << 20

	// MaxBodyBytes is the longest body Append accepts (the relay's largest,
	// 64,512 bytes at 64 KiB blocks, is far below it). Part of the format.
	MaxBodyBytes = maxRecordSize - recordHeaderSize

	summaryHeaderSize = 16 // magic, version u16, 0 u16, count u32
	summaryEntrySize  = 24 // number u64, records u64, bytes u64
)

// maxSegmentNumber is the largest segment number a ref can carry.
const maxSegmentNumber = 1<<32 - 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// makeRef packs a segment number and the offset of a record in it; part of
// the file format (refs are kept in the owner's metadata log).
func makeRef(seg uint64, off int64) store.BodyRef {
	return store.BodyRef(seg<<32 | uint64(off))
}

// SplitRef returns the segment number and the byte offset in that segment's
// file that ref designates: ref = number<<32 | offset. It does not check
// that they are valid.
func SplitRef(ref store.BodyRef) (segment uint64, offset int64) {
	return uint64(ref) >> 32, int64(uint32(ref))
}

// checkRef reports whether ref is one this package could have returned.
func checkRef(ref store.BodyRef) (uint64, int64, bool) {
	seg, off := SplitRef(ref)
	return seg, off, seg != 0 && off >= segmentHeaderSize && off%recordAlign == 0
}

// extent is the bytes a record of a body of n bytes takes in a segment,
// padding included.
func extent(n int) int64 { return align(int64(recordHeaderSize + n)) }

// align rounds n up to a multiple of recordAlign.
func align(n int64) int64 { return (n + recordAlign - 1) &^ (recordAlign - 1) }

// putRecordHeader writes the 32-byte header of the record of body into h.
// The checksum does not depend on where the record lands, so Append computes
// it before it takes the lock.
func putRecordHeader(h *[recordHeaderSize]byte, rid *store.QueueID, id *store.MsgID, body []byte) {
	binary.LittleEndian.PutUint32(h[0:], uint32(recordHeaderSize+len(body)))
	copy(h[8:24], rid[:])
	copy(h[24:32], id[:])
	binary.LittleEndian.PutUint32(h[4:], recordCRC(h[:], body))
}

// recordCRC is the checksum of a record: bytes 0–3 (size) and 8–31 of its
// header h, then the body.
func recordCRC(h []byte, body []byte) uint32 {
	c := crcSmall(0, h[0:4])
	c = crcSmall(c, h[8:recordHeaderSize])
	return crc32.Update(c, castagnoli, body)
}

// crcSmall is crc32.Update(crc, castagnoli, p) for the few header bytes, a
// byte at a time: crc32.Update's assembly is reached through a function
// value, so its argument escapes, and Append's header would be allocated on
// the heap at every call.
func crcSmall(crc uint32, p []byte) uint32 {
	crc = ^crc
	for _, v := range p {
		crc = castagnoli[byte(crc)^v] ^ crc>>8
	}
	return ^crc
}

// appendRecord appends the whole record of body, padding included, to b.
func appendRecord(b []byte, rid *store.QueueID, id *store.MsgID, body []byte) []byte {
	var h [recordHeaderSize]byte
	putRecordHeader(&h, rid, id, body)
	b = append(b, h[:]...)
	b = append(b, body...)
	var pad [recordAlign]byte
	return append(b, pad[:int(extent(len(body)))-recordHeaderSize-len(body)]...)
}

// segmentHeader returns the 32-byte header of segment number n.
func segmentHeader(n uint64) [segmentHeaderSize]byte {
	var h [segmentHeaderSize]byte
	copy(h[:8], segmentMagic)
	binary.LittleEndian.PutUint16(h[8:], formatVersion)
	binary.LittleEndian.PutUint64(h[16:], n)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	return h
}

// segmentCount is one segment's line in the summary.
type segmentCount struct {
	number  uint64 // segment number
	records int64  // live records in it
	bytes   int64  // their extents, padding included
}

// encodeSummary returns the summary file's contents.
func encodeSummary(counts []segmentCount) []byte {
	b := make([]byte, summaryHeaderSize, summaryHeaderSize+len(counts)*summaryEntrySize+4)
	copy(b, summaryMagic)
	binary.LittleEndian.PutUint16(b[8:], formatVersion)
	binary.LittleEndian.PutUint32(b[12:], uint32(len(counts)))
	for _, c := range counts {
		b = binary.LittleEndian.AppendUint64(b, c.number)
		b = binary.LittleEndian.AppendUint64(b, uint64(c.records))
		b = binary.LittleEndian.AppendUint64(b, uint64(c.bytes))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}
