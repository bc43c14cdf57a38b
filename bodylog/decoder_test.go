package bodylog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/smprelay/smprelay/store"
)

var (
	tRID = store.QueueID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	tID  = store.MsgID{21, 22, 23, 24, 25, 26, 27, 28}
)

// TestDecodeRecord: a record decodes to what was encoded, and every kind of
// damage is rejected with the right reason.
func TestDecodeRecord(t *testing.T) {
	body := []byte("hello, world") // 12 bytes: size 44, extent 48, 4 bytes of padding
	good := appendRecord(nil, &tRID, &tID, body)
	if len(good) != 48 {
		t.Fatalf("record of %d bytes, want 48", len(good))
	}
	r, n, err := decodeRecord(good)
	if err != nil || n != 48 || r.rid != tRID || r.id != tID || !bytes.Equal(r.body, body) {
		t.Fatalf("decodeRecord: %+v, %d, %v", r, n, err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	setSize := func(v uint32) func(b []byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b, v); return b }
	}
	flip := func(i int) func(b []byte) []byte {
		return func(b []byte) []byte { b[i] ^= 0x10; return b }
	}
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, errShort},
		{"7 bytes", good[:7], errShort},
		{"header only", good[:32], errShort},
		{"no padding", good[:44], errShort},
		{"zeros", make([]byte, 48), errGap},
		{"zero size, checksum set", mut(setSize(0)), errSize},
		{"size 31", mut(setSize(31)), errSize},
		{"size past the limit", mut(setSize(maxRecordSize + 1)), errSize},
		{"size one more", mut(setSize(45)), errCRC},
		{"size one less", mut(setSize(43)), errCRC},
		{"checksum flipped", mut(flip(5)), errCRC},
		{"rid flipped", mut(flip(8)), errCRC},
		{"msgID flipped", mut(flip(31)), errCRC},
		{"body flipped", mut(flip(40)), errCRC},
		{"padding not zero", mut(flip(46)), errPad},
	} {
		_, n, err := decodeRecord(c.in)
		if !errors.Is(err, c.want) || n != 0 {
			t.Errorf("%s: decodeRecord = %d, %v; want %v", c.name, n, err, c.want)
		}
	}
	// Records are self-delimiting: one followed by anything decodes alone.
	if _, n, err := decodeRecord(append(bytes.Clone(good), 0xff, 0xff)); err != nil || n != 48 {
		t.Fatalf("record followed by garbage: %d, %v", n, err)
	}
}

// TestScanRecords: a scanner steps over zeros (erased records, padding),
// returns every record, and stops at the first bytes that are not one.
func TestScanRecords(t *testing.T) {
	var b []byte
	b = appendRecord(b, &tRID, &tID, []byte("one"))
	b = append(b, make([]byte, 64)...) // an erased record
	b = appendRecord(b, &tRID, &tID, []byte("two, longer"))
	tail := len(b)
	b = appendRecord(b, &tRID, &tID, []byte("three"))
	var got []string
	end, err := scanRecords(b, 32, func(off int64, r *record) { got = append(got, string(r.body)) })
	if err != nil || end != int64(len(b))+32 || len(got) != 3 || got[2] != "three" {
		t.Fatalf("scan: %q, end %d, %v", got, end, err)
	}
	got = nil
	end, err = scanRecords(b[:len(b)-3], 32, func(off int64, r *record) { got = append(got, string(r.body)) })
	if !errors.Is(err, errShort) || end != int64(tail)+32 || len(got) != 2 {
		t.Fatalf("torn scan: %q, end %d, %v", got, end, err)
	}
}

func TestCRCSmall(t *testing.T) {
	b := []byte("the record header, 28 bytes of it, and some more")
	for i := range len(b) {
		for _, seed := range []uint32{0, 0xdeadbeef} {
			if got, want := crcSmall(seed, b[:i]), crc32.Update(seed, castagnoli, b[:i]); got != want {
				t.Fatalf("crcSmall(%#x, %d bytes) = %#x, crc32.Update %#x", seed, i, got, want)
			}
		}
	}
}

