package codec

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"

	"github.com/oasisprotocol/curve25519-voi/curve"

	"github.com/smprelay/smprelay/internal/verifyprobe"
)

// SigAlg is the algorithm of a signature key (SPEC §2).
type SigAlg uint8

// Signature algorithms. The values are local to this package; on the wire
// the algorithm is named by the key's SubjectPublicKeyInfo.
const (
	// SigEd25519 is pure Ed25519 (RFC 8032).
	SigEd25519 SigAlg = iota + 1
	// SigRSA is RSASSA-PSS with SHA-256, MGF1-SHA-256 and a 32-byte salt.
	SigRSA
)

// String returns "ed25519" or "rsa".
func (a SigAlg) String() string {
	switch a {
	case SigEd25519:
		return "ed25519"
	case SigRSA:
		return "rsa"
	}
	return fmt.Sprintf("SigAlg(%d)", uint8(a))
}

// ErrSigKey reports a signature key that SPEC §2 does not allow. It is
// returned wrapped with the reason.
var ErrSigKey = errors.New("codec: unsupported signature key")

// pssOptions are the RSASSA-PSS parameters of SPEC §2; salt length exactly
// 32 (verification rejects any other) and MGF1 with the message hash.
var pssOptions = &rsa.PSSOptions{SaltLength: 32, Hash: crypto.SHA256}

// VerifyKey is a signature-verification key (RK or SK), parsed once when a
// queue is created or secured. It is immutable and safe for concurrent use.
//
// A relay holds one or two per queue, most of them idle, so an Ed25519 key is
// one 48-byte allocation: the 32 bytes of A and no more. Its decoded point
// (what verification needs, 160 bytes) lives in the decoded-key cache
// (edcache.go) while the key is in use, and its SPKI is rebuilt on demand.
type VerifyKey struct {
	ed [32]byte  // SigEd25519: the encoding of A
	x  *keyExtra // SigRSA; for SigEd25519 only when the DER was not the canonical one
	// alg is SigEd25519 or SigRSA.
	alg SigAlg
	// dummy marks the Ed25519 dummy key of SPEC §7: its point is decoded once
	// and kept (dummyEdPt), never cached, and it has no SPKI.
	dummy bool
}

// keyExtra is what a VerifyKey needs beyond an Ed25519 key's 32 bytes.
type keyExtra struct {
	spki   []byte // the DER it was parsed from; nil for dummy keys
	rsa    rsaKey // for SigRSA: the modulus decoded once (rsapss.go)
	sigLen int    // for SigRSA: the modulus's size in bytes
}

// edSPKIPrefix is the DER of an Ed25519 SubjectPublicKeyInfo before the 32
// key bytes (RFC 8410): SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING
// with no unused bits }. It is the only encoding crypto/x509 produces.
var edSPKIPrefix = [12]byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}

// ParseVerifyKey parses X.509 SubjectPublicKeyInfo DER holding an Ed25519
// key or an RSA key of 2048–4096 bits with e = 65537. Anything else is an
// error wrapping ErrSigKey.
func ParseVerifyKey(spkiDER []byte) (*VerifyKey, error) {
	pub, err := x509.ParsePKIXPublicKey(spkiDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSigKey, err)
	}
	switch p := pub.(type) {
	case ed25519.PublicKey:
		if len(p) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("%w: ed25519 key of %d bytes", ErrSigKey, len(p))
		}
		// Not decoded here (a verification does that, or finds it cached): 32
		// bytes that are not a curve point are still a key, as crypto/ed25519
		// has it, under which nothing verifies; the log may hold one, and a
		// key that loaded once must load again.
		k := &VerifyKey{alg: SigEd25519, ed: [32]byte(p)}
		// crypto/x509 also accepts other encodings of the same key (unused
		// bits in the BIT STRING, elements after it): SPKI must give back
		// what was parsed, as the log stores it, so those keep their DER.
		if len(spkiDER) != len(edSPKIPrefix)+ed25519.PublicKeySize ||
			[12]byte(spkiDER) != edSPKIPrefix || [32]byte(spkiDER[len(edSPKIPrefix):]) != k.ed {
			k.x = &keyExtra{spki: bytes.Clone(spkiDER)}
		}
		return k, nil
	case *rsa.PublicKey:
		if err := checkRSAPublic(p); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSigKey, err)
		}
		k, err := newRSAVerifyKey(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrSigKey, err)
		}
		k.x.spki = bytes.Clone(spkiDER)
		return k, nil
	}
	return nil, fmt.Errorf("%w: %T", ErrSigKey, pub)
}

// Alg returns the key's algorithm.
func (k *VerifyKey) Alg() SigAlg { return k.alg }

