package bodylog

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/smprelay/smprelay/internal/vfs/crashfs"
	"github.com/smprelay/smprelay/store"
)

// sizes covers the padding cases and the relay's typical and largest bodies.
var sizes = []int{0, 1, 7, 8, 9, 100, 7168, 64512}

func TestRefPacking(t *testing.T) {
	for _, c := range []struct {
		seg uint64
		off int64
		ok  bool
	}{
		{1, 32, true},
		{1, 40, true},
		{maxSegmentNumber, MaxSegmentBytes - 8, true},
		{0, 32, false}, // segment 0: never made, and ref 0 would follow
		{1, 0, false},  // inside the header
		{1, 24, false}, // inside the header
		{1, 36, false}, // not aligned
		{7, 1<<32 - 8, true},
	} {
		ref := makeRef(c.seg, c.off)
		seg, off := SplitRef(ref)
		if seg != c.seg || off != c.off {
			t.Errorf("makeRef(%d, %d) splits into (%d, %d)", c.seg, c.off, seg, off)
		}
		if _, _, ok := checkRef(ref); ok != c.ok {
			t.Errorf("checkRef(%d, %d) = %v, want %v", c.seg, c.off, ok, c.ok)
		}
	}
	if _, _, ok := checkRef(0); ok {
		t.Error("ref 0 is valid")
	}
}

func TestAppendRead(t *testing.T) {
	for _, cache := range []int64{0, 1 << 20} {
		dir := t.TempDir()
		r := rand.New(rand.NewPCG(1, uint64(cache)))
		l := openT(t, dir, Options{CacheBytes: cache, SegmentBytes: 100 << 10})
		var ms []*msg
		for range 3 {
			for _, n := range sizes {
				m := newMsg(r, n)
				appendT(t, l, m)
				ms = append(ms, m)
			}
		}
		for _, m := range ms { // from the buffer, the cache or the file
			readT(t, l, m)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			readT(t, l, m)
		}
		if st := l.Stats(); st.Segments < 2 || st.LiveRecords != int64(len(ms)) {
			t.Fatalf("cache %d: stats %+v: want several segments and %d live records", cache, st, len(ms))
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ms[0].rid, ms[0].id, nil); !errors.Is(err, ErrClosed) {
			t.Fatalf("Append after Close: %v", err)
		}

		l = openT(t, dir, Options{CacheBytes: cache})
		if _, err := l.Retain(refsOf(ms)); err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			readT(t, l, m)
		}
		if st := l.Stats(); st.LiveRecords != int64(len(ms)) {
			t.Fatalf("after reopening: %d live records, want %d", st.LiveRecords, len(ms))
		}
		l.Close()
	}
}

