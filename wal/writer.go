package wal

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// writer is the state of the writer goroutine (Log.run), which alone touches
// it once Load has started the goroutine. Load fills it before.
type writer struct {
	f       vfs.File                    // the open segment, for appending
	path    string                      // its path
	num     uint64                      // its number
	size    int64                       // its size in bytes
	enc     encoder                     // frames of the group being written
	recs    []store.Record              // spare for Log.pending: the two slices swap at every group
	waiters []store.Notifier            // spare for Log.waiters
	seen    map[store.Notifier]struct{} // dedupes a group's notifiers; emptied after each group
	dirty   bool                        // written since the last fsync
	// unsynced counts the records written since the last fsync: sync
	// hands only Options.AsyncMinRecords or more to io_uring.
	unsynced int
	written  uint64 // LSN of the last record written to a segment
	// groupWaiters are the notifiers of the group being synced, for the
	// asynchronous fsyncs' reaper; notified says it already notified them.
	groupWaiters []store.Notifier
	notified     bool
	base         uint64           // number of the snapshot the log starts from (0: none)
	snapRaw      int64            // record bytes of that snapshot
	segRaw       map[uint64]int64 // record bytes of each segment numbered base or more
}

// reqKind is what a request asks of the writer.
type reqKind uint8

const (
	reqRotate    reqKind = iota + 1 // flush, start a new segment; reply with its number and base
	reqSync                         // flush and fsync, whatever the mode
	reqInstalled                    // snapshot number is in place: forget older segments
	reqClose                        // flush, fsync, close the segment, stop
)

// request is a message to the writer goroutine. The sender fills the inputs,
// the writer the outputs, then closes done.
type request struct {
	kind   reqKind
	number uint64  // reqInstalled: the snapshot's number
	raw    int64   // reqInstalled: its record bytes
	scale  float64 // reqInstalled: its bytes per LiveBytes byte

	rotNumber uint64 // reqRotate: number of the new segment
	rotBase   uint64 // reqRotate: LSN of the last record in the segments before it
	err       error
	done      chan struct{}
}

// call sends r to the writer and waits for the reply.
func (l *Log) call(r *request) error {
	r.done = make(chan struct{})
	select {
	case l.reqs <- r:
	case <-l.done:
		return ErrClosed
	}
	<-r.done
	return r.err
}

// run is the writer goroutine.
func (l *Log) run() {
	defer close(l.done)
	var tick <-chan time.Time
	if l.opts.Sync == SyncInterval {
		t := time.NewTicker(l.opts.SyncInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-l.kick:
			_ = l.flush(false, true)
		case <-tick:
			_ = l.sync()
		case r := <-l.reqs:
			stop := l.serve(r)
			close(r.done)
			if stop {
				return
			}
		}
	}
}

// serve carries out a request and reports whether the writer must stop.
func (l *Log) serve(r *request) bool {
	switch r.kind {
	case reqRotate:
		if r.err = l.flush(true, true); r.err == nil {
			r.err = l.rotate()
		}
		r.rotNumber, r.rotBase = l.w.num, l.w.written
	case reqSync:
		r.err = l.flush(true, true)
	case reqInstalled:
		l.w.base, l.w.snapRaw = r.number, r.raw
		total := r.raw
		for n, raw := range l.w.segRaw {
			if n < r.number {
				delete(l.w.segRaw, n)
			} else {
				total += raw
			}
		}
		l.stats.logBytes.Store(total)
		l.liveScale.Store(math.Float64bits(r.scale))
	case reqClose:
		r.err = l.flush(true, false)
		if err := l.w.f.Close(); r.err == nil && err != nil {
			r.err = l.fail(err)
		}
		return true
	}
	return false
}

