package codec

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"
)

// Fixed server transport keys for the fuzz targets, so that committed corpus
// files sealed to them keep opening: x25519 is RFC 7748 §6.1 Alice (its
// public half is vectors.md §5), mlkem768x25519 is the seed 00 01 … 1f.
var (
	fzKeysOnce sync.Once
	fzX25519   *KEMPrivateKey
	fzMLKEM    *KEMPrivateKey
)

func fzServerKeys(t testing.TB) (x25519, mlkem *KEMPrivateKey) {
	t.Helper()
	fzKeysOnce.Do(func() {
		x, _ := hex.DecodeString("0277076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
		m := []byte{byte(KEMMLKEM768X25519)}
		for i := range 32 {
			m = append(m, byte(i))
		}
		fzX25519, _ = ParseKEMPrivateKey(x)
		fzMLKEM, _ = ParseKEMPrivateKey(m)
	})
	if fzX25519 == nil || fzMLKEM == nil {
		t.Fatal("fixed fuzz KEM keys do not parse")
	}
	return fzX25519, fzMLKEM
}

// vectors.md §5: the typed x25519 key.
const fzVectorTypedKey = "028520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"

// FuzzServerHello checks ParseServerHello on arbitrary bytes and Append on
// arbitrary fields. Parsing never panics and uses n <= len(b) bytes; a short
// input is exactly io.ErrShortBuffer with n = 0; otherwise n covers the
// whole hello, and the hello either is rejected with ErrHello for a reason
// the doc names, or re-encodes with Append to exactly b[:n] with a Key that
// does not alias b. Append of any fields parses back to them exactly when
// they are valid.
func FuzzServerHello(f *testing.F) {
	typed, _ := hex.DecodeString(fzVectorTypedKey)
	x, m := fzServerKeys(f)
	for _, h := range []ServerHello{
		{1, 1, DefaultBlockSize, typed},
		{1, 1, MinBlockSize, x.Public().Bytes()},
		{1, 1, MaxBlockSize, m.Public().Bytes()},
		{2, 1, DefaultBlockSize, typed},
		{1, 1, 5000, typed},
		{1, 1, DefaultBlockSize, nil},
	} {
		f.Add(h.Append(nil), h.MinVersion, h.MaxVersion, h.BlockSize)
	}
	f.Fuzz(func(t *testing.T, b []byte, minV, maxV uint16, bs uint32) {
		// Wire direction.
		in := bytes.Clone(b)
		h, n, err := ParseServerHello(in)
		if !bytes.Equal(in, b) {
			t.Fatal("ParseServerHello modified its input")
		}
		if n < 0 || n > len(b) {
			t.Fatalf("used %d of %d bytes", n, len(b))
		}
		if len(b) < 10 || len(b) < 10+int(binary.BigEndian.Uint16(b[8:10])) {
			if err != io.ErrShortBuffer || n != 0 {
				t.Fatalf("short hello of %d bytes: n=%d err=%v", len(b), n, err)
			}
		} else {
			keyLen := int(binary.BigEndian.Uint16(b[8:10]))
			if n != 10+keyLen {
				t.Fatalf("hello with keyLen %d: used %d bytes", keyLen, n)
			}
			bad := binary.BigEndian.Uint16(b[0:2]) > binary.BigEndian.Uint16(b[2:4]) ||
				!ValidBlockSize(int(binary.BigEndian.Uint32(b[4:8]))) || keyLen == 0
			switch {
			case bad != (err != nil):
				t.Fatalf("hello % x: err %v", b[:n], err)
			case err != nil:
				if !errors.Is(err, ErrHello) || h.Key != nil || h.BlockSize != 0 {
					t.Fatalf("rejected hello: %+v, err %v does not wrap ErrHello", h, err)
				}
			default:
				if got := h.Append(nil); !bytes.Equal(got, b[:n]) {
					t.Fatalf("hello % x re-encodes as % x", b[:n], got)
				}
				clear(in) // Key is a copy
				if !bytes.Equal(h.Key, b[10:n]) {
					t.Fatal("Key aliases the input")
				}
			}
		}

		// Field direction: the fuzzed fields with b as the key.
		want := ServerHello{MinVersion: minV, MaxVersion: maxV, BlockSize: bs, Key: b}
		wire := want.Append(nil)
		got, n, err := ParseServerHello(wire)
		valid := minV <= maxV && ValidBlockSize(int(bs)) && len(b) > 0 && len(b) <= 0xFFFF
		if valid != (err == nil) || n != len(wire) {
			t.Fatalf("Append(%d %d %d, %d-byte key) = % x: n=%d err=%v", minV, maxV, bs, len(b), wire, n, err)
		}
		if valid && (got.MinVersion != minV || got.MaxVersion != maxV || got.BlockSize != bs || !bytes.Equal(got.Key, b)) {
			t.Fatalf("Append then Parse: %+v, want %+v", got, want)
		}
	})
}

// FuzzClientHello checks ParseClientHello: exactly ClientHelloSize bytes
// parse and re-encode with Append to the same bytes, anything else is
// ErrHello; and a parsed hello sealed to each fixed key opens back to itself.
func FuzzClientHello(f *testing.F) {
	f.Add(make([]byte, ClientHelloSize))
	h := ClientHello{Version: 1, BlockSize: DefaultBlockSize}
	for i := range h.C2SKey {
		h.C2SKey[i], h.S2CKey[i] = byte(i), byte(0x80+i)
	}
	f.Add(h.Append(nil))
	f.Add(h.Append(nil)[:ClientHelloSize-1])
	f.Add(append(h.Append(nil), 0))
	f.Fuzz(func(t *testing.T, plain []byte) {
		h, err := ParseClientHello(plain)
		if len(plain) != ClientHelloSize {
			if !errors.Is(err, ErrHello) || h != (ClientHello{}) {
				t.Fatalf("%d-byte hello: %+v, err %v", len(plain), h, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("94-byte hello rejected: %v", err)
		}
		if got := h.Append(nil); !bytes.Equal(got, plain) {
			t.Fatalf("hello % x re-encodes as % x", plain, got)
		}
		x, m := fzServerKeys(t)
		for _, priv := range []*KEMPrivateKey{x, m} {
			wire, err := SealClientHello(priv.Public(), &h)
			if err != nil {
				t.Fatalf("%v: seal: %v", priv.Public().Type(), err)
			}
			if int(binary.BigEndian.Uint16(wire)) != len(wire)-2 {
				t.Fatalf("%v: sealedLen %d for %d bytes", priv.Public().Type(), binary.BigEndian.Uint16(wire), len(wire)-2)
			}
			got, err := OpenClientHello(priv, wire[2:])
			if err != nil || got != h {
				t.Fatalf("%v: open: %+v, %v; want %+v", priv.Public().Type(), got, err, h)
			}
		}
	})
}

// FuzzOpenClientHello feeds arbitrary sealed hellos to OpenClientHello with
// a fixed server key (kind even: x25519, odd: mlkem768x25519). It never
// panics or modifies its input; a failure is ErrKEMOpen or ErrHello with a
// zero hello; more than MaxSealedHello bytes are refused; and whatever opens
// has the sealed length of its key type and stops opening when any bit of it
// is flipped.
func FuzzOpenClientHello(f *testing.F) {
	x, m := fzServerKeys(f)
	h := ClientHello{Version: 1, BlockSize: DefaultBlockSize}
	for i, priv := range []*KEMPrivateKey{x, m} {
		wire, err := SealClientHello(priv.Public(), &h)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(uint8(i), wire[2:])
		f.Add(uint8(1-i), wire[2:]) // sealed to the other key
		f.Add(uint8(i), wire[2:len(wire)-1])
	}
	f.Add(uint8(0), make([]byte, 142))
	f.Add(uint8(0), make([]byte, MaxSealedHello+1))
	f.Fuzz(func(t *testing.T, kind uint8, sealed []byte) {
		priv, size := x, 32+ClientHelloSize+16
		if kind%2 == 1 {
			priv, size = m, 1120+ClientHelloSize+16
		}
		in := bytes.Clone(sealed)
		h, err := OpenClientHello(priv, in)
		if !bytes.Equal(in, sealed) {
			t.Fatal("OpenClientHello modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrKEMOpen) && !errors.Is(err, ErrHello) || h != (ClientHello{}) {
				t.Fatalf("rejected: %+v, %v", h, err)
			}
			if len(sealed) > MaxSealedHello && !errors.Is(err, ErrHello) {
				t.Fatalf("%d-byte sealed hello: %v, want ErrHello", len(sealed), err)
			}
			return
		}
		if len(sealed) != size {
			t.Fatalf("%v: a %d-byte sealed hello opened, want %d bytes", priv.Public().Type(), len(sealed), size)
		}
		// Flip one bit, chosen by the input, in enc or ciphertext.
		bit := int(kind) * 8 % (8 * len(sealed))
		for _, i := range []int{bit, 8*len(sealed) - 1 - bit} {
			in[i/8] ^= 1 << (i % 8)
			if _, err := OpenClientHello(priv, in); err == nil {
				t.Fatalf("%v: opens with bit %d flipped", priv.Public().Type(), i)
			}
			in[i/8] ^= 1 << (i % 8)
		}
	})
}
