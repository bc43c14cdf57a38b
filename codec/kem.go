package codec

import (
	"bytes"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/mlkem"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// KEMType is the first byte of a typed KEM key (SPEC §2). It names how a
// short secret is sealed to the key.
type KEMType byte

// Typed KEM key kinds; the values are part of the wire format.
const (
	// KEMRSA is RSA-OAEP (SHA-256, MGF1-SHA-256; the label is Seal's info:
	// empty for e2e as SPEC §2 says, "SMP transport v2" for the client hello,
	// §3.2); key bytes are X.509 SubjectPublicKeyInfo DER of a 2048–4096-bit key.
	KEMRSA KEMType = 0x01
	// KEMX25519 is HPKE base mode with DHKEM(X25519, HKDF-SHA256); key bytes
	// are the 32-byte RFC 9180 SerializePublicKey output.
	KEMX25519 KEMType = 0x02
	// KEMMLKEM768X25519 is HPKE base mode with the MLKEM768-X25519 (X-Wing)
	// hybrid KEM; key bytes are the 1216-byte SerializePublicKey output.
	KEMMLKEM768X25519 KEMType = 0x03
)

// Key sizes of the HPKE kinds; part of the wire format.
const (
	x25519KeySize         = 32
	mlkem768x25519KeySize = 1216
)

// RSA key limits of SPEC §2, shared by KEM keys and signature keys.
const (
	minRSABits = 2048
	maxRSABits = 4096
	rsaExp     = 65537
)

// Errors of the KEM key functions. They are returned wrapped with context;
// compare with errors.Is.
var (
	// ErrKEMType reports an unknown type byte or type name.
	ErrKEMType = errors.New("codec: unknown KEM key type")
	// ErrKEMKey reports key bytes that do not form a valid key of their type.
	ErrKEMKey = errors.New("codec: invalid KEM key")
	// ErrKEMOpen reports sealed data that does not open with the key.
	ErrKEMOpen = errors.New("codec: sealed data does not open")
)

// String returns the name used on the command line: "rsa", "x25519" or
// "mlkem768x25519".
func (t KEMType) String() string {
	switch t {
	case KEMRSA:
		return "rsa"
	case KEMX25519:
		return "x25519"
	case KEMMLKEM768X25519:
		return "mlkem768x25519"
	}
	return "KEMType(" + strconv.Itoa(int(t)) + ")"
}

// ParseKEMType returns the type named by name, as spelled by String.
func ParseKEMType(name string) (KEMType, error) {
	for _, t := range [...]KEMType{KEMRSA, KEMX25519, KEMMLKEM768X25519} {
		if name == t.String() {
			return t, nil
		}
	}
	return 0, fmt.Errorf("%w: %q", ErrKEMType, name)
}

// hpkeKEM returns the HPKE KEM of an HPKE type, or nil for other types.
func (t KEMType) hpkeKEM() hpke.KEM {
	switch t {
	case KEMX25519:
		return hpke.DHKEM(ecdh.X25519())
	case KEMMLKEM768X25519:
		return hpke.MLKEM768X25519()
	}
	return nil
}

// hpkeKDF and hpkeAEAD complete the HPKE suite of SPEC §2: HKDF-SHA256 (0x0001)
// and AES-256-GCM (0x0002), the same for both HPKE kinds.
func hpkeKDF() hpke.KDF   { return hpke.HKDFSHA256() }
func hpkeAEAD() hpke.AEAD { return hpke.AES256GCM() }

// KEMPublicKey is a parsed typed KEM key. It is immutable and safe for
// concurrent use.
type KEMPublicKey struct {
	typed []byte         // type byte ‖ key bytes, owned
	rsa   *rsa.PublicKey // set for KEMRSA
	hpke  hpke.PublicKey // set for the HPKE kinds
}

// ParseKEMPublicKey parses a typed KEM key:
//
//	+------+-------------------------------------------------+
//	| type | key bytes                                       |
//	|  1   | rsa: SPKI DER; x25519: 32; mlkem768x25519: 1216 |
//	+------+-------------------------------------------------+
//
// It copies typed. RSA keys must have 2048–4096 bits and e = 65537.
func ParseKEMPublicKey(typed []byte) (*KEMPublicKey, error) {
	if len(typed) < 1 {
		return nil, fmt.Errorf("%w: empty", ErrKEMKey)
	}
	t, body := KEMType(typed[0]), typed[1:]
	k := &KEMPublicKey{typed: append([]byte(nil), typed...)}
	switch t {
	case KEMRSA:
		pub, err := x509.ParsePKIXPublicKey(body)
		if err != nil {
			return nil, fmt.Errorf("%w: rsa: %v", ErrKEMKey, err)
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("%w: rsa: SPKI holds %T", ErrKEMKey, pub)
		}
		if err := checkRSAPublic(rk); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
		k.rsa = rk
	case KEMX25519, KEMMLKEM768X25519:
		// NewPublicKey checks the exact length; the explicit check keeps the
		// error message clear.
		want := x25519KeySize
		if t == KEMMLKEM768X25519 {
			want = mlkem768x25519KeySize
		}
		if len(body) != want {
			return nil, fmt.Errorf("%w: %v key is %d bytes, want %d", ErrKEMKey, t, len(body), want)
		}
		// The X25519 share is the whole x25519 key and the last 32 bytes of
		// the hybrid one (after the 1184-byte ML-KEM key).
		if err := checkX25519Point(body[len(body)-x25519KeySize:]); err != nil {
			return nil, fmt.Errorf("%w: %v: %w", ErrKEMKey, t, err)
		}
		pub, err := t.hpkeKEM().NewPublicKey(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %v", ErrKEMKey, t, err)
		}
		k.hpke = pub
	default:
		return nil, fmt.Errorf("%w: 0x%02x", ErrKEMType, typed[0])
	}
	return k, nil
}

// lowOrderProbe is a fixed X25519 private key. Its clamped scalar is a
// multiple of the cofactor 8, so its product with a point is zero exactly when
// the point lies in the small subgroup: the check needs no list of encodings.
var lowOrderProbe = func() *ecdh.PrivateKey {
	k, err := ecdh.X25519().NewPrivateKey([]byte("SMP low-order X25519 probe key!!"))
	if err != nil {
		panic(err)
	}
	return k
}()

// checkX25519Point rejects a low-order X25519 public key (all zeros among
// them): every secret sealed to it would rest on a shared secret an observer
// knows (RFC 7748 §6.1), so an invitation carrying one is refused when
// parsed, before anything is created or sent.
func checkX25519Point(b []byte) error {
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return err
	}
	s, err := lowOrderProbe.ECDH(pub)
	if err != nil {
		return errors.New("low-order X25519 point")
	}
	clear(s)
	return nil
}

