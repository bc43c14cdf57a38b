// Package e2e is the end-to-end envelope between a queue's sender and its
// recipient (SPEC §10). The server never parses it: it only relays the sealed
// bytes Seal returns.
//
// A message's plaintext is
//
//	decryptedBody = clientHeader CRLF clientBody CRLF
//	clientHeader  = senderKeyMsg / signedMsg
//	senderKeyMsg  = "KEY" SP senderKey         ; the confirmation, first and unsigned
//	signedMsg     = "MSG" SP seq SP e2eSig     ; every later message
//	seq           = %x31-39 *19DIGIT           ; 1 … 2^64−1, no leading zero
//	e2eSig        = base64                     ; by SK, over the bytes below
//
// where e2eSig signs
//
//	+------------------+------------+-----------------+------------+
//	| "SMP e2e v1 sig" | SID        | seq (uint64 BE) | clientBody |
//	+------------------+------------+-----------------+------------+
//	  14 ASCII bytes     16 bytes     8 bytes
//
// It is padded to a fixed length so that every body on the wire has the same
// size, maxBody of the connection's block size:
//
//	+-------------------+---------------+--------------------------------+
//	| len (uint32, BE)  | decryptedBody | zero bytes                     |
//	+-------------------+---------------+--------------------------------+
//	|<-------------- maxBody − Overhead(EK) ---------------------------->|
//
// and sealed to the queue's encryption key EK: for the HPKE kinds (x25519,
// mlkem768x25519) a single-shot HPKE Seal with info "SMP e2e v1"; for rsa,
// RSA-OAEP of a fresh AES-256 key and nonce followed by AES-256-GCM of the
// padded plaintext.
//
// Seal takes only a valid clientHeader; Open returns whatever header a body
// carries, and the recipient judges it (SenderKey, IsKey, Signed).
//
// Everything here is a pure function of its arguments and safe for concurrent
// use.
package e2e

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/smprelay/smprelay/codec"
)

// Info is the HPKE info string of the envelope; part of the wire format.
const Info = "SMP e2e v1"

// Sizes of the envelope; part of the wire format.
const (
	lenSize       = 4  // the big-endian length before decryptedBody
	gcmTagSize    = 16 // AES-256-GCM tag, HPKE and rsa alike
	x25519Enc     = 32 // HPKE enc of DHKEM(X25519)
	mlkemEnc      = 1120
	aesKeySize    = 32
	gcmNonceSize  = 12
	confirmPrefix = "KEY "
)

var (
	// ErrOpen reports a body that does not open with the queue's key or whose
	// plaintext is not an envelope. A recipient drops such messages (SPEC §10).
	ErrOpen = errors.New("e2e: message does not open")
	// ErrTooLong reports a header and body that do not fit in the padded size.
	ErrTooLong = errors.New("e2e: message too long")
	// ErrHeader reports a header that is neither a confirmation nor a
	// signed message header.
	ErrHeader = errors.New("e2e: invalid client header")
)

// Overhead returns what sealing adds to the padded plaintext for the key
// ek: 48 bytes for x25519, 1136 for mlkem768x25519 and the modulus size plus
// 16 for rsa (SPEC §10).
func Overhead(ek *codec.KEMPublicKey) (int, error) {
	switch ek.Type() {
	case codec.KEMX25519:
		return x25519Enc + gcmTagSize, nil
	case codec.KEMMLKEM768X25519:
		return mlkemEnc + gcmTagSize, nil
	case codec.KEMRSA:
		n, err := rsaSize(ek)
		if err != nil {
			return 0, err
		}
		return n + gcmTagSize, nil
	}
	return 0, fmt.Errorf("e2e: %w: %v", codec.ErrKEMType, ek.Type())
}

// rsaSize returns the modulus length in bytes of an rsa typed key.
func rsaSize(ek *codec.KEMPublicKey) (int, error) {
	pub, err := x509.ParsePKIXPublicKey(ek.Bytes()[1:])
	if err != nil {
		return 0, fmt.Errorf("e2e: rsa key: %w", err)
	}
	rk, ok := pub.(*rsa.PublicKey)
	if !ok {
		return 0, fmt.Errorf("e2e: rsa key holds %T", pub)
	}
	return rk.Size(), nil
}

