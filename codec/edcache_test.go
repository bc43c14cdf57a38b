package codec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/smprelay/smprelay/internal/race"
)

// withKeyCache gives the test an empty cache of n entries, and every later
// test the default one again.
func withKeyCache(t testing.TB, n int) {
	t.Helper()
	SetKeyCacheSize(n)
	t.Cleanup(func() { SetKeyCacheSize(DefaultKeyCacheSize) })
}

// inKeyCache reports whether the cache holds k, without counting a lookup or
// marking a hit.
func inKeyCache(k *VerifyKey) bool {
	c := edKeyCache()
	if len(c.sets) == 0 {
		return false
	}
	s := c.set(&k.ed)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range edCacheWays {
		if s.used&(1<<i) != 0 && s.keys[i] == k.ed {
			return true
		}
	}
	return false
}

// edSigned is one Ed25519 key with a good and a wrong signature of msg; the
// wrong one decodes (a real signature by another key), so it fails only at
// the equation.
type edSigned struct {
	k          *VerifyKey
	msg        []byte
	sig, wrong []byte
}

func newSigned(t testing.TB, msg []byte) edSigned {
	t.Helper()
	s, other := newEdSigner(t), newEdSigner(t)
	sig, _ := s.Sign(msg)
	wrong, _ := other.Sign(msg)
	return edSigned{s.VerifyKey(), msg, sig, wrong}
}

