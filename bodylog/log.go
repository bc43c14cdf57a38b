package bodylog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// Options configures a Log. Zero fields take the defaults named.
type Options struct {
	// FS is the file system the log lives in; default vfs.OS. Its files
	// must be able to punch holes (os.File on Linux) or write at an offset
	// (io.WriterAt), or Open fails with ErrNoErase.
	FS vfs.FS
	// SegmentBytes is the size past which Append starts a new segment;
	// default 64 MiB, at most MaxSegmentBytes. A body larger than it gets a
	// segment of its own.
	SegmentBytes int64
	// CacheBytes bounds the bodies the read cache holds (their lengths, plus
	// ristretto's own per-entry cost); 0 means no cache. SetCacheBytes
	// changes it while the log runs.
	CacheBytes int64
	// EraseInterval is how often the eraser runs; default 100ms. A deleted
	// body leaves the disk within two intervals (see the package
	// documentation). Short, so that each run is small: erasing a second's
	// acknowledged bodies at once (3,000 at half of peak) took the relay's
	// p99 SEND→MSG from under 2 ms to 10 ms on one core.
	EraseInterval time.Duration
	// WritebackHints makes Flush ask the kernel to start writing the
	// current segment back after each writebackHintBytes written, so that
	// a Sync that comes long after the writes (the owner's --fsync
	// interval) finds little left to write. Off: only fsync and the
	// kernel's own flusher write the bodies back.
	WritebackHints bool
	// Logger receives the log's rare events (rotation failures, erasure
	// problems, what Retain did); nil discards. It never sees queue or
	// message IDs (SPEC §8).
	Logger *slog.Logger
}

// Defaults and bounds of Options.
const (
	DefaultSegmentBytes  = 64 << 20
	MaxSegmentBytes      = 1 << 31 // offsets must fit the 32 low bits of a ref
	DefaultEraseInterval = 100 * time.Millisecond
)

// writeBufferSize is the append buffer: records are written when it is full,
// at Sync and at rotation. Any record fits in an empty buffer.
const writeBufferSize = maxRecordSize

// tailChunks is how many append buffers the log keeps, the current one
// included, when it has a cache: a full buffer that was written is kept
// rather than cleared, so that the bodies appended last (4 MiB of them:
// everything a relay under full load delivers within about half a second)
// are read from memory without the cache. Delivery right after SEND is the
// common case, for which offering every body to ristretto cost a Set per
// SEND (an allocation and a hand-off to its goroutine), a Get per delivery
// and a Del per ACK; the tail costs a lock and a copy, and lets Delete check
// a record in memory instead of the eraser reading it back from the file. A
// log without a cache keeps the current buffer only.
const tailChunks = 4

// tailChunk is an append buffer that filled up, written to its segment's
// file and kept for reads.
type tailChunk struct {
	seg *segment
	off int64  // offset in seg of b[0]
	b   []byte // the records, as written
}

// Stats are the log's figures. "now" marks a current value; the others count
// since Open.
type Stats struct {
	Segments        int    // now: segment files
	FileBytes       int64  // now: sizes of the segment files, holes and the unwritten buffer included
	DiskBytes       int64  // now: bytes the segment files occupy (allocated blocks where the FS says, else their sizes)
	LiveRecords     int64  // now: bodies appended and not erased, in segments whose counts are known (see Retain)
	LiveBytes       int64  // now: their extents, headers and padding included
	PendingDeletes  int    // now: Deletes the eraser has not applied yet
	Appended        uint64 // bodies appended
	AppendedBytes   uint64 // their extents
	Syncs           uint64 // fsyncs of segment files, for Sync and for erasure
	Erased          uint64 // records erased for Delete (Retain erases ranges: see ErasedBytes)
	ErasedBytes     uint64 // bytes punched or zeroed (Delete, Retain)
	SegmentsRemoved uint64 // segment files deleted because nothing in them was live
	CacheHits       uint64 // Reads answered from the cache
	CacheMisses     uint64 // Reads that went to the file (or the append buffer)
	CacheMaxBytes   int64  // now: the cache's bound (0: no cache)
	CacheUsedBytes  int64  // now: cost of what the cache holds
}

// cached is a cache entry: the body and the IDs it must be read with, so a
// wrong ref is caught on a hit as it is on disk.
type cached struct {
	rid  store.QueueID // queue the body belongs to
	id   store.MsgID   // message ID
	body []byte        // never modified: Append's argument or a private copy
}