// SPKI returns the SubjectPublicKeyInfo DER the key was parsed from, for the
// log to store; nil for a dummy key. An Ed25519 key's is built anew by each
// call (44 bytes, on the caller's stack when it does not keep them), since
// the key does not keep it; the caller must not modify the result either way.
func (k *VerifyKey) SPKI() []byte {
	if k.x != nil || k.dummy {
		return k.spkiSlow()
	}
	der := make([]byte, len(edSPKIPrefix)+ed25519.PublicKeySize)
	copy(der, edSPKIPrefix[:])
	copy(der[len(edSPKIPrefix):], k.ed[:])
	return der
}

// spkiSlow is SPKI for the keys that keep their DER, or have none; out of
// line so that SPKI stays small enough to inline.
func (k *VerifyKey) spkiSlow() []byte {
	if k.x == nil {
		return nil
	}
	return k.x.spki
}

// SigLen returns the length of every valid signature: 64 for Ed25519, the
// modulus length in bytes for RSA.
func (k *VerifyKey) SigLen() int {
	switch {
	case k.alg == SigEd25519:
		return ed25519.SignatureSize
	case k.x != nil:
		return k.x.sigLen
	}
	return 0
}

// Verify reports whether sig is a valid signature of signed. Ed25519
// signatures are checked under the ZIP-215 rules (see the package
// documentation): every signature crypto/ed25519 accepts verifies, and the
// only ones crypto/ed25519 rejects that verify here have a non-canonical R or
// a small-order component, which only the key's owner can make. Verify does
// not allocate for Ed25519; it decodes the key only when the decoded-key
// cache does not hold it (see edcache.go for what that costs and when).
func (k *VerifyKey) Verify(signed, sig []byte) bool {
	if k == nil || len(sig) != k.SigLen() {
		return false
	}
	verifyprobe.Note(uint8(k.alg), k.SigLen()) // what a test counts (SPEC §7); nothing in production
	switch k.alg {
	case SigEd25519:
		return verifyEd25519(k, signed, sig)
	case SigRSA:
		digest := sha256.Sum256(signed)
		return k.x.rsa.verifyPSS(&digest, sig)
	}
	return false
}

// newRSAVerifyKey builds the key of p, which checkRSAPublic accepted.
func newRSAVerifyKey(p *rsa.PublicKey) (*VerifyKey, error) {
	rk, err := newRSAKey(p.N)
	if err != nil {
		return nil, err
	}
	return &VerifyKey{alg: SigRSA, x: &keyExtra{rsa: rk, sigLen: p.Size()}}, nil
}

// VerifyTimingSafe verifies sig over signed with k. When k is nil or
// len(sig) != k.SigLen() it spends the work of a failed verification against
// a dummy key of the algorithm and size the signature suggests (SPEC §7) and
// returns false: 64 bytes is Ed25519, 256..512 bytes is RSA with a modulus of
// exactly len(sig)*8 bits, and any other length (empty included) costs one
// Ed25519 verification of a fixed garbage signature.
func VerifyTimingSafe(k *VerifyKey, signed, sig []byte) bool {
	if k != nil && len(sig) == k.SigLen() {
		return k.Verify(signed, sig)
	}
	switch n := len(sig); {
	case n == ed25519.SignatureSize:
		dummyEd25519().Verify(signed, sig)
	case n >= minRSABits/8 && n <= maxRSABits/8:
		dummyRSA(n).Verify(signed, sig)
	default:
		dummyEd25519().Verify(signed, dummyEdSig[:])
	}
	return false
}

// dummyEdSig is the garbage signature for lengths that suggest no algorithm.
// Its R half is a curve point (the base point's encoding) and its S half is
// canonical (top byte zero, so S < l), so that verification decodes R and
// runs the full scalar multiplication instead of failing at either check.
var dummyEdSig = func() (s [ed25519.SignatureSize]byte) {
	for i := range s {
		s[i] = byte(0xa5 ^ i)
	}
	copy(s[:32], ed25519Basepoint)
	s[63] = 0
	return s
}()

var (
	dummyEdOnce sync.Once
	dummyEdKey  *VerifyKey
	// dummyEdPt is dummyEdKey decoded, kept for good: written once by
	// dummyEdOnce, then only read.
	dummyEdPt edPoint

	// One dummy per RSA signature length in 256..512 bytes.
	dummyRSAOnce [maxRSABits/8 - minRSABits/8 + 1]sync.Once
	dummyRSAKeys [maxRSABits/8 - minRSABits/8 + 1]*VerifyKey
)

