package codec

import (
	"bytes"
	"crypto/ecdh"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/cryptotest"
)

// Fixed server transport keys for the fuzz targets, so that committed corpus
// files sealed to them keep opening: x25519 is RFC 7748 §6.1 Alice (its
// public half is vectors.md §5), mlkem768x25519 is the seed 00 01 … 1f.
// The fixed server share is RFC 7748 §6.1 Bob (vectors.md §6), the fixed
// serverRandom 32 × 0x02 (vectors.md §6) and the replayed one 32 × 0x0b.
var (
	fzKeysOnce  sync.Once
	fzX25519    *KEMPrivateKey
	fzMLKEM     *KEMPrivateKey
	fzShare     *ecdh.PrivateKey
	fzRandom    = fill32(0x02)
	fzAltRandom = fill32(0x0b)
)

func fzServerKeys(t testing.TB) (x25519, mlkem *KEMPrivateKey) {
	t.Helper()
	fzKeysOnce.Do(func() {
		x, _ := hex.DecodeString("02" + rfcAlicePriv)
		m := []byte{byte(KEMMLKEM768X25519)}
		for i := range 32 {
			m = append(m, byte(i))
		}
		fzX25519, _ = ParseKEMPrivateKey(x)
		fzMLKEM, _ = ParseKEMPrivateKey(m)
		b, _ := hex.DecodeString(rfcBobPriv)
		fzShare, _ = ecdh.X25519().NewPrivateKey(b)
	})
	if fzX25519 == nil || fzMLKEM == nil || fzShare == nil {
		t.Fatal("fixed fuzz keys do not parse")
	}
	return fzX25519, fzMLKEM
}

// fzServer returns the fixed server of kind (even: x25519, odd:
// mlkem768x25519): its key, its hello with serverRandom random, and that
// hello's bytes.
func fzServer(t testing.TB, kind uint8, random [32]byte) (*KEMPrivateKey, ServerHello, []byte) {
	t.Helper()
	priv, m := fzServerKeys(t)
	if kind%2 == 1 {
		priv = m
	}
	h := ServerHello{MinVersion: TransportVersion, MaxVersion: TransportVersion, BlockSize: DefaultBlockSize,
		Key: priv.Public().Bytes(), Random: random}
	copy(h.Share[:], fzShare.PublicKey().Bytes())
	return priv, h, h.Append(nil)
}

// vectors.md §5: the typed x25519 key.
const fzVectorTypedKey = "028520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"

