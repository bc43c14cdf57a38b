package wal

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// progress logs how a long replay advances, at most once per progressEvery.
type progress struct {
	log     *slog.Logger
	total   int64     // bytes of all files to replay
	done    int64     // bytes replayed so far
	records int64     // records applied so far
	start   time.Time // when replay began
	last    time.Time // when progress was last logged
}

// progressEvery is how often a replay logs its progress; tests lower it.
var progressEvery = time.Second

func (p *progress) advance(bytes int64, records int) {
	p.done += bytes
	p.records += int64(records)
	if now := time.Now(); now.Sub(p.last) >= progressEvery {
		p.last = now
		pct := 100.0
		if p.total > 0 {
			pct = float64(p.done) * 100 / float64(p.total)
		}
		p.log.Info("wal: replaying the log", "percent", fmt.Sprintf("%.1f", pct), "records", p.records,
			"records-per-sec", int64(float64(p.records)/now.Sub(p.start).Seconds()))
	}
}

// Load implements store.Store: it replays the newest snapshot and the
// segments after it, cuts off a torn tail of the last segment, and starts the
// writer, appending to that segment. It runs once.
func (l *Log) Load(apply func(r *store.Record) error) error {
	l.mu.Lock()
	state := l.state
	l.mu.Unlock()
	if state != stateOpen {
		return errors.New("wal: Load called twice or after Close")
	}
	plan, err := l.planReplay()
	if err != nil {
		return err
	}
	last, err := l.replay(plan, func(r *store.Record) error {
		if err := l.replayBody(r); err != nil {
			return err
		}
		return apply(r)
	})
	if err != nil {
		return err
	}
	if n := l.migrated.Load(); n > 0 {
		l.log.Info("wal: message bodies moved from the log to the body store; the start-up compaction drops them from the log",
			"bodies", n)
	}
	return l.startWriter(plan, last)
}

// replayPlan is what Load replays, in order: the base snapshot, if any, then
// segments base (or 1), base+1, ….
type replayPlan struct {
	base     uint64   // number of the base snapshot, 0 if none
	segs     []uint64 // segments to replay, ascending, without a gap
	unsynced bool     // the UNSYNCED marker is there (see repairTail)
	bytes    int64    // size of all the files, for progress
}

// files names the plan's files in replay order.
func (pl replayPlan) files() []string {
	files := make([]string, 0, len(pl.segs)+1)
	if pl.base != 0 {
		files = append(files, snapshotName(pl.base))
	}
	for _, s := range pl.segs {
		files = append(files, segmentName(s))
	}
	return files
}

// planReplay lists the directory, deletes leftover temporary files and
// decides what to replay.
func (l *Log) planReplay() (replayPlan, error) {
	ls, err := listDir(l.fs, l.dir)
	if err != nil {
		return replayPlan{}, fmt.Errorf("wal: listing %s: %w", l.dir, err)
	}
	if err := l.removeFiles(ls.tmps); err != nil { // an interrupted rotation or compaction
		return replayPlan{}, fmt.Errorf("wal: removing leftover temporary files: %w", err)
	}
	plan, err := chooseFiles(l.dir, ls)
	if err != nil {
		return plan, err
	}
	for _, name := range plan.files() {
		if fi, err := l.fs.Stat(filepath.Join(l.dir, name)); err == nil {
			plan.bytes += fi.Size()
		}
	}
	return plan, nil
}

