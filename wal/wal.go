package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// SyncMode is when the log fsyncs (see the package documentation).
type SyncMode uint8

const (
	SyncAlways   SyncMode = iota // fsync every group before its records count as durable
	SyncInterval                 // fsync every Options.SyncInterval; replies do not wait
	SyncNever                    // never fsync while running; replies do not wait
)

func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncInterval:
		return "interval"
	case SyncNever:
		return "never"
	}
	return fmt.Sprintf("SyncMode(%d)", uint8(m))
}

// ParseSyncMode parses "always", "interval" or "never".
func ParseSyncMode(s string) (SyncMode, error) {
	for _, m := range []SyncMode{SyncAlways, SyncInterval, SyncNever} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("wal: fsync mode %q: must be always, interval or never", s)
}

// Options configures a Log. Zero fields take the defaults named.
type Options struct {
	Sync         SyncMode      // default SyncAlways
	SyncInterval time.Duration // fsync period in SyncInterval mode; default 100ms
	// SegmentBytes is the size past which the writer starts a new segment;
	// default 64 MiB.
	SegmentBytes int64
	// CompactMinBytes is the logical log size below which no background
	// compaction runs, so a small log is not rewritten over and over;
	// default 8 MiB. Start-up compaction always runs.
	CompactMinBytes int64
	Compression     Compression  // default s2
	Logger          *slog.Logger // nil discards
	// FS is the filesystem the log lives in; nil is vfs.OS. Tests pass one
	// that fails on demand or simulates a power cut (vfs/crashfs).
	FS vfs.FS
	// Bodies, when set, keeps message bodies outside the log (see Bodies);
	// nil keeps every body in its record.
	Bodies Bodies
	// AsyncMinRecords: once AttachSyncs has switched the writer to
	// io_uring, an fsync covering fewer records than this still blocks the
	// writer; default DefaultAsyncMinRecords. Tests set 1.
	AsyncMinRecords int
}

// Defaults of Options.
const (
	DefaultSyncInterval    = 100 * time.Millisecond
	DefaultSegmentBytes    = 64 << 20
	DefaultCompactMinBytes = 8 << 20
	// DefaultAsyncMinRecords is where io_uring pays (see async.go): the
	// groups of a relay at its peak are larger (115 records at 64 pairs,
	// 310 at 256), those of a relay at three quarters of it smaller (about
	// 30), and those of a partial load smaller still.
	DefaultAsyncMinRecords = 64
)

// Stats are the log's counters since Open. Safe to read at any time.
type Stats struct {
	Records     uint64 // records written to segments
	Groups      uint64 // groups written (one write and, in SyncAlways, one fsync each)
	Syncs       uint64 // fsyncs of segments
	AsyncSyncs  uint64 // of them, by io_uring (AttachSyncs)
	RawBytes    uint64 // record bytes written to segments, before compression
	DiskBytes   uint64 // bytes written to segments, frames included
	LogBytes    int64  // logical size of the log now: record bytes of the snapshot and later segments
	Compactions uint64 // compactions completed, start-up included
	Durable     uint64 // highest durable LSN
}

