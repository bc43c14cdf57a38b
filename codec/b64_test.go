package codec

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
)

// checkDecodeB64 compares decodeB64 with fzB64 (Go's strict decoder behind
// a CR/LF check) on s: both accept or both refuse, with the same output.
func checkDecodeB64(t *testing.T, s []byte) {
	t.Helper()
	want, wantOK := fzB64(s)
	dst := make([]byte, len(s)/4*3)
	n, ok := decodeB64(dst, s)
	if ok != wantOK {
		t.Fatalf("decodeB64(%q) ok %v, encoding/base64 strict %v", s, ok, wantOK)
	}
	if ok && !bytes.Equal(dst[:n], want) {
		t.Fatalf("decodeB64(%q) = %x, encoding/base64 strict %x", s, dst[:n], want)
	}
}

// b64Seeds are the field sizes the parser decodes (queueId, Ed25519 and RSA
// signatures, message ID, SPKI keys), canonical and one bit off, and the
// padding forms around them.
func b64Seeds() []string {
	var seeds []string
	for _, n := range []int{0, 1, 2, 3, 8, 16, 32, 44, 64, 256, 294} {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*37 + n)
		}
		enc := base64.StdEncoding.EncodeToString(b)
		seeds = append(seeds, enc, strings.TrimRight(enc, "="), enc+"====", enc+"\r\n", "\n"+enc)
		if len(enc) > 0 {
			// The last data character with its lowest bit flipped: a
			// non-canonical encoding when padding follows.
			i := len(strings.TrimRight(enc, "=")) - 1
			c := []byte(enc)
			c[i] = b64Alphabet[b64Val[c[i]]^1]
			seeds = append(seeds, string(c))
		}
	}
	return append(seeds, "=", "==", "===", "====", "A===", "AA==", "AB==", "AAA=", "AAB=", "A=A=", "AA=A",
		"AAAA====", "AA==AAAA", "QUJD\x00", "QU\rJD", "-_AA", "QUJD QUJD")
}

// TestDecodeB64 checks decodeB64 against encoding/base64 on the seeds and on
// every 4-byte string over bytes that stand for each class (alphabet bytes
// whose low bits are zero or not, '=', CR, LF, other bytes), and on every
// byte at each position of a one-, two- and three-byte last quantum.
func TestDecodeB64(t *testing.T) {
	for _, s := range b64Seeds() {
		checkDecodeB64(t, []byte(s))
	}
	const classes = "AQgw/+9PafzB=\r\n-_ \x00\xff"
	var q [4]byte
	for _, a := range []byte(classes) {
		for _, b := range []byte(classes) {
			for _, c := range []byte(classes) {
				for _, d := range []byte(classes) {
					q = [4]byte{a, b, c, d}
					checkDecodeB64(t, q[:])
					checkDecodeB64(t, append([]byte("QUJD"), q[:]...))
				}
			}
		}
	}
	for _, tmpl := range []string{"QUJD", "QUI=", "QQ==", "QUJDQUJD"} {
		for i := range len(tmpl) {
			for c := range 256 {
				s := []byte(tmpl)
				s[i] = byte(c)
				checkDecodeB64(t, s)
			}
		}
	}
}

// FuzzDecodeB64 holds decodeB64 to encoding/base64's StdEncoding.Strict() on
// any input (CR and LF refused first, as SPEC §2 allows neither): the same
// accept or refuse, the same bytes.
func FuzzDecodeB64(f *testing.F) {
	for _, s := range b64Seeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, s []byte) { checkDecodeB64(t, s) })
}

func BenchmarkDecodeB64(b *testing.B) {
	for _, n := range []int{16, 64, 256} { // queueId, Ed25519 and RSA-2048 signatures
		src := make([]byte, n)
		for i := range src {
			src[i] = byte(i * 7)
		}
		s := []byte(base64.StdEncoding.EncodeToString(src))
		dst := make([]byte, len(s)/4*3)
		b.Run(strconv.Itoa(len(s)), func(b *testing.B) {
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				decodeB64(dst, s)
			}
		})
	}
}
