package bodylog

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
)

// TestCache: appended bodies are read from the tail of append buffers, and
// bodies pushed out of it from the file once, then from the cache; a hit is
// checked against the IDs like a disk read; the bound changes live; Delete
// drops a body from the cache and the tail at once.
func TestCache(t *testing.T) {
	l := openT(t, t.TempDir(), Options{CacheBytes: 1 << 20})
	defer l.Close()
	r := rand.New(rand.NewPCG(12, 12))
	a := newMsg(r, 7168)
	appendT(t, l, a)
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	hits := func() (uint64, uint64) { st := l.Stats(); return st.CacheHits, st.CacheMisses }
	// pushOut appends enough to move every earlier body out of the tail.
	pushOut := func() {
		t.Helper()
		for range tailChunks * writeBufferSize / 7200 {
			appendT(t, l, newMsg(r, 7168))
		}
	}

	readT(t, l, a)
	if h, m := hits(); h != 1 || m != 0 {
		t.Fatalf("read after Append (the tail): %d hits, %d misses", h, m)
	}
	id := a.id
	id[0] ^= 1
	if _, err := l.Read(a.rid, id, a.ref, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("body in the tail read with another ID: %v", err)
	}
	pushOut()
	if hasTail(l, a) {
		t.Fatal("a is still in the tail")
	}
	readT(t, l, a) // from the file, into the cache
	l.cacheWait()  // ristretto applies Sets asynchronously
	readT(t, l, a)
	if h, m := hits(); h != 2 || m != 1 {
		t.Fatalf("read from the file, then the cache: %d hits, %d misses", h, m)
	}
	// A hit with the wrong message ID falls through to the disk, which says no.
	if _, err := l.Read(a.rid, id, a.ref, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("cached body read with another ID: %v", err)
	}
	if h, m := hits(); h != 2 || m != 2 {
		t.Fatalf("after a wrong-ID read: %d hits, %d misses", h, m)
	}

	// Dropping the cache: misses, and no tail; a new one fills from reads.
	if err := l.SetCacheBytes(0); err != nil {
		t.Fatal(err)
	}
	readT(t, l, a)
	if h, m := hits(); h != 2 || m != 3 {
		t.Fatalf("without a cache: %d hits, %d misses", h, m)
	}
	if err := l.SetCacheBytes(1 << 20); err != nil {
		t.Fatal(err)
	}
	readT(t, l, a) // miss, fills the cache
	l.cacheWait()
	readT(t, l, a)
	if h, m := hits(); h != 3 || m != 4 {
		t.Fatalf("after re-enabling: %d hits, %d misses", h, m)
	}

	// A smaller bound is taken live.
	if err := l.SetCacheBytes(4096); err != nil {
		t.Fatal(err)
	}
	if st := l.Stats(); st.CacheMaxBytes != 4096 {
		t.Fatalf("cache bound %d after SetCacheBytes(4096)", st.CacheMaxBytes)
	}
	b := newMsg(r, 7168) // costs more than the whole bound: never admitted
	appendT(t, l, b)
	pushOut()
	readT(t, l, b)
	l.cacheWait()
	h0, _ := hits()
	readT(t, l, b)
	if h, _ := hits(); h != h0 {
		t.Fatalf("a body larger than the cache was a hit")
	}

	// Delete drops the body from the cache at once, and from the tail.
	if err := l.SetCacheBytes(1 << 20); err != nil {
		t.Fatal(err)
	}
	c, d := newMsg(r, 100), newMsg(r, 100)
	appendT(t, l, c)
	pushOut()
	readT(t, l, c)
	l.cacheWait()
	l.Delete(c.ref)
	l.cacheWait()
	if _, ok := l.cacheGet(c.ref, c.rid, c.id, nil); ok {
		t.Fatal("a deleted body is still in the cache")
	}
	appendT(t, l, d)
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	l.DeleteMessage(d.rid, d.id, d.ref)
	if hasTail(l, d) {
		t.Fatal("a deleted body is still in the tail")
	}
}

// hasTail reports whether the append buffer or its tail holds m's record.
func hasTail(l *Log, m *msg) bool {
	n, off := SplitRef(m.ref)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.memLocked(l.segment(n), off)
	if !ok || len(b) == 0 {
		return false
	}
	_, err := memRecord(b, &m.rid, &m.id)
	return err == nil
}