// FuzzServerHello checks ParseServerHello on arbitrary bytes and Append on
// arbitrary fields. Parsing never panics, never modifies its input and uses
// n <= len(b) bytes; a short input (header, key or the 64-byte tail
// missing) is exactly io.ErrShortBuffer with n = 0; otherwise n covers the
// whole hello, and the hello either is rejected with ErrHello and a zero
// hello for a reason the doc names, or re-encodes with Append to exactly
// b[:n], with AppendPrefix giving the part before serverRandom and a Key
// that does not alias b. Append of any fields (b as the key, serverRandom
// and serverShare cut from b) parses back to them exactly when they are
// valid.
func FuzzServerHello(f *testing.F) {
	typed, _ := hex.DecodeString(fzVectorTypedKey)
	x, m := fzServerKeys(f)
	share := [32]byte(fzShare.PublicKey().Bytes())
	for _, h := range []ServerHello{
		{2, 2, DefaultBlockSize, typed, fzRandom, share},
		{2, 2, MinBlockSize, x.Public().Bytes(), fill32(0xff), share},
		{2, 2, MaxBlockSize, m.Public().Bytes(), fzAltRandom, [32]byte{}},
		{1, 3, DefaultBlockSize, typed, fzRandom, share},
		{1, 1, DefaultBlockSize, typed, fzRandom, share},
		{3, 2, DefaultBlockSize, typed, fzRandom, share},
		{2, 2, 5000, typed, fzRandom, share},
		{2, 2, DefaultBlockSize, nil, fzRandom, share},
	} {
		f.Add(h.Append(nil), h.MinVersion, h.MaxVersion, h.BlockSize)
		f.Add(h.AppendPrefix(nil), h.MaxVersion, h.MinVersion, h.BlockSize)
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
		if len(b) < 10 || len(b) < 10+int(binary.BigEndian.Uint16(b[8:10]))+64 {
			if err != io.ErrShortBuffer || n != 0 || h.Key != nil {
				t.Fatalf("short hello of %d bytes: n=%d err=%v", len(b), n, err)
			}
		} else {
			keyLen := int(binary.BigEndian.Uint16(b[8:10]))
			if n != 10+keyLen+64 {
				t.Fatalf("hello with keyLen %d: used %d bytes", keyLen, n)
			}
			bad := binary.BigEndian.Uint16(b[0:2]) > binary.BigEndian.Uint16(b[2:4]) ||
				!ValidBlockSize(int(binary.BigEndian.Uint32(b[4:8]))) || keyLen == 0
			switch {
			case bad != (err != nil):
				t.Fatalf("hello % x: err %v", b[:n], err)
			case err != nil:
				if !errors.Is(err, ErrHello) || h.Key != nil || h.BlockSize != 0 || h.MinVersion != 0 ||
					h.Random != ([32]byte{}) || h.Share != ([32]byte{}) {
					t.Fatalf("rejected hello: %+v, err %v does not wrap ErrHello", h, err)
				}
			default:
				if got := h.Append(nil); !bytes.Equal(got, b[:n]) {
					t.Fatalf("hello % x re-encodes as % x", b[:n], got)
				}
				if got := h.AppendPrefix(nil); !bytes.Equal(got, b[:10+keyLen]) {
					t.Fatalf("AppendPrefix % x, want % x", got, b[:10+keyLen])
				}
				if !bytes.Equal(h.Random[:], b[n-64:n-32]) || !bytes.Equal(h.Share[:], b[n-32:n]) {
					t.Fatal("serverRandom or serverShare misread")
				}
				clear(in) // Key is a copy
				if !bytes.Equal(h.Key, b[10:10+keyLen]) {
					t.Fatal("Key aliases the input")
				}
			}
		}

		// Field direction: the fuzzed fields with b as the key.
		want := ServerHello{MinVersion: minV, MaxVersion: maxV, BlockSize: bs, Key: b}
		copy(want.Random[:], b)
		copy(want.Share[:], b[len(b)/2:])
		wire := want.Append(nil)
		prefix := want.AppendPrefix(nil)
		if len(wire) != len(prefix)+64 || !bytes.HasPrefix(wire, prefix) {
			t.Fatalf("AppendPrefix % x is not Append % x less 64 bytes", prefix, wire)
		}
		got, n, err := ParseServerHello(wire)
		valid := minV <= maxV && ValidBlockSize(int(bs)) && len(b) > 0 && len(b) <= 0xFFFF
		if valid != (err == nil) || n != len(wire) {
			t.Fatalf("Append(%d %d %d, %d-byte key) = % x: n=%d err=%v", minV, maxV, bs, len(b), wire, n, err)
		}
		if valid && (got.MinVersion != minV || got.MaxVersion != maxV || got.BlockSize != bs || !bytes.Equal(got.Key, b) ||
			got.Random != want.Random || got.Share != want.Share) {
			t.Fatalf("Append then Parse: %+v, want %+v", got, want)
		}
	})
}

