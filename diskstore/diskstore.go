// Package diskstore is the relay's default store: the state changes of the
// queue index go to a write-ahead log (package wal), message bodies to a body
// log (package bodylog) behind a bounded read cache, so the relay's memory is
// set by its configuration, not by what it stores.
//
// A data directory holds both, side by side:
//
//	DATA/wal/     the write-ahead log: queues, keys, and per message its ID,
//	              time, size and body ref (record kind 7); see wal/doc.go
//	DATA/bodies/  the body log: segment files of message bodies; see bodylog/doc.go
//
// The log drives the body log through wal.Bodies, which states the ordering
// that makes the pair crash-safe: a body is written before the record that
// names it and fsynced before that record is; a body is erased only after the
// record that deletes it was queued, and every deleted body is erased by the
// end of each compaction (SPEC §8). A restart reads the log only — snapshot
// plus segments, no body — and then tells the body log which refs live, which
// erases whatever a crash left behind.
//
// A directory written by the wal store (bodies inside the log's records)
// opens as it is: replay moves each such body into the body log and the
// start-up compaction rewrites the records with refs, so the migration is in
// place and happens once.
//
// A *Store is safe for concurrent use, as store.Store requires.
package diskstore

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/smprelay/smprelay/bodylog"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/wal"
)

// The directories of a data directory the store uses; part of the data
// directory's layout.
const (
	WALDir    = "wal"
	BodiesDir = "bodies"
)

// DefaultCacheBytes is the body cache's default bound: enough for every body
// a few hundred busy queues are about to deliver, small beside the RSS goal
// of issue 14 (256 MiB with 1 GiB stored).
const DefaultCacheBytes = 64 << 20

// Options configures a Store. Zero fields take the defaults of the packages
// they are passed to.
type Options struct {
	// Log configures the write-ahead log; its Bodies, FS and Logger are set
	// by Open.
	Log wal.Options
	// CacheBytes bounds the body cache; 0 means no cache. SetCacheBytes
	// changes it live.
	CacheBytes int64
	// BodySegmentBytes is the body log's segment size; 0 is bodylog's default.
	BodySegmentBytes int64
	// FS is the filesystem of both logs; nil is vfs.OS.
	FS vfs.FS
	// Logger receives both logs' lines; nil discards.
	Logger *slog.Logger
}

// Store is the write-ahead log with its body log. It implements store.Store
// (through the embedded *wal.Log, which hands bodies to the body log),
// store.Compactor and store.StatsReporter.
type Store struct {
	*wal.Log              // the queue index's changes; owns the order of every write
	bodies   *bodylog.Log // the bodies; immutable pointer, itself safe for concurrent use
}

var (
	_ store.Store         = (*Store)(nil)
	_ store.BodyCopier    = (*Store)(nil)
	_ store.Compactor     = (*Store)(nil)
	_ store.StatsReporter = (*Store)(nil)
)

// Open opens (creating if needed) the store in DATA/wal and DATA/bodies. The
// caller then hands it to the engine, which runs Load and Attach.
func Open(data string, o Options) (*Store, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fsys := o.FS
	if fsys == nil {
		fsys = vfs.OS
	}
	b, err := bodylog.Open(filepath.Join(data, BodiesDir), bodylog.Options{
		FS: fsys, SegmentBytes: o.BodySegmentBytes, CacheBytes: o.CacheBytes, Logger: log,
		// --fsync interval fsyncs 100 ms of bodies at once: start writing
		// them back as they come, so that the fsync is short (bodylog's
		// writebackHintBytes). always fsyncs each group; never opted out.
		WritebackHints: o.Log.Sync == wal.SyncInterval,
	})
	if err != nil {
		return nil, fmt.Errorf("diskstore: %w", err)
	}
	lo := o.Log
	lo.FS, lo.Logger, lo.Bodies = fsys, log, bodyKeeper{b}
	l, err := wal.Open(filepath.Join(data, WALDir), lo)
	if err != nil {
		return nil, errors.Join(fmt.Errorf("diskstore: %w", err), b.Close())
	}
	return &Store{Log: l, bodies: b}, nil
}

// Close closes the log first, which flushes and fsyncs the bodies its
// records name, then the body log, which records a clean close.
func (s *Store) Close() error {
	err := s.Log.Close()
	if berr := s.bodies.Close(); berr != nil && !errors.Is(berr, bodylog.ErrClosed) {
		err = errors.Join(err, berr)
	}
	return err
}

// SetCacheBytes changes the body cache's bound (smp-server's --cache-size,
// on SIGHUP). Safe from any goroutine.
func (s *Store) SetCacheBytes(n int64) error { return s.bodies.SetCacheBytes(n) }

// CopiesBodies implements store.BodyCopier: the log hands every message body
// to the body log, whose Append copies it and keeps no reference
// (wal.Log.bodyRecord), so the engine need not make a copy per SEND.
func (s *Store) CopiesBodies() bool { return true }

// StoreStats implements store.StatsReporter: the log's counters with the
// body log's figures.
func (s *Store) StoreStats() store.Stats {
	st := s.Log.StoreStats()
	b := s.bodies.Stats()
	st.BodyBytes = b.DiskBytes
	st.BodyFiles = b.Segments
	st.CacheHits, st.CacheMisses = b.CacheHits, b.CacheMisses
	st.CacheBytes, st.CacheMax = b.CacheUsedBytes, b.CacheMaxBytes
	return st
}

// BodyStats returns the body log's own figures (tests, benchmarks).
func (s *Store) BodyStats() bodylog.Stats { return s.bodies.Stats() }

// bodyKeeper adapts the body log to wal.Bodies.
type bodyKeeper struct{ *bodylog.Log }

// Retain implements wal.Bodies; the body log logs what it found.
func (k bodyKeeper) Retain(live []store.BodyRef) error {
	_, err := k.Log.Retain(live)
	return err
}