func TestAppendTooLarge(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	if _, err := l.Append(store.QueueID{}, store.MsgID{}, make([]byte, MaxBodyBytes+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Append of %d bytes: %v", MaxBodyBytes+1, err)
	}
	m := newMsg(rand.New(rand.NewPCG(2, 2)), MaxBodyBytes)
	appendT(t, l, m)
	readT(t, l, m)
}

// TestReadErrors: every way a ref can fail to lead to its body is an error
// wrapping the right sentinel, located in the file.
func TestReadErrors(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(3, 3))
	l := openT(t, dir, Options{})
	defer l.Close()
	ms := make([]*msg, 12)
	for i := range ms {
		ms[i] = newMsg(r, 100)
		appendT(t, l, ms[i])
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	seg, _ := SplitRef(ms[0].ref)
	path := filepath.Join(dir, segmentName(seg))
	off := func(i int) int64 { _, o := SplitRef(ms[i].ref); return o }

	writeAt(t, path, off(1)+40, []byte{0xff})            // a body byte
	putU32(t, path, off(2), 0)                           // size: with a checksum left, not zeros
	putU32(t, path, off(3), 31)                          // size below the header
	putU32(t, path, off(4), maxRecordSize+1)             // size above the limit
	writeAt(t, path, off(5), make([]byte, 8))            // size and checksum zero: erased
	writeAt(t, path, off(6)+8, []byte{ms[6].rid[0] ^ 1}) // the queue ID, checksum not updated
	putU32(t, path, off(7), 40+512)                      // a size that runs into the next records

	for _, c := range []struct {
		name string
		read func() error
		want error
	}{
		{"body flipped", func() error { return readErr(l, ms[1]) }, ErrCorrupt},
		{"zero size", func() error { return readErr(l, ms[2]) }, ErrCorrupt},
		{"size too small", func() error { return readErr(l, ms[3]) }, ErrCorrupt},
		{"size too large", func() error { return readErr(l, ms[4]) }, ErrCorrupt},
		{"erased", func() error { return readErr(l, ms[5]) }, ErrMissing},
		{"rid flipped", func() error { return readErr(l, ms[6]) }, ErrCorrupt},
		{"size runs on", func() error { return readErr(l, ms[7]) }, ErrCorrupt},
		{"another message's ref", func() error {
			_, err := l.Read(ms[8].rid, ms[8].id, ms[9].ref, nil)
			return err
		}, ErrCorrupt},
		{"wrong message ID", func() error {
			id := ms[10].id
			id[7] ^= 1
			_, err := l.Read(ms[10].rid, id, ms[10].ref, nil)
			return err
		}, ErrCorrupt},
		{"past the end", func() error {
			_, err := l.Read(ms[0].rid, ms[0].id, makeRef(seg, 1<<20), nil)
			return err
		}, ErrMissing},
		{"no such segment", func() error {
			_, err := l.Read(ms[0].rid, ms[0].id, makeRef(seg+100, 32), nil)
			return err
		}, ErrCorrupt},
		{"unaligned ref", func() error {
			_, err := l.Read(ms[0].rid, ms[0].id, ms[0].ref+4, nil)
			return err
		}, ErrRef},
	} {
		err := c.read()
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
			continue
		}
		var pe *PosError
		if c.want != ErrRef && (!errors.As(err, &pe) || pe.File == "") {
			t.Errorf("%s: %v names no file", c.name, err)
		}
		// A body that is not there or does not check will never be read:
		// the engine must drop its message, not answer ERR INTERNAL for
		// its queue forever. A ref the log never gave is another matter.
		if lost := errors.Is(err, store.ErrBodyLost); lost != (c.want != ErrRef) {
			t.Errorf("%s: %v wraps store.ErrBodyLost: %v", c.name, err, lost)
		}
	}
	readT(t, l, ms[0]) // the records around the damage still read
	readT(t, l, ms[11])
}

func readErr(l *Log, m *msg) error {
	_, err := l.Read(m.rid, m.id, m.ref, nil)
	return err
}

// TestBadSegmentHeader: Read reports a segment whose header is damaged;
// Retain deletes it, with the bodies in it even when live refs name them
// (they can never be read: the owner drops their messages as lost).
func TestBadSegmentHeader(t *testing.T) {
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(4, 4))
	l := openT(t, dir, Options{SegmentBytes: 1000})
	a, b := newMsg(r, 900), newMsg(r, 900)
	appendT(t, l, a)
	appendT(t, l, b)
	l.Close()
	sa, _ := SplitRef(a.ref)
	sb, _ := SplitRef(b.ref)
	writeAt(t, filepath.Join(dir, segmentName(sa)), 0, []byte("garbage!"))
	writeAt(t, filepath.Join(dir, segmentName(sb)), 20, []byte{1})

	l = openT(t, dir, Options{})
	defer l.Close()
	var pe *PosError
	if err := readErr(l, a); !errors.Is(err, ErrCorrupt) || !errors.As(err, &pe) || pe.Offset != 0 {
		t.Fatalf("Read in a segment with a bad magic: %v", err)
	}
	st, err := l.Retain([]store.BodyRef{a.ref})
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 2 || st.Unreadable != 1 {
		t.Fatalf("Retain: %+v: want segments %d and %d removed, a's ref unreadable", st, sa, sb)
	}
	for _, n := range []uint64{sa, sb} {
		if _, err := os.Stat(filepath.Join(dir, segmentName(n))); !os.IsNotExist(err) {
			t.Fatalf("segment %d with a bad header: %v", n, err)
		}
	}
	assertGone(t, dirFiles(t, dir), a)
	if err := readErr(l, a); !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrBodyLost) {
		t.Fatalf("Read of a live ref into the removed segment: %v, want it lost", err)
	}
}