// chooseFiles picks the newest snapshot and the segments from its number on
// (files below it are obsolete), and checks that they form an unbroken run.
func chooseFiles(dir string, ls dirListing) (replayPlan, error) {
	plan := replayPlan{unsynced: ls.unsynced}
	if len(ls.snapshots) > 0 {
		plan.base = ls.snapshots[len(ls.snapshots)-1]
	}
	for _, s := range ls.segments {
		if s >= plan.base {
			plan.segs = append(plan.segs, s)
		}
	}
	segs := plan.segs
	switch {
	case plan.base != 0 && (len(segs) == 0 || segs[0] != plan.base):
		return plan, corruptAt(filepath.Join(dir, snapshotName(plan.base)), 0, "segment %s, which must follow the snapshot, is missing", segmentName(plan.base))
	case plan.base == 0 && len(segs) > 0 && segs[0] != 1:
		return plan, corruptAt(filepath.Join(dir, segmentName(segs[0])), 0, "the log starts at segment %d but there is no snapshot", segs[0])
	}
	for i := 1; i < len(segs); i++ {
		if segs[i] != segs[i-1]+1 {
			return plan, corruptAt(filepath.Join(dir, segmentName(segs[i])), 0, "segment %s is missing", segmentName(segs[i-1]+1))
		}
	}
	return plan, nil
}

// replay applies the plan's snapshot and segments, repairing a torn tail of
// the last segment, and fills in the writer's accounting of the files. It
// returns the LSN of the last record replayed.
func (l *Log) replay(plan replayPlan, apply func(r *store.Record) error) (uint64, error) {
	p := &progress{log: l.log, total: plan.bytes, start: time.Now()}
	p.last = p.start
	ap := newApplier(apply)
	defer ap.finish() // on the error paths; the normal path finishes it below
	l.w.segRaw = make(map[uint64]int64)
	l.w.seen = make(map[store.Notifier]struct{})
	l.w.base = plan.base
	var last uint64 // LSN of the last record replayed
	if plan.base != 0 {
		lsn, raw, err := l.replaySnapshot(filepath.Join(l.dir, snapshotName(plan.base)), plan.base, ap, p)
		if err != nil {
			return 0, ap.cause(err)
		}
		last, l.w.snapRaw = lsn, raw
	}
	for i, s := range plan.segs {
		path := filepath.Join(l.dir, segmentName(s))
		res, err := l.replaySegment(path, s, last+1, ap, p)
		if err != nil {
			return 0, ap.cause(err)
		}
		if d := res.damage; d != nil {
			if i < len(plan.segs)-1 {
				return 0, corruptAt(path, d.off, "%v (not the last segment, so not a torn write)", d.cause)
			}
			if err := l.repairTail(path, plan.unsynced, &res); err != nil {
				return 0, err
			}
		}
		last = res.last
		l.w.segRaw[s] = res.raw
		l.w.size = res.size
	}
	if err := ap.finish(); err != nil {
		return 0, err
	}
	if nfiles := len(plan.files()); p.records > 0 || nfiles > 0 {
		took := time.Since(p.start)
		l.log.Info("wal: log replayed", "records", p.records, "bytes", p.total, "files", nfiles,
			"took", took.Round(time.Millisecond), "records-per-sec", int64(float64(p.records)/max(took.Seconds(), 1e-9)))
	}
	return last, nil
}

// startWriter creates the first segment of an empty log, sets the UNSYNCED
// marker for this run's fsync mode, opens the last segment for appending and
// starts the writer goroutine, whose next record is LSN last+1.
func (l *Log) startWriter(plan replayPlan, last uint64) error {
	num := max(plan.base, 1)
	if len(plan.segs) == 0 {
		if err := l.createSegment(num, last+1); err != nil {
			return fmt.Errorf("wal: creating the first segment: %w", err)
		}
		l.w.segRaw[num] = 0
		l.w.size = fileHeaderSize
	} else {
		num = plan.segs[len(plan.segs)-1]
	}
	if err := l.setUnsynced(plan.unsynced); err != nil {
		return err
	}
	path := filepath.Join(l.dir, segmentName(num))
	f, err := l.fs.OpenFile(path, os.O_WRONLY|os.O_APPEND, fileMode)
	if err != nil {
		return fmt.Errorf("wal: opening %s: %w", path, err)
	}
	l.w.f, l.w.path, l.w.num, l.w.written = f, path, num, last
	l.w.enc.comp = l.opts.Compression.frameComp()
	total := l.w.snapRaw
	for _, raw := range l.w.segRaw {
		total += raw
	}
	l.stats.logBytes.Store(total)
	l.durable.Store(last)

	l.mu.Lock()
	l.nextLSN = last + 1
	l.state = stateLoaded
	l.mu.Unlock()
	go l.run()
	return nil
}

