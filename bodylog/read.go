package bodylog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/dgraph-io/ristretto/v2"

	"github.com/smprelay/smprelay/store"
)

// Read appends to dst the body of message id of queue rid, which Append
// stored at ref, and returns the extended slice. It looks in the append
// buffer and the tail of buffers kept after them (tailChunks: the bodies
// appended last), then in the cache, then in the file (two pread(2)s:
// header, then body), and checks the record: that it is the body of rid and
// id, and its checksum when it comes from the file.
// Errors wrap ErrMissing (zeros or end of file at ref: erased, or lost in a
// power cut before it was synced), ErrCorrupt (any other mismatch, with the
// file and offset) — both wrap store.ErrBodyLost: that body is gone for
// good — ErrRef or ErrClosed, or are I/O errors naming the file.
// Safe for concurrent use; it takes the segment list's read lock, the append
// lock (for the tail), and the cache's read lock when the tail does not hold
// the body.
// Never call it for a ref after Delete.
func (l *Log) Read(rid store.QueueID, id store.MsgID, ref store.BodyRef, dst []byte) ([]byte, error) {
	n, off, ok := checkRef(ref)
	if !ok {
		return dst, fmt.Errorf("%w: %#x", ErrRef, uint64(ref))
	}
	if l.isClosed.Load() {
		return dst, ErrClosed
	}
	s := l.segment(n)
	if s == nil {
		return dst, posErr(ErrCorrupt, joinPath(l.dir, segmentName(n)), off, "no such segment")
	}
	if s.bad != nil {
		return dst, s.bad
	}
	if out, done, err := l.readBuffered(s, off, rid, id, dst); done {
		if err == nil {
			l.stats.hits.Add(1)
		}
		return out, err
	}
	if out, ok := l.cacheGet(ref, rid, id, dst); ok {
		l.stats.hits.Add(1)
		return out, nil
	}
	l.stats.misses.Add(1)
	// The header is read into dst's spare room, not into h directly: a slice
	// handed to an interface method escapes, and h would be allocated.
	out := slices.Grow(dst, recordHeaderSize)
	var h [recordHeaderSize]byte
	if _, err := s.f.ReadAt(out[len(dst):len(dst)+recordHeaderSize], off); err != nil {
		if errors.Is(err, io.EOF) {
			return dst, posErr(ErrMissing, s.path, off, "past the end of the segment (%d bytes)", s.size.Load())
		}
		return dst, fmt.Errorf("bodylog: reading %s at offset %d: %w", s.path, off, err)
	}
	copy(h[:], out[len(dst):len(dst)+recordHeaderSize])
	size, err := recordSize(h[:])
	if err != nil {
		return dst, recordErr(s.path, off, err)
	}
	bn := size - recordHeaderSize
	out = slices.Grow(out[:len(dst)], bn)
	body := out[len(dst) : len(dst)+bn]
	if _, err := s.f.ReadAt(body, off+recordHeaderSize); err != nil {
		if errors.Is(err, io.EOF) {
			return dst, posErr(ErrMissing, s.path, off, "record of %d bytes cut short by the end of the segment", size)
		}
		return dst, fmt.Errorf("bodylog: reading %s at offset %d: %w", s.path, off, err)
	}
	if recordCRC(h[:], body) != binary.LittleEndian.Uint32(h[4:]) {
		return dst, recordErr(s.path, off, errCRC)
	}
	if err := checkIDs(&h, &rid, &id); err != nil {
		return dst, recordErr(s.path, off, err)
	}
	if l.hasCache() {
		l.cacheSet(ref, rid, id, bytes.Clone(body))
	}
	return out[:len(dst)+bn], nil
}

// readBuffered reads a record from the append buffer or the tail; done is
// false when neither holds offset off of s (read the file). A record found
// there is checked by its size word and IDs, not its checksum: memory is not
// where corruption comes from, and a wrong ref names other IDs.
func (l *Log) readBuffered(s *segment, off int64, rid store.QueueID, id store.MsgID, dst []byte) (out []byte, done bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.memLocked(s, off)
	if !ok {
		return dst, false, nil
	}
	if len(b) == 0 {
		return dst, true, posErr(ErrMissing, s.path, off, "past the end of the segment (%d bytes)", s.size.Load())
	}
	body, err := memRecord(b, &rid, &id)
	if err != nil {
		return dst, true, recordErr(s.path, off, err)
	}
	return append(dst, body...), true, nil
}

// memLocked returns the bytes from offset off of s to the end of the append
// buffer or tail chunk that holds off, and whether one does; an offset at or
// past the end of what was appended gives an empty slice. Called with mu.
func (l *Log) memLocked(s *segment, off int64) ([]byte, bool) {
	if s == l.cur && off >= l.bufOff && (l.keepTail || off >= l.bufOff+int64(l.bufDone)) {
		if off >= l.bufOff+int64(len(l.buf)) {
			return nil, true
		}
		return l.buf[off-l.bufOff:], true
	}
	for i := len(l.tail) - 1; i >= 0; i-- {
		if c := &l.tail[i]; c.seg == s && off >= c.off && off < c.off+int64(len(c.b)) {
			return c.b[off-c.off:], true
		}
	}
	return nil, false
}

