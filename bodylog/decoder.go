package bodylog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/smprelay/smprelay/store"
)

// Why decodeRecord rejects bytes. They are details for PosError, not
// sentinels: Read maps errGap to ErrMissing and the others to ErrCorrupt.
var (
	errShort = errors.New("record cut short by the end of the data")
	errGap   = errors.New("zeros: no record here (erased or never written)")
	errSize  = errors.New("implausible record size")
	errCRC   = errors.New("record checksum mismatch")
	errPad   = errors.New("record padding is not zero")
)

// record is a decoded record; body aliases the decoder's input.
type record struct {
	rid  store.QueueID
	id   store.MsgID
	body []byte
}

// recordSize checks the size word of the header h (at least 4 bytes) and
// returns the record's size, or errGap or errSize.
func recordSize(h []byte) (int, error) {
	size := binary.LittleEndian.Uint32(h)
	switch {
	case size == 0:
		if len(h) >= 8 && binary.LittleEndian.Uint32(h[4:]) != 0 {
			return 0, errSize // a zero size with a checksum: not an erased record
		}
		return 0, errGap
	case size < recordHeaderSize || size > maxRecordSize:
		return 0, fmt.Errorf("%w: %d", errSize, size)
	}
	return int(size), nil
}

// decodeRecord decodes the record at the start of b and returns it with its
// extent (padding included). b must hold the whole extent; the record's body
// aliases b. It never reads past len(b).
func decodeRecord(b []byte) (record, int, error) {
	if len(b) < 8 {
		return record{}, 0, errShort
	}
	size, err := recordSize(b)
	if err != nil {
		return record{}, 0, err
	}
	n := int(align(int64(size)))
	if len(b) < n {
		return record{}, 0, errShort
	}
	if recordCRC(b[:recordHeaderSize], b[recordHeaderSize:size]) != binary.LittleEndian.Uint32(b[4:]) {
		return record{}, 0, errCRC
	}
	for _, c := range b[size:n] {
		if c != 0 {
			return record{}, 0, errPad
		}
	}
	var r record
	copy(r.rid[:], b[8:24])
	copy(r.id[:], b[24:32])
	r.body = b[recordHeaderSize:size]
	return r, n, nil
}

// scanRecords walks the records of b, a segment's bytes from offset base
// (a multiple of recordAlign), skipping zero words (erased records and
// padding) and calling fn with each record's offset. It stops at the first
// bytes that are neither and returns their offset and why (errShort when b
// ends inside a record), or len(b)+base and nil at a clean end.
func scanRecords(b []byte, base int64, fn func(off int64, r *record)) (int64, error) {
	i := 0
	for i < len(b) {
		if len(b)-i >= 8 && binary.LittleEndian.Uint64(b[i:]) == 0 {
			i += 8
			continue
		}
		r, n, err := decodeRecord(b[i:])
		if err != nil {
			if err == errGap { // a zero word cut short by the end of b
				err = errShort
			}
			return base + int64(i), err
		}
		fn(base+int64(i), &r)
		i += n
	}
	return base + int64(i), nil
}

// parseSegmentHeader checks a segment's header against the number in its
// file name.
func parseSegmentHeader(h []byte, want uint64) error {
	switch {
	case len(h) < segmentHeaderSize:
		return fmt.Errorf("segment header of %d bytes, want %d", len(h), segmentHeaderSize)
	case string(h[:8]) != segmentMagic:
		return errors.New("not a body segment (bad magic)")
	case crc32.Checksum(h[:28], castagnoli) != binary.LittleEndian.Uint32(h[28:]):
		return errors.New("segment header checksum mismatch")
	case binary.LittleEndian.Uint16(h[8:]) != formatVersion:
		return fmt.Errorf("segment format version %d, this build reads %d", binary.LittleEndian.Uint16(h[8:]), formatVersion)
	case binary.LittleEndian.Uint64(h[16:]) != want:
		return fmt.Errorf("header says segment %d, file name %d", binary.LittleEndian.Uint64(h[16:]), want)
	}
	return nil
}

// decodeSummary parses the summary file.
func decodeSummary(b []byte) ([]segmentCount, error) {
	if len(b) < summaryHeaderSize+4 || string(b[:8]) != summaryMagic {
		return nil, errors.New("not a body log summary")
	}
	if crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, errors.New("summary checksum mismatch")
	}
	if v := binary.LittleEndian.Uint16(b[8:]); v != formatVersion {
		return nil, fmt.Errorf("summary format version %d, this build reads %d", v, formatVersion)
	}
	n := int(binary.LittleEndian.Uint32(b[12:]))
	if len(b) != summaryHeaderSize+n*summaryEntrySize+4 {
		return nil, fmt.Errorf("summary of %d bytes for %d segments", len(b), n)
	}
	counts := make([]segmentCount, n)
	for i := range counts {
		e := b[summaryHeaderSize+i*summaryEntrySize:]
		counts[i] = segmentCount{
			number:  binary.LittleEndian.Uint64(e),
			records: int64(binary.LittleEndian.Uint64(e[8:])),
			bytes:   int64(binary.LittleEndian.Uint64(e[16:])),
		}
		if counts[i].records < 0 || counts[i].bytes < 0 {
			return nil, errors.New("summary with negative counts")
		}
	}
	return counts, nil
}