// setUnsynced makes the UNSYNCED marker present exactly when this run may
// leave more than one group un-fsynced (fsync modes interval and never),
// durably, before the writer writes anything. present says whether it is
// there now. In mode always it goes only here, after the tail that a run in
// another mode left has been repaired and fsynced.
func (l *Log) setUnsynced(present bool) error {
	want := l.opts.Sync != SyncAlways
	switch {
	case want && !present:
		f, err := l.fs.OpenFile(filepath.Join(l.dir, unsyncedName), os.O_WRONLY|os.O_CREATE, fileMode)
		if err == nil {
			err = f.Close()
		}
		if err == nil {
			err = l.fs.SyncDir(l.dir)
		}
		if err != nil {
			return fmt.Errorf("wal: creating %s: %w", unsyncedName, err)
		}
	case !want && present:
		if err := l.removeFiles([]string{unsyncedName}); err != nil {
			return fmt.Errorf("wal: removing %s: %w", unsyncedName, err)
		}
	}
	return nil
}

// replaySnapshot applies every record of the snapshot file at path and
// returns its base LSN and record bytes. A snapshot was fsynced before it got
// its name, so any defect is corruption.
func (l *Log) replaySnapshot(path string, num uint64, ap *applier, p *progress) (uint64, int64, error) {
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, 0, fmt.Errorf("wal: %w", err)
	}
	defer f.Close()
	var hb [fileHeaderSize]byte
	if _, err := io.ReadFull(f, hb[:]); err != nil {
		return 0, 0, corruptAt(path, 0, "file header: %v", err)
	}
	h, err := parseFileHeader(hb[:])
	if err != nil {
		return 0, 0, corruptAt(path, 0, "%v", err)
	}
	if h.kind != kindSnapshot || h.number != num {
		return 0, 0, corruptAt(path, 0, "header says kind %d number %d, want a snapshot numbered %d", h.kind, h.number, num)
	}
	baseLSN := h.lsn
	p.advance(fileHeaderSize, 0)
	var size int64 = 1 << 20
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	fr := newFrameReader(f, fileHeaderSize, size)
	defer fr.close()
	var raw []byte
	records, frames := 0, 0
	var rawBytes int64
	for {
		off := fr.off
		h, payload, err := fr.next()
		if err == io.EOF {
			return 0, 0, corruptAt(path, off, "snapshot ends without its commit frame")
		}
		if err != nil {
			return 0, 0, corruptAt(path, off, "%v", err)
		}
		if h.typ == frameCommit {
			c := parseCommit(payload)
			if c.count != records || c.frames != frames || c.firstLSN != 0 {
				return 0, 0, corruptAt(path, off, "commit frame says %d records in %d frames, the snapshot holds %d in %d",
					c.count, c.frames, records, frames)
			}
			if _, _, err := fr.next(); err != io.EOF {
				return 0, 0, corruptAt(path, fr.off, "data after the snapshot's commit frame")
			}
			p.advance(frameHeaderSize+commitSize, 0)
			return baseLSN, rawBytes, nil
		}
		if raw, err = fr.decompress(h, payload, raw); err != nil {
			return 0, 0, corruptAt(path, off, "%v", err)
		}
		recs, err := decodeFrame(raw)
		if err != nil {
			return 0, 0, corruptAt(path, off, "%v", err)
		}
		if err := ap.send(applyBatch{recs: recs, path: path, off: off}); err != nil {
			return 0, 0, err
		}
		n := len(recs)
		records += n
		frames++
		rawBytes += int64(len(raw))
		p.advance(int64(frameHeaderSize+h.length), n)
	}
}

