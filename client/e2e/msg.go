package e2e

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/smprelay/smprelay/codec"
)

// SigContext begins the bytes e2eSig signs; part of the wire format. It
// keeps them apart from a transmission's signed bytes, which SK signs too
// and which never begin "SMP " (SPEC §2).
const SigContext = "SMP e2e v1 sig"

const (
	msgPrefix = "MSG "
	seqSize   = 8  // seq in the signed bytes, uint64 big-endian
	maxDigits = 20 // len("18446744073709551615")
)

// Errors of ParseMsgHeader. The recipient drops a message with any of them
// (SPEC §10); they tell it which notice to give.
var (
	// ErrUnsigned reports a "MSG" header without e2eSig.
	ErrUnsigned = errors.New("e2e: message not signed")
	// ErrSeq reports a seq that is not 1 … 2^64−1 in decimal without a
	// leading zero.
	ErrSeq = errors.New("e2e: invalid seq")
	// ErrSig reports an e2eSig that is not canonical base64 (standard
	// alphabet, padded, nothing else), or that does not verify.
	ErrSig = errors.New("e2e: bad signature")
)

// MsgHeader is the header of every message after the confirmation:
// "MSG" SP seq SP e2eSig (SPEC §10 signedMsg).
type MsgHeader struct {
	Seq uint64 // 1 … 2^64−1; 0 is never valid
	Sig []byte // e2eSig, raw
}

// Bytes returns the header as it goes in decryptedBody.
func (h MsgHeader) Bytes() []byte {
	b := make([]byte, 0, len(msgPrefix)+maxDigits+1+base64.StdEncoding.EncodedLen(len(h.Sig)))
	b = append(b, msgPrefix...)
	b = strconv.AppendUint(b, h.Seq, 10)
	b = append(b, ' ')
	return base64.StdEncoding.AppendEncode(b, h.Sig)
}

// ParseMsgHeader parses a signed message header strictly. A header that is
// not "MSG" SP … at all is ErrHeader; then seq is checked (ErrSeq), then that
// an e2eSig is present (ErrUnsigned) and canonical base64 (ErrSig), so that
// every header has one reading and Bytes gives back the same bytes.
func ParseMsgHeader(h []byte) (MsgHeader, error) {
	if string(h) == "MSG" {
		return MsgHeader{}, fmt.Errorf("%w: no seq", ErrSeq)
	}
	if len(h) < len(msgPrefix) || string(h[:len(msgPrefix)]) != msgPrefix {
		return MsgHeader{}, fmt.Errorf("%w: not MSG or KEY", ErrHeader)
	}
	rest := h[len(msgPrefix):]
	n := 0
	for n < len(rest) && rest[n] != ' ' {
		n++
	}
	seq, ok := parseSeq(rest[:n])
	if !ok {
		return MsgHeader{}, fmt.Errorf("%w (%d bytes)", ErrSeq, n)
	}
	if n == len(rest) || n+1 == len(rest) {
		return MsgHeader{}, fmt.Errorf("%w: message %d has no e2eSig", ErrUnsigned, seq)
	}
	text := rest[n+1:]
	sig, err := base64.StdEncoding.Strict().DecodeString(string(text))
	// The decoder skips CR and LF; re-encoding catches them and any other
	// second spelling of the same bytes.
	if err != nil || base64.StdEncoding.EncodeToString(sig) != string(text) {
		return MsgHeader{}, fmt.Errorf("%w: e2eSig of message %d is not base64", ErrSig, seq)
	}
	return MsgHeader{Seq: seq, Sig: sig}, nil
}

// parseSeq accepts %x31-39 *19DIGIT whose value fits in a uint64.
func parseSeq(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > maxDigits || b[0] < '1' || b[0] > '9' {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(string(b), 10, 64)
	return v, err == nil
}

// SignedBytes returns what e2eSig signs: SigContext ‖ sid ‖ seq (uint64
// big-endian) ‖ body.
func SignedBytes(sid []byte, seq uint64, body []byte) []byte {
	b := make([]byte, 0, len(SigContext)+len(sid)+seqSize+len(body))
	b = append(b, SigContext...)
	b = append(b, sid...)
	b = binary.BigEndian.AppendUint64(b, seq)
	return append(b, body...)
}

// Sign returns the header of message seq with body on the queue whose sender
// ID is sid, signed by the queue's sender key sk.
func Sign(sk *codec.Signer, sid []byte, seq uint64, body []byte) (MsgHeader, error) {
	if len(sid) != codec.QueueIDSize {
		return MsgHeader{}, fmt.Errorf("e2e: sender ID of %d bytes, want %d", len(sid), codec.QueueIDSize)
	}
	if seq == 0 {
		return MsgHeader{}, fmt.Errorf("e2e: sign: %w: 0", ErrSeq)
	}
	sig, err := sk.Sign(SignedBytes(sid, seq, body))
	if err != nil {
		return MsgHeader{}, fmt.Errorf("e2e: sign: %w", err)
	}
	return MsgHeader{Seq: seq, Sig: sig}, nil
}

// Verify reports whether h.Sig is the signature of sk's key over message
// h.Seq with body on the queue whose sender ID is sid.
func Verify(sk *codec.VerifyKey, sid []byte, h MsgHeader, body []byte) bool {
	if sk == nil || len(sid) != codec.QueueIDSize || h.Seq == 0 {
		return false
	}
	return sk.Verify(SignedBytes(sid, h.Seq, body), h.Sig)
}

// MaxMsgHeader returns the length of the longest signed message header whose
// signatures have sigLen bytes: the 20 digits of the largest seq, so that
// the longest message a queue takes does not shrink as its seq grows.
func MaxMsgHeader(sigLen int) int {
	return len(msgPrefix) + maxDigits + 1 + base64.StdEncoding.EncodedLen(sigLen)
}