// PaddedSize returns the length of the padded plaintext for a connection
// whose largest body is maxBody: maxBody − Overhead(ek).
func PaddedSize(ek *codec.KEMPublicKey, maxBody int) (int, error) {
	o, err := Overhead(ek)
	if err != nil {
		return 0, err
	}
	if maxBody-o < lenSize+4 {
		return 0, fmt.Errorf("e2e: a body of %d bytes leaves no room under a %v key", maxBody, ek.Type())
	}
	return maxBody - o, nil
}

// MaxContent returns the largest header plus body that Seal accepts for ek
// and maxBody: the padded size less the length prefix and the two CRLFs.
func MaxContent(ek *codec.KEMPublicKey, maxBody int) (int, error) {
	p, err := PaddedSize(ek, maxBody)
	if err != nil {
		return 0, err
	}
	return p - lenSize - 4, nil
}

// MaxBody returns the longest clientBody of a signed message for ek and
// maxBody, whatever its seq, when the sender key's signatures have sigLen
// bytes: MaxContent less MaxMsgHeader(sigLen).
func MaxBody(ek *codec.KEMPublicKey, maxBody, sigLen int) (int, error) {
	n, err := MaxContent(ek, maxBody)
	if err != nil {
		return 0, err
	}
	if n -= MaxMsgHeader(sigLen); n < 0 {
		return 0, fmt.Errorf("%w: a %d-byte signature leaves no room in a %d-byte body", ErrTooLong, sigLen, maxBody)
	}
	return n, nil
}

// ConfirmationHeader returns the header of a confirmation, "KEY " and the
// sender's key in base64 SPKI (SPEC §10 senderKeyMsg).
func ConfirmationHeader(senderSPKI []byte) []byte {
	return append([]byte(confirmPrefix), base64.StdEncoding.EncodeToString(senderSPKI)...)
}

// Seal pads header CRLF body CRLF and seals it to ek, so that the result is
// exactly maxBody bytes. header is a confirmation header (ConfirmationHeader)
// or a signed message header (MsgHeader.Bytes): SPEC §10 allows no other.
func Seal(ek *codec.KEMPublicKey, maxBody int, header, body []byte) ([]byte, error) {
	if err := checkHeader(header); err != nil {
		return nil, err
	}
	size, err := PaddedSize(ek, maxBody)
	if err != nil {
		return nil, err
	}
	n := len(header) + 2 + len(body) + 2
	if lenSize+n > size {
		return nil, fmt.Errorf("%w: %d bytes, at most %d fit", ErrTooLong, len(header)+len(body), size-lenSize-4)
	}
	padded := make([]byte, size)
	binary.BigEndian.PutUint32(padded, uint32(n))
	p := padded[lenSize:]
	p = p[copy(p, header):]
	p = p[copy(p, "\r\n"):]
	p = p[copy(p, body):]
	copy(p, "\r\n")

	var sealed []byte
	if ek.Type() == codec.KEMRSA {
		sealed, err = sealRSA(ek, padded)
	} else {
		sealed, err = ek.Seal([]byte(Info), padded)
	}
	if err != nil {
		return nil, fmt.Errorf("e2e: seal: %w", err)
	}
	if len(sealed) != maxBody {
		// Only a key whose overhead differs from SPEC §10's gets here.
		return nil, fmt.Errorf("e2e: sealed %d bytes, want %d", len(sealed), maxBody)
	}
	return sealed, nil
}

// sealRSA is RSA-OAEP(aesKey ‖ nonce) ‖ AES-256-GCM(aesKey, nonce, padded).
func sealRSA(ek *codec.KEMPublicKey, padded []byte) ([]byte, error) {
	var secret [aesKeySize + gcmNonceSize]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, err
	}
	wrapped, err := ek.Seal(nil, secret[:])
	if err != nil {
		return nil, err
	}
	aead, err := newGCM(secret[:aesKeySize])
	if err != nil {
		return nil, err
	}
	return aead.Seal(wrapped, secret[aesKeySize:], padded, nil), nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Envelope is an opened message: its client header and body. The slices are
// the caller's to keep.
type Envelope struct {
	Header []byte
	Body   []byte
}