// applier applies decoded records on a goroutine of its own, in the order
// they are sent, so that decoding (decompression, key parsing, body copies)
// and the engine's apply use two cores. The goroutine running Load sends;
// err is read after done is closed.
type applier struct {
	apply  func(*store.Record) error
	ch     chan applyBatch
	done   chan struct{}
	closed bool        // ch is closed; owned by the sender
	failed atomic.Bool // an apply failed: the sender stops
	err    error       // the first apply error, placed in its file
}

// applyBatch is the records of one frame.
type applyBatch struct {
	recs []store.Record
	path string // file and offset of the frame, for an error
	off  int64
}

// errApplyFailed tells the sender that the applier stopped; applier.cause
// replaces it by the real error.
var errApplyFailed = errors.New("wal: replay stopped")

func newApplier(apply func(*store.Record) error) *applier {
	a := &applier{apply: apply, ch: make(chan applyBatch, 8), done: make(chan struct{})}
	go func() {
		defer close(a.done)
		for b := range a.ch {
			if a.err != nil {
				continue
			}
			for i := range b.recs {
				if err := a.apply(&b.recs[i]); err != nil {
					a.err = fmt.Errorf("wal: replaying %s at offset %d: %w", b.path, b.off, err)
					a.failed.Store(true)
					break
				}
			}
		}
	}()
	return a
}

// send hands a frame's records to the applier.
func (a *applier) send(b applyBatch) error {
	if a.failed.Load() {
		return errApplyFailed
	}
	a.ch <- b
	return nil
}

// finish waits until everything sent is applied and returns the first apply
// error. Later calls return the same.
func (a *applier) finish() error {
	if !a.closed {
		a.closed = true
		close(a.ch)
	}
	<-a.done
	return a.err
}

// cause returns the apply error behind errApplyFailed, or err.
func (a *applier) cause(err error) error {
	if errors.Is(err, errApplyFailed) {
		return a.finish()
	}
	return err
}

// decodeFrame decodes the records of one batch payload, keys parsed and
// bodies copied out of raw.
func decodeFrame(raw []byte) ([]store.Record, error) {
	recs := make([]store.Record, 0, 64)
	var v recordView
	for len(raw) > 0 {
		size, err := decodeRecord(raw, &v)
		if err != nil {
			return nil, err
		}
		recs = append(recs, store.Record{})
		if err := v.toRecord(&recs[len(recs)-1]); err != nil {
			return nil, err
		}
		raw = raw[size:]
	}
	return recs, nil
}

// segmentResult is what replaying a segment found.
type segmentResult struct {
	last   uint64      // LSN of its last record (or the one before it, if it has none)
	raw    int64       // record bytes it holds
	size   int64       // its size after any truncation
	damage *tailDamage // where replay stopped short of the end, if it did
}

// tailDamage is a frame that could not be read, with what replay knew there.
type tailDamage struct {
	off     int64  // offset of the frame
	cause   error  // why it could not be read
	groupAt int64  // end of the last whole group before it, where a repair cuts
	next    uint64 // LSN the group at groupAt starts with
	size    int64  // the file's size
}

