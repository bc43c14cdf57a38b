package codec

import (
	"crypto/ed25519"
	"crypto/rand"

	"filippo.io/edwards25519"
)

// MaxBatch is the most Ed25519 signatures one batch equation checks; a
// BatchVerifier holding more checks them in chunks of MaxBatch. Beyond 64 the
// saving per signature is small and the scratch (about 3 KB per signature)
// keeps growing.
const MaxBatch = 64

// BatchVerifier verifies the signatures of transmissions that arrived
// together on one connection, at a lower cost per Ed25519 signature than one
// verification each: one random linear combination of their verification
// equations, checked with one multi-scalar multiplication. If the combination
// does not hold, every Ed25519 entry is verified on its own, which finds the
// ones that fail. RSA entries are always verified on their own.
//
// For every entry, the result is what VerifyTimingSafe(k, signed, sig) would
// return: the batch uses the same ZIP-215 rules as the single path (see the
// package documentation), so a batch that holds implies that every one of
// its signatures verifies alone, and a signature that verifies alone never
// makes a batch fail. The only exception is a batch holding a bad signature
// whose combination holds anyway, which happens with probability at most
// 2⁻¹²⁸ per batch: the combination's coefficients are 128-bit random scalars
// drawn from crypto/rand for each batch.
//
// Timing (SPEC §7): an entry with a nil key, or with a signature of the wrong
// length for its key, goes in with the dummy key VerifyTimingSafe would use,
// and reports false; so a transmission for a queue that does not exist costs
// what one with a wrong signature for a queue that does costs, in the batch
// and in the fall-back. Keys come from the decoded-key cache as on the single
// path, and every entry that fails pays one key decoding whether its key was
// cached or not (edSettle), so the cache does not tell them apart either. What a batch costs depends on how many entries it has
// and on whether all of them verify; an entry can verify only if its sender
// holds the queue's private key, so the cost tells the sender nothing it did
// not know — as long as a batch holds only what one connection sent. Do not
// mix connections in a batch: one bad signature makes the whole batch fall
// back to single verification, and it must be its own sender's cost.
//
// A BatchVerifier is reused: Reset, Add the entries, Verify. After warm-up
// neither Add nor Verify allocates. It is not safe for concurrent use; keep
// one per goroutine (an event loop), not one per connection, as its scratch
// grows to about 200 KB for a full batch.
type BatchVerifier struct {
	entries []batchEntry
	results []bool
	// ed lists the indexes of the entries in the current Ed25519 chunk.
	ed   []int
	zbuf [16 * MaxBatch]byte
	z    [MaxBatch]edwards25519.Scalar
	msm  msmScratch
	// fallbacks counts the chunks whose combination failed, for tests.
	fallbacks int
}

type batchEntry struct {
	key    *VerifyKey // the key verified against: a dummy when k was absent or did not fit
	signed []byte
	sig    []byte
	// force makes the result false whatever the equation says: a dummy key.
	force bool

	// Filled in by Verify for Ed25519 entries.
	parsed bool // R and S decoded
	r      edwards25519.Point
	s, k   edwards25519.Scalar
	// a is the key's point, from the cache, decoded for this entry (paid),
	// or copied from an earlier entry of the chunk with the same key; fresh
	// when it is not from the cache (see edSettle).
	a           edPoint
	fresh, paid bool
}

// Reset empties the batch, keeping its scratch for reuse.
func (b *BatchVerifier) Reset() {
	clear(b.entries) // drop the references to keys and buffers
	b.entries = b.entries[:0]
	b.results = b.results[:0]
}

// Len returns the number of entries added since the last Reset.
func (b *BatchVerifier) Len() int { return len(b.entries) }

// Add adds the signature sig of signed under k (nil for a queue that does not
// exist) and returns its index in the results of Verify. The batch keeps
// signed and sig, not copies: they must not change until Verify returns.
func (b *BatchVerifier) Add(k *VerifyKey, signed, sig []byte) int {
	e := batchEntry{key: k, signed: signed, sig: sig}
	if k == nil || len(sig) != k.SigLen() {
		// The dummy of VerifyTimingSafe, with the same choice of algorithm.
		e.force = true
		switch n := len(sig); {
		case n == ed25519.SignatureSize:
			e.key = dummyEd25519()
		case n >= minRSABits/8 && n <= maxRSABits/8:
			e.key = dummyRSA(n)
		default:
			e.key, e.sig = dummyEd25519(), dummyEdSig[:]
		}
	}
	b.entries = append(b.entries, e)
	return len(b.entries) - 1
}

