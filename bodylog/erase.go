package bodylog

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"time"

	"github.com/smprelay/smprelay/store"
)

// syncsBeforeErase is how many Syncs must have started after a Delete before
// the eraser may apply it without waiting for the next interval: enough for
// the owner's deletion record, appended before Delete, to be fsynced by a
// writer that calls Sync before each of its fsyncs (see the package
// documentation).
const syncsBeforeErase = 3

// eraseYieldEvery is how many records the eraser checks between yields of
// its processor: about 50 µs of work, well under the latency the relay
// promises.
const eraseYieldEvery = 16

// zeroChunk is what erasure writes where holes cannot be punched.
var zeroChunk [64 << 10]byte

// Delete tells the log that the body at ref is dead: acknowledged, expired,
// or its queue deleted. The owner has already appended its own record of the
// deletion. The body leaves the cache and the tail of append buffers at
// once (one not yet written stays in the append buffer, which the eraser
// zeroes before it reaches the file) and the disk within two
// EraseIntervals (sooner when Syncs come often); Erase applies it now. A ref
// that is not the log's, or whose record is already erased, is ignored.
// Safe for concurrent use; it takes the append lock for a slice append.
func (l *Log) Delete(ref store.BodyRef) { l.deleteRef(pendingDelete{ref: ref}) }

// DeleteMessage is Delete for the body of message id of queue rid: the
// eraser then checks the record by its header alone (size word and IDs)
// instead of reading and checksumming the whole body, the cost of erasure
// per acknowledged message. Safe for concurrent use.
func (l *Log) DeleteMessage(rid store.QueueID, id store.MsgID, ref store.BodyRef) {
	l.deleteRef(pendingDelete{ref: ref, known: true, rid: rid, id: id})
}

func (l *Log) deleteRef(p pendingDelete) {
	if _, _, ok := checkRef(p.ref); !ok {
		return
	}
	l.mu.Lock()
	if !l.closed {
		p.gen = l.syncGen
		p.extent = l.forgetLocked(p)
		l.pending = append(l.pending, p)
	}
	l.mu.Unlock()
	if p.extent > 0 {
		// Found in the tail, so never read from the file since the cache
		// was made (the tail answers every read of it), so not in the
		// cache: spare ristretto's Del (an allocation and a channel send).
		return
	}
	l.cacheMu.RLock()
	if l.cache != nil {
		l.cache.Del(uint64(p.ref))
	}
	l.cacheMu.RUnlock()
}

// forgetLocked zeroes the copy in memory (append buffer or tail) of the
// written record p deletes, so that the body leaves memory at once (SPEC
// §8); the eraser erases the file's copy. A record not yet written stays for
// the eraser, which zeroes it in the buffer so that it never reaches the
// file. It returns the record's extent when it found and checked it (0
// otherwise), which spares the eraser reading the file's copy to check it.
// Called with mu.
func (l *Log) forgetLocked(p pendingDelete) int64 {
	n, off := SplitRef(p.ref)
	s := l.segment(n)
	if s == nil {
		return 0
	}
	b, ok := l.memLocked(s, off)
	if !ok && s == l.cur && off >= l.bufOff {
		// Without a tail, Read leaves the written part of the buffer to the
		// file, but the copy is there until the buffer is reused.
		b, ok = l.buf[off-l.bufOff:], true
	}
	if !ok || len(b) == 0 || (s == l.cur && off >= l.bufOff+int64(l.bufDone)) {
		return 0
	}
	var err error
	if p.known {
		_, err = memRecord(b, &p.rid, &p.id)
	} else {
		_, _, err = decodeRecord(b) // a bare ref: the whole record must check
	}
	if err != nil {
		return 0
	}
	size, _ := recordSize(b) // checked above
	ext := align(int64(size))
	if ext > int64(len(b)) || off+ext > s.size.Load() {
		return 0
	}
	clear(b[:ext])
	return ext
}

// Erase applies every pending Delete now, whatever its age, fsyncs what it
// changed and removes the segments left with nothing live: afterwards no
// deleted body is in any file of the directory. For tests, and for the
// owner's compaction, which promises the same of its own files. Safe for
// concurrent use; it waits for the eraser's batch in progress.
func (l *Log) Erase() error {
	l.mu.Lock()
	err := l.usableLocked()
	l.mu.Unlock()
	if err != nil {
		return err
	}
	return l.eraseAll()
}