// replaySegment applies the whole groups of the segment file at path, whose
// first record must be LSN first. At a frame that is short, fails its
// checksum or does not parse it stops and reports the damage: the caller
// decides whether it is a torn tail. Anything else wrong is corruption.
func (l *Log) replaySegment(path string, num, first uint64, ap *applier, p *progress) (segmentResult, error) {
	res := segmentResult{last: first - 1}
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return res, fmt.Errorf("wal: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return res, fmt.Errorf("wal: %w", err)
	}
	var hb [fileHeaderSize]byte
	if _, err := io.ReadFull(f, hb[:]); err != nil {
		return res, corruptAt(path, 0, "file header: %v", err)
	}
	h, err := parseFileHeader(hb[:])
	if err != nil {
		return res, corruptAt(path, 0, "%v", err)
	}
	if h.kind != kindSegment || h.number != num {
		return res, corruptAt(path, 0, "header says kind %d number %d, want a segment numbered %d", h.kind, h.number, num)
	}
	if h.lsn != first {
		return res, corruptAt(path, 0, "segment starts at LSN %d, want %d (records are missing)", h.lsn, first)
	}
	p.advance(fileHeaderSize, 0)

	fr := newFrameReader(f, fileHeaderSize, fi.Size())
	defer fr.close()
	var (
		group     []byte  // decompressed payloads of the group's batch frames, back to back
		frameEnds []int   // where each of them ends in group
		frameOffs []int64 // file offset of each
		groupAt   = fr.off
		batches   []applyBatch
		scratch   []byte
	)
	next := first
	for {
		off := fr.off
		fh, payload, err := fr.next()
		if err == io.EOF {
			if len(frameEnds) == 0 {
				res.size = off
				return res, nil
			}
			err = errors.New("group without its commit frame")
		}
		var ioe ioError
		if errors.As(err, &ioe) {
			return res, fmt.Errorf("wal: reading %s at offset %d: %w", path, off, ioe.err)
		}
		if err != nil {
			res.damage = &tailDamage{off: off, cause: err, groupAt: groupAt, next: next, size: fi.Size()}
			return res, nil
		}
		if fh.typ == frameBatch {
			if scratch, err = fr.decompress(fh, payload, scratch); err != nil {
				return res, corruptAt(path, off, "%v", err)
			}
			group = append(group, scratch...)
			frameEnds = append(frameEnds, len(group))
			frameOffs = append(frameOffs, off)
			continue
		}
		c := parseCommit(payload)
		if c.firstLSN != next {
			return res, corruptAt(path, off, "group starts at LSN %d, want %d", c.firstLSN, next)
		}
		if c.frames != len(frameEnds) {
			return res, corruptAt(path, off, "commit frame says %d batch frames, the group has %d", c.frames, len(frameEnds))
		}
		applied, from := 0, 0
		batches = batches[:0]
		for i, end := range frameEnds {
			recs, err := decodeFrame(group[from:end])
			if err != nil {
				return res, corruptAt(path, frameOffs[i], "%v", err)
			}
			batches = append(batches, applyBatch{recs: recs, path: path, off: frameOffs[i]})
			applied += len(recs)
			from = end
		}
		if applied != c.count {
			return res, corruptAt(path, off, "commit frame says %d records, the group holds %d", c.count, applied)
		}
		for _, b := range batches { // the group is whole: apply it
			if err := ap.send(b); err != nil {
				return res, err
			}
		}
		next += uint64(applied)
		res.last = next - 1
		res.raw += int64(len(group))
		p.advance(fr.off-groupAt, applied)
		group, frameEnds, frameOffs = group[:0], frameEnds[:0], frameOffs[:0]
		groupAt = fr.off
	}
}

