package wal

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/smprelay/smprelay/internal/atomicfile"
	"github.com/smprelay/smprelay/internal/errwrap"
	"github.com/smprelay/smprelay/store"
)

// errStopped ends a compaction that Close interrupted.
var errStopped = errors.New("wal: compaction stopped by Close")

// compactRetry is how long the compaction goroutine waits after a failed
// background compaction before it tries again.
const compactRetry = time.Minute

// Attach implements store.Store: it compacts the log at once (start-up
// compaction: the replayed state becomes the new base snapshot and the old
// files go) and keeps s for the background compactions that follow.
func (l *Log) Attach(s store.Snapshotter) error {
	l.mu.Lock()
	state := l.state
	l.mu.Unlock()
	if state != stateLoaded {
		return ErrNotLoaded
	}
	if l.snap != nil {
		return errors.New("wal: Attach called twice")
	}
	l.snap = s
	var live []store.BodyRef
	if l.opts.Bodies != nil {
		l.liveRefs = &live
	}
	err := l.compact()
	l.liveRefs = nil
	if err != nil {
		return errwrap.Wrap(errStartupCompaction, err)
	}
	if err := l.retainBodies(live); err != nil {
		return err
	}
	l.attached.Store(true)
	go l.compactLoop()
	return nil
}

// Compact compacts the log now and returns when the new snapshot is in place
// and the files it replaces are gone. The log must be attached.
func (l *Log) Compact() error {
	if !l.attached.Load() {
		return ErrNotLoaded
	}
	l.compactMu.Lock()
	defer l.compactMu.Unlock()
	return l.compactLocked()
}

// compactLoop is the compaction goroutine: it compacts when the writer says
// the log has grown past twice the live state.
func (l *Log) compactLoop() {
	defer close(l.compactDone)
	var failedAt time.Time
	for {
		select {
		case <-l.compactStop:
			return
		case <-l.compactKick:
		}
		if !failedAt.IsZero() && time.Since(failedAt) < compactRetry {
			continue
		}
		l.compactMu.Lock()
		var err error
		if l.compactDue() {
			err = l.compactLocked()
		}
		l.compactMu.Unlock()
		switch {
		case errors.Is(err, errStopped):
			return
		case err != nil:
			failedAt = time.Now()
			l.log.Error("wal: compaction failed; the log keeps growing until one succeeds", "err", err)
		default:
			failedAt = time.Time{}
		}
	}
}

// retainBodies tells the body keeper, after the start-up compaction, which
// bodies live: everything else it holds from earlier runs goes, and so do the
// bodies replay moved out of the log for messages deleted later in it. Those
// are erased before it returns, as every compaction erases what it dropped
// (SPEC §8): the snapshot in place no longer names them. Retain comes first,
// as the body keeper wants it before any Delete.
func (l *Log) retainBodies(live []store.BodyRef) error {
	b := l.opts.Bodies
	if b == nil {
		return nil
	}
	slices.Sort(live)
	var dead []store.BodyRef
	for _, ref := range l.migratedRefs {
		if _, ok := slices.BinarySearch(live, ref); !ok {
			dead = append(dead, ref)
		}
	}
	l.migratedRefs = nil
	if err := b.Retain(live); err != nil { // may reorder live
		return fmt.Errorf("wal: dropping the bodies no message names: %w", err)
	}
	if len(dead) == 0 {
		return nil
	}
	for _, ref := range dead {
		b.Delete(ref)
	}
	if err := b.Erase(); err != nil {
		return fmt.Errorf("wal: erasing the bodies of messages deleted before the migration: %w", err)
	}
	return nil
}

// compact runs the start-up compaction.
func (l *Log) compact() error {
	l.compactMu.Lock()
	defer l.compactMu.Unlock()
	return l.compactLocked()
}