func TestOpenRefusesFilesWithoutErase(t *testing.T) {
	_, err := Open(t.TempDir(), Options{FS: plainFS{osFS()}})
	if !errors.Is(err, ErrNoErase) {
		t.Fatalf("Open over files that can neither punch nor WriteAt: %v", err)
	}
}

func TestLocked(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	defer l.Close()
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v", err)
	}
}

// TestSyncFailure: a failed fsync fails the log for good.
func TestSyncFailure(t *testing.T) {
	fsys := &faultFS{FS: osFS()}
	l := openT(t, t.TempDir(), Options{FS: fsys})
	defer l.Close()
	m := newMsg(rand.New(rand.NewPCG(5, 5)), 10)
	appendT(t, l, m)
	fsys.failSync.Store(true)
	if err := l.Sync(); !errors.Is(err, ErrFailed) || !errors.Is(err, errInjected) {
		t.Fatalf("Sync: %v", err)
	}
	fsys.failSync.Store(false)
	if err := l.Sync(); !errors.Is(err, ErrFailed) {
		t.Fatalf("Sync after a failed one: %v", err)
	}
	if _, err := l.Append(m.rid, m.id, m.body); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append after a failed Sync: %v", err)
	}
	readT(t, l, m) // reads still work
}

// TestFlushSurvivesKill: a body flushed (not synced) survives the death of
// the process, whose append buffer is lost; one only appended does not.
func TestFlushSurvivesKill(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	r := rand.New(rand.NewPCG(16, 16))
	kept, lost := newMsg(r, 700), newMsg(r, 700)
	appendT(t, l, kept)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	appendT(t, l, lost)
	l.abandon() // kill -9: the page cache keeps what was written
	l = openT(t, dir, Options{})
	defer l.Close()
	if _, err := l.Retain(refsOf([]*msg{kept, lost})); err != nil {
		t.Fatal(err)
	}
	readT(t, l, kept)
	if err := readErr(l, lost); !errors.Is(err, ErrMissing) {
		t.Fatalf("a body that was never written: %v", err)
	}
}

// keepDataLoseDir is a power cut that keeps every byte written and loses
// every directory operation not fsynced: whatever the owner wrote after a
// Flush survives, and only a segment whose directory entry Flush (or Sync)
// made durable is still there.
type keepDataLoseDir struct{}

func (keepDataLoseDir) DirOps(string, int) int                { return 0 }
func (keepDataLoseDir) Size(_ string, _, current int64) int64 { return current }
func (keepDataLoseDir) Page(string, int64) bool               { return true }

// TestFlushMakesNewSegmentsDurable: after Flush, the directory entry of
// every segment created before it is durable, the one Open starts and one a
// rotation starts, so a power cut cannot lose a segment whose refs the
// owner may have written (and the next Open cannot give its number to
// another segment). Over crashfs, whose files erase by writing zeros.
func TestFlushMakesNewSegmentsDurable(t *testing.T) {
	fsys := crashfs.New()
	o := Options{FS: fsys, SegmentBytes: 4096}
	l := openT(t, "/b", o)
	r := rand.New(rand.NewPCG(17, 17))
	var ms []*msg
	for range 2 { // each fills a segment: the second rotates
		m := newMsg(r, 3000)
		appendT(t, l, m)
		ms = append(ms, m)
		if err := l.Flush(); err != nil {
			t.Fatal(err)
		}
		seg, _ := SplitRef(m.ref)
		if _, err := fsys.CrashWith(keepDataLoseDir{}).Stat(filepath.Join("/b", segmentName(seg))); err != nil {
			t.Fatalf("segment %d after Flush and a power cut: %v", seg, err)
		}
	}
	o.FS = fsys.CrashWith(keepDataLoseDir{})
	l.abandon()
	l = openT(t, "/b", o)
	defer l.Close()
	if st, err := l.Retain(refsOf(ms)); err != nil || st.Unreadable != 0 {
		t.Fatalf("Retain after the cut: %+v, %v", st, err)
	}
	for _, m := range ms {
		readT(t, l, m)
	}
}
