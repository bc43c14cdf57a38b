package codec

// b64Invalid marks a byte outside the standard base64 alphabet in b64Val.
// Its high bits are set, which no 6-bit value has, so one OR over a
// quantum's values tells whether any byte was invalid.
const b64Invalid = 0xff

// b64Alphabet is the standard base64 alphabet, the value of each character
// its index (RFC 4648 §4).
const b64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// b64Val maps each byte to its 6-bit value in the standard base64 alphabet
// (b64Alphabet), or to b64Invalid: '=' too, which only decodeB64's last
// quantum accepts.
var b64Val = func() (t [256]byte) {
	for i := range t {
		t[i] = b64Invalid
	}
	for i := range len(b64Alphabet) {
		t[b64Alphabet[i]] = byte(i)
	}
	return t
}()

// isB64 reports whether c is in the standard base64 alphabet ('=' is not).
func isB64(c byte) bool { return b64Val[c] != b64Invalid }

// decodeB64 decodes strict, padded standard base64 (SPEC §2) into dst, which
// must hold len(s)/4*3 bytes, and returns the decoded length. It accepts
// exactly what base64.StdEncoding.Strict() accepts from input without CR or
// LF (which Go's decoder skips and SPEC does not allow), with the same
// output: whole 4-byte quanta of the alphabet, where only the last may end
// in "=" or "==", and then with zero bits after the last decoded byte.
// FuzzDecodeB64 holds it to that. The parser calls it for every signature
// and queueId: Go's decoder, with the alphabet check it needs first, took
// about three times as long on these short fields.
func decodeB64(dst, s []byte) (int, bool) {
	if len(s)%4 != 0 {
		return 0, false
	}
	if len(s) == 0 {
		return 0, true
	}
	last := len(s) - 4
	dst = dst[:last/4*3+3]
	n := 0
	for i := 0; i < last; i += 4 {
		q := s[i : i+4 : i+4]
		a, b, c, d := b64Val[q[0]], b64Val[q[1]], b64Val[q[2]], b64Val[q[3]]
		if (a|b|c|d)&0xc0 != 0 {
			return 0, false
		}
		v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6 | uint32(d)
		o := dst[n : n+3 : n+3]
		o[0], o[1], o[2] = byte(v>>16), byte(v>>8), byte(v)
		n += 3
	}
	q := s[last : last+4 : last+4]
	a, b := b64Val[q[0]], b64Val[q[1]]
	o := dst[n : n+3 : n+3]
	switch {
	case q[3] != '=':
		c, d := b64Val[q[2]], b64Val[q[3]]
		if (a|b|c|d)&0xc0 != 0 {
			return 0, false
		}
		v := uint32(a)<<18 | uint32(b)<<12 | uint32(c)<<6 | uint32(d)
		o[0], o[1], o[2] = byte(v>>16), byte(v>>8), byte(v)
		return n + 3, true
	case q[2] == '=':
		// "xx==": one byte; the low 4 bits of b are past it and must be zero.
		if (a|b)&0xc0 != 0 || b&0x0f != 0 {
			return 0, false
		}
		o[0] = a<<2 | b>>4
		return n + 1, true
	default:
		// "xxx=": two bytes; the low 2 bits of c are past them and must be zero.
		c := b64Val[q[2]]
		if (a|b|c)&0xc0 != 0 || c&0x03 != 0 {
			return 0, false
		}
		o[0], o[1] = a<<2|b>>4, b<<4|c>>2
		return n + 2, true
	}
}