func newEdSigner(t testing.TB) *Signer {
	t.Helper()
	s, err := GenerateSigner(SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestVerifyKeySize pins what an Ed25519 key costs an idle queue (issue 14):
// one 48-byte allocation, its DER rebuilt rather than kept.
func TestVerifyKeySize(t *testing.T) {
	if n := unsafe.Sizeof(VerifyKey{}); n > 48 {
		t.Errorf("VerifyKey is %d bytes, want at most 48", n)
	}
	k := newEdSigner(t).VerifyKey()
	if k.x != nil {
		t.Error("an Ed25519 key in the canonical DER keeps more than its 32 bytes")
	}
}

// TestSPKIRoundTrip: SPKI gives back the DER a key was parsed from, the
// canonical one rebuilt, the other encodings crypto/x509 accepts kept.
func TestSPKIRoundTrip(t *testing.T) {
	s := newEdSigner(t)
	canon := s.PublicSPKI()
	pub := canon[len(edSPKIPrefix):]
	// Elements after the BIT STRING, which encoding/asn1 skips.
	trailing := append([]byte{0x30, 0x2c}, canon[2:]...)
	trailing = append(trailing, 0x05, 0x00)
	// Unused bits in the BIT STRING: the key is its bits right-aligned.
	unused := bytes.Clone(canon)
	unused[len(edSPKIPrefix)-1] = 1
	unused[len(unused)-1] &^= 1
	for _, tc := range []struct {
		name    string
		der     []byte
		compact bool
	}{{"canonical", canon, true}, {"trailing element", trailing, false}, {"unused bits", unused, false}} {
		want, err := x509.ParsePKIXPublicKey(tc.der)
		if err != nil {
			t.Fatalf("%s: crypto/x509: %v", tc.name, err)
		}
		k, err := ParseVerifyKey(tc.der)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !bytes.Equal(k.SPKI(), tc.der) {
			t.Errorf("%s: SPKI() = %x, want %x", tc.name, k.SPKI(), tc.der)
		}
		if !bytes.Equal(k.ed[:], want.(ed25519.PublicKey)) {
			t.Errorf("%s: key %x, crypto/x509 has %x", tc.name, k.ed, want)
		}
		if (k.x == nil) != tc.compact {
			t.Errorf("%s: keeps its DER: %v, want %v", tc.name, k.x != nil, !tc.compact)
		}
		if tc.compact && !bytes.Equal(k.ed[:], pub) {
			t.Errorf("%s: key %x, want %x", tc.name, k.ed, pub)
		}
	}
	if dummyEd25519().SPKI() != nil || dummyRSA(256).SPKI() != nil {
		t.Error("a dummy key has an SPKI")
	}
}

// TestKeyCacheFill: a key enters the cache when a signature verifies under
// it, and only then; later verifications hit, whatever their result; the
// dummy key never enters and is not counted.
func TestKeyCacheFill(t *testing.T) {
	withKeyCache(t, 64)
	c := newSigned(t, []byte(vectorSigned))
	step := func(name string, got, want bool, hits, misses uint64, cached bool) {
		t.Helper()
		st := ReadKeyCacheStats()
		if got != want || st.Hits != hits || st.Misses != misses || inKeyCache(c.k) != cached {
			t.Errorf("%s: verified %v, hits %d, misses %d, cached %v; want %v, %d, %d, %v",
				name, got, st.Hits, st.Misses, inKeyCache(c.k), want, hits, misses, cached)
		}
	}
	step("wrong signature, cold", c.k.Verify(c.msg, c.wrong), false, 0, 1, false)
	step("garbage signature", c.k.Verify(c.msg, bytes.Repeat([]byte{0xff}, 64)), false, 0, 1, false) // S ≥ ℓ: fails before the lookup
	step("good signature, cold", c.k.Verify(c.msg, c.sig), true, 0, 2, true)
	step("good signature, hot", c.k.Verify(c.msg, c.sig), true, 1, 2, true)
	step("wrong signature, hot", VerifyTimingSafe(c.k, c.msg, c.wrong), false, 2, 2, true)
	step("dummy", VerifyTimingSafe(nil, c.msg, c.sig), false, 2, 2, true)
	if inKeyCache(dummyEd25519()) {
		t.Error("the dummy key is in the cache")
	}
	if st := ReadKeyCacheStats(); st.Size != 64 || st.Entries != 1 {
		t.Errorf("size %d, entries %d; want 64, 1", st.Size, st.Entries)
	}
}

// TestKeyCacheSizes: the size rounds up to a power of two of sets of 8, and
// 0 turns the cache off without changing any result.
func TestKeyCacheSizes(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{1, 8}, {8, 8}, {9, 16}, {100, 128}, {-1, 0}, {0, 0}} {
		SetKeyCacheSize(tc.n)
		if got := ReadKeyCacheStats().Size; got != tc.want {
			t.Errorf("SetKeyCacheSize(%d): size %d, want %d", tc.n, got, tc.want)
		}
	}
	withKeyCache(t, 0)
	c := newSigned(t, []byte(vectorSigned))
	for range 2 {
		if !c.k.Verify(c.msg, c.sig) || c.k.Verify(c.msg, c.wrong) || !verifyBatched(t, c.k, c.msg, c.sig) {
			t.Fatal("wrong result with the cache off")
		}
	}
	if st := ReadKeyCacheStats(); st.Entries != 0 || st.Hits != 0 {
		t.Errorf("cache off: %+v", st)
	}
}

// TestKeyCacheEviction fills one set (a cache of 8 entries is one set) and
// checks CLOCK: the next key evicts the first way not hit since the hand
// passed it, and keys that were hit stay.
func TestKeyCacheEviction(t *testing.T) {
	withKeyCache(t, edCacheWays)
	keys := make([]edSigned, edCacheWays+2)
	for i := range keys {
		keys[i] = newSigned(t, []byte(vectorSigned))
	}
	for _, c := range keys[:edCacheWays] {
		c.k.Verify(c.msg, c.sig)
	}
	for _, c := range keys[:4] { // hit: their reference bits are set
		c.k.Verify(c.msg, c.sig)
	}
	// The hand clears the bits of ways 0..3 and evicts way 4 (keys[4]); then
	// way 5 (keys[5]).
	for _, c := range keys[edCacheWays:] {
		c.k.Verify(c.msg, c.sig)
	}
	for i, c := range keys {
		if want := i != 4 && i != 5; inKeyCache(c.k) != want {
			t.Errorf("key %d cached: %v, want %v", i, !want, want)
		}
	}
}

// TestKeyCacheConcurrent verifies from several goroutines over more keys than
// a small cache holds, so that entries are evicted and refilled while read:
// every result must be right (run it with -race too).
func TestKeyCacheConcurrent(t *testing.T) {
	withKeyCache(t, 16)
	keys := make([]edSigned, 40)
	for i := range keys {
		keys[i] = newSigned(t, []byte(vectorSigned))
	}
	const goroutines, rounds = 4, 60
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			var b BatchVerifier
			for r := range rounds {
				c := keys[(g*7+r*3)%len(keys)]
				if !c.k.Verify(c.msg, c.sig) || c.k.Verify(c.msg, c.wrong) {
					t.Errorf("goroutine %d round %d: wrong result", g, r)
					return
				}
				b.Reset()
				for j := range 4 {
					d := keys[(g+r+j*11)%len(keys)]
					b.Add(d.k, d.msg, d.sig)
					b.Add(d.k, d.msg, d.wrong)
				}
				for i, ok := range b.Verify() {
					if ok != (i%2 == 0) {
						t.Errorf("goroutine %d round %d: batch entry %d: %v", g, r, i, ok)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestBatchKeyLoads: a batch loads keys as the single path does, entry by
// entry: a key whose signature verified enters the cache at its first entry
// and its later entries hit it; a key whose signatures fail never enters it,
// so each of its entries pays a decoding (SPEC §7).
func TestBatchKeyLoads(t *testing.T) {
	withKeyCache(t, 64)
	a, b := newSigned(t, []byte(vectorSigned)), newSigned(t, []byte("other"))
	var v BatchVerifier
	for range 5 {
		v.Add(a.k, a.msg, a.sig)
		v.Add(b.k, b.msg, b.wrong)
	}
	for i, ok := range v.Verify() {
		if ok != (i%2 == 0) {
			t.Fatalf("entry %d: %v", i, ok)
		}
	}
	if st := ReadKeyCacheStats(); st.Misses != 6 || st.Hits != 4 {
		t.Errorf("hits %d, misses %d; want 4, 6", st.Hits, st.Misses)
	}
	if !inKeyCache(a.k) || inKeyCache(b.k) {
		t.Errorf("cached: verified key %v, failed key %v; want true, false", inKeyCache(a.k), inKeyCache(b.k))
	}
}

// TestVerifyFailureTiming checks the codec's half of SPEC §7 with the cache:
// a failed verification costs the same under a key in the cache, under one
// not in it (decoded), and under the dummy of a missing queue. A decoding is
// about a tenth of a verification, so medians within 5% of each other show
// that each failure paid exactly one; a noisy run is retried.
func TestVerifyFailureTiming(t *testing.T) {
	if testing.Short() || race.Enabled {
		t.Skip("timing comparison")
	}
	withKeyCache(t, 64)
	msg := []byte(vectorSigned)
	hot, cold := newSigned(t, msg), newSigned(t, msg)
	hot.k.Verify(msg, hot.sig)
	cases := []struct {
		name string
		f    func() bool
	}{
		{"hot", func() bool { return hot.k.Verify(msg, hot.wrong) }},
		{"cold", func() bool { return cold.k.Verify(msg, cold.wrong) }},
		{"dummy", func() bool { return VerifyTimingSafe(nil, msg, hot.wrong) }},
		{"hot-verified", func() bool { return !hot.k.Verify(msg, hot.sig) }}, // for the log: no decoding
	}
	const tries, attempts = 301, 5
	var med [4]time.Duration
	for range attempts {
		var d [4][]time.Duration
		for range tries {
			for i, c := range cases {
				start := time.Now()
				if c.f() {
					t.Fatalf("%s: verified", c.name)
				}
				d[i] = append(d[i], time.Since(start))
			}
		}
		for i := range d {
			sort.Slice(d[i], func(a, b int) bool { return d[i][a] < d[i][b] })
			med[i] = d[i][tries/2]
		}
		cold, dummy := float64(med[1])/float64(med[0]), float64(med[2])/float64(med[0])
		if cold > 0.95 && cold < 1.05 && dummy > 0.95 && dummy < 1.05 {
			t.Logf("median failure: hot %v, cold/hot %.3f, dummy/hot %.3f; a hot success %v", med[0], cold, dummy, med[3])
			return
		}
	}
	t.Fatalf("median failure: hot %v, cold %v, dummy %v: not within 5%%", med[0], med[1], med[2])
}

// The keys of the cache are compared whole: a key that differs in its last
// byte (the sign of x) is another key.
func TestKeyCacheComparesWholeKey(t *testing.T) {
	withKeyCache(t, edCacheWays)
	c := newSigned(t, []byte(vectorSigned))
	c.k.Verify(c.msg, c.sig)
	twin := *c.k
	twin.ed[31] ^= 0x80
	if inKeyCache(&twin) || twin.Verify(c.msg, c.sig) {
		t.Fatal("a key with the other sign of x is taken for the cached one")
	}
	if !slices.Equal(c.k.ed[:31], twin.ed[:31]) {
		t.Fatal("not a twin")
	}
}