// eraser is the goroutine that applies Deletes every EraseInterval, until
// Close.
func (l *Log) eraser() {
	defer close(l.done)
	t := time.NewTicker(l.opts.EraseInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			_ = l.eraseDue() // a failure fails the log and is logged there
		}
	}
}

// eraseDue is one wake-up of the eraser: it applies the Deletes that are due.
func (l *Log) eraseDue() error {
	l.eraseMu.Lock()
	defer l.eraseMu.Unlock()
	return l.eraseRefs(l.takeDue(false), false)
}

// eraseAll applies every pending Delete.
func (l *Log) eraseAll() error {
	l.eraseMu.Lock()
	defer l.eraseMu.Unlock()
	return l.eraseRefs(l.takeDue(true), true)
}

// takeDue removes from the pending list the Deletes that are due and
// returns their refs in a slice owned under eraseMu: all of them, or (for
// the eraser's tick) those that were already pending at the previous tick
// and those older than syncsBeforeErase Syncs. Both rules select a prefix:
// the list is in call order, and syncGen never decreases.
func (l *Log) takeDue(all bool) []pendingDelete {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.pending)
	if !all {
		n = l.aged
		for n < len(l.pending) && l.pending[n].gen+syncsBeforeErase <= l.syncGen {
			n++
		}
	}
	refs := append(l.eraseList[:0], l.pending[:n]...)
	l.eraseList = refs
	l.pending = l.pending[:copy(l.pending, l.pending[n:])]
	l.aged = len(l.pending)
	return refs
}

// eraseRefs erases the records at refs, fsyncs the segments it changed,
// updates the live counts and removes the segments that are sealed, counted
// and empty. Called with eraseMu held. Without syncCurrent the segment being
// appended to is not fsynced here: the owner's writer fsyncs it with its next
// group (and the filesystem commits the punched holes within seconds anyway),
// while an fsync from here would wait on the writer's and hold up its group
// commit; Erase, which a compaction calls, fsyncs every segment it changed.
func (l *Log) eraseRefs(refs []pendingDelete, syncCurrent bool) error {
	// By ref, and one entry per ref (a repeated Delete erases once).
	slices.SortFunc(refs, func(a, b pendingDelete) int { return cmp.Compare(a.ref, b.ref) })
	refs = slices.CompactFunc(refs, func(a, b pendingDelete) bool { return a.ref == b.ref })
	// A segment whose last record was erased while it was still current was
	// sealed since with nothing live: its removal is due now.
	removed, err := l.removeEmpty()
	if err != nil {
		return err
	}
	for len(refs) > 0 {
		n, _ := SplitRef(refs[0].ref)
		k := 1
		for k < len(refs) && uint64(refs[k].ref)>>32 == n {
			k++
		}
		batch := refs[:k]
		refs = refs[k:]
		s := l.segment(n)
		if s == nil || s.bad != nil {
			continue // a removed segment (a repeated Delete), or one Read reports as corrupt
		}
		recs, bytes, wrote, err := l.eraseInSegment(s, batch)
		if err != nil {
			return err
		}
		if wrote && (syncCurrent || s.sealed.Load()) {
			if err := s.f.Sync(); err != nil {
				return l.fail(failAt(s.path, 0, "fsync after erasing", err))
			}
			l.stats.syncs.Add(1)
		}
		if s.counted.Load() {
			s.liveBytes.Add(-bytes)
			if s.liveRecs.Add(-recs) == 0 && s.sealed.Load() {
				if err := l.removeSegment(s); err != nil {
					return err
				}
				removed = true
			}
		}
	}
	if removed {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return l.fail(failAt(l.dir, 0, "fsync of the directory after removing segments", err))
		}
	}
	return nil
}

