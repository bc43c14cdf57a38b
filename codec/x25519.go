package codec

import (
	"crypto/ecdh"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"

	circlx "github.com/cloudflare/circl/dh/x25519"
)

// X25519Key is an X25519 private key whose scalar multiplication is
// github.com/cloudflare/circl's (constant-time assembly with BMI2/ADX on
// amd64, portable Go elsewhere), about 30% faster here than crypto/ecdh's,
// and whose scalar the owner can erase (Erase), which crypto/ecdh's opaque
// key does not allow (SPEC §3.1: the server's share is erased once every
// handshake it was sent in has ended). It implements ecdh.KeyExchanger, so
// crypto/hpke opens with it too (NewDHKEMPrivateKey, NewHybridPrivateKey):
// the server does two X25519 multiplications per x25519 or mlkem768x25519
// handshake, the HPKE decapsulation and the transport v2 exchange.
// TestX25519Differential checks it against crypto/ecdh on every kind of
// input.
//
// ECDH and PublicKey are safe for concurrent use; Erase is not, and must
// come after the last ECDH (the owner's reference counting ensures it).
type X25519Key struct {
	scalar circlx.Key // as given; clamped by each multiplication
	pub    *ecdh.PublicKey
}

// NewX25519Key returns the key whose scalar is the 32 bytes b (RFC 7748:
// clamped when used). b is copied; the caller clears its own copy.
func NewX25519Key(b []byte) (*X25519Key, error) {
	if len(b) != circlx.Size {
		return nil, fmt.Errorf("codec: X25519 scalar of %d bytes", len(b))
	}
	k := &X25519Key{}
	copy(k.scalar[:], b)
	var pub circlx.Key
	circlx.KeyGen(&pub, &k.scalar)
	p, err := ecdh.X25519().NewPublicKey(pub[:])
	if err != nil {
		return nil, fmt.Errorf("codec: X25519 public key: %w", err)
	}
	k.pub = p
	return k, nil
}

// GenerateX25519Key returns a new random key.
func GenerateX25519Key() (*X25519Key, error) {
	var b [circlx.Size]byte
	defer clear(b[:])
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("codec: X25519 key: %w", err)
	}
	return NewX25519Key(b[:])
}

// PublicKey returns the public key.
func (k *X25519Key) PublicKey() *ecdh.PublicKey { return k.pub }

// Curve returns ecdh.X25519().
func (k *X25519Key) Curve() ecdh.Curve { return ecdh.X25519() }

// errLowOrder is crypto/ecdh's answer to the same input, without its wording.
var errLowOrder = errors.New("codec: X25519: low-order point (all-zero shared secret)")

// ECDH returns the shared secret with remote, or an error when it is all
// zero (remote is a low-order point), as crypto/ecdh does.
func (k *X25519Key) ECDH(remote *ecdh.PublicKey) ([]byte, error) {
	if remote == nil || remote.Curve() != ecdh.X25519() {
		return nil, errors.New("codec: X25519: public key of another curve")
	}
	out := make([]byte, circlx.Size)
	if !k.shared((*[circlx.Size]byte)(out), remote.Bytes()) {
		return nil, errLowOrder
	}
	return out, nil
}

// shared sets out to the shared secret with the 32-byte encoding peer and
// reports whether it is not all zero. It does not allocate.
func (k *X25519Key) shared(out *[circlx.Size]byte, peer []byte) bool {
	var p circlx.Key
	copy(p[:], peer)
	circlx.Shared((*circlx.Key)(out), &k.scalar, &p)
	// circl reports low order from a list of encodings; the all-zero test is
	// the definition (RFC 7748 §6.1) and what crypto/ecdh checks.
	var zero circlx.Key
	return subtle.ConstantTimeCompare(out[:], zero[:]) == 0
}

// Erase zeroes the scalar. Every later ECDH fails or yields garbage, so the
// owner calls it only once no handshake uses the key.
func (k *X25519Key) Erase() { clear(k.scalar[:]) }

var _ ecdh.KeyExchanger = (*X25519Key)(nil)