// Log is a write-ahead log in one directory; it implements store.Store.
// Methods are safe for concurrent use.
type Log struct {
	dir  string       // the log directory; immutable
	opts Options      // defaults filled in; immutable
	log  *slog.Logger // never nil; immutable
	fs   vfs.FS       // opts.FS, or vfs.OS; every file operation goes through it
	lock *DirLock     // held from Open to Close

	// Shared by Append (event loops), the writer and Close; guarded by mu.
	mu         sync.Mutex
	pending    []store.Record   // records appended since the writer last took them
	pendingLSN uint64           // LSN of pending[0]
	waiters    []store.Notifier // notifiers of pending records (SyncAlways), consecutive repeats dropped
	nextLSN    uint64           // LSN the next Append gets
	state      logState         // where the log is in its life
	failErr    error            // set once a write or fsync failed; wraps ErrFailed

	durable atomic.Uint64 // highest LSN on stable storage; written by the writer only
	kick    chan struct{} // capacity 1: pending went from empty to non-empty
	reqs    chan *request // compaction and Close ask the writer for rotations, syncs, the end
	done    chan struct{} // closed when the writer goroutine returns

	snap        store.Snapshotter // set by Attach before the compaction goroutine starts; then immutable
	attached    atomic.Bool       // Attach finished: the writer may trigger compactions
	compactMu   sync.Mutex        // held while a compaction runs: one at a time
	compacting  atomic.Bool       // a compaction is running (the writer does not ask for another)
	compactKick chan struct{}     // capacity 1: the writer asks for a background compaction
	compactStop chan struct{}     // closed by Close to stop the compaction goroutine
	compactDone chan struct{}     // closed when the compaction goroutine returns
	liveScale   atomic.Uint64     // float64 bits: last snapshot bytes / LiveBytes then (0: unknown, use 1)
	migrated    atomic.Int64      // bodies replay moved from records to opts.Bodies (replayBody)
	// migratedRefs are the refs of those bodies: appended by the replay's
	// applier goroutine, read by Attach after Load returned.
	migratedRefs []store.BodyRef
	// liveRefs collects the refs the start-up compaction's snapshot names;
	// set and cleared by Attach around it, nil otherwise.
	liveRefs *[]store.BodyRef

	w writer // owned by the writer goroutine once Load has started it

	async atomic.Pointer[asyncSync] // set by AttachSyncs: the writer fsyncs through io_uring

	mx logStats // fsync and group histograms (metrics.go), observed by the writer

	stats struct { // counters behind Stats
		records, groups, syncs, asyncSyncs, rawBytes, diskBytes, compactions atomic.Uint64
		logBytes                                                             atomic.Int64
	}
}

// logState is a Log's stage; guarded by Log.mu.
type logState uint8

const (
	stateOpen   logState = iota // opened, not loaded: Append refuses
	stateLoaded                 // loaded: the writer runs
	stateClosed                 // closed
)

var (
	_ store.Store         = (*Log)(nil)
	_ store.Compactor     = (*Log)(nil)
	_ store.StatsReporter = (*Log)(nil)
)

