package bodylog

import (
	"fmt"
	"os"
	"syscall"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// Append adds the body of message id of queue rid to the log and returns its
// ref. It writes to the append buffer, and to the file when the buffer is
// full, but never fsyncs: the body is durable once a Sync that began after
// Append returned has returned nil. It copies body and keeps no reference to
// it. Safe for concurrent use; it holds the append lock for a copy, and for a
// write(2) when the buffer fills.
func (l *Log) Append(rid store.QueueID, id store.MsgID, body []byte) (store.BodyRef, error) {
	if len(body) > MaxBodyBytes {
		return 0, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(body), MaxBodyBytes)
	}
	var h [recordHeaderSize]byte
	putRecordHeader(&h, &rid, &id, body) // the checksum, outside the lock
	ext := extent(len(body))

	l.mu.Lock()
	if err := l.usableLocked(); err != nil {
		l.mu.Unlock()
		return 0, err
	}
	if size := l.cur.size.Load(); size+ext > l.opts.SegmentBytes && size > segmentHeaderSize {
		if err := l.rotateLocked(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
	}
	if len(l.buf)+int(ext) > cap(l.buf) {
		if err := l.flushLocked(); err != nil {
			l.mu.Unlock()
			return 0, err
		}
		l.nextBufferLocked(l.bufOff + int64(len(l.buf)))
	}
	s := l.cur
	off := s.size.Load()
	l.buf = append(l.buf, h[:]...)
	l.buf = append(l.buf, body...)
	l.buf = append(l.buf, zeroPad[:int(ext)-recordHeaderSize-len(body)]...)
	s.size.Store(off + ext)
	s.liveRecs.Add(1)
	s.liveBytes.Add(ext)
	l.mu.Unlock()

	l.stats.appended.Add(1)
	l.stats.appendedBytes.Add(uint64(ext))
	// Not offered to the cache: Read finds it in the append buffer or the
	// tail (tailChunks) for as long as a prompt delivery needs.
	return makeRef(s.num, off), nil
}

// zeroPad is the padding Append writes after a body (less than recordAlign).
var zeroPad [recordAlign]byte

// usableLocked returns why the log takes no more bodies, or nil.
func (l *Log) usableLocked() error {
	switch {
	case l.failErr != nil:
		return l.failErr
	case l.closed:
		return ErrClosed
	}
	return nil
}

// Sync makes every body whose Append returned before Sync was called
// durable: it writes the append buffer, fsyncs the current segment and those
// sealed since the last Sync, and the directory when a segment was created.
// The owner's metadata writer calls it before each fsync of its own, so that
// a durable ref always has a durable body. A failure fails the log for good
// (ErrFailed). Safe for concurrent use; concurrent Syncs take turns, and
// Appends go on during the fsyncs.
func (l *Log) Sync() error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return l.sync()
}

// Flush writes the append buffer to the current segment, without fsync of
// the segment: bodies appended before it survive the process's death
// (kill -9), not a power loss. The owner's writer calls it before each
// write of its records, so that what the kernel holds of the owner's log
// never names a body only this process held.
//
// When a segment was created since the directory was last fsynced, Flush
// fsyncs the directory too, once per segment: the owner's records written
// next may name bodies in it and survive a power cut unsynced (its last
// group in mode always, any group in the others), and a segment whose
// directory entry did not would give its number to the next run's first new
// segment (one past the highest found), so that those records' refs would
// name other bodies, and deleting them would erase those. A failure fails
// the log (ErrFailed). Safe for concurrent use; it holds the append lock for
// the write(2), and Sync's lock for the directory's fsync.
func (l *Log) Flush() error {
	l.mu.Lock()
	err := l.usableLocked()
	if err == nil {
		err = l.flushLocked()
	}
	dir := l.dirDirty
	var hint *segment
	if err == nil && l.opts.WritebackHints && l.unhinted >= writebackHintBytes {
		hint, l.unhinted = l.cur, 0
	}
	l.mu.Unlock()
	if hint != nil {
		writeback(hint.f)
	}
	if err != nil || !dir {
		return err
	}
	return l.syncDir()
}