// eraseInSegment erases the records at refs (sorted) in s: in the append
// buffer those still there, in the file the others (adjacent records in one
// range). It checks each record before erasing it, so a repeated Delete or a
// wrong ref never erases a neighbour; records that do not check are left
// alone and logged. It returns the records and bytes erased and whether the
// file changed. Called with eraseMu held.
func (l *Log) eraseInSegment(s *segment, refs []pendingDelete) (recs, bytes int64, wrote bool, err error) {
	var from, to int64 // the file range being gathered; empty when from == to
	flush := func() error {
		if from == to {
			return nil
		}
		wrote = true
		err := l.eraseRange(s, from, to, false)
		from, to = 0, 0
		return err
	}
	for i, p := range refs {
		if i%eraseYieldEvery == eraseYieldEvery-1 {
			// A relay pinned to one core has one P: without this the
			// eraser holds it until sysmon preempts it (10 ms), and every
			// event loop waits that long (issue 15's p99 at half of peak).
			runtime.Gosched()
		}
		_, off := SplitRef(p.ref)
		if off >= s.flushed.Load() {
			n, done := l.eraseBuffered(s, off)
			if done {
				if n > 0 {
					recs++
					bytes += n
				}
				continue
			}
		}
		var n int64
		var err error
		switch {
		case p.extent > 0: // Delete checked its copy in memory: the same bytes
			n = p.extent
			l.stats.erased.Add(1)
		case p.known:
			n, err = l.checkHeaderAt(s, off, &p.rid, &p.id)
		default:
			n, err = l.checkRecordAt(s, off)
		}
		if (errors.Is(err, errCRC) || errors.Is(err, errPad)) && s.swept.Load() {
			n, err = l.tornExtent(s, off, err)
		}
		if err != nil {
			if !errors.Is(err, errGap) { // zeros: already erased
				l.log.Warn("bodylog: not erasing a record that does not check", "file", s.path, "offset", off, "err", err)
			}
			continue
		}
		recs++
		bytes += n
		if off != to {
			if err := flush(); err != nil {
				return recs, bytes, wrote, err
			}
			from = off
		}
		to = off + n
	}
	return recs, bytes, wrote, flush()
}

// tornExtent returns the extent of the record at off in s, an older segment
// that Retain swept, whose bytes do not check (cause): a body a power cut
// tore, its size word on disk and not all of the rest. Retain counted it
// live by that size word and erased everything around it, so erasing the
// extent the size word gives touches no other record, and its count goes
// down as it went up; left alone, the torn body would stay on disk (SPEC
// §8) and keep its segment from ever being removed. cause is returned when
// the size word does not give a plausible extent either. Called with
// eraseMu held.
func (l *Log) tornExtent(s *segment, off int64, cause error) (int64, error) {
	h := l.readBuf[:8] // checkRecordAt made readBuf
	if _, err := s.f.ReadAt(h, off); err != nil {
		return 0, cause
	}
	size, err := recordSize(h)
	if err != nil || off+align(int64(size)) > s.size.Load() {
		return 0, cause
	}
	l.log.Info("bodylog: erasing a record a power cut tore", "file", s.path, "offset", off, "cause", cause.Error())
	l.stats.erased.Add(1)
	return align(int64(size)), nil
}

// eraseBuffered zeroes the record at off if it is still in the append
// buffer, so its body never reaches the file. done is false when it was
// written meanwhile; n is the extent erased, 0 when there was no valid
// record.
func (l *Log) eraseBuffered(s *segment, off int64) (n int64, done bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s != l.cur || off < l.bufOff+int64(l.bufDone) {
		return 0, false // written: erased in the file (its copy in memory went at Delete)
	}
	if off >= l.bufOff+int64(len(l.buf)) {
		return 0, true
	}
	b := l.buf[off-l.bufOff:]
	_, k, err := decodeRecord(b)
	if err != nil {
		return 0, true
	}
	clear(b[:k])
	l.stats.erased.Add(1)
	l.stats.erasedBytes.Add(uint64(k))
	return int64(k), true
}

// checkRecordAt reads the record at off in s's file and checks it, returning
// its extent. Called with eraseMu held (it uses readBuf).
func (l *Log) checkRecordAt(s *segment, off int64) (int64, error) {
	if cap(l.readBuf) < maxRecordSize {
		l.readBuf = make([]byte, maxRecordSize)
	}
	h := l.readBuf[:8]
	if _, err := s.f.ReadAt(h, off); err != nil {
		return 0, err
	}
	size, err := recordSize(h)
	if err != nil {
		return 0, err
	}
	b := l.readBuf[:align(int64(size))]
	if _, err := s.f.ReadAt(b, off); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errShort
		}
		return 0, err
	}
	_, n, err := decodeRecord(b)
	if err == nil {
		l.stats.erased.Add(1)
	}
	return int64(n), err
}