// bodyCache is the read cache: ristretto keyed by ref, cost len(body).
type bodyCache = ristretto.Cache[uint64, cached]

// segment is one segment file.
type segment struct {
	num  uint64   // segment number; immutable
	path string   // file path; immutable
	f    vfs.File // open read-write; immutable. ReadAt from any goroutine, Write by appenders under Log.mu, erasure by the eraser under Log.eraseMu
	bad  error    // why the header is unusable (ErrCorrupt), nil if fine; immutable after Open

	// size is the segment's logical end: file bytes plus buffered ones.
	// Written under Log.mu by appenders (only while current); read anywhere.
	size atomic.Int64
	// flushed is how many bytes of the segment are in the file; records at
	// or after it are in Log.buf. Written under Log.mu; read anywhere.
	flushed atomic.Int64
	// sealed: no record will be appended any more (rotated, or older than
	// this Open). Set under Log.mu.
	sealed atomic.Bool
	// counted: liveRecs and liveBytes are exact (segments made by this Open,
	// and older ones once Retain has counted them). Set under Log.eraseMu.
	counted atomic.Bool
	// swept: Retain read the size word of every live record of this older
	// segment and erased everything between them (sweepSegment), so a live
	// record's extent is what its size word says even when a power cut tore
	// its body. Set under Log.eraseMu.
	swept atomic.Bool
	// liveRecs and liveBytes count the records not yet erased: Append adds,
	// the eraser subtracts.
	liveRecs, liveBytes atomic.Int64
	// removed: the eraser deleted the file (nothing in it was live); set
	// before the file is closed.
	removed atomic.Bool
	// unsynced: the file changed since Sync last fsynced it. Set after each
	// write (flushLocked) and each erasure (eraseRange), cleared by Sync
	// just before its fsync, so that a change made before the clear is
	// covered by that fsync and one made after it sets the flag again. Sync
	// skips the fsync of a segment without it: in a group commit whose
	// records append no body (ACK, DEL) there is nothing to make durable,
	// and a blocking fsync would only hold a one-core relay's processor
	// (docs/performance.md, "Why the relay idles").
	unsynced atomic.Bool
}

// pendingDelete is a Delete the eraser has not applied yet.
type pendingDelete struct {
	ref   store.BodyRef // what to erase
	gen   uint64        // Log.syncGen when Delete was called
	known bool          // DeleteMessage named the record's IDs: its header alone proves the ref right
	// extent is the record's extent when Delete checked it in memory (the
	// tail holds what was written at that offset), so the eraser need not
	// read the file to check it; 0 when it did not.
	extent int64
	rid    store.QueueID // with known: the queue the record must hold
	id     store.MsgID   // with known: the message the record must hold
}