// writebackHintBytes is how much Flush lets the body log write before it
// asks the kernel to start writing the current segment back (Linux's
// sync_file_range, SYNC_FILE_RANGE_WRITE) when Options.WritebackHints is
// set, as RocksDB's bytes_per_sync does. Without it the dirty pages of a
// whole fsync interval (3–4 MB at half of peak in --fsync interval) wait
// for the fsync, which then takes several milliseconds, and on a relay
// pinned to one core the event loop can wait behind it
// (docs/performance.md, "Why the relay idles"); with it the fsync finds
// most of them written. Outside the lock: the hint can wait for the
// disk's queue.
const writebackHintBytes = 1 << 20

// writeback is startWriteback; a test counts the hints through it.
var writeback = startWriteback

// syncDir fsyncs the directory if a segment was created since it last was.
// It takes syncMu, so that a Sync that finds nothing to do for the
// directory returns only after this fsync did it.
func (l *Log) syncDir() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	dir := l.dirDirty
	l.dirDirty = false
	l.mu.Unlock()
	if !dir {
		return nil
	}
	if err := l.fs.SyncDir(l.dir); err != nil {
		return l.fail(failAt(l.dir, 0, "fsync of the directory", err))
	}
	return nil
}

// sync is Sync without the closed check, for Close.
func (l *Log) sync() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	segs, dir, err := l.beginSync()
	if err != nil {
		return err
	}
	return l.endSync(segs, func(i int) error { return segs[i].f.Sync() }, dir)
}

// beginSync starts a Sync round; the caller holds syncMu. It writes the
// append buffer and returns the segments to fsync (the current one and those
// sealed since the last round, less those not written nor erased since
// their last fsync) and whether the directory needs one.
func (l *Log) beginSync() (segs []*segment, dir bool, err error) {
	l.mu.Lock()
	if l.failErr != nil {
		l.mu.Unlock()
		return nil, false, l.failErr
	}
	l.syncGen++
	if err := l.flushLocked(); err != nil {
		l.mu.Unlock()
		return nil, false, err
	}
	todo := append(l.rotated, l.cur)
	l.rotated = nil
	dir = l.dirDirty
	l.dirDirty = false
	l.mu.Unlock()

	segs = todo[:0]
	for _, s := range todo {
		if s.unsynced.Swap(false) {
			segs = append(segs, s)
		}
	}
	return segs, dir, nil
}

// endSync ends a Sync round begun by beginSync: fsynced(i) is the result of
// the fsync of segs[i], asked in order until one fails; then the directory's
// fsync when dir. A failure fails the log.
func (l *Log) endSync(segs []*segment, fsynced func(i int) error, dir bool) error {
	for i, s := range segs {
		if err := fsynced(i); err != nil {
			if s.removed.Load() {
				continue // every record in it was erased: nothing to make durable
			}
			return l.fail(failAt(s.path, s.flushed.Load(), "fsync", err))
		}
		l.stats.syncs.Add(1)
	}
	if dir {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return l.fail(failAt(l.dir, 0, "fsync of the directory", err))
		}
	}
	return nil
}

// flushLocked writes the append buffer to the current segment.
// The written records stay in the buffer, for Read, until nextBufferLocked.
func (l *Log) flushLocked() error {
	if len(l.buf) == l.bufDone {
		return nil
	}
	if _, err := l.cur.f.Write(l.buf[l.bufDone:]); err != nil {
		return l.failLocked(failAt(l.cur.path, l.bufOff+int64(l.bufDone), "write", err))
	}
	l.cur.unsynced.Store(true)
	l.unhinted += int64(len(l.buf) - l.bufDone)
	l.bufDone = len(l.buf)
	l.cur.flushed.Store(l.bufOff + int64(l.bufDone))
	return nil
}