// SenderKey returns the sender's key (SPKI DER) when the envelope is a
// confirmation, whose header is "KEY " and a valid signature key.
func (e Envelope) SenderKey() ([]byte, bool) {
	rest, ok := bytes.CutPrefix(e.Header, []byte(confirmPrefix))
	if !ok {
		return nil, false
	}
	spki, err := base64.StdEncoding.Strict().DecodeString(string(rest))
	if err != nil {
		return nil, false
	}
	if _, err := codec.ParseVerifyKey(spki); err != nil {
		return nil, false
	}
	return spki, true
}

// Open opens a body sealed by Seal with the queue's private key. Whatever
// goes wrong — the wrong key, a truncated or tampered body, a plaintext that
// is not an envelope — the error wraps ErrOpen and says no more, since the
// body comes from whoever knew the sender ID. The header is not checked: a
// body that opens came from someone who has EK, and the recipient drops an
// unsigned or wrongly signed one with its own reason (SPEC §10).
func Open(k *codec.KEMPrivateKey, sealed []byte) (Envelope, error) {
	padded, err := open(k, sealed)
	if err != nil {
		return Envelope{}, fmt.Errorf("%w (%d bytes)", ErrOpen, len(sealed))
	}
	env, ok := parsePadded(padded)
	if !ok {
		return Envelope{}, fmt.Errorf("%w: not an envelope", ErrOpen)
	}
	return env, nil
}

func open(k *codec.KEMPrivateKey, sealed []byte) ([]byte, error) {
	if k.Public().Type() != codec.KEMRSA {
		return k.Open([]byte(Info), sealed)
	}
	n, err := rsaSize(k.Public())
	if err != nil {
		return nil, err
	}
	if len(sealed) < n+gcmTagSize {
		return nil, ErrOpen
	}
	secret, err := k.Open(nil, sealed[:n])
	if err != nil {
		return nil, err
	}
	if len(secret) != aesKeySize+gcmNonceSize {
		return nil, ErrOpen
	}
	aead, err := newGCM(secret[:aesKeySize])
	if err != nil {
		return nil, err
	}
	return aead.Open(nil, secret[aesKeySize:], sealed[n:], nil)
}

// parsePadded checks the length prefix, the zero padding and the two CRLFs.
func parsePadded(p []byte) (Envelope, bool) {
	if len(p) < lenSize {
		return Envelope{}, false
	}
	n := binary.BigEndian.Uint32(p)
	if uint64(n) > uint64(len(p)-lenSize) {
		return Envelope{}, false
	}
	body, pad := p[lenSize:lenSize+int(n)], p[lenSize+int(n):]
	for _, c := range pad {
		if c != 0 {
			return Envelope{}, false
		}
	}
	header, rest, ok := bytes.Cut(body, []byte("\r\n"))
	if !ok || !bytes.HasSuffix(rest, []byte("\r\n")) {
		return Envelope{}, false
	}
	return Envelope{Header: header, Body: rest[:len(rest)-2]}, true
}

// checkHeader accepts "KEY" SP senderKey (base64 of a valid signature key)
// and signedMsg, the two clientHeaders of SPEC §10.
func checkHeader(h []byte) error {
	if rest, ok := bytes.CutPrefix(h, []byte(confirmPrefix)); ok {
		if _, ok := (Envelope{Header: h}).SenderKey(); ok {
			return nil
		}
		return fmt.Errorf("%w: KEY header with an invalid key (%d bytes)", ErrHeader, len(rest))
	}
	if _, err := ParseMsgHeader(h); err != nil && !errors.Is(err, ErrHeader) {
		return headerError{err}
	} else if err != nil {
		return err
	}
	return nil
}

// headerError is an invalid signed header as Seal reports it: both ErrHeader
// and the parser's reason, with the package prefix once.
type headerError struct{ err error }

func (e headerError) Error() string {
	return ErrHeader.Error() + ": " + strings.TrimPrefix(e.err.Error(), "e2e: ")
}

func (e headerError) Unwrap() []error { return []error{ErrHeader, e.err} }

// IsKey reports whether the header is a KEY header, valid or not: after the
// confirmation that secured the queue, any such message is dropped (SPEC
// §10).
func (e Envelope) IsKey() bool {
	return string(e.Header) == "KEY" || bytes.HasPrefix(e.Header, []byte(confirmPrefix))
}

// Signed parses the header as a signed message header; the error says why
// it is not one (see ParseMsgHeader).
func (e Envelope) Signed() (MsgHeader, error) { return ParseMsgHeader(e.Header) }