// flush writes the pending records as one group, fsyncs it in SyncAlways
// mode (or when forced), then notifies the group's waiters (when notify),
// rotates a full segment and asks for a compaction when one is due.
func (l *Log) flush(forceSync, notify bool) error {
	l.mu.Lock()
	recs, first := l.pending, l.pendingLSN
	l.pending = l.w.recs[:0]
	ws := l.waiters
	l.waiters = l.w.waiters[:0]
	failed := l.failErr
	l.mu.Unlock()
	defer func() {
		clear(recs) // drop the references to message bodies at once
		l.w.recs = recs[:0]
		clear(ws)
		l.w.waiters = ws[:0]
	}()
	if failed != nil {
		return failed
	}
	if len(recs) > 0 {
		for i := range recs {
			l.w.enc.add(&recs[i])
		}
		l.w.enc.commit(first)
		raw := l.w.enc.takeRaw()
		out := l.w.enc.out
		if b := l.opts.Bodies; b != nil {
			// The group's records name bodies: those reach the file first,
			// so that a kill -9 after this write finds them (see Bodies).
			if err := b.Flush(); err != nil {
				return l.fail(fmt.Errorf("writing message bodies: %w", err))
			}
		}
		n, err := l.w.f.Write(out)
		l.w.size += int64(n)
		if cap(out) > 4*targetFrameRaw+(1<<20) {
			l.w.enc.out = nil // a burst made it big: let it go
		} else {
			l.w.enc.out = out[:0]
		}
		if err != nil {
			return l.fail(err)
		}
		l.w.written = first + uint64(len(recs)) - 1
		l.w.dirty = true
		l.w.unsynced += len(recs)
		l.w.segRaw[l.w.num] += raw
		l.stats.records.Add(uint64(len(recs)))
		l.stats.groups.Add(1)
		l.mx.batch.Observe(int64(len(recs)))
		l.stats.rawBytes.Add(uint64(raw))
		l.stats.diskBytes.Add(uint64(n))
		l.stats.logBytes.Add(raw)
	}
	if l.opts.Sync == SyncAlways || forceSync {
		if notify {
			l.w.groupWaiters = ws
		}
		err := l.sync()
		l.w.groupWaiters = nil
		if err != nil {
			l.w.notified = false
			return err
		}
	}
	notified := l.w.notified
	l.w.notified = false
	if notify && len(ws) > 0 && !notified {
		for _, n := range ws {
			if _, dup := l.w.seen[n]; dup {
				continue
			}
			l.w.seen[n] = struct{}{}
			n.NotifyDurable()
		}
		clear(l.w.seen)
	}
	if l.w.size >= l.opts.SegmentBytes {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	if l.attached.Load() && !l.compacting.Load() && l.compactDue() {
		select {
		case l.compactKick <- struct{}{}:
		default:
		}
	}
	return nil
}

// sync fsyncs the segment if it was written since the last fsync, then
// publishes the durable LSN. A failed fsync fails the log and Durable stays
// where it was.
func (l *Log) sync() error {
	if !l.w.dirty {
		return nil
	}
	l.mu.Lock()
	failed := l.failErr
	l.mu.Unlock()
	if failed != nil {
		return failed
	}
	start := time.Now()
	err := errNoDescriptor
	if a := l.async.Load(); a != nil && l.w.unsynced >= l.opts.AsyncMinRecords {
		if err = l.syncAsync(a); !errors.Is(err, errNoDescriptor) {
			l.stats.asyncSyncs.Add(1)
		}
	}
	if errors.Is(err, errNoDescriptor) {
		err = l.syncBlocking()
	}
	l.mx.fsync.Observe(int64(time.Since(start)))
	l.stats.syncs.Add(1)
	if err != nil {
		return l.fail(err)
	}
	l.w.dirty, l.w.unsynced = false, 0
	l.durable.Store(l.w.written)
	return nil
}

// syncBlocking fsyncs the segment, and the bodies beside it, in blocking
// system calls.
func (l *Log) syncBlocking() error {
	var bodies chan error
	if b := l.opts.Bodies; b != nil {
		// The bodies' fsync runs beside the log's, not before it: one
		// fsync's latency per group instead of two. Durable is published
		// once both are done, so every answered record names a durable body;
		// a power cut between them can leave a record nobody was answered
		// for without its body, which the engine drops as lost (see Bodies).
		bodies = make(chan error, 1)
		go func() { bodies <- b.Sync() }()
	}
	err := l.w.f.Sync()
	if bodies != nil {
		if berr := <-bodies; berr != nil && err == nil {
			err = fmt.Errorf("syncing message bodies: %w", berr)
		}
	}
	return err
}

// rotate fsyncs and closes the segment and starts the next one, whose first
// record will be LSN written+1.
func (l *Log) rotate() error {
	if err := l.sync(); err != nil {
		return err
	}
	if err := l.w.f.Close(); err != nil {
		return l.fail(err)
	}
	num := l.w.num + 1
	path := filepath.Join(l.dir, segmentName(num))
	if err := l.createSegment(num, l.w.written+1); err != nil {
		return l.fail(err)
	}
	f, err := l.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND, fileMode)
	if err != nil {
		return l.fail(err)
	}
	l.w.f, l.w.path, l.w.num, l.w.size = f, path, num, fileHeaderSize
	l.w.segRaw[num] = 0
	return nil
}

// compactDue reports whether the log has grown past twice the live state
// (and past the floor). The live state is the engine's LiveBytes estimate
// scaled by how the last snapshot's true size compared with it, so that an
// estimate that is off by a constant factor (large RSA keys, say) neither
// triggers compaction after compaction nor delays it.
func (l *Log) compactDue() bool {
	logBytes := l.stats.logBytes.Load()
	if logBytes < l.opts.CompactMinBytes {
		return false
	}
	scale := math.Float64frombits(l.liveScale.Load())
	if scale <= 0 {
		scale = 1
	}
	live := float64(l.snap.LiveBytes()) * scale
	return float64(logBytes) > 2*live
}