// Log is a body log in one directory. Every exported method is safe for
// concurrent use; see the package documentation for what each one waits on.
type Log struct {
	dir  string       // the log directory; immutable
	fs   vfs.FS       // file system; immutable
	opts Options      // defaults filled in; immutable (CacheBytes is the value at Open)
	log  *slog.Logger // never nil; immutable
	lock io.Closer    // the directory's LOCK, held from Open to Close

	// The append side: Append, Sync, Delete, the eraser's hand-off and
	// Close; guarded by mu. mu is never held across an fsync.
	mu       sync.Mutex
	cur      *segment        // the segment Append writes to
	buf      []byte          // the newest records of cur, capacity writeBufferSize; buf[:bufDone] are in the file too
	bufOff   int64           // offset in cur of buf[0]
	bufDone  int             // bytes of buf written to the file: cur.flushed == bufOff + bufDone
	tail     []tailChunk     // earlier append buffers, kept for Read (oldest first); at most tailChunks-1
	keepTail bool            // the log has a cache: keep the tail, and serve written records of buf
	nextNum  uint64          // number the next segment gets
	rotated  []*segment      // segments sealed since the last Sync, not yet fsynced by it
	dirDirty bool            // a segment was created since the last Sync's SyncDir
	unhinted int64           // bytes written since the last writeback hint (Flush)
	syncGen  uint64          // Syncs started since Open
	pending  []pendingDelete // Deletes not yet handed to the eraser, in call order
	aged     int             // pending[:aged] were already pending at the eraser's last run
	failErr  error           // set once a write or fsync failed; wraps ErrFailed
	closed   bool            // Close has begun (also in isClosed, for Read)

	isClosed atomic.Bool // closed, readable without mu

	syncMu sync.Mutex // serialises Sync's fsync rounds, so a Sync never returns before an earlier one's SyncDir

	segMu sync.RWMutex        // guards segs
	segs  map[uint64]*segment // every segment file by number, current one included

	// The erasing side: the eraser goroutine, Erase, Retain and Close take
	// eraseMu for a whole batch, so erasures, counts and segment removals
	// happen one batch at a time.
	eraseMu   sync.Mutex
	firstNew  uint64                  // first segment made by this Open; immutable. Older ones wait for Retain
	summary   map[uint64]segmentCount // counts from a clean Close, for Retain; nil when dirty or used; under eraseMu
	readBuf   []byte                  // the eraser's record buffer; under eraseMu
	eraseList []pendingDelete         // the batch being erased; under eraseMu
	noPunch   atomic.Bool             // holes cannot be punched here: erase by writing zeros

	// cacheMu is held for reading around every use of the cache, and for
	// writing to replace or close it: ristretto's Close is not safe against
	// a concurrent Get or Set (it closes the channel Set sends on).
	cacheMu sync.RWMutex
	cache   *bodyCache // nil: no cache; guarded by cacheMu

	stop chan struct{} // closed by Close: the eraser returns
	done chan struct{} // closed when the eraser goroutine has returned

	stats struct { // counters behind Stats; atomics, any goroutine
		appended, appendedBytes, syncs, erased, erasedBytes, removed, hits, misses atomic.Uint64
	}
}