// nextBufferLocked starts an empty append buffer at offset off, once the
// current one is written (flushLocked): the current one joins the tail when
// the log has a cache, and the oldest chunk of a full tail, or the current
// buffer itself, is reused, so that the log allocates its chunks once.
func (l *Log) nextBufferLocked(off int64) {
	next := l.buf
	if l.keepTail && len(l.buf) > 0 {
		if len(l.tail) < tailChunks-1 {
			next = make([]byte, 0, writeBufferSize)
		} else {
			next = l.tail[0].b
			l.tail = append(l.tail[:0], l.tail[1:]...)
		}
		l.tail = append(l.tail, tailChunk{seg: l.cur, off: l.bufOff, b: l.buf})
	}
	// Cleared: the bodies a reused chunk holds were live when it left the
	// tail (or was written, without one), but Delete no longer finds them
	// there, so one deleted later would stay in memory until overwritten
	// (SPEC §8). One memclr per MiB of bodies, about 0.2 µs a message.
	clear(next[:cap(next)])
	l.buf, l.bufOff, l.bufDone = next[:0], off, 0
}

// rotateLocked seals the current segment and starts the next one. The
// sealed segment is fsynced by the next Sync.
func (l *Log) rotateLocked() error {
	if err := l.flushLocked(); err != nil {
		return err
	}
	l.cur.sealed.Store(true)
	l.rotated = append(l.rotated, l.cur)
	return l.newSegmentLocked()
}

// newSegmentLocked creates segment l.nextNum and makes it current; its
// header goes out with the first write. The directory entry is made durable
// by the next Sync, before any ref into the segment is durable.
func (l *Log) newSegmentLocked() error {
	if l.nextNum > maxSegmentNumber {
		return l.failLocked(fmt.Errorf("%w: segment numbers exhausted", ErrFailed))
	}
	n := l.nextNum
	path := joinPath(l.dir, segmentName(n))
	f, err := l.fs.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, fileMode)
	if err != nil {
		return l.failLocked(failAt(path, 0, "creating the segment", err))
	}
	s := &segment{num: n, path: path, f: f}
	s.unsynced.Store(true)
	s.counted.Store(true)
	s.size.Store(segmentHeaderSize)
	h := segmentHeader(n)
	l.nextBufferLocked(0) // the old segment's buffer, written by rotateLocked, joins the tail
	l.buf = append(l.buf, h[:]...)
	l.nextNum++
	l.dirDirty = true
	l.segMu.Lock()
	l.segs[n] = s
	l.segMu.Unlock()
	l.cur = s
	return nil
}

// fail records err (which wraps ErrFailed) as the reason the log is failed,
// unless it already is, and returns the first such reason.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failLocked(err)
}

func (l *Log) failLocked(err error) error {
	if l.failErr == nil {
		l.failErr = err
		l.log.Error("bodylog: the log failed and takes no more bodies", "err", err)
	}
	return l.failErr
}

// PrepareSync is Sync for a caller that makes the fsyncs itself, without
// blocking (the owner's writer through io_uring, see wal.Log.AttachSyncs):
// it writes the append buffer, and returns the descriptors of the segments
// to fsync — those Sync would fsync — and finish, which the caller must call
// once with their results (nil for each that succeeded, in order). finish
// fails the log as Sync does on a failed fsync, fsyncs the directory when a
// segment was created (rare, blocking) and returns what Sync would have
// returned. Sync's lock is held from PrepareSync to finish. dirAfter says
// that finish fsyncs the directory: the bodies are durable only once finish
// returned, not once the fsyncs did. ok is false
// when a segment's file has no descriptor (another vfs.FS): the caller
// uses Sync then; nothing was done.
func (l *Log) PrepareSync() (fds []int, finish func(errs []error) error, dirAfter, ok bool, err error) {
	l.mu.Lock()
	closed := l.closed
	// Every segment comes from the same vfs.FS: the current one tells.
	_, hasFD := l.cur.f.(syscall.Conn)
	l.mu.Unlock()
	if closed {
		return nil, nil, false, true, ErrClosed
	}
	if !hasFD {
		return nil, nil, false, false, nil
	}
	l.syncMu.Lock()
	segs, dir, err := l.beginSync()
	if err != nil {
		l.syncMu.Unlock()
		return nil, nil, false, true, err
	}
	for _, s := range segs {
		fd := -1 // a sealed segment the eraser closed meanwhile: its fsync fails, and it was removed
		vfs.WithFD(s.f, func(d int) { fd = d })
		fds = append(fds, fd)
	}
	finish = func(errs []error) error {
		defer l.syncMu.Unlock()
		return l.endSync(segs, func(i int) error { return errs[i] }, dir)
	}
	return fds, finish, dir, true, nil
}