// checkRSAPublic applies the limits of SPEC §2. Go's own checks accept keys
// from 1024 bits and any odd e, which the spec does not.
func checkRSAPublic(k *rsa.PublicKey) error {
	if k.N == nil || k.N.Sign() <= 0 || k.N.Bit(0) == 0 {
		return errors.New("rsa: modulus is not odd and positive")
	}
	if bits := k.N.BitLen(); bits < minRSABits || bits > maxRSABits {
		return fmt.Errorf("rsa: %d-bit modulus, want %d..%d", bits, minRSABits, maxRSABits)
	}
	if k.E != rsaExp {
		return fmt.Errorf("rsa: exponent %d, want %d", k.E, rsaExp)
	}
	return nil
}

// Type returns the key's type.
func (k *KEMPublicKey) Type() KEMType {
	if k == nil || len(k.typed) == 0 {
		return 0 // zero value: no type
	}
	return KEMType(k.typed[0])
}

// Bytes returns the typed key bytes, type byte first. The caller must not
// modify them.
func (k *KEMPublicKey) Bytes() []byte { return k.typed }

// Fingerprint returns the key's fingerprint (SPEC §2).
func (k *KEMPublicKey) Fingerprint() string { return Fingerprint(k.typed) }

// Fingerprint returns base64 (standard, padded) of SHA-256 of the typed key
// bytes, type byte included (SPEC §2). It does not check that typed is a key.
func Fingerprint(typed []byte) string {
	sum := sha256.Sum256(typed)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// SealedSize returns the length of what Seal returns for n plaintext bytes:
// the modulus size for rsa (n must fit in one OAEP block), enc ‖ ciphertext ‖
// tag for the HPKE kinds.
func (k *KEMPublicKey) SealedSize(n int) int {
	switch {
	case k.rsa != nil:
		return k.rsa.Size()
	case k.Type() == KEMMLKEM768X25519:
		return mlkemEncSize + n + gcmTag
	}
	return x25519EncSize + n + gcmTag
}

// Sealed sizes of the HPKE kinds; part of the wire format.
const (
	x25519EncSize = 32   // DHKEM(X25519) enc
	mlkemEncSize  = 1120 // MLKEM768-X25519 enc
	gcmTag        = 16   // AES-256-GCM tag
)

// Seal seals plaintext to the key with the method of its type (SPEC §2). For
// HPKE kinds the result is enc ‖ ciphertext and info is bound into the key
// schedule; for rsa info is the OAEP label (SPEC §3.2 labels the transport
// hello; e2e passes none, the empty label of §2).
func (k *KEMPublicKey) Seal(info, plaintext []byte) ([]byte, error) {
	if k == nil || (k.rsa == nil && k.hpke == nil) {
		return nil, fmt.Errorf("%w: nil key", ErrKEMKey)
	}
	if k.rsa != nil {
		out, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k.rsa, plaintext, info)
		if err != nil {
			return nil, fmt.Errorf("codec: rsa seal: %w", err)
		}
		return out, nil
	}
	out, err := hpke.Seal(k.hpke, hpkeKDF(), hpkeAEAD(), info, plaintext)
	if err != nil {
		return nil, fmt.Errorf("codec: %v seal: %w", k.Type(), err)
	}
	return out, nil
}