// Open locks dir (created 0700 if needed) and opens the body log in it. It
// reads no record: it lists the segments, checks their 32-byte headers,
// reads the summary a clean Close left (then deletes it), and starts a new
// segment. Call Retain once before any Delete, so that what a crash left
// behind is erased and old segments can be removed when they empty.
func Open(dir string, o Options) (*Log, error) {
	if o.FS == nil {
		o.FS = vfs.OS
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.SegmentBytes > MaxSegmentBytes {
		return nil, fmt.Errorf("bodylog: SegmentBytes %d exceeds %d", o.SegmentBytes, MaxSegmentBytes)
	}
	if o.EraseInterval <= 0 {
		o.EraseInterval = DefaultEraseInterval
	}
	if o.CacheBytes < 0 {
		o.CacheBytes = 0
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	if err := o.FS.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("bodylog: creating %s: %w", dir, err)
	}
	lock, err := o.FS.Lock(lockPath(dir))
	if err != nil {
		if errors.Is(err, vfs.ErrLocked) {
			return nil, fmt.Errorf("%w: %s: %w", ErrLocked, dir, err)
		}
		return nil, fmt.Errorf("bodylog: locking %s: %w", dir, err)
	}
	l := &Log{
		dir:  dir,
		fs:   o.FS,
		opts: o,
		log:  lg,
		lock: lock,
		buf:  make([]byte, 0, writeBufferSize),
		// The tail is the cache of what was just appended, so it is kept
		// when there is a cache (SetCacheBytes turns it on and off).
		keepTail: o.CacheBytes > 0,
		segs:     make(map[uint64]*segment),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	if err := l.open(); err != nil {
		l.closeFiles()
		lock.Close()
		return nil, err
	}
	if o.CacheBytes > 0 {
		c, err := newCache(o.CacheBytes)
		if err != nil {
			l.closeFiles()
			lock.Close()
			return nil, err
		}
		l.cache = c
	}
	go l.eraser()
	return l, nil
}

// open reads the directory, the segment headers and the summary, and starts
// the first segment of this Open.
func (l *Log) open() error {
	listing, err := listDir(l.fs, l.dir)
	if err != nil {
		return fmt.Errorf("bodylog: reading %s: %w", l.dir, err)
	}
	for _, name := range listing.tmps {
		if err := l.fs.Remove(joinPath(l.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("bodylog: removing %s: %w", name, err)
		}
	}
	for _, n := range listing.segments {
		s, err := l.openSegment(n)
		if err != nil {
			return err
		}
		l.segs[n] = s
		l.nextNum = n + 1
	}
	if l.nextNum == 0 {
		l.nextNum = 1
	}
	if l.nextNum > maxSegmentNumber {
		return fmt.Errorf("bodylog: segment numbers exhausted in %s", l.dir)
	}
	l.firstNew = l.nextNum
	if listing.summary {
		if err := l.readSummary(); err != nil {
			return err
		}
	}
	// The directory changes (tmp removal, summary removal) must be durable
	// before anything is erased or appended: the summary vouches for the
	// segments as they were at Close.
	if err := l.fs.SyncDir(l.dir); err != nil {
		return fmt.Errorf("bodylog: %w", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.newSegmentLocked(); err != nil {
		return err
	}
	if !canErase(l.cur.f) {
		return fmt.Errorf("%w: %s", ErrNoErase, l.cur.path)
	}
	return nil
}

// openSegment opens an existing segment and checks its header. A bad header
// is not an error here: Retain removes the segment if nothing live is in it,
// and Read reports it otherwise.
func (l *Log) openSegment(n uint64) (*segment, error) {
	path := joinPath(l.dir, segmentName(n))
	f, err := l.fs.OpenFile(path, os.O_RDWR, fileMode)
	if err != nil {
		return nil, fmt.Errorf("bodylog: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("bodylog: %w", err)
	}
	s := &segment{num: n, path: path, f: f}
	s.size.Store(fi.Size())
	s.flushed.Store(fi.Size())
	s.sealed.Store(true)
	var h [segmentHeaderSize]byte
	if k, err := f.ReadAt(h[:], 0); err != nil && !errors.Is(err, io.EOF) {
		f.Close()
		return nil, fmt.Errorf("bodylog: reading %s: %w", path, err)
	} else if err := parseSegmentHeader(h[:k], n); err != nil {
		s.bad = posErr(ErrCorrupt, path, 0, "%v", err)
	}
	return s, nil
}

// Close erases every pending deletion, syncs, records the live counts for the
// next Open (when they are all known), and releases the directory. The owner
// closes its metadata log first, so every deletion is durable there.
// Append, Sync and Read fail with ErrClosed afterwards.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrClosed
	}
	l.closed = true
	l.isClosed.Store(true)
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	err := l.eraseAll()
	if serr := l.sync(); err == nil {
		err = serr
	}
	if err == nil {
		err = l.writeSummary()
	}
	l.setCache(nil)
	if cerr := l.closeFiles(); err == nil {
		err = cerr
	}
	if cerr := l.lock.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("bodylog: releasing the lock: %w", cerr)
	}
	return err
}

// closeFiles closes every segment file.
func (l *Log) closeFiles() error {
	l.segMu.Lock()
	defer l.segMu.Unlock()
	var err error
	for _, s := range l.segs {
		if cerr := s.f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("bodylog: closing %s: %w", s.path, cerr)
		}
	}
	return err
}

// segment returns segment n, or nil if there is no such file.
func (l *Log) segment(n uint64) *segment {
	l.segMu.RLock()
	s := l.segs[n]
	l.segMu.RUnlock()
	return s
}

// Stats returns the log's figures. It takes the segment list's read lock and
// stats each segment file.
func (l *Log) Stats() Stats {
	st := Stats{
		Appended:        l.stats.appended.Load(),
		AppendedBytes:   l.stats.appendedBytes.Load(),
		Syncs:           l.stats.syncs.Load(),
		Erased:          l.stats.erased.Load(),
		ErasedBytes:     l.stats.erasedBytes.Load(),
		SegmentsRemoved: l.stats.removed.Load(),
		CacheHits:       l.stats.hits.Load(),
		CacheMisses:     l.stats.misses.Load(),
	}
	l.segMu.RLock()
	for _, s := range l.segs {
		st.Segments++
		size := s.size.Load()
		st.FileBytes += size
		st.DiskBytes += allocatedBytes(s.f, s.flushed.Load())
		if s.counted.Load() {
			st.LiveRecords += s.liveRecs.Load()
			st.LiveBytes += s.liveBytes.Load()
		}
	}
	l.segMu.RUnlock()
	l.mu.Lock()
	st.PendingDeletes = len(l.pending)
	l.mu.Unlock()
	l.cacheMu.RLock()
	if c := l.cache; c != nil {
		st.CacheMaxBytes = c.MaxCost()
		st.CacheUsedBytes = c.MaxCost() - c.RemainingCost()
	}
	l.cacheMu.RUnlock()
	return st
}
