package bodylog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/smprelay/smprelay/store"
)

// eraseModes runs f with hole punching and with zero writes (a file system
// without holes: faultFS's files have no descriptor).
func eraseModes(t *testing.T, f func(t *testing.T, o Options)) {
	t.Run("punch", func(t *testing.T) { f(t, Options{}) })
	t.Run("zeros", func(t *testing.T) { f(t, Options{FS: &faultFS{FS: osFS()}}) })
}

// TestDeleteLeavesNoTrace is the grep test: after Delete and Erase
// no byte of a deleted body, nor its IDs, is in any file of the directory;
// segments left with nothing live are deleted; live bodies still read.
func TestDeleteLeavesNoTrace(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		o.SegmentBytes = 64 << 10
		o.CacheBytes = 1 << 20
		l := openT(t, dir, o)
		r := rand.New(rand.NewPCG(6, 6))
		var ms []*msg
		for i := range 60 {
			m := newMsg(r, sizes[i%len(sizes)]%20000)
			appendT(t, l, m)
			ms = append(ms, m)
			if i == 30 {
				if err := l.Sync(); err != nil {
					t.Fatal(err)
				}
			}
		}
		// Delete every message of the first segment, and every third one after:
		// whole segments go, the others get holes; some records are still in
		// the append buffer.
		first, _ := SplitRef(ms[0].ref)
		var dead, live []*msg
		for i, m := range ms {
			if seg, _ := SplitRef(m.ref); seg == first || i%3 == 0 {
				dead = append(dead, m)
				if i%2 == 0 {
					l.Delete(m.ref)
				} else {
					l.DeleteMessage(m.rid, m.id, m.ref) // checked by its header alone
				}
			} else {
				live = append(live, m)
			}
		}
		before := l.Stats()
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		files := dirFiles(t, dir)
		for _, m := range dead {
			assertGone(t, files, m)
		}
		for _, m := range live {
			assertPresent(t, files, m)
			readT(t, l, m)
		}
		if _, err := os.Stat(filepath.Join(dir, segmentName(first))); !os.IsNotExist(err) {
			t.Fatalf("segment %d, all dead: %v", first, err)
		}
		st := l.Stats()
		if st.Erased != uint64(len(dead)) || st.SegmentsRemoved != 1 || st.LiveRecords != int64(len(live)) || st.PendingDeletes != 0 {
			t.Fatalf("stats %+v: want %d erased, 1 segment removed, %d live", st, len(dead), len(live))
		}
		if st.LiveBytes >= before.LiveBytes || st.DiskBytes > st.FileBytes+int64(4096*st.Segments) { // blocks round up
			t.Fatalf("live bytes %d → %d, disk %d of %d", before.LiveBytes, st.LiveBytes, st.DiskBytes, st.FileBytes)
		}
		// A repeated Delete is harmless: the record is zeros and is skipped.
		l.Delete(dead[len(dead)-1].ref)
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		if got := l.Stats().Erased; got != st.Erased {
			t.Fatalf("a repeated Delete erased again: %d → %d", st.Erased, got)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		files = dirFiles(t, dir)
		for _, m := range dead {
			assertGone(t, files, m)
		}
	})
}

