package codec

import (
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/oasisprotocol/curve25519-voi/curve"
)

// The decoded-key cache.
//
// Verifying an Ed25519 signature needs the key A as a point, and decoding
// its 32 bytes (a field square root) costs about a tenth of a verification.
// A relay holds one or two keys per queue, millions of them, most idle: a
// decoded point in every key (160 bytes, and an allocation) would be most of
// an idle queue's memory (issue 14). So a key keeps only its bytes, and the
// points of the keys in use live here, in a fixed number of entries shared
// by every goroutine; a key that is not here is decoded again (issue 15 is
// then what it was before keys were decoded once).
//
// Shape: 8-way set-associative. The set is chosen by a hash of the key under
// a random per-process seed, so a client who picks its keys cannot aim them
// at one set; within the set, CLOCK: a hit sets the way's reference bit, and
// an insertion takes a free way or the first way the hand finds with its
// bit clear, clearing the bits it passes. An entry of 32 key bytes and a
// 160-byte point is about 196 bytes with the set's bookkeeping, so the
// default 65,536 entries take 12.25 MiB, allocated on the first Ed25519
// verification (and so never by a program that verifies nothing).
//
// A key enters only when a signature verified under it: wrong signatures,
// missing queues and the dummy keys of SPEC §7 never displace the keys of
// queues in use.
//
// Concurrency: each set has its own mutex, held for a 32-byte compare per
// way and a 160-byte copy, never while decoding or verifying. Any goroutine
// may verify (VerifyKey.Verify, VerifyTimingSafe, its own BatchVerifier) and
// call SetKeyCacheSize or ReadKeyCacheStats, at any time.
//
// Timing (SPEC §7): a failed verification must cost the same whether the
// queue exists and whatever the cache holds. Every failed Ed25519
// verification whose signature decodes costs exactly one key decoding: a
// miss decodes the key before the check; a hit, and the dummy key of a
// missing queue (decoded once and kept, never cached), decode the dummy's
// bytes after the check fails (edSettle). Both look the key up first. Only a
// signature that verifies, which takes the private key, is cheaper on a
// hit, and its sender knows the queue exists. A signature that does not
// decode fails before any key is looked at, whatever the key.

// DefaultKeyCacheSize is how many decoded Ed25519 keys the cache holds
// unless SetKeyCacheSize says otherwise: every key verified within about
// two seconds at the rate two cores verify (~30,000 a second), or longer at
// lower load.
const DefaultKeyCacheSize = 1 << 16

// edCacheWays is the associativity: enough that keys hashed to one set
// rarely push each other out, few enough that a miss compares little.
const edCacheWays = 8

// edCacheSet is one set: ways of keys and their points, under mu.
type edCacheSet struct {
	mu   sync.Mutex
	used uint8 // bit i: way i holds a key
	ref  uint8 // bit i: way i was hit since the hand last passed it
	hand uint8 // the way the CLOCK hand looks at next
	// hits and misses count lookups of queue keys (not of dummies).
	hits, misses uint64
	keys         [edCacheWays][32]byte
	negA         [edCacheWays]curve.EdwardsPoint
}

// edCache is one cache; SetKeyCacheSize replaces it whole.
type edCache struct {
	seed maphash.Seed
	sets []edCacheSet // a power of two of them; none when caching is off
}

var (
	edCacheOnce sync.Once
	edCacheCur  atomic.Pointer[edCache]
)

// newEdCache returns a cache of at least n entries (none for n <= 0).
func newEdCache(n int) *edCache {
	c := &edCache{seed: maphash.MakeSeed()}
	if n > 0 {
		sets := 1 << bits.Len(uint((n+edCacheWays-1)/edCacheWays-1))
		c.sets = make([]edCacheSet, sets)
	}
	return c
}

// edKeyCache returns the cache in use, making the default one on first use.
func edKeyCache() *edCache {
	if c := edCacheCur.Load(); c != nil {
		return c
	}
	edCacheOnce.Do(func() { edCacheCur.CompareAndSwap(nil, newEdCache(DefaultKeyCacheSize)) })
	return edCacheCur.Load()
}

// SetKeyCacheSize replaces the decoded-key cache with an empty one of at
// least n Ed25519 keys (rounded up to a power of two), about 196 bytes each;
// n <= 0 turns caching off, so that every verification decodes its key. Safe
// from any goroutine: verifications under way finish with the old cache.
func SetKeyCacheSize(n int) { edCacheCur.Store(newEdCache(n)) }