// KEMPrivateKey is the private half of a typed KEM key. It is immutable and
// safe for concurrent use.
type KEMPrivateKey struct {
	pub  *KEMPublicKey
	rsa  *rsa.PrivateKey // set for KEMRSA
	hpke hpke.PrivateKey // set for the HPKE kinds: serialised by MarshalBinary
	open hpke.PrivateKey // the same key with its X25519 half an X25519Key: what Open uses
	// x25519 opens what is sealed to a KEMX25519 key with TransportInfo, the
	// server's every client hello, without crypto/hpke (hpkex25519.go); nil
	// for the other kinds.
	x25519 *hpkeX25519Opener
}

// GenerateKEMKey generates a key of type t; RSA keys have 2048 bits.
func GenerateKEMKey(t KEMType) (*KEMPrivateKey, error) {
	switch t {
	case KEMRSA:
		rk, err := rsa.GenerateKey(rand.Reader, minRSABits)
		if err != nil {
			return nil, fmt.Errorf("codec: generate rsa key: %w", err)
		}
		return newRSAKEMKey(rk)
	case KEMX25519, KEMMLKEM768X25519:
		hk, err := t.hpkeKEM().GenerateKey()
		if err != nil {
			return nil, fmt.Errorf("codec: generate %v key: %w", t, err)
		}
		return newHPKEKEMKey(t, hk)
	}
	return nil, fmt.Errorf("%w: 0x%02x", ErrKEMType, byte(t))
}

func newRSAKEMKey(rk *rsa.PrivateKey) (*KEMPrivateKey, error) {
	if err := checkRSAPublic(&rk.PublicKey); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(&rk.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: rsa: %v", ErrKEMKey, err)
	}
	pub := &KEMPublicKey{typed: append([]byte{byte(KEMRSA)}, spki...), rsa: &rk.PublicKey}
	return &KEMPrivateKey{pub: pub, rsa: rk}, nil
}

func newHPKEKEMKey(t KEMType, hk hpke.PrivateKey) (*KEMPrivateKey, error) {
	hp := hk.PublicKey()
	pub := &KEMPublicKey{typed: append([]byte{byte(t)}, hp.Bytes()...), hpke: hp}
	open, xk, err := fastX25519Half(t, hk)
	if err != nil {
		return nil, err
	}
	k := &KEMPrivateKey{pub: pub, hpke: hk, open: open}
	if t == KEMX25519 && xk != nil {
		k.x25519 = newHPKEX25519Opener(xk, []byte(TransportInfo))
	}
	return k, nil
}