// dummyEd25519 returns a real, freshly generated Ed25519 public key whose
// private half is discarded, so no signature verifies under it. It is
// decoded once, here, and kept decoded (never in the cache, which holds only
// keys something verified under); what a verification against it costs is
// made equal to one against a queue's key by edSettle (SPEC §7).
func dummyEd25519() *VerifyKey {
	dummyEdOnce.Do(func() {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			// crypto/rand does not fail on supported platforms; a fixed
			// point that decodes still yields the same verification work.
			pub = append(ed25519.PublicKey(nil), ed25519Basepoint...)
		}
		var a curve.EdwardsPoint
		if !edDecodePoint(&a, pub) {
			panic("codec: dummy Ed25519 key does not decode") // a generated key always does
		}
		dummyEdPt.negA.Neg(&a)
		dummyEdKey = &VerifyKey{alg: SigEd25519, ed: [32]byte(pub), dummy: true}
	})
	return dummyEdKey
}

// ed25519Basepoint is the encoding of the Ed25519 base point, a valid key
// used only if crypto/rand fails.
var ed25519Basepoint = []byte{
	0x58, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
	0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66, 0x66,
}

// dummyRSA returns an RSA public key with a modulus of exactly n bytes (top
// bit set), 256 <= n <= 512. Verification only needs N odd and e = 65537, so
// a random odd number stands in for a product of primes: no private key is
// ever generated and nothing can verify under it except by chance.
func dummyRSA(n int) *VerifyKey {
	i := n - minRSABits/8
	dummyRSAOnce[i].Do(func() {
		b := make([]byte, n)
		rand.Read(b) // never fails (Go 1.24+); zeros would still be fixed below
		b[0] |= 0x80 // exactly n*8 bits
		b[n-1] |= 1  // odd, as crypto/rsa requires
		k, err := newRSAVerifyKey(&rsa.PublicKey{N: new(big.Int).SetBytes(b), E: rsaExp})
		if err != nil {
			panic("codec: dummy RSA key: " + err.Error()) // an odd modulus always decodes
		}
		dummyRSAKeys[i] = k
	})
	return dummyRSAKeys[i]
}

// Signer signs transmissions, for clients and tests. It is immutable and
// safe for concurrent use.
type Signer struct {
	ed   ed25519.PrivateKey // for SigEd25519
	rsa  *rsa.PrivateKey    // for SigRSA
	spki []byte
	vk   *VerifyKey
}

// GenerateSigner generates a key of algorithm alg; rsaBits (2048–4096) is
// ignored for Ed25519.
func GenerateSigner(alg SigAlg, rsaBits int) (*Signer, error) {
	switch alg {
	case SigEd25519:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("codec: generate ed25519 key: %w", err)
		}
		return NewSigner(priv)
	case SigRSA:
		if rsaBits < minRSABits || rsaBits > maxRSABits {
			return nil, fmt.Errorf("%w: rsa: %d bits, want %d..%d", ErrSigKey, rsaBits, minRSABits, maxRSABits)
		}
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("codec: generate rsa key: %w", err)
		}
		return NewSigner(priv)
	}
	return nil, fmt.Errorf("%w: %v", ErrSigKey, alg)
}

// NewSigner wraps an *rsa.PrivateKey or ed25519.PrivateKey whose public key
// SPEC §2 allows.
func NewSigner(priv crypto.Signer) (*Signer, error) {
	s := &Signer{}
	var pub any
	switch p := priv.(type) {
	case ed25519.PrivateKey:
		if len(p) != ed25519.PrivateKeySize {
			return nil, fmt.Errorf("%w: ed25519 private key of %d bytes", ErrSigKey, len(p))
		}
		s.ed = p
		pub = p.Public()
	case *rsa.PrivateKey:
		if p == nil {
			return nil, fmt.Errorf("%w: nil rsa key", ErrSigKey)
		}
		s.rsa = p
		pub = &p.PublicKey
	default:
		return nil, fmt.Errorf("%w: %T", ErrSigKey, priv)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSigKey, err)
	}
	vk, err := ParseVerifyKey(spki)
	if err != nil {
		return nil, err
	}
	s.spki, s.vk = spki, vk
	return s, nil
}

// Sign returns the signature of signed (SPEC §2).
func (s *Signer) Sign(signed []byte) ([]byte, error) {
	if s == nil || (s.ed == nil && s.rsa == nil) {
		return nil, fmt.Errorf("%w: empty signer", ErrSigKey)
	}
	if s.ed != nil {
		return ed25519.Sign(s.ed, signed), nil
	}
	digest := sha256.Sum256(signed)
	sig, err := rsa.SignPSS(rand.Reader, s.rsa, crypto.SHA256, digest[:], pssOptions)
	if err != nil {
		return nil, fmt.Errorf("codec: rsa sign: %w", err)
	}
	return sig, nil
}

// PublicSPKI returns a copy of the public key as SubjectPublicKeyInfo DER,
// the bytes NEW and KEY carry in base64.
func (s *Signer) PublicSPKI() []byte { return append([]byte(nil), s.spki...) }

// VerifyKey returns the verification key of the signer.
func (s *Signer) VerifyKey() *VerifyKey { return s.vk }
