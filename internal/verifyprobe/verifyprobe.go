// Package verifyprobe lets a test see each signature verification that
// package codec performs on its own (codec.VerifyKey.Verify, against a
// queue's key or against a dummy key of SPEC §7), so that "every ERR AUTH
// costs one verification of the same kind" can be asserted by counting, a
// check that load on the machine cannot fail, rather than by timing alone.
//
// The entries of a codec.BatchVerifier are seen too: it verifies each one
// through Verify.
//
// Nothing observes in production, where a verification costs one atomic
// load more.
package verifyprobe

import "sync/atomic"

// Verification is one signature check: the algorithm of the key it ran
// against (a codec.SigAlg) and that key's signature length (64 for Ed25519,
// the modulus length in bytes for RSA).
type Verification struct {
	Alg    uint8
	SigLen int
}

var observer atomic.Pointer[func(Verification)]

// Observe calls f for each verification, on the goroutine that verifies,
// until the function it returns is called. One observer at a time: a second
// Observe before the first one's stop panics.
func Observe(f func(Verification)) (stop func()) {
	if !observer.CompareAndSwap(nil, &f) {
		panic("verifyprobe: Observe while another observer is set")
	}
	return func() { observer.Store(nil) }
}

// Note reports one verification to the observer, if there is one. Package
// codec calls it; safe for concurrent use.
func Note(alg uint8, sigLen int) {
	if f := observer.Load(); f != nil {
		(*f)(Verification{Alg: alg, SigLen: sigLen})
	}
}
