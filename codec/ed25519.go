package codec

import (
	"crypto/sha512"

	"github.com/oasisprotocol/curve25519-voi/curve"
	"github.com/oasisprotocol/curve25519-voi/curve/scalar"
)

// Ed25519 verification rules (SPEC §2, §7).
//
// The relay verifies Ed25519 signatures with the ZIP-215 rules, on the single
// path (VerifyKey.Verify, VerifyTimingSafe) and the batch path
// (BatchVerifier) alike:
//
//   - A (the key) and R (the first half of the signature) are decoded
//     permissively: an unreduced y (y ≥ p) and a negative zero x are
//     accepted (curve25519-voi's SetCompressedY, as filippo.io/edwards25519's
//     Point.SetBytes);
//   - S must be canonical (S < ℓ);
//   - k = SHA-512(R ‖ A ‖ M), R and A as the bytes that were sent;
//   - the equation is cofactored: [8]([S]B − R − [k]A) = 0.
//
// crypto/ed25519 differs in two ways, and in both it rejects where the relay
// accepts; it never accepts a signature that the relay rejects:
//
//   - it does not decode R but compares R's bytes with the canonical encoding
//     of [S]B − [k]A, so a non-canonical encoding of R always fails;
//   - its equation is cofactorless, so a signature whose residual
//     [S]B − R − [k]A is a non-zero point of small order (a small-order
//     component in R or in A) fails.
//
// Producing either kind takes the private key of A (or a key of small order,
// under which both rule sets admit forgeries), so a third party can neither
// forge nor maul a signature of an honest key under these rules: every
// signature crypto/ed25519.Sign makes verifies under both. Non-canonical
// encodings of A are accepted by both rule sets alike.
//
// Why not crypto/ed25519's rules: batch verification checks one random
// linear combination of the equations, which is sound only with the
// cofactored equation (a cofactorless batch accepts a signature with an
// order-2 residual half the time). With the cofactored equation on both
// paths, a batch that verifies implies that every signature in it verifies
// alone, and a signature that verifies alone never fails a batch (except
// with probability 2⁻¹²⁸ per batch), so the batch and single paths accept
// exactly the same signatures. (BatchVerifier now verifies its entries one
// by one, which is faster here: see batch.go; the rules keep a batch
// equation open.)
//
// The arithmetic is github.com/oasisprotocol/curve25519-voi's (a port of
// curve25519-dalek, with an AVX2 back end on amd64): 35 µs a verification of
// a 7,200-byte message with the key decoded, against 57 µs on
// filippo.io/edwards25519 and 60 µs for crypto/ed25519 (codec/README.md). Its
// README says it has not been independently reviewed; verification handles
// only public values, so what is at stake is a wrong answer, not a leak, and
// the tests hold it to a reference written on filippo.io/edwards25519
// (ruleDifference, TestEdDecodePoint, FuzzVerifyDifferential) and to
// crypto/ed25519.

// edPoint is an Ed25519 public key decoded: what the decoded-key cache
// holds, and what a verification copies out of it (or decodes) before it
// starts.
type edPoint struct {
	// negA is −A, the point the verification equation multiplies by k.
	negA curve.EdwardsPoint
	// bad is set when the 32 bytes do not encode a curve point: then negA is
	// the dummy key's, verification does the work of a failure against it
	// and reports false (SPEC §7).
	bad bool
}

// decode decodes the 32-byte encoding of A into p. It is the decoding a
// cache miss pays, and the one edSettle spends on a failure that did not
// miss (SPEC §7).
func (p *edPoint) decode(enc *[32]byte) {
	var a curve.EdwardsPoint
	if !edDecodePoint(&a, enc[:]) {
		dummyEd25519() // dummyEdPt is set
		p.negA.Set(&dummyEdPt.negA)
		p.bad = true
		return
	}
	p.negA.Neg(&a)
	p.bad = false
}

// edChallenge sets k = SHA-512(R ‖ A ‖ M) mod ℓ.
func edChallenge(k *scalar.Scalar, r, a, msg []byte) {
	h := sha512.New()
	h.Write(r)
	h.Write(a)
	h.Write(msg)
	var sum [sha512.Size]byte
	h.Sum(sum[:0])
	_, _ = k.SetBytesModOrderWide(sum[:]) // 64 bytes: cannot fail
}

// edParseSig decodes R and S of a 64-byte signature: R permissively, S
// canonical. It reports false if either does not decode, without
// allocating (the errors it meets are package values), so garbage
// signatures cost no garbage.
func edParseSig(r *curve.EdwardsPoint, s *scalar.Scalar, sig []byte) bool {
	if !edCanonicalScalar(sig[32:]) {
		return false
	}
	if _, err := s.SetBytesModOrder(sig[32:]); err != nil {
		return false // not reached: 32 bytes, and canonical
	}
	return edDecodePoint(r, sig[:32])
}

// edOrder is ℓ, little-endian.
var edOrder = [32]byte{
	0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
}

// edCanonicalScalar reports whether the 32 little-endian bytes are below ℓ.
func edCanonicalScalar(b []byte) bool {
	for i := 31; i >= 0; i-- {
		switch {
		case b[i] < edOrder[i]:
			return true
		case b[i] > edOrder[i]:
			return false
		}
	}
	return false // equal to ℓ
}

// edDecodePoint decodes a 32-byte point encoding permissively: an
// unreduced y (y ≥ p) and x = −0 are accepted, as filippo.io/edwards25519's
// Point.SetBytes accepts them (TestDecodePointMatchesFilippo). It does not
// allocate on failure.
func edDecodePoint(p *curve.EdwardsPoint, enc []byte) bool {
	var c curve.CompressedEdwardsY
	copy(c[:], enc)
	_, err := p.SetCompressedY(&c)
	return err == nil
}

// edCheck reports whether [8]([S]B + [k](−A) − R) is the identity. voi
// computes [δk](−A) + [δS]B − [δ]R for a δ invertible modulo ℓ (Pornin's
// ABGLSV method) and multiplies by the cofactor: zero exactly when the
// prime-order part of [S]B − [k]A − R is, which is the ZIP-215 equation.
func edCheck(negA *curve.EdwardsPoint, r *curve.EdwardsPoint, k, s *scalar.Scalar) bool {
	var p curve.EdwardsPoint
	return p.TripleScalarMulBasepointVartime(k, negA, s, r).IsSmallOrder()
}

// verifyEd25519 verifies a 64-byte sig over msg under k with the ZIP-215
// rules. A signature that does not decode fails before anything touches the
// key, whatever the key; one that does costs the verification and exactly one
// decoding of a key when it fails (edSettle).
func verifyEd25519(k *VerifyKey, msg, sig []byte) bool {
	var (
		r    curve.EdwardsPoint
		s, h scalar.Scalar
		a    edPoint
	)
	if !edParseSig(&r, &s, sig) {
		return false
	}
	decoded := k.loadEd(&a)
	edChallenge(&h, sig[:32], k.ed[:], msg)
	ok := edCheck(&a.negA, &r, &h, &s) && !a.bad
	k.edSettle(&a, decoded, decoded, ok)
	return ok
}