// Verify verifies every entry and returns the results, indexed as Add
// numbered them: results[i] is what VerifyTimingSafe would have returned for
// entry i. The slice is valid until the next Reset.
func (b *BatchVerifier) Verify() []bool {
	n := len(b.entries)
	if cap(b.results) < n {
		b.results = make([]bool, n, cap(b.entries))
	}
	b.results = b.results[:n]
	b.ed = b.ed[:0]
	for i := range b.entries {
		e := &b.entries[i]
		if e.key.alg != SigEd25519 {
			b.results[i] = e.key.Verify(e.signed, e.sig) && !e.force
			continue
		}
		b.ed = append(b.ed, i)
		if len(b.ed) == MaxBatch {
			b.verifyEd()
			b.ed = b.ed[:0]
		}
	}
	if len(b.ed) > 0 {
		b.verifyEd()
	}
	return b.results
}

// verifyEd verifies the Ed25519 entries listed in b.ed, at most MaxBatch.
func (b *BatchVerifier) verifyEd() {
	// Decode each signature, load its key's point and hash its message. A
	// signature that does not decode fails now, whatever the key: it reveals
	// nothing (SPEC §7).
	live := 0
	for j, i := range b.ed {
		e := &b.entries[i]
		b.results[i] = false
		e.parsed = edParseSig(&e.r, &e.s, e.sig)
		if !e.parsed {
			continue
		}
		b.loadEd(j, e)
		edChallenge(&e.k, e.sig[:32], e.key.ed[:], e.signed)
		live++
	}
	if live == 0 {
		return
	}
	if live == 1 || !b.combine(live) {
		// No batch to speak of, or one or more signatures are bad: verify
		// each one alone.
		if live > 1 {
			b.fallbacks++
		}
		for _, i := range b.ed {
			e := &b.entries[i]
			b.results[i] = e.parsed && edCheck(&e.a.negA, &e.r, &e.k, &e.s) && !e.a.bad && !e.force
		}
	} else {
		for _, i := range b.ed {
			e := &b.entries[i]
			b.results[i] = e.parsed && !e.a.bad && !e.force
		}
	}
	for _, i := range b.ed {
		if e := &b.entries[i]; e.parsed {
			e.key.edSettle(&e.a, e.fresh, e.paid, b.results[i])
		}
	}
}

// loadEd loads the point of the key of e, the j-th entry of the chunk. The
// entries of one queue's key (a run of ACKs, of SENDs) share one *VerifyKey:
// a later one copies the point the first one loaded rather than decoding it
// again when it was not cached (its insertion waits for the chunk's result).
func (b *BatchVerifier) loadEd(j int, e *batchEntry) {
	if !e.key.dummy {
		for _, i := range b.ed[:j] {
			if p := &b.entries[i]; p.parsed && p.key == e.key {
				e.a, e.fresh, e.paid = p.a, p.fresh, false
				return
			}
		}
	}
	e.paid = e.key.loadEd(&e.a)
	e.fresh = e.paid
}

// combine reports whether [8]Σ zᵢ([Sᵢ]B − Rᵢ − [kᵢ]Aᵢ) is the identity for
// random 128-bit zᵢ over the live (parsed) entries, computed as
// [Σ zᵢSᵢ]B + Σ [zᵢ](−Rᵢ) + Σ [zᵢkᵢ](−Aᵢ). It holds whenever every entry's
// equation holds; if one does not, it holds with probability at most 2⁻¹²⁸.
func (b *BatchVerifier) combine(live int) bool {
	zb := b.zbuf[:16*live]
	rand.Read(zb) // never fails (Go 1.24+)
	b.msm.reset(2 * live)
	var (
		base, zk edwards25519.Scalar
		p        msmP3
		buf      [32]byte
	)
	top, j := 0, 0
	for _, i := range b.ed {
		e := &b.entries[i]
		if !e.parsed {
			continue
		}
		z := &b.z[j]
		copy(buf[:16], zb[16*j:])
		if _, err := z.SetCanonicalBytes(buf[:]); err != nil { // < 2¹²⁸ < ℓ: cannot fail
			return false
		}
		base.MultiplyAdd(z, &e.s, &base)
		if t := b.msm.setPoint(2*j, p.setNeg(&e.r), z); t > top {
			top = t
		}
		zk.Multiply(z, &e.k)
		if t := b.msm.setPoint(2*j+1, p.set(&e.a.negA), &zk); t > top {
			top = t
		}
		j++
	}
	return b.msm.cofactorZero(&base, top)
}