// Open locks dir (creating it 0700 if needed) and prepares the log in it. It
// reads nothing yet: Load replays, and starts the writer.
func Open(dir string, o Options) (*Log, error) {
	if o.SyncInterval <= 0 {
		o.SyncInterval = DefaultSyncInterval
	}
	if o.SegmentBytes <= 0 {
		o.SegmentBytes = DefaultSegmentBytes
	}
	if o.CompactMinBytes <= 0 {
		o.CompactMinBytes = DefaultCompactMinBytes
	}
	if o.AsyncMinRecords <= 0 {
		o.AsyncMinRecords = DefaultAsyncMinRecords
	}
	if o.Sync > SyncNever {
		return nil, fmt.Errorf("wal: unknown sync mode %d", o.Sync)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.FS == nil {
		o.FS = vfs.OS
	}
	lock, err := lockDir(o.FS, dir)
	if err != nil {
		return nil, err
	}
	l := &Log{
		dir:         dir,
		opts:        o,
		log:         o.Logger,
		fs:          o.FS,
		lock:        lock,
		kick:        make(chan struct{}, 1),
		reqs:        make(chan *request),
		done:        make(chan struct{}),
		compactKick: make(chan struct{}, 1),
		compactStop: make(chan struct{}),
		compactDone: make(chan struct{}),
		nextLSN:     1,
	}
	l.mx.init()
	return l, nil
}

// Dir returns the log's directory.
func (l *Log) Dir() string { return l.dir }

// Append implements store.Store: it queues r for the writer and returns at
// once. In SyncAlways mode it returns r's LSN and, once the LSN is durable,
// the writer calls n.NotifyDurable; in the other modes it returns 0. n must
// be comparable (a pointer, as the engine's Session is): the writer dedupes
// by it. The ref is 0 unless Options.Bodies keeps the body of a message
// stored (see Bodies).
func (l *Log) Append(r store.Record, n store.Notifier) (uint64, store.BodyRef, error) {
	if err := l.checkRecord(&r); err != nil {
		return 0, 0, err
	}
	ref, err := l.bodyRecord(&r)
	if err != nil {
		return 0, 0, err
	}
	l.mu.Lock()
	switch {
	case l.failErr != nil:
		err := l.failErr
		l.mu.Unlock()
		return 0, 0, err
	case l.state == stateOpen:
		l.mu.Unlock()
		return 0, 0, ErrNotLoaded
	case l.state == stateClosed:
		l.mu.Unlock()
		return 0, 0, ErrClosed
	}
	lsn := l.nextLSN
	l.nextLSN++
	if len(l.pending) == 0 {
		l.pendingLSN = lsn
	}
	l.pending = append(l.pending, r)
	if n != nil && l.opts.Sync == SyncAlways && (len(l.waiters) == 0 || l.waiters[len(l.waiters)-1] != n) {
		l.waiters = append(l.waiters, n)
	}
	first := len(l.pending) == 1
	l.mu.Unlock()
	l.bodiesDied(&r)
	if first {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	if l.opts.Sync != SyncAlways {
		return 0, ref, nil
	}
	return lsn, ref, nil
}

// Durable implements store.Store.
func (l *Log) Durable() uint64 { return l.durable.Load() }

// Stats returns the log's counters.
func (l *Log) Stats() Stats {
	return Stats{
		Records:     l.stats.records.Load(),
		Groups:      l.stats.groups.Load(),
		Syncs:       l.stats.syncs.Load(),
		AsyncSyncs:  l.stats.asyncSyncs.Load(),
		RawBytes:    l.stats.rawBytes.Load(),
		DiskBytes:   l.stats.diskBytes.Load(),
		LogBytes:    l.stats.logBytes.Load(),
		Compactions: l.stats.compactions.Load(),
		Durable:     l.durable.Load(),
	}
}

// StoreStats implements store.StatsReporter: Stats in the terms every store
// reports (BodyBytes is 0: the engine holds the bodies), and whether the log
// failed.
func (l *Log) StoreStats() store.Stats {
	st := l.Stats()
	l.mu.Lock()
	failed := l.failErr != nil
	l.mu.Unlock()
	return store.Stats{
		Records:     st.Records,
		Groups:      st.Groups,
		Syncs:       st.Syncs,
		RawBytes:    st.RawBytes,
		DiskBytes:   st.DiskBytes,
		LogBytes:    st.LogBytes,
		Compactions: st.Compactions,
		Durable:     st.Durable,
		Failed:      failed,
	}
}

// fail marks the log failed by err (a write or fsync error) and logs it once.
// Called by the writer.
func (l *Log) fail(err error) error {
	l.mu.Lock()
	if l.failErr == nil {
		if !isFailed(err) {
			err = &PosError{Err: ErrFailed, File: l.w.path, Offset: l.w.size, Detail: err.Error()}
		}
		l.failErr = err
		l.log.Error("wal: the log failed; every change from now on is refused (restart the server once the disk is fixed)",
			"err", err)
	}
	err = l.failErr
	l.mu.Unlock()
	return err
}

func isFailed(err error) bool {
	pe, ok := err.(*PosError)
	return ok && pe.Err == ErrFailed
}

// Close stops compaction, flushes and fsyncs what was appended, stops the
// writer and releases the directory. Appends fail afterwards. Close notifies
// no Notifier: it runs once the server has stopped and nobody waits for
// replies. It returns the log's failure, if it failed.
func (l *Log) Close() error {
	l.mu.Lock()
	if l.state == stateClosed {
		l.mu.Unlock()
		return ErrClosed
	}
	loaded := l.state == stateLoaded
	l.state = stateClosed
	l.mu.Unlock()

	close(l.compactStop)
	if l.attached.Load() {
		<-l.compactDone
	}
	var err error
	if loaded {
		err = l.call(&request{kind: reqClose})
		<-l.done
		if a := l.async.Load(); a != nil {
			a.close()
		}
		if err == nil && l.opts.Sync != SyncAlways {
			// Everything is fsynced: the next recovery may be strict again.
			if rerr := l.removeFiles([]string{unsyncedName}); rerr != nil {
				l.log.Warn("wal: could not remove the UNSYNCED marker; the next start treats any damage at the end of the log as a torn tail",
					"err", rerr)
			}
		}
	}
	if uerr := l.lock.Unlock(); err == nil && uerr != nil {
		err = uerr
	}
	return err
}

// removeFiles deletes the named files of the log directory (ignoring ones
// already gone) and fsyncs the directory.
func (l *Log) removeFiles(names []string) error {
	var first error
	for _, name := range names {
		if err := l.fs.Remove(filepath.Join(l.dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = err
		}
	}
	if len(names) > 0 {
		if err := l.fs.SyncDir(l.dir); err != nil && first == nil {
			first = err
		}
	}
	return first
}