// compactLocked runs one compaction; the caller holds compactMu. See the
// package documentation for the steps and why each is safe under load.
func (l *Log) compactLocked() error {
	l.compacting.Store(true) // the writer stops asking for one meanwhile
	defer l.compacting.Store(false)
	start := time.Now()
	before := l.stats.logBytes.Load()

	// 1. Every record up to LSN base stays in segments < n; later ones go to n.
	rot := &request{kind: reqRotate}
	if err := l.call(rot); err != nil {
		return err
	}
	n, base := rot.rotNumber, rot.rotBase

	// 2. The live state goes to a temporary file, fsynced.
	snap, count, raw, err := l.writeSnapshot(filepath.Join(l.dir, snapshotName(n)), n, base)
	if err != nil {
		return err
	}
	defer snap.Abort() // after Commit it does nothing

	// 3. What the snapshot shows is durable in the segments too.
	if err := l.call(&request{kind: reqSync}); err != nil {
		return err
	}

	// 4. Switch: rename it to n.snap, fsync the directory.
	if err := snap.Commit(); err != nil {
		return fmt.Errorf("wal: installing snapshot: %w", err)
	}
	scale := 1.0
	if live := l.snap.LiveBytes(); live > 0 && raw > 0 {
		scale = min(max(float64(raw)/float64(live), 0.25), 16)
	}
	if err := l.call(&request{kind: reqInstalled, number: n, raw: raw, scale: scale}); err != nil {
		return err
	}

	// 5. The files the snapshot replaces go.
	ls, err := listDir(l.fs, l.dir)
	if err != nil {
		return fmt.Errorf("wal: listing the log after compaction: %w", err)
	}
	var old []string
	for _, s := range ls.segments {
		if s < n {
			old = append(old, segmentName(s))
		}
	}
	for _, s := range ls.snapshots {
		if s < n {
			old = append(old, snapshotName(s))
		}
	}
	if err := l.removeFiles(old); err != nil {
		return fmt.Errorf("wal: removing compacted files: %w", err)
	}
	if b := l.opts.Bodies; b != nil && l.liveRefs == nil {
		// SPEC §8: after a compaction no deleted body is left. The start-up
		// compaction leaves it to Attach (retainBodies), which also knows
		// the bodies replay moved out of the log for deleted messages.
		if err := b.Erase(); err != nil {
			return fmt.Errorf("wal: erasing deleted bodies: %w", err)
		}
	}
	l.stats.compactions.Add(1)
	l.log.Info("wal: compacted", "snapshot", snapshotName(n), "records", count,
		"log-bytes-before", before, "log-bytes-after", l.stats.logBytes.Load(),
		"files-removed", len(old), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// writeSnapshot writes the live state (header, batch frames, one commit
// frame) to a temporary file that will replace path, and fsyncs it. It
// returns the file, not yet in place, the record count and the record bytes.
func (l *Log) writeSnapshot(path string, n, base uint64) (*atomicfile.Pending, int, int64, error) {
	p, err := atomicfile.Create(l.fs, path, fileMode)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("wal: creating snapshot: %w", err)
	}
	count, raw, err := l.fillSnapshot(p, n, base)
	if err != nil {
		p.Abort()
		return nil, 0, 0, err
	}
	return p, count, raw, nil
}

// fillSnapshot writes the snapshot's bytes to p and fsyncs them. The
// encoder's output goes to the file whenever it reaches 1 MiB: no other
// buffer is needed.
func (l *Log) fillSnapshot(p *atomicfile.Pending, n, base uint64) (int, int64, error) {
	enc := encoder{comp: l.opts.Compression.frameComp()}
	enc.out = appendFileHeader(enc.out, kindSnapshot, n, base)
	var werr error
	count := 0
	err := l.snap.Snapshot(func(r *store.Record) error {
		select {
		case <-l.compactStop:
			return errStopped
		default:
		}
		if err := l.checkRecord(r); err != nil {
			return err
		}
		if l.liveRefs != nil && r.Kind == store.MessageStored && r.Ref != 0 {
			*l.liveRefs = append(*l.liveRefs, r.Ref)
		}
		enc.add(r)
		count++
		if len(enc.out) >= 1<<20 {
			if _, werr = p.Write(enc.out); werr != nil {
				return werr
			}
			enc.out = enc.out[:0]
		}
		return nil
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		if errors.Is(err, errStopped) {
			return 0, 0, err
		}
		return 0, 0, errwrap.Wrap(errWritingSnapshot, err)
	}
	enc.commit(0)
	if _, err := p.Write(enc.out); err != nil {
		return 0, 0, fmt.Errorf("wal: writing snapshot: %w", err)
	}
	if b := l.opts.Bodies; b != nil {
		// The snapshot may name bodies no durable segment names yet (moved
		// out of the log by replay): they are durable before it is.
		if err := b.Sync(); err != nil {
			return 0, 0, fmt.Errorf("wal: syncing the bodies a snapshot names: %w", err)
		}
	}
	if err := p.Sync(); err != nil {
		return 0, 0, fmt.Errorf("wal: syncing snapshot: %w", err)
	}
	return count, enc.takeRaw(), nil
}