// memRecord returns the body of the record at the start of b, checking its
// size word and that it is message id of queue rid.
func memRecord(b []byte, rid *store.QueueID, id *store.MsgID) ([]byte, error) {
	if len(b) < recordHeaderSize {
		return nil, errShort
	}
	size, err := recordSize(b)
	if err != nil {
		return nil, err
	}
	if len(b) < size {
		return nil, errShort
	}
	if err := checkIDs((*[recordHeaderSize]byte)(b), rid, id); err != nil {
		return nil, err
	}
	return b[recordHeaderSize:size], nil
}

// errOther: the record at a ref is another message's.
var errOther = errors.New("the record is another message's")

// checkIDs checks that the header h is that of message id of queue rid.
func checkIDs(h *[recordHeaderSize]byte, rid *store.QueueID, id *store.MsgID) error {
	if !bytes.Equal(h[8:24], rid[:]) || !bytes.Equal(h[24:32], id[:]) {
		return errOther
	}
	return nil
}

// recordErr maps a decoding failure at off to ErrMissing (zeros) or
// ErrCorrupt.
func recordErr(path string, off int64, err error) error {
	if errors.Is(err, errGap) {
		return posErr(ErrMissing, path, off, "%v", err)
	}
	return posErr(ErrCorrupt, path, off, "%v", err)
}

// SetCacheBytes changes the cache's bound while the log runs (the
// --cache-size reload): ristretto evicts down to a smaller bound as entries
// come and go. 0 drops the cache; a positive bound on a log without one makes
// a new cache. Safe for concurrent use with everything; it waits for cache
// operations in progress when it drops or replaces the cache.
func (l *Log) SetCacheBytes(n int64) error {
	l.mu.Lock()
	closed := l.closed
	l.mu.Unlock()
	if closed {
		return ErrClosed
	}
	l.setKeepTail(n > 0)
	if n <= 0 {
		l.setCache(nil)
		return nil
	}
	l.cacheMu.RLock()
	c := l.cache
	if c != nil {
		c.UpdateMaxCost(n)
	}
	l.cacheMu.RUnlock()
	if c != nil {
		return nil
	}
	c, err := newCache(n)
	if err != nil {
		return err
	}
	l.setCache(c)
	return nil
}

// setKeepTail turns the tail of append buffers on or off; off drops it.
func (l *Log) setKeepTail(on bool) {
	l.mu.Lock()
	l.keepTail = on
	if !on {
		for _, c := range l.tail {
			clear(c.b[:cap(c.b)]) // garbage holding bodies that may be deleted later (SPEC §8)
		}
		clear(l.tail)
		l.tail = nil
	}
	l.mu.Unlock()
}

// setCache replaces the cache with c (nil: none) and closes the old one once
// no Get or Set is using it.
func (l *Log) setCache(c *bodyCache) {
	l.cacheMu.Lock()
	old := l.cache
	l.cache = c
	l.cacheMu.Unlock()
	if old != nil && old != c {
		old.Close() // nobody can reach it any more
	}
}

// cacheGet appends the cached body of ref to dst, if the cache has it for
// rid and id.
func (l *Log) cacheGet(ref store.BodyRef, rid store.QueueID, id store.MsgID, dst []byte) ([]byte, bool) {
	l.cacheMu.RLock()
	defer l.cacheMu.RUnlock()
	if l.cache == nil {
		return dst, false
	}
	v, ok := l.cache.Get(uint64(ref))
	if !ok || v.rid != rid || v.id != id {
		return dst, false
	}
	return append(dst, v.body...), true
}

// cacheSet offers body to the cache, at a cost of its length (ristretto
// adds its own per-entry cost).
func (l *Log) cacheSet(ref store.BodyRef, rid store.QueueID, id store.MsgID, body []byte) {
	l.cacheMu.RLock()
	if l.cache != nil {
		l.cache.Set(uint64(ref), cached{rid: rid, id: id, body: body}, int64(len(body)))
	}
	l.cacheMu.RUnlock()
}

// hasCache reports whether there is a cache (so a Read copies the body for it).
func (l *Log) hasCache() bool {
	l.cacheMu.RLock()
	defer l.cacheMu.RUnlock()
	return l.cache != nil
}

// cacheWait waits until the Sets made so far are applied (ristretto applies
// them asynchronously); for tests.
func (l *Log) cacheWait() {
	l.cacheMu.RLock()
	defer l.cacheMu.RUnlock()
	if l.cache != nil {
		l.cache.Wait()
	}
}

// newCache makes a cache of bound maxCost bytes. Ristretto wants ten
// counters per entry it may hold; entries are sized for 4 KiB bodies, at
// least 64 MiB worth, so a bound raised later keeps reasonable admission.
func newCache(maxCost int64) (*bodyCache, error) {
	c, err := ristretto.NewCache(&ristretto.Config[uint64, cached]{
		NumCounters: max(maxCost, 64<<20) / 4096 * 10,
		MaxCost:     maxCost,
		BufferItems: 64,
		KeyToHash:   refHash,
	})
	if err != nil {
		return nil, fmt.Errorf("bodylog: making the cache: %w", err)
	}
	return c, nil
}

// refHash spreads refs (whose low bits are offsets, multiples of 8) over
// ristretto's shards and counters; the ref itself is the conflict key, so two
// refs never share an entry.
func refHash(ref uint64) (uint64, uint64) {
	z := ref + 0x9e3779b97f4a7c15 // splitmix64's finaliser
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31, ref
}