// TestEraseRules: the eraser applies a Delete once three Syncs have started
// after it, or at its second wake-up, and not before.
func TestEraseRules(t *testing.T) {
	l := openT(t, t.TempDir(), Options{})
	defer l.Close()
	r := rand.New(rand.NewPCG(7, 7))
	a, b := newMsg(r, 50), newMsg(r, 50)
	appendT(t, l, a)
	appendT(t, l, b)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	erased := func() uint64 { return l.Stats().Erased }
	step := func(what string, want uint64) {
		t.Helper()
		if err := l.eraseDue(); err != nil {
			t.Fatal(err)
		}
		if got := erased(); got != want {
			t.Fatalf("%s: %d erased, want %d", what, got, want)
		}
	}

	l.Delete(a.ref)
	step("just deleted", 0)
	for range syncsBeforeErase - 1 {
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	l.Delete(b.ref)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	step("a after three Syncs, b after one (and one wake-up)", 1)
	if !errors.Is(readErr(l, a), ErrMissing) {
		t.Fatal("a still reads after its erasure")
	}
	step("b at its second wake-up", 2)
}

// TestRetainAfterCrash: a crash leaves Deletes not erased, records written
// but never synced nor named by the owner, a torn tail, and records only in
// the lost append buffer. Retain, given the live refs, erases all of it;
// the live bodies still read; a second restart reads nothing.
func TestRetainAfterCrash(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		o.SegmentBytes = 48 << 10
		l := openT(t, dir, o)
		r := rand.New(rand.NewPCG(8, 8))
		var live, dead []*msg
		for i := range 40 {
			m := newMsg(r, 3000+i)
			appendT(t, l, m)
			if i%4 == 1 {
				dead = append(dead, m)
			} else {
				live = append(live, m)
			}
		}
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		for _, m := range dead {
			l.Delete(m.ref) // pending, never erased: the crash comes first
		}
		// Written to the file but never synced, and never named by the
		// owner's durable metadata.
		for range 3 {
			m := newMsg(r, 2000)
			appendT(t, l, m)
			dead = append(dead, m)
		}
		l.mu.Lock()
		if err := l.flushLocked(); err != nil {
			t.Fatal(err)
		}
		last := l.cur
		l.mu.Unlock()
		// Still in the buffer: lost with the process.
		lost := newMsg(r, 500)
		appendT(t, l, lost)
		l.abandon()
		// A torn tail: half a record after the last whole one.
		torn := newMsg(r, 1000)
		rec := appendRecord(nil, &torn.rid, &torn.id, torn.body)
		writeAt(t, last.path, last.flushed.Load(), rec[:len(rec)/2])
		dead = append(dead, torn)

		l = openT(t, dir, o)
		st, err := l.Retain(refsOf(live))
		if err != nil {
			t.Fatal(err)
		}
		if st.Vouched != 0 || st.Unreadable != 0 || st.Swept == 0 || st.Erased == 0 {
			t.Fatalf("Retain after a crash: %+v", st)
		}
		files := dirFiles(t, dir)
		for _, m := range dead {
			assertGone(t, files, m)
		}
		for _, m := range live {
			assertPresent(t, files, m)
			readT(t, l, m)
		}
		if got := l.Stats().LiveRecords; got != int64(len(live)) {
			t.Fatalf("%d live records counted, want %d", got, len(live))
		}
		if !errors.Is(readErr(l, lost), ErrMissing) {
			t.Fatalf("a body lost in the buffer: %v", readErr(l, lost))
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}

		// A clean Close vouches for every segment: Retain reads nothing.
		l = openT(t, dir, o)
		st, err = l.Retain(refsOf(live))
		if err != nil {
			t.Fatal(err)
		}
		// The segment the crashed run started, empty, goes.
		if st.Swept != 0 || st.Vouched+st.Removed != st.Segments || st.Removed > 1 {
			t.Fatalf("Retain after a clean Close: %+v", st)
		}
		for _, m := range live {
			readT(t, l, m)
		}
		l.Close()
	})
}

// TestRetainMismatch: when the owner's live refs disagree with the summary
// (here: it lost some messages), Retain sweeps that segment instead of
// trusting the summary, and erases the bodies the owner no longer names.
func TestRetainMismatch(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	r := rand.New(rand.NewPCG(9, 9))
	ms := make([]*msg, 10)
	for i := range ms {
		ms[i] = newMsg(r, 700)
		appendT(t, l, ms[i])
	}
	if _, err := l.Retain(nil); err != nil { // nothing older: every segment is counted
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, summaryName)); err != nil {
		t.Fatalf("no summary after a clean Close: %v", err)
	}
	l = openT(t, dir, Options{})
	defer l.Close()
	if _, err := os.Stat(filepath.Join(dir, summaryName)); !os.IsNotExist(err) {
		t.Fatalf("the summary outlives Open: %v", err)
	}
	st, err := l.Retain(refsOf(ms[:7]))
	if err != nil {
		t.Fatal(err)
	}
	if st.Swept != 1 || st.Vouched != 0 {
		t.Fatalf("Retain with fewer live refs than the summary: %+v", st)
	}
	files := dirFiles(t, dir)
	for _, m := range ms[7:] {
		assertGone(t, files, m)
	}
	for _, m := range ms[:7] {
		readT(t, l, m)
	}
}

// TestRetainRemovesEmptySegments: segments older than Open with no live ref
// are deleted without being read, and a ref into a missing segment is
// reported.
func TestRetainRemovesEmptySegments(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4096})
	r := rand.New(rand.NewPCG(10, 10))
	ms := make([]*msg, 20)
	for i := range ms {
		ms[i] = newMsg(r, 1500)
		appendT(t, l, ms[i])
	}
	l.Close()
	keep, gone := ms[len(ms)-1], ms[0]
	seg, _ := SplitRef(gone.ref)
	if err := os.Remove(filepath.Join(dir, segmentName(seg))); err != nil {
		t.Fatal(err)
	}
	l = openT(t, dir, Options{})
	defer l.Close()
	st, err := l.Retain([]store.BodyRef{keep.ref, gone.ref})
	if err != nil {
		t.Fatal(err)
	}
	if st.Segments < 5 || st.Removed != st.Segments-1 || st.Unreadable != 1 {
		t.Fatalf("Retain: %+v", st)
	}
	readT(t, l, keep)
	if n := l.Stats().Segments; n != 2 {
		t.Fatalf("%d segments, want the kept one and the new one", n)
	}
}