func TestSegmentHeader(t *testing.T) {
	h := segmentHeader(7)
	if err := parseSegmentHeader(h[:], 7); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		num  uint64
	}{
		{"short", h[:31], 7},
		{"other number", h[:], 8},
		{"bad magic", append([]byte("smp-wal\x00"), h[8:]...), 7},
		{"bad checksum", append(bytes.Clone(h[:28]), 0, 0, 0, 0), 7},
	} {
		if parseSegmentHeader(c.b, c.num) == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
}

func TestSummary(t *testing.T) {
	counts := []segmentCount{{1, 10, 800}, {9, 0, 0}, {maxSegmentNumber, 1 << 40, 1 << 50}}
	b := encodeSummary(counts)
	got, err := decodeSummary(b)
	if err != nil || len(got) != 3 || got[2] != counts[2] {
		t.Fatalf("decodeSummary: %+v, %v", got, err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, err := decodeSummary(c); err == nil {
			t.Fatalf("summary with byte %d flipped accepted", i)
		}
	}
	if _, err := decodeSummary(b[:len(b)-1]); err == nil {
		t.Fatal("short summary accepted")
	}
}

// FuzzDecode feeds arbitrary bytes to the record decoder, as a segment's
// records would be scanned: whole, and in two halves as a torn write leaves
// them. It never panics nor reads past its input; a record it accepts
// re-encodes to exactly the bytes it used; and the first half alone scans
// like the whole up to the cut: every record that ends within it is found
// again, and the one the cut goes through (if any) is reported torn there.
func FuzzDecode(f *testing.F) {
	for _, body := range []string{"", "a", "1234567", "12345678", "hello, world", string(make([]byte, 300))} {
		f.Add(appendRecord(nil, &tRID, &tID, []byte(body)))
	}
	two := appendRecord(nil, &tRID, &tID, []byte("first"))
	two = append(two, make([]byte, 16)...)
	two = appendRecord(two, &tID2, &tID, []byte("second, after an erased record"))
	f.Add(two)
	f.Add(two[:len(two)-5])
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, in []byte) {
		in = in[:len(in):len(in)] // an over-read panics
		if r, n, err := decodeRecord(in); err == nil {
			if n <= 0 || n > len(in) || n%recordAlign != 0 {
				t.Fatalf("decodeRecord used %d of %d bytes", n, len(in))
			}
			if got := appendRecord(nil, &r.rid, &r.id, r.body); !bytes.Equal(got, in[:n]) {
				t.Fatalf("record re-encodes to %x, decoded from %x", got, in[:n])
			}
		}
		// A scan stops where the data stops being records; its offsets are
		// aligned and increasing.
		type rec struct {
			off  int64
			size int
		}
		scan := func(b []byte) ([]rec, int64, error) {
			var rs []rec
			end, err := scanRecords(b, 0, func(off int64, r *record) {
				if off%recordAlign != 0 || (len(rs) > 0 && off <= rs[len(rs)-1].off) {
					t.Fatalf("record at offset %d after %v", off, rs)
				}
				rs = append(rs, rec{off, len(r.body)})
			})
			return rs, end, err
		}
		full, fullEnd, fullErr := scan(in)
		half := len(in) / 2 &^ (recordAlign - 1)
		part, partEnd, partErr := scan(in[:half])
		i := 0
		for ; i < len(full) && full[i].off+extent(full[i].size) <= int64(half); i++ {
			if i >= len(part) || part[i] != full[i] {
				t.Fatalf("record %d within the first %d bytes scans as %v alone, %v whole", i, half, part, full)
			}
		}
		if len(part) != i {
			t.Fatalf("cut at %d: %d records past the last whole one (%v, whole %v)", half, len(part)-i, part, full)
		}
		// The scan of the half stops where the whole one stopped, or at the
		// record the cut goes through (torn), or at the cut.
		stopped := fullEnd
		if i < len(full) {
			stopped = full[i].off
		}
		switch {
		case partErr == nil && partEnd == int64(half):
		case partEnd == stopped && partEnd < int64(half) && (errors.Is(partErr, errShort) || (fullErr != nil && partEnd == fullEnd)):
		default:
			t.Fatalf("cut at %d: half stops at %d (%v); whole stopped at %d (%v), records %v", half, partEnd, partErr, fullEnd, fullErr, full)
		}
	})
}

var tID2 = store.QueueID{99}