// repairTail handles the damage replay met in the last segment at path:
// unless the bytes after it prove that it lies in fsynced data, it is a torn
// tail, and the segment is cut at the end of the last whole group before it.
//
// In fsync mode always each group is fsynced before the next is written, so
// only the last group can be torn, and its pages may have reached the disk
// in any order: a later page without the first, say. A complete group after
// the damage (valid batch frames, then a commit frame whose frame count,
// record count and LSN match them) is proof that the damaged group had been
// fsynced: corruption. A stray valid frame is not. While the UNSYNCED marker
// is there (a run in mode interval or never wrote the tail), several groups
// may have been written since the last fsync and any of them may be torn,
// so nothing proves anything: the tail is cut, whole groups after the
// damage included, and the log says so.
func (l *Log) repairTail(path string, unsynced bool, res *segmentResult) error {
	d := res.damage
	at, found, err := l.findCompleteGroup(path, d.off+1, d.size, d.next)
	if err != nil {
		return fmt.Errorf("wal: reading %s after offset %d: %w", path, d.off, err)
	}
	if found && !unsynced {
		return corruptAt(path, d.off, "%v, yet a valid frame follows at offset %d and starts a complete group, so the damaged bytes had been fsynced",
			d.cause, at)
	}
	if err := truncateFile(l.fs, path, d.groupAt); err != nil {
		return fmt.Errorf("wal: cutting off the torn tail of %s: %w", path, err)
	}
	attrs := []any{"segment", filepath.Base(path), "offset", d.groupAt, "bytes-dropped", d.size - d.groupAt, "cause", d.cause.Error()}
	if found {
		attrs = append(attrs, "complete-group-dropped-at", at)
	}
	l.log.Warn("wal: torn tail cut off the log (a write the crash interrupted; in fsync mode always no reply was sent for it, "+
		"in modes interval and never whole groups written after the last fsync may go with it)", attrs...)
	res.size = d.groupAt
	res.damage = nil
	return nil
}

// findCompleteGroup looks for a complete group starting anywhere in [from,
// size) of the file at path: one or more valid batch frames back to back,
// then a commit frame that counts exactly those frames and their records and
// whose first LSN is at least minLSN.
func (l *Log) findCompleteGroup(path string, from, size int64, minLSN uint64) (int64, bool, error) {
	if from >= size {
		return 0, false, nil
	}
	f, err := l.fs.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return 0, false, err
	}
	defer f.Close()
	rest := make([]byte, size-from)
	if _, err := f.ReadAt(rest, from); err != nil && err != io.EOF {
		return 0, false, err
	}
	s := groupScanner{b: rest, records: map[int]int{}}
	defer s.dec.close()
	for i := 0; i+frameHeaderSize <= len(rest); i++ {
		if s.completeGroupAt(i, minLSN) {
			return from + int64(i), true, nil
		}
	}
	return 0, false, nil
}

// groupScanner tells whether a complete group starts at an offset of b. It
// remembers the record count of each batch frame it decoded (-1: does not
// decode), so that a group of n frames costs n decompressions however many
// of its frames a scan starts from.
type groupScanner struct {
	b       []byte
	records map[int]int // offset of a batch frame in b: its records, or -1
	dec     frameReader // for decompress only
	raw     []byte
}

func (s *groupScanner) completeGroupAt(off int, minLSN uint64) bool {
	frames, records := 0, 0
	for off < len(s.b) && validFrameAt(s.b[off:]) {
		h, _ := parseFrameHeader(s.b[off:])
		payload := s.b[off+frameHeaderSize : off+frameHeaderSize+h.length]
		if h.typ == frameCommit {
			c := parseCommit(payload)
			return frames > 0 && c.frames == frames && c.count == records && c.firstLSN >= minLSN
		}
		n := s.frameRecords(off, h, payload)
		if n < 0 {
			return false
		}
		frames++
		records += n
		off += frameHeaderSize + h.length
	}
	return false
}

// frameRecords returns the number of records of the valid batch frame at
// off, or -1 if its payload does not decode.
func (s *groupScanner) frameRecords(off int, h frameHeader, payload []byte) int {
	if n, ok := s.records[off]; ok {
		return n
	}
	n := -1
	raw, err := s.dec.decompress(h, payload, s.raw)
	if err == nil {
		s.raw = raw
		n = 0
		var v recordView
		for len(raw) > 0 {
			size, err := decodeRecord(raw, &v)
			if err != nil {
				n = -1
				break
			}
			raw = raw[size:]
			n++
		}
	}
	s.records[off] = n
	return n
}

// truncateFile cuts path to size bytes and fsyncs it.
func truncateFile(fsys vfs.FS, path string, size int64) error {
	f, err := fsys.OpenFile(path, os.O_WRONLY, fileMode)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