// KeyCacheStats describes the decoded-key cache, for metrics and tests.
type KeyCacheStats struct {
	Size    int    // entries it can hold
	Entries int    // entries it holds
	Hits    uint64 // lookups of a queue's key that found it, since the cache was made
	Misses  uint64 // lookups of a queue's key that did not, and decoded it
}

// ReadKeyCacheStats returns the cache's counters. Safe from any goroutine;
// it takes each set's lock in turn.
func ReadKeyCacheStats() KeyCacheStats {
	c := edKeyCache()
	st := KeyCacheStats{Size: len(c.sets) * edCacheWays}
	for i := range c.sets {
		s := &c.sets[i]
		s.mu.Lock()
		st.Entries += bits.OnesCount8(s.used)
		st.Hits += s.hits
		st.Misses += s.misses
		s.mu.Unlock()
	}
	return st
}

func (c *edCache) set(key *[32]byte) *edCacheSet {
	return &c.sets[maphash.Bytes(c.seed, key[:])&uint64(len(c.sets)-1)]
}

// get copies the point of key into negA and reports whether the cache held
// it; count says whether the lookup goes into the statistics.
func (c *edCache) get(key *[32]byte, negA *curve.EdwardsPoint, count bool) bool {
	if len(c.sets) == 0 {
		return false
	}
	s := c.set(key)
	s.mu.Lock()
	for i := range edCacheWays {
		if s.used&(1<<i) != 0 && s.keys[i] == *key {
			negA.Set(&s.negA[i])
			s.ref |= 1 << i
			if count {
				s.hits++
			}
			s.mu.Unlock()
			return true
		}
	}
	if count {
		s.misses++
	}
	s.mu.Unlock()
	return false
}

// put adds key with its point, unless another goroutine did first. A new
// entry starts with its reference bit clear, so a key verified once goes
// before the keys verified again since the hand last passed them.
func (c *edCache) put(key *[32]byte, negA *curve.EdwardsPoint) {
	if len(c.sets) == 0 {
		return
	}
	s := c.set(key)
	s.mu.Lock()
	for i := range edCacheWays {
		if s.used&(1<<i) != 0 && s.keys[i] == *key {
			s.mu.Unlock()
			return
		}
	}
	var w uint8
	if s.used != 0xff {
		w = uint8(bits.TrailingZeros8(^s.used))
	} else {
		// At most one turn clearing bits, then a way with its bit clear.
		for s.ref&(1<<s.hand) != 0 {
			s.ref &^= 1 << s.hand
			s.hand = (s.hand + 1) % edCacheWays
		}
		w = s.hand
		s.hand = (s.hand + 1) % edCacheWays
	}
	s.keys[w] = *key
	s.negA[w].Set(negA)
	s.used |= 1 << w
	s.ref &^= 1 << w
	s.mu.Unlock()
}

// loadEd sets p to k's decoded point and reports whether it decoded it now
// (a miss), rather than copying it from the cache or the dummy's. The dummy
// looks itself up too, as a queue's key would, and never finds itself.
func (k *VerifyKey) loadEd(p *edPoint) (decoded bool) {
	c := edKeyCache()
	if k.dummy {
		c.get(&k.ed, &p.negA, false)
		*p = dummyEdPt
		return false
	}
	if c.get(&k.ed, &p.negA, true) {
		p.bad = false // only points that verified are cached
		return false
	}
	p.decode(&k.ed)
	return true
}

// edSettle ends a verification under k with point p, whose result is ok:
// a point that is not in the cache (fresh) enters it if the signature
// verified, and a failure that did not pay a decoding (paid) pays one now,
// of the dummy's bytes, so that every failure costs one whether the key was
// cached, decoded, or the dummy's (SPEC §7). In a batch an entry can reuse
// the point an earlier entry of the same key decoded: then it is fresh but
// has not paid.
func (k *VerifyKey) edSettle(p *edPoint, fresh, paid, ok bool) {
	switch {
	case ok && fresh:
		edKeyCache().put(&k.ed, &p.negA)
	case !ok && !paid:
		var spent edPoint
		spent.decode(&dummyEd25519().ed)
	}
}