// fastX25519Half rebuilds hk with its X25519 part an X25519Key, the faster
// multiplication (see there), for opening; crypto/hpke keeps the rest. The
// rebuilt key must have hk's public key, or hk is used as it is. For
// KEMX25519 it also returns that X25519Key when it is in use.
func fastX25519Half(t KEMType, hk hpke.PrivateKey) (hpke.PrivateKey, *X25519Key, error) {
	b, err := hk.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v: %v", ErrKEMKey, t, err)
	}
	seed := bytes.Clone(b) // the hybrid key returns its own seed, not a copy
	defer clear(seed)
	var fast hpke.PrivateKey
	var x25519Key *X25519Key
	switch t {
	case KEMX25519:
		// RFC 9180 SerializePrivateKey of DHKEM(X25519) is the scalar.
		xk, err := NewX25519Key(seed)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
		fast, err = hpke.NewDHKEMPrivateKey(xk)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
		x25519Key = xk
	case KEMMLKEM768X25519:
		// crypto/hpke's MLKEM768X25519 NewPrivateKey (draft-ietf-hpke-pq,
		// X-Wing's expansion): SHAKE256(seed) gives the 64-byte ML-KEM seed,
		// then the X25519 scalar (any 32 bytes are one).
		x := sha3.NewSHAKE256()
		_, _ = x.Write(seed)
		var pqSeed [mlkem.SeedSize]byte
		var scalar [32]byte
		defer clear(pqSeed[:])
		defer clear(scalar[:])
		_, _ = x.Read(pqSeed[:])
		_, _ = x.Read(scalar[:])
		dk, err := mlkem.NewDecapsulationKey768(pqSeed[:])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
		xk, err := NewX25519Key(scalar[:])
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
		fast, err = hpke.NewHybridPrivateKey(dk, xk)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %v", ErrKEMKey, err)
		}
	default:
		return hk, nil, nil
	}
	if !bytes.Equal(fast.PublicKey().Bytes(), hk.PublicKey().Bytes()) {
		return hk, nil, nil
	}
	return fast, x25519Key, nil
}

// Public returns the public half.
func (k *KEMPrivateKey) Public() *KEMPublicKey { return k.pub }

// Open opens data sealed by [KEMPublicKey.Seal] with the same info (the OAEP
// label for rsa). Any failure wraps ErrKEMOpen.
func (k *KEMPrivateKey) Open(info, sealed []byte) ([]byte, error) {
	if k == nil || (k.rsa == nil && k.hpke == nil) {
		return nil, fmt.Errorf("%w: nil key", ErrKEMOpen)
	}
	var (
		out []byte
		err error
	)
	if k.rsa != nil {
		out, err = rsa.DecryptOAEP(sha256.New(), nil, k.rsa, sealed, info)
	} else if k.x25519 != nil && bytes.Equal(info, k.x25519.info) {
		out, err = k.x25519.open(sealed)
	} else {
		out, err = hpke.Open(k.open, hpkeKDF(), hpkeAEAD(), info, sealed)
	}
	if err != nil {
		// The cause is not shown: OAEP failure detail must not reach a peer.
		return nil, fmt.Errorf("%w (%v, %d bytes)", ErrKEMOpen, k.pub.Type(), len(sealed))
	}
	return out, nil
}

// MarshalBinary returns the private key for storage:
//
//	+------+-------------------------------------------------------+
//	| type | rsa: PKCS#8 DER; HPKE kinds: RFC 9180                 |
//	|  1   | SerializePrivateKey (x25519: 32, mlkem768x25519: 32)  |
//	+------+-------------------------------------------------------+
func (k *KEMPrivateKey) MarshalBinary() ([]byte, error) {
	if k == nil || (k.rsa == nil && k.hpke == nil) {
		return nil, fmt.Errorf("%w: empty private key", ErrKEMKey)
	}
	t := k.pub.Type()
	var (
		body []byte
		err  error
	)
	if k.rsa != nil {
		body, err = x509.MarshalPKCS8PrivateKey(k.rsa)
	} else {
		body, err = k.hpke.Bytes()
	}
	if err != nil {
		return nil, fmt.Errorf("codec: marshal %v private key: %w", t, err)
	}
	return append([]byte{byte(t)}, body...), nil
}

// ParseKEMPrivateKey parses the output of [KEMPrivateKey.MarshalBinary].
func ParseKEMPrivateKey(b []byte) (*KEMPrivateKey, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty private key", ErrKEMKey)
	}
	t, body := KEMType(b[0]), b[1:]
	switch t {
	case KEMRSA:
		pk, err := x509.ParsePKCS8PrivateKey(body)
		if err != nil {
			return nil, fmt.Errorf("%w: rsa private key: %v", ErrKEMKey, err)
		}
		rk, ok := pk.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: PKCS#8 holds %T", ErrKEMKey, pk)
		}
		return newRSAKEMKey(rk)
	case KEMX25519, KEMMLKEM768X25519:
		hk, err := t.hpkeKEM().NewPrivateKey(body)
		if err != nil {
			return nil, fmt.Errorf("%w: %v private key: %v", ErrKEMKey, t, err)
		}
		return newHPKEKEMKey(t, hk)
	}
	return nil, fmt.Errorf("%w: 0x%02x", ErrKEMType, b[0])
}