// TestConcurrent appends, reads, deletes, syncs, erases and resizes the
// cache from several goroutines at once (for -race), across rotations.
func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	l := openT(t, dir, Options{SegmentBytes: 32 << 10, CacheBytes: 64 << 10})
	const workers, perWorker = 4, 150
	var wg sync.WaitGroup
	errs := make(chan error, workers+2)
	var deadMu sync.Mutex
	var dead []*msg
	var live []*msg
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(13, uint64(w)))
			var mine []*msg
			for i := range perWorker {
				m := newMsg(r, r.IntN(3000))
				ref, err := l.Append(m.rid, m.id, m.body)
				if err != nil {
					errs <- err
					return
				}
				m.ref = ref
				mine = append(mine, m)
				o := mine[r.IntN(len(mine))]
				got, err := l.Read(o.rid, o.id, o.ref, nil)
				if err != nil || string(got) != string(o.body) {
					errs <- errors.Join(errors.New("read back wrong"), err)
					return
				}
				if i%3 == 0 { // delete the oldest of mine
					l.Delete(mine[0].ref)
					deadMu.Lock()
					dead = append(dead, mine[0])
					deadMu.Unlock()
					mine = mine[1:]
				}
			}
			deadMu.Lock()
			live = append(live, mine...)
			deadMu.Unlock()
		}()
	}
	stop := make(chan struct{})
	var bg sync.WaitGroup
	toggles := 0
	toggle := func() error { // --cache-size reloads, dropping and remaking the cache
		toggles++
		return l.SetCacheBytes(int64(toggles%3) * 32 << 10)
	}
	for _, f := range []func() error{l.Sync, l.Erase, toggle} {
		bg.Add(1)
		go func() {
			defer bg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := f(); err != nil {
					errs <- err
					return
				}
				l.Stats()
			}
		}()
	}
	wg.Wait()
	close(stop)
	bg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := l.Erase(); err != nil {
		t.Fatal(err)
	}
	for _, m := range live {
		readT(t, l, m)
	}
	files := dirFiles(t, dir)
	for _, m := range dead {
		assertGone(t, files, m)
	}
	if st := l.Stats(); st.LiveRecords != int64(len(live)) || st.Erased != uint64(len(dead)) {
		t.Fatalf("stats %+v: want %d live, %d erased", st, len(live), len(dead))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAllocs: Append (with a cache or without), Read from the tail of append
// buffers and Read from the file without a cache do not allocate (Append
// allocates the tail's chunks, 1 MiB each, the first tailChunks times a
// buffer fills: never past warm-up).
func TestAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts")
	}
	r := rand.New(rand.NewPCG(14, 14))
	m := newMsg(r, 7168)
	for _, c := range []struct {
		name  string
		cache int64
		max   float64
	}{{"no cache", 0, 0}, {"cache", 1 << 30, 0}} {
		l := openT(t, t.TempDir(), Options{CacheBytes: c.cache, SegmentBytes: 1 << 30})
		got := testing.AllocsPerRun(200, func() {
			if _, err := l.Append(m.rid, m.id, m.body); err != nil {
				t.Fatal(err)
			}
		})
		if got > c.max {
			t.Errorf("Append, %s: %.2f allocations per call, want at most %v", c.name, got, c.max)
		}
		l.Close()
	}

	l := openT(t, t.TempDir(), Options{CacheBytes: 1 << 20})
	defer l.Close()
	appendT(t, l, m)
	l.cacheWait()
	dst := make([]byte, 0, 8192)
	var err error
	got := testing.AllocsPerRun(1000, func() {
		if _, err = l.Read(m.rid, m.id, m.ref, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if got >= 0.5 || l.Stats().CacheMisses != 0 {
		t.Errorf("Read from the tail: %.3f allocations per call, %d misses", got, l.Stats().CacheMisses)
	}

	// Without a cache, a Read from the file into a large enough dst does not
	// allocate either (with a cache it keeps a copy: one allocation, and
	// ristretto's *Item).
	if err := l.SetCacheBytes(0); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
	got = testing.AllocsPerRun(200, func() {
		if _, err = l.Read(m.rid, m.id, m.ref, dst[:0]); err != nil {
			t.Fatal(err)
		}
	})
	if got != 0 {
		t.Errorf("Read from the file: %.2f allocations per call", got)
	}
}
