package bodylog

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/smprelay/smprelay/store"
)

// RetainStats says what Retain did.
type RetainStats struct {
	Segments   int   // segments older than this Open
	Removed    int   // of them, deleted: no live ref in them
	Vouched    int   // of them, left as they were: the summary of a clean Close matched the live refs
	Swept      int   // of them, whose dead space was erased (or truncated) between the live records
	Erased     int64 // bytes erased or cut off by sweeping (holes punched again included)
	Unreadable int   // live refs without a valid record header: in a missing or bad segment, zeros, garbage
}

// Retain tells the log which of the bodies stored before this Open are live:
// live holds the ref of every message the owner's metadata still has (refs
// into segments made since Open are ignored). Every other record in the
// older segments is dead, and so is anything a crash left half-written. Retain
// deletes the segments with no live ref, and those whose header is bad (no
// ref into them can be read); in the others it erases the space
// between live records and cuts what follows the last one — unless a clean
// Close left a summary whose count for the segment matches, in which case
// there is nothing to erase and nothing is read (no record is ever added to
// a segment after its Open, so equal counts mean equal sets). Otherwise it reads each live
// record's 8-byte size word (one page per live record), never a body.
//
// The owner calls it once after loading its metadata and before any Delete;
// a ref missing from live is erased for good. It sorts live in place. Safe
// for concurrent use with Append, Read and Sync; Deletes wait for it.
func (l *Log) Retain(live []store.BodyRef) (RetainStats, error) {
	l.eraseMu.Lock()
	defer l.eraseMu.Unlock()
	var st RetainStats
	l.mu.Lock()
	err := l.usableLocked()
	l.mu.Unlock()
	if err != nil {
		return st, err
	}
	slices.Sort(live)
	live = slices.Compact(live)

	var old []*segment
	l.segMu.RLock()
	for n, s := range l.segs {
		if n < l.firstNew {
			old = append(old, s)
		}
	}
	l.segMu.RUnlock()
	slices.SortFunc(old, func(a, b *segment) int { return cmp.Compare(a.num, b.num) })
	st.Segments = len(old)

	removed := false
	for _, s := range old {
		for len(live) > 0 && uint64(live[0])>>32 < s.num {
			st.Unreadable++ // a segment that is not there
			live = live[1:]
		}
		k := 0
		for k < len(live) && uint64(live[k])>>32 == s.num {
			k++
		}
		refs := live[:k]
		live = live[k:]
		switch sum, ok := l.summary[s.num]; {
		case len(refs) == 0 || s.bad != nil:
			// A segment whose header is bad serves no ref (Read reports
			// each as lost), and whatever a power cut left of bodies in it
			// must not stay on disk (SPEC §8): it goes, live refs or not.
			if s.bad != nil && len(refs) > 0 {
				st.Unreadable += len(refs)
				l.log.Warn("bodylog: removing a segment whose header is bad; the bodies its live refs name are lost",
					"file", s.path, "live", len(refs), "err", s.bad)
			}
			if err := l.removeSegment(s); err != nil {
				return st, err
			}
			removed = true
			st.Removed++
		case ok && sum.records == int64(len(refs)):
			s.liveRecs.Store(sum.records)
			s.liveBytes.Store(sum.bytes)
			s.counted.Store(true)
			st.Vouched++
		default:
			if err := l.sweepSegment(s, refs, &st); err != nil {
				return st, err
			}
			st.Swept++
		}
	}
	for _, ref := range live {
		if uint64(ref)>>32 < l.firstNew {
			st.Unreadable++
		}
	}
	l.summary = nil
	if removed {
		if err := l.fs.SyncDir(l.dir); err != nil {
			return st, l.fail(failAt(l.dir, 0, "fsync of the directory after removing segments", err))
		}
	}
	if st.Unreadable > 0 {
		l.log.Warn("bodylog: live refs without a readable record; reading them will fail", "count", st.Unreadable)
	}
	l.log.Info("bodylog: retained the live bodies", "segments", st.Segments, "removed", st.Removed,
		"vouched", st.Vouched, "swept", st.Swept, "erased-bytes", st.Erased)
	return st, nil
}

// sweepSegment erases everything in s that is not a live record: the ranges
// between live records, and what follows the last one (cut off). A live ref
// whose size word does not give a record inside the file (zeros, the size
// word a power cut left, a record cut by the end of the file) names a body
// Read can never return: it is not counted, and its bytes are dead space
// like those around it, erased with them. Called with eraseMu held.
func (l *Log) sweepSegment(s *segment, refs []store.BodyRef, st *RetainStats) error {
	size := s.size.Load()
	prevEnd := int64(segmentHeaderSize) // end of the last live record
	wrote := false
	var recs, bytes int64
	var h [8]byte
	for _, ref := range refs {
		_, off, ok := checkRef(ref)
		if !ok || off < prevEnd {
			st.Unreadable++ // inside the previous live record: not a ref this log gave
			continue
		}
		rsize := 0
		if off+8 <= size {
			if _, err := s.f.ReadAt(h[:], off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("bodylog: reading %s at offset %d: %w", s.path, off, err)
			}
			if n, err := recordSize(h[:]); err == nil && off+align(int64(n)) <= size {
				rsize = n
			}
		}
		if rsize == 0 {
			st.Unreadable++
			continue
		}
		if off > prevEnd {
			if err := l.eraseRange(s, prevEnd, off, true); err != nil {
				return err
			}
			st.Erased += off - prevEnd
			wrote = true
		}
		ext := align(int64(rsize))
		recs++
		bytes += ext
		prevEnd = off + ext
	}
	if prevEnd < size {
		if err := s.f.Truncate(prevEnd); err != nil {
			return l.fail(failAt(s.path, prevEnd, "truncating after the last live record", err))
		}
		st.Erased += size - prevEnd
		l.stats.erasedBytes.Add(uint64(size - prevEnd))
		s.size.Store(prevEnd)
		s.flushed.Store(prevEnd)
		wrote = true
	}
	if wrote {
		if err := s.f.Sync(); err != nil {
			return l.fail(failAt(s.path, 0, "fsync after sweeping", err))
		}
		l.stats.syncs.Add(1)
	}
	s.liveRecs.Store(recs)
	s.liveBytes.Store(bytes)
	s.swept.Store(true)
	s.counted.Store(true)
	return nil
}