// TestDeleteBeforeRetain: before Retain, a Delete in an older segment is
// erased but the segment is not deleted (its count is unknown); Retain then
// deletes it.
func TestDeleteBeforeRetain(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{})
	m := newMsg(rand.New(rand.NewPCG(11, 11)), 300)
	appendT(t, l, m)
	l.Close()
	l = openT(t, dir, Options{})
	defer l.Close()
	l.Delete(m.ref)
	if err := l.Erase(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dirFiles(t, dir), m)
	seg, _ := SplitRef(m.ref)
	if _, err := os.Stat(filepath.Join(dir, segmentName(seg))); err != nil {
		t.Fatalf("segment deleted before its count was known: %v", err)
	}
	if st, err := l.Retain(nil); err != nil || st.Removed != 1 {
		t.Fatalf("Retain: %+v, %v", st, err)
	}
}

// TestEmptiedBeforeSealed: a segment whose records were all erased while it
// was current is deleted once it is sealed.
func TestEmptiedBeforeSealed(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 4096})
	defer l.Close()
	r := rand.New(rand.NewPCG(15, 15))
	a := newMsg(r, 3000) // the next one does not fit: segment 1 holds a alone
	appendT(t, l, a)
	l.Delete(a.ref)
	if err := l.Erase(); err != nil {
		t.Fatal(err)
	}
	first, _ := SplitRef(a.ref)
	appendT(t, l, newMsg(r, 1500)) // rotates
	if err := l.Erase(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, segmentName(first))); !os.IsNotExist(err) {
		t.Fatalf("segment %d, emptied then sealed: %v", first, err)
	}
}

// TestEraseTornRecord: a power cut kept a record's size word and not all of
// its body (a page of it old), and the owner's metadata still names it.
// Retain counts it live by its size word; Read reports it lost; the owner's
// Delete then erases its whole extent although it does not check, so no
// piece of it stays on disk and its segment can go once the rest is dead.
func TestEraseTornRecord(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		r := rand.New(rand.NewPCG(16, 16))
		l := openT(t, dir, o)
		a, torn, b := newMsg(r, 1000), newMsg(r, 9000), newMsg(r, 700)
		appendSynced(t, l, a, torn, b)
		l.abandon() // no summary: Retain sweeps
		seg, off := SplitRef(torn.ref)
		path := filepath.Join(dir, segmentName(seg))
		page := (off + 4096) &^ 4095 // the first page boundary inside its body
		writeAt(t, path, page, make([]byte, 4096))

		l = openT(t, dir, o)
		defer l.Close()
		st, err := l.Retain(refsOf([]*msg{a, torn, b}))
		if err != nil || st.Swept != 1 || st.Unreadable != 0 {
			t.Fatalf("Retain: %+v, %v", st, err)
		}
		if err := readErr(l, torn); !errors.Is(err, ErrCorrupt) || !errors.Is(err, store.ErrBodyLost) {
			t.Fatalf("Read of the torn record: %v, want ErrCorrupt and store.ErrBodyLost", err)
		}
		if got := l.Stats().LiveRecords; got != 3 {
			t.Fatalf("%d live records counted, want 3", got)
		}
		l.Delete(torn.ref)
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		files := dirFiles(t, dir)
		assertGone(t, files, torn)
		assertPresent(t, files, a)
		assertPresent(t, files, b)
		readT(t, l, a)
		readT(t, l, b)
		if got := l.Stats().LiveRecords; got != 2 {
			t.Fatalf("%d live records counted after the torn one's Delete, want 2", got)
		}
		l.Delete(a.ref)
		l.Delete(b.ref)
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Fatalf("the segment, all of it dead: %v", err)
		}
	})
}

// TestRetainErasesUnreadableLiveRef: a power cut lost the page holding a
// record's header and kept later pages of its body, and the owner's
// metadata still names it. No record can be read there (the size word is
// zeros), so Retain erases its bytes with the dead space around it instead
// of leaving the rest of the body on disk until its segment empties.
func TestRetainErasesUnreadableLiveRef(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		r := rand.New(rand.NewPCG(18, 18))
		l := openT(t, dir, o)
		a, x, b := newMsg(r, 1000), newMsg(r, 12000), newMsg(r, 700)
		appendSynced(t, l, a, x, b)
		l.abandon()
		seg, off := SplitRef(x.ref)
		page := (off + 4096) &^ 4095
		writeAt(t, filepath.Join(dir, segmentName(seg)), off, make([]byte, page-off)) // its header's page, from the record on

		l = openT(t, dir, o)
		defer l.Close()
		st, err := l.Retain(refsOf([]*msg{a, x, b}))
		if err != nil || st.Unreadable != 1 {
			t.Fatalf("Retain: %+v, %v; want x's ref unreadable", st, err)
		}
		files := dirFiles(t, dir)
		assertGone(t, files, x)
		assertPresent(t, files, a)
		assertPresent(t, files, b)
		readT(t, l, a)
		readT(t, l, b)
		if err := readErr(l, x); !errors.Is(err, ErrMissing) {
			t.Fatalf("Read of the unreadable ref: %v, want ErrMissing", err)
		}
		if got := l.Stats().LiveRecords; got != 2 {
			t.Fatalf("%d live records counted, want 2", got)
		}
	})
}

