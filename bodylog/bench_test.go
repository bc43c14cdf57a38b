package bodylog

import (
	"math/rand/v2"
	"testing"
)

// benchBody is the body size the benchmark names: 7,168 bytes, a
// message that fills most of an 8 KiB block.
const benchBody = 7168

// BenchmarkAppend appends 7,168-byte bodies, with a Sync (write + fsync)
// after every group of appends as the metadata writer's group commit does:
// group 1 is an fsync per body (the worst case of SyncAlways), 64 a busy
// relay's group; "nosync" is the append path alone (buffer copies and a
// write(2) per MiB).
func BenchmarkAppend(b *testing.B) {
	for _, c := range []struct {
		name  string
		group int
	}{{"nosync", 0}, {"sync1", 1}, {"sync64", 64}} {
		b.Run(c.name, func(b *testing.B) {
			l := openT(b, b.TempDir(), Options{})
			defer l.Close()
			m := newMsg(rand.New(rand.NewPCG(20, 20)), benchBody)
			b.SetBytes(benchBody)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := l.Append(m.rid, m.id, m.body); err != nil {
					b.Fatal(err)
				}
				if i++; c.group > 0 && i%c.group == 0 {
					if err := l.Sync(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// BenchmarkRead reads 7,168-byte bodies back: "cold" with no cache (two
// pread(2)s from the page cache, checksum, IDs, and no copy kept), "warm"
// from the ristretto cache.
func BenchmarkRead(b *testing.B) {
	for _, c := range []struct {
		name  string
		cache int64
	}{{"cold", 0}, {"warm", 64 << 20}} {
		b.Run(c.name, func(b *testing.B) {
			l := openT(b, b.TempDir(), Options{CacheBytes: c.cache})
			defer l.Close()
			r := rand.New(rand.NewPCG(21, 21))
			ms := make([]*msg, 1024) // 7 MiB: fits the warm cache
			for i := range ms {
				ms[i] = newMsg(r, benchBody)
				appendT(b, l, ms[i])
			}
			if err := l.Sync(); err != nil {
				b.Fatal(err)
			}
			if c.cache > 0 {
				l.cacheWait()
			}
			dst := make([]byte, 0, benchBody)
			b.SetBytes(benchBody)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				m := ms[i%len(ms)]
				i++
				if _, err := l.Read(m.rid, m.id, m.ref, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			if st := l.Stats(); c.cache > 0 && st.CacheMisses > st.CacheHits/100 {
				b.Fatalf("warm reads missed the cache: %+v", st)
			}
		})
	}
}