// checkHeaderAt reads the header of the record at off in s's file and checks
// its size word and that it holds message id of queue rid, returning its
// extent: enough to know the ref names that record, without reading the body
// (a torn body under a whole header is erased the same). Called with eraseMu
// held.
func (l *Log) checkHeaderAt(s *segment, off int64, rid *store.QueueID, id *store.MsgID) (int64, error) {
	var h [recordHeaderSize]byte
	if _, err := s.f.ReadAt(h[:], off); err != nil {
		if errors.Is(err, io.EOF) {
			return 0, errShort
		}
		return 0, err
	}
	size, err := recordSize(h[:])
	if err != nil {
		return 0, err
	}
	n := align(int64(size))
	if off+n > s.size.Load() {
		return 0, errShort
	}
	if err := checkIDs(&h, rid, id); err != nil {
		return 0, err
	}
	l.stats.erased.Add(1)
	return n, nil
}

// eraseRange makes [from, to) of s's file zeros: a punched hole where the
// file system can (the blocks go back to it), else written zeros. With
// onlyNonZero, written zeros go only where the bytes are not zero yet (so a
// repeated sweep writes nothing). Called with eraseMu held; it does not
// fsync.
func (l *Log) eraseRange(s *segment, from, to int64, onlyNonZero bool) error {
	if from >= to {
		return nil
	}
	if !l.noPunch.Load() {
		ok, err := punchHole(s.f, from, to-from)
		if err != nil {
			return l.fail(failAt(s.path, from, "punching a hole", err))
		}
		if ok {
			s.unsynced.Store(true)
			l.stats.erasedBytes.Add(uint64(to - from))
			return nil
		}
		l.noPunch.Store(true)
		l.log.Info("bodylog: the file system cannot punch holes; erasing by writing zeros", "dir", l.dir)
	}
	wa, ok := s.f.(io.WriterAt)
	if !ok {
		return l.fail(fmt.Errorf("%w: %s", ErrNoErase, s.path))
	}
	if cap(l.readBuf) < maxRecordSize {
		l.readBuf = make([]byte, maxRecordSize)
	}
	for off := from; off < to; {
		n := min(to-off, int64(len(zeroChunk)))
		if onlyNonZero {
			b := l.readBuf[:n]
			k, err := s.f.ReadAt(b, off)
			if err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("bodylog: reading %s at offset %d: %w", s.path, off, err)
			}
			if isZero(b[:k]) && int64(k) == n {
				off += n
				continue
			}
		}
		if _, err := wa.WriteAt(zeroChunk[:n], off); err != nil {
			return l.fail(failAt(s.path, off, "writing zeros", err))
		}
		s.unsynced.Store(true)
		l.stats.erasedBytes.Add(uint64(n))
		off += n
	}
	return nil
}

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// removeEmpty removes the sealed, counted segments with no live record.
// Called with eraseMu held; the caller fsyncs the directory.
func (l *Log) removeEmpty() (bool, error) {
	var empty []*segment
	l.segMu.RLock()
	for _, s := range l.segs {
		if s.sealed.Load() && s.counted.Load() && s.liveRecs.Load() == 0 {
			empty = append(empty, s)
		}
	}
	l.segMu.RUnlock()
	for _, s := range empty {
		if err := l.removeSegment(s); err != nil {
			return false, err
		}
	}
	return len(empty) > 0, nil
}

// removeSegment deletes segment s, whose records are all dead. The caller
// fsyncs the directory.
func (l *Log) removeSegment(s *segment) error {
	l.segMu.Lock()
	delete(l.segs, s.num)
	l.segMu.Unlock()
	s.removed.Store(true) // before Close: a Sync whose fsync then fails on it knows why
	s.f.Close()
	if err := l.fs.Remove(s.path); err != nil {
		return fmt.Errorf("bodylog: removing %s: %w", s.path, err)
	}
	l.stats.removed.Add(1)
	return nil
}
