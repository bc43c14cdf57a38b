package codec

import "crypto/ed25519"

// MaxBatch is the most signatures a caller gathers into one BatchVerifier
// before it verifies them (the engine's batches of one connection's
// transmissions). The verifier itself takes any number.
const MaxBatch = 64

// BatchVerifier verifies the signatures of transmissions that arrived
// together on one connection, each one as VerifyTimingSafe(k, signed, sig)
// would: results[i] is exactly what that call returns for entry i.
//
// It used to check the Ed25519 entries with one random linear combination
// of their equations (one multi-scalar multiplication over
// filippo.io/edwards25519). Single verification on curve25519-voi (AVX2 on
// amd64, see verifyEd25519) costs about what that batch equation cost per
// signature for 64 entries (33 µs against 29.6 µs hot, 34 µs with keys not in
// the decoded-key cache, for 7,200-byte messages on a 2-vCPU EPYC), less for
// smaller batches, and voi's own batch equation allocates its tables on
// every call, which the hot path may not; so every entry is verified alone.
// That also removes the batch's fall-back: an entry costs the same whether
// the others verify or not (SPEC §7). The type stays, so that callers gather
// what one connection sent and a cheaper equation can return behind it.
//
// Timing (SPEC §7): an entry with a nil key, or with a signature of the wrong
// length for its key, goes in with the dummy key VerifyTimingSafe would use,
// and reports false; so a transmission for a queue that does not exist costs
// what one with a wrong signature for a queue that does costs.
//
// A BatchVerifier is reused: Reset, Add the entries, Verify. After warm-up
// neither Add nor Verify allocates. It is not safe for concurrent use; keep
// one per goroutine (an event loop), not one per connection.
type BatchVerifier struct {
	entries []batchEntry
	results []bool
}

type batchEntry struct {
	key    *VerifyKey // the key verified against: a dummy when k was absent or did not fit
	signed []byte
	sig    []byte
	// force makes the result false whatever the equation says: a dummy key.
	force bool
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
	for i := range b.entries {
		e := &b.entries[i]
		b.results[i] = e.key.Verify(e.signed, e.sig) && !e.force
	}
	return b.results
}