// FuzzClientHello checks ParseClientHello: exactly ClientHelloSize bytes
// parse and re-encode with Append to the same bytes, anything else is
// ErrHello with a zero hello. The 38 bytes, sealed to each fixed server key
// with RFC 7748 Alice's share as clientShare, pass ServerHandshake against
// the fixed server exactly when they hold version 2 and the server's block
// size, and then give the keys of vectors.md §6's schedule with that secret
// (dh is the vector's); otherwise the server fails with ErrHello and zero
// keys.
func FuzzClientHello(f *testing.F) {
	vector := (&ClientHello{Version: 2, BlockSize: DefaultBlockSize, Secret: fill32(1)}).Append(nil)
	f.Add(vector)
	f.Add(make([]byte, ClientHelloSize))
	f.Add((&ClientHello{Version: 1, BlockSize: DefaultBlockSize, Secret: fill32(1)}).Append(nil))
	f.Add((&ClientHello{Version: 3, BlockSize: DefaultBlockSize}).Append(nil))
	f.Add((&ClientHello{Version: 2, BlockSize: MinBlockSize}).Append(nil))
	f.Add(vector[:ClientHelloSize-1])
	f.Add(append(bytes.Clone(vector), 0))
	f.Add(make([]byte, 94)) // a version 1 plaintext's length
	f.Fuzz(func(t *testing.T, plain []byte) {
		in := bytes.Clone(plain)
		h, err := ParseClientHello(in)
		if !bytes.Equal(in, plain) {
			t.Fatal("ParseClientHello modified its input")
		}
		if len(plain) != ClientHelloSize {
			if !errors.Is(err, ErrHello) || h != (ClientHello{}) {
				t.Fatalf("%d-byte hello: %+v, err %v", len(plain), h, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("38-byte hello rejected: %v", err)
		}
		if got := h.Append(nil); !bytes.Equal(got, plain) {
			t.Fatalf("hello % x re-encodes as % x", plain, got)
		}
		clear(in)
		if !bytes.Equal(h.Secret[:], plain[6:]) {
			t.Fatal("Secret aliases the input")
		}

		dh := [32]byte(unhex(t, "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"))
		alice := unhex(t, rfcAlicePub)
		ok := h.Version == TransportVersion && h.BlockSize == DefaultBlockSize
		for kind := range uint8(2) {
			priv, _, sh := fzServer(t, kind, fzRandom)
			ch := sealCH(t, priv.Public(), TransportInfo, plain, alice)
			if len(ch) != ClientHelloLen(priv.Public()) {
				t.Fatalf("%v: client hello of %d bytes, ClientHelloLen %d", priv.Public().Type(), len(ch), ClientHelloLen(priv.Public()))
			}
			k, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzRandom, ch, sh)
			if !ok {
				if !errors.Is(err, ErrHello) || k != (SessionKeys{}) {
					t.Fatalf("%v: version %d, block size %d: keys %x, err %v", priv.Public().Type(), h.Version, h.BlockSize, k, err)
				}
				continue
			}
			want := DeriveKeys(&h.Secret, &dh, &fzRandom, ch, sh)
			if err != nil || k != want {
				t.Fatalf("%v: ServerHandshake = %x, %v; want %x", priv.Public().Type(), k, err, want)
			}
		}
	})
}

// FuzzServerHandshake feeds arbitrary client hellos ch to ServerHandshake
// against a fixed server (kind even: x25519, odd: mlkem768x25519; the fixed
// share and serverRandom). It never panics or modifies its input; a failure
// is ErrHello or ErrKEMOpen with zero keys, and is ErrHello for a length or
// sealedLen that is not the key type's. A hello that passes has the key
// type's length and opens to a version-2 hello of the server's block size,
// and its keys are DeriveKeys of its secret and the X25519 of its share;
// replayed to a server with another serverRandom it gives other keys, and
// with one bit flipped (chosen by seed) it fails or gives other keys.
//
// Then, when ch passed or is shorter than sealedLen, ClientHandshake with
// crypto randomness fixed by seed builds a valid hello against the same
// server: the server derives the client's keys (those of ch itself when ch
// is that hello, as in the committed corpus), and after a bit flip chosen by
// seed it fails or derives other keys.
func FuzzServerHandshake(f *testing.F) {
	x, m := fzServerKeys(f)
	xl, ml := ClientHelloLen(x.Public()), ClientHelloLen(m.Public())
	vectorCH := unhex(f, "0056"+hex.EncodeToString(bytes.Repeat([]byte{5}, 86))+rfcAlicePub)
	badLen := bytes.Clone(vectorCH)
	badLen[1]++
	f.Add(uint8(0), uint64(0), vectorCH) // vectors.md §6: right shape, does not open
	f.Add(uint8(1), uint64(1), vectorCH) // x25519-shaped, to the mlkem key
	f.Add(uint8(0), uint64(2), badLen)
	f.Add(uint8(0), uint64(3), make([]byte, xl))
	f.Add(uint8(1), uint64(4), make([]byte, ml))
	f.Add(uint8(0), uint64(5), vectorCH[:xl-1])
	f.Add(uint8(1), uint64(6), []byte{})
	f.Add(uint8(0), uint64(6), []byte{0})
	f.Add(uint8(0), uint64(7), append(bytes.Clone(vectorCH), 0))
	f.Fuzz(func(t *testing.T, kind uint8, seed uint64, ch []byte) {
		priv, h, sh := fzServer(t, kind, fzRandom)
		_, _, altSH := fzServer(t, kind, fzAltRandom)
		size := ClientHelloLen(priv.Public())

		// Arbitrary bytes.
		in := bytes.Clone(ch)
		k, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzRandom, in, sh)
		passed := err == nil
		if !bytes.Equal(in, ch) {
			t.Fatal("ServerHandshake modified its input")
		}
		if err != nil {
			if !errors.Is(err, ErrKEMOpen) && !errors.Is(err, ErrHello) || k != (SessionKeys{}) {
				t.Fatalf("rejected: %x, %v", k, err)
			}
			if (len(ch) != size || int(binary.BigEndian.Uint16(ch)) != size-34) && !errors.Is(err, ErrHello) {
				t.Fatalf("%d-byte hello: %v, want ErrHello", len(ch), err)
			}
		} else {
			if len(ch) != size || int(binary.BigEndian.Uint16(ch)) != size-34 {
				t.Fatalf("%v: a %d-byte hello passed, want %d bytes", priv.Public().Type(), len(ch), size)
			}
			plain, err := priv.Open([]byte(TransportInfo), ch[2:size-32])
			if err != nil {
				t.Fatalf("passed but does not open: %v", err)
			}
			hello, err := ParseClientHello(plain)
			if err != nil || hello.Version != TransportVersion || hello.BlockSize != DefaultBlockSize {
				t.Fatalf("passed with hello %+v, %v", hello, err)
			}
			dh, err := fzShare.ECDH(mustShare(t, ch[size-32:]))
			if err != nil {
				t.Fatalf("passed with share % x: %v", ch[size-32:], err)
			}
			if want := DeriveKeys(&hello.Secret, (*[32]byte)(dh), &fzRandom, ch, sh); k != want {
				t.Fatalf("keys %x, want %x", k, want)
			}
			if r, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzAltRandom, in, altSH); err != nil || keysOverlap(r, k) {
				t.Fatalf("replayed with another serverRandom: %x, %v", r, err)
			}
			bit := int(seed % uint64(8*len(in)))
			in[bit/8] ^= 1 << (bit % 8)
			if r, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzRandom, in, sh); err == nil && keysOverlap(r, k) {
				t.Fatalf("bit %d flipped: keys %x overlap %x", bit, r, k)
			} else if err != nil && (!errors.Is(err, ErrKEMOpen) && !errors.Is(err, ErrHello) || r != (SessionKeys{})) {
				t.Fatalf("bit %d flipped: %x, %v", bit, r, err)
			}
		}

		// A valid hello from ClientHandshake, when ch passed or has no
		// sealedLen. (Not for every input: it costs a KEM encapsulation and
		// two opens, which made minimizing a long ch take minutes.)
		if !passed && len(ch) >= 2 {
			return
		}
		cryptotest.SetGlobalRandom(t, seed)
		cch, ck, err := ClientHandshake(sh, &h, priv.Public())
		if err != nil || len(cch) != size {
			t.Fatalf("ClientHandshake: %d bytes, %v", len(cch), err)
		}
		sk, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzRandom, cch, sh)
		if err != nil || sk != ck {
			t.Fatalf("server keys %x, %v; client %x", sk, err, ck)
		}
		if bytes.Equal(ch, cch) && k != ck {
			t.Fatal("ch is the client's hello but gave other keys")
		}
		bit := int((seed >> 32) % uint64(8*size))
		cch[bit/8] ^= 1 << (bit % 8)
		if r, err := ServerHandshake(priv, fzShare, DefaultBlockSize, &fzRandom, cch, sh); err == nil && keysOverlap(r, ck) {
			t.Fatalf("client hello with bit %d flipped: keys %x overlap %x", bit, r, ck)
		} else if err != nil && (!errors.Is(err, ErrKEMOpen) && !errors.Is(err, ErrHello) || r != (SessionKeys{})) {
			t.Fatalf("client hello with bit %d flipped: %x, %v", bit, r, err)
		}
	})
}