// TestDeleteMessageChecksIDs: a DeleteMessage whose IDs are not the record's
// at ref erases nothing (the header check is what stands between a wrong ref
// and a neighbour's body); with the right IDs it erases.
func TestDeleteMessageChecksIDs(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		dir := t.TempDir()
		l := openT(t, dir, o)
		r := rand.New(rand.NewPCG(7, 7))
		a, b := newMsg(r, 5000), newMsg(r, 5000)
		appendT(t, l, a)
		appendT(t, l, b)
		if err := l.Sync(); err != nil {
			t.Fatal(err)
		}
		l.DeleteMessage(b.rid, b.id, a.ref) // a's ref with b's IDs
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		files := dirFiles(t, dir)
		assertPresent(t, files, a)
		assertPresent(t, files, b)
		readT(t, l, a)
		l.DeleteMessage(a.rid, a.id, a.ref)
		if err := l.Erase(); err != nil {
			t.Fatal(err)
		}
		files = dirFiles(t, dir)
		assertGone(t, files, a)
		assertPresent(t, files, b)
		readT(t, l, b)
	})
}

// TestDeletedBodyLeavesMemory: a deleted body leaves the log's memory at
// Delete (SPEC §8), wherever its written copy was: in the append buffer of a
// log without a cache, or in an append buffer that left the tail and is being
// reused, whose spare capacity still held it.
func TestDeletedBodyLeavesMemory(t *testing.T) {
	inMemory := func(l *Log, body []byte) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		if bytes.Contains(l.buf[:cap(l.buf)], body) {
			return true
		}
		for _, c := range l.tail {
			if bytes.Contains(c.b[:cap(c.b)], body) {
				return true
			}
		}
		return false
	}
	r := rand.New(rand.NewPCG(8, 8))
	for _, cache := range []int64{0, 1 << 20} {
		t.Run(fmt.Sprint("cache ", cache), func(t *testing.T) {
			l := openT(t, t.TempDir(), Options{CacheBytes: cache})
			defer l.Close()
			// Far enough into a buffer that the appends below, which end
			// as soon as it is reused, do not overwrite m.
			for {
				l.mu.Lock()
				n := len(l.buf)
				l.mu.Unlock()
				if n >= 64<<10 {
					break
				}
				appendT(t, l, newMsg(r, 7168))
			}
			m := newMsg(r, 7168)
			appendT(t, l, m)
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
			if cache > 0 {
				for hasTail(l, m) { // until m's buffer left the tail
					appendT(t, l, newMsg(r, 7168))
				}
			}
			l.DeleteMessage(m.rid, m.id, m.ref)
			if inMemory(l, m.body) {
				t.Fatal("the deleted body is still in the log's buffers")
			}
		})
	}
}

// TestSyncSkipsUnchanged: Sync fsyncs the current segment only when it was
// written or erased since its last fsync, so that a group that appended no
// body costs its writer no fsync, while an append or an erasure in the
// segment is made durable by the next Sync.
func TestSyncSkipsUnchanged(t *testing.T) {
	eraseModes(t, func(t *testing.T, o Options) {
		l := openT(t, t.TempDir(), o)
		defer l.Close()
		r := rand.New(rand.NewPCG(8, 8))
		syncs := func() uint64 { return l.Stats().Syncs }
		sync := func(what string, fsyncs uint64) {
			t.Helper()
			before := syncs()
			if err := l.Sync(); err != nil {
				t.Fatal(err)
			}
			if got := syncs() - before; got != fsyncs {
				t.Fatalf("%s: Sync made %d fsyncs, want %d", what, got, fsyncs)
			}
		}
		a := newMsg(r, 300)
		appendT(t, l, a)
		sync("after an append", 1)
		sync("with nothing new", 0)
		l.DeleteMessage(a.rid, a.id, a.ref)
		for range syncsBeforeErase {
			sync("after a Delete, before its erasure", 0)
		}
		if err := l.eraseDue(); err != nil {
			t.Fatal(err)
		}
		if l.Stats().Erased != 1 {
			t.Fatalf("%d erased, want 1", l.Stats().Erased)
		}
		sync("after an erasure in the current segment", 1)
		sync("with nothing new after the erasure", 0)
	})
}
