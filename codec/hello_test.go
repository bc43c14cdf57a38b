package codec

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"testing"
)

// RFC 7748 §6.1 X25519 keys: the vectors.md §6 client share is Alice's, the
// server share Bob's.
const (
	rfcAlicePriv = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
	rfcAlicePub  = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
	rfcBobPriv   = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
	rfcBobPub    = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
)

// lowOrderShares are X25519 public keys whose shared secret with any private
// key is all zero: u = 0, u = 1, the two order-8 points, and their
// non-canonical encodings u + p (and the top bit set, which X25519 ignores).
var lowOrderShares = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p ≡ 0
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p+1 ≡ 1
	"0000000000000000000000000000000000000000000000000000000000000080", // 0, top bit set
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fill32(b byte) (a [32]byte) {
	for i := range a {
		a[i] = b
	}
	return a
}

func x25519Key(t testing.TB, s string) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().NewPrivateKey(unhex(t, s))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestServerHelloRoundTrip(t *testing.T) {
	for _, typ := range kemTypes {
		key := testKEMKey(t, typ).Public().Bytes()
		h := ServerHello{MinVersion: 2, MaxVersion: 2, BlockSize: DefaultBlockSize, Key: key}
		for i := range RandomSize {
			h.Random[i], h.Share[i] = byte(i), 0x80+byte(i)
		}
		wire := h.Append([]byte("prefix"))[len("prefix"):]
		kl := len(key)
		if len(wire) != 74+kl {
			t.Fatalf("%v: %d bytes, want %d", typ, len(wire), 74+kl)
		}
		if !bytes.Equal(wire[:10], []byte{0, 2, 0, 2, 0, 0, 0x20, 0, byte(kl >> 8), byte(kl)}) {
			t.Errorf("%v: header % x", typ, wire[:10])
		}
		if !bytes.Equal(wire[10:10+kl], key) || !bytes.Equal(wire[10+kl:42+kl], h.Random[:]) || !bytes.Equal(wire[42+kl:], h.Share[:]) {
			t.Errorf("%v: key, serverRandom or serverShare misplaced", typ)
		}
		prefix := h.AppendPrefix([]byte("p"))[1:]
		if !bytes.Equal(prefix, wire[:10+kl]) {
			t.Errorf("%v: AppendPrefix % x is not the first %d bytes of Append", typ, prefix, 10+kl)
		}
		if got := append(append(h.AppendPrefix(nil), h.Random[:]...), h.Share[:]...); !bytes.Equal(got, wire) {
			t.Errorf("%v: prefix ‖ random ‖ share differs from Append", typ)
		}
		for i := range len(wire) {
			if _, n, err := ParseServerHello(wire[:i]); err != io.ErrShortBuffer || n != 0 {
				t.Fatalf("%v: prefix of %d bytes: n=%d err=%v", typ, i, n, err)
			}
		}
		got, n, err := ParseServerHello(append(bytes.Clone(wire), "more"...))
		if err != nil || n != len(wire) {
			t.Fatalf("%v: n=%d err=%v", typ, n, err)
		}
		if got.MinVersion != 2 || got.MaxVersion != 2 || got.BlockSize != DefaultBlockSize || !bytes.Equal(got.Key, key) ||
			got.Random != h.Random || got.Share != h.Share {
			t.Errorf("%v: parsed %+v", typ, got)
		}
		if &got.Key[0] == &wire[10] {
			t.Errorf("%v: Key aliases the input", typ)
		}
	}
}

func TestParseServerHelloShort(t *testing.T) {
	h := ServerHello{MinVersion: 2, MaxVersion: 2, BlockSize: DefaultBlockSize, Key: []byte{2, 1, 2, 3}}
	wire := h.Append(nil)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"nil", nil},
		{"header only", wire[:10]},
		{"no tail", wire[:len(wire)-serverHelloTail]},
		{"no serverShare", wire[:len(wire)-ShareSize]},
		{"one byte missing", wire[:len(wire)-1]},
		// Length comes before validity: a short bad hello is still short.
		{"short, min > max", (&ServerHello{3, 2, DefaultBlockSize, h.Key, h.Random, h.Share}).Append(nil)[:len(wire)-1]},
		{"short, empty key", (&ServerHello{2, 2, DefaultBlockSize, nil, h.Random, h.Share}).Append(nil)[:73]},
	} {
		if got, n, err := ParseServerHello(tc.b); err != io.ErrShortBuffer || n != 0 || got.Key != nil {
			t.Errorf("%s: n=%d err=%v, want io.ErrShortBuffer itself", tc.name, n, err)
		}
	}
	// The v1 layout (no serverRandom, no serverShare) is short.
	v1 := []byte{0, 1, 0, 1, 0, 0, 0x20, 0, 0, 4, 2, 1, 2, 3}
	if _, _, err := ParseServerHello(v1); err != io.ErrShortBuffer {
		t.Errorf("v1 hello: err=%v", err)
	}
}

func TestParseServerHelloRejects(t *testing.T) {
	hello := func(minV, maxV uint16, bs uint32, key []byte) []byte {
		h := ServerHello{MinVersion: minV, MaxVersion: maxV, BlockSize: bs, Key: key, Random: fill32(2), Share: fill32(9)}
		return h.Append(nil)
	}
	key := []byte{2, 1, 2, 3}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"min > max", hello(3, 2, 8192, key)},
		{"min > max, 65535..0", hello(0xFFFF, 0, 8192, key)},
		{"block size 0", hello(2, 2, 0, key)},
		{"block size 2048", hello(2, 2, 2048, key)},
		{"block size 5000", hello(2, 2, 5000, key)},
		{"block size 2^17", hello(2, 2, 1<<17, key)},
		{"block size 2^32-1", hello(2, 2, 1<<32-1, key)},
		{"empty key", hello(2, 2, 8192, nil)},
		{"unframeable key", hello(2, 2, 8192, make([]byte, 1<<16))},
	} {
		h, n, err := ParseServerHello(tc.b)
		if !errors.Is(err, ErrHello) || h.Key != nil || h.BlockSize != 0 {
			t.Errorf("%s: %+v, error = %v, want ErrHello", tc.name, h, err)
		}
		if n != len(tc.b) {
			t.Errorf("%s: used %d of %d bytes", tc.name, n, len(tc.b))
		}
	}
	// A key too long to frame is not written, but the tail is.
	h := ServerHello{MinVersion: 2, MaxVersion: 2, BlockSize: 8192, Key: make([]byte, 1<<16)}
	if b := h.Append(nil); len(b) != 10+serverHelloTail || binary.BigEndian.Uint16(b[8:]) != 0 {
		t.Errorf("oversized key: %d bytes", len(b))
	}
	if b := h.AppendPrefix(nil); len(b) != 10 {
		t.Errorf("oversized key: prefix of %d bytes", len(b))
	}
	// Version ranges are the caller's check (ClientHandshake), not the parser's.
	for _, v := range [][2]uint16{{1, 1}, {3, 3}, {0, 0xFFFF}} {
		if _, _, err := ParseServerHello(hello(v[0], v[1], 8192, key)); err != nil {
			t.Errorf("versions %d..%d: %v", v[0], v[1], err)
		}
	}
	for _, bs := range []uint32{MinBlockSize, DefaultBlockSize, 1 << 14, MaxBlockSize} {
		if _, _, err := ParseServerHello(hello(2, 2, bs, key)); err != nil {
			t.Errorf("block size %d: %v", bs, err)
		}
	}
}

func TestClientHelloEncoding(t *testing.T) {
	h := ClientHello{Version: 0x0102, BlockSize: 0x03040506}
	for i := range h.Secret {
		h.Secret[i] = 0x10 + byte(i)
	}
	b := h.Append([]byte("x"))[1:]
	if len(b) != ClientHelloSize || ClientHelloSize != 38 {
		t.Fatalf("%d bytes", len(b))
	}
	want := append([]byte{1, 2, 3, 4, 5, 6}, h.Secret[:]...)
	if !bytes.Equal(b, want) {
		t.Fatalf("layout\n got % x\nwant % x", b, want)
	}
	got, err := ParseClientHello(b)
	if err != nil || got != h {
		t.Fatalf("ParseClientHello = %+v, %v", got, err)
	}
	b[6] ^= 0xFF // Secret is a copy
	if got.Secret[0] != 0x10 {
		t.Error("Secret aliases the input")
	}
	for _, n := range []int{0, 6, 37, 39, 94} {
		if h, err := ParseClientHello(make([]byte, n)); !errors.Is(err, ErrHello) || h != (ClientHello{}) {
			t.Errorf("%d bytes: %+v, error = %v", n, h, err)
		}
	}
}

// TestVectorKeySchedule reproduces vectors.md §6 exactly.
func TestVectorKeySchedule(t *testing.T) {
	const (
		vSH         = "00020002000020000021025dfedd3b6bd47f6fa28ee15d969d5bb0ea53774d488bdaf9df1c6e0124b3ef220202020202020202020202020202020202020202020202020202020202020202de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
		vCH         = "005605050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505050505058520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
		vDH         = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"
		vTranscript = "db640d608da21b7f10fd1b8e0427ac4e3448240a1365bbb98ca7dbf3cbf1ea63"
		vC2SKey     = "a37d9e192f408277b4605ba2077d04fe63fb2b9908ae9d6be95fda7606df8771"
		vC2SNonce   = "b8ed602798f66a0a10f33ef6"
		vS2CKey     = "083cddf1e56ff14dad7b88489b25324495f73934d7f2cbd0dea062472d20f417"
		vS2CNonce   = "01345a9767dd9260317a9005"
	)
	// The server transport key: x25519 with private key 32 × 0x03.
	three := fill32(3)
	kemPriv, err := ecdh.X25519().NewPrivateKey(three[:])
	if err != nil {
		t.Fatal(err)
	}
	typed := append([]byte{byte(KEMX25519)}, kemPriv.PublicKey().Bytes()...)
	server, err := ParseKEMPrivateKey(append([]byte{byte(KEMX25519)}, three[:]...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(server.Public().Bytes(), typed) {
		t.Fatalf("HPKE key of 32 × 0x03 is % x, crypto/ecdh says % x", server.Public().Bytes(), typed)
	}
	alice, bob := x25519Key(t, rfcAlicePriv), x25519Key(t, rfcBobPriv)
	if hex.EncodeToString(alice.PublicKey().Bytes()) != rfcAlicePub || hex.EncodeToString(bob.PublicKey().Bytes()) != rfcBobPub {
		t.Fatal("RFC 7748 public keys differ")
	}

	random := fill32(2)
	h := ServerHello{MinVersion: 2, MaxVersion: 2, BlockSize: 8192, Key: typed, Random: random}
	copy(h.Share[:], bob.PublicKey().Bytes())
	sh := h.Append(nil)
	if got := hex.EncodeToString(sh); got != vSH || len(sh) != 107 {
		t.Fatalf("SH (%d bytes)\n got %s\nwant %s", len(sh), got, vSH)
	}
	if p, n, err := ParseServerHello(sh); err != nil || n != len(sh) || !bytes.Equal(p.Key, typed) || p.Random != random || p.Share != h.Share {
		t.Fatalf("ParseServerHello(SH) = %+v, %d, %v", p, n, err)
	}

	ch := binary.BigEndian.AppendUint16(nil, 86)
	ch = append(ch, bytes.Repeat([]byte{5}, 86)...)
	ch = append(ch, alice.PublicKey().Bytes()...)
	if got := hex.EncodeToString(ch); got != vCH || len(ch) != 120 || ClientHelloLen(server.Public()) != 120 {
		t.Fatalf("CH (%d bytes, ClientHelloLen %d)\n got %s\nwant %s", len(ch), ClientHelloLen(server.Public()), got, vCH)
	}

	dhc, err := alice.ECDH(bob.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	dhs, _ := bob.ECDH(alice.PublicKey())
	if got := hex.EncodeToString(dhc); got != vDH || !bytes.Equal(dhc, dhs) {
		t.Fatalf("dh = %s (server %x), want %s", got, dhs, vDH)
	}
	transcript := sha256.Sum256(append(bytes.Clone(sh), ch...))
	if got := hex.EncodeToString(transcript[:]); got != vTranscript {
		t.Fatalf("transcript = %s, want %s", got, vTranscript)
	}

	secret, dh := fill32(1), [32]byte(dhc)
	want := SessionKeys{
		C2SKey: [32]byte(unhex(t, vC2SKey)), C2SNonce: [12]byte(unhex(t, vC2SNonce)),
		S2CKey: [32]byte(unhex(t, vS2CKey)), S2CNonce: [12]byte(unhex(t, vS2CNonce)),
	}
	keys := DeriveKeys(&secret, &dh, &random, ch, sh)
	if keys != want {
		t.Fatalf("DeriveKeys = %x\nwant %x", keys, want)
	}
	// SH in the parts a server sends: they are hashed in order.
	keys = DeriveKeys(&secret, &dh, &random, ch, h.AppendPrefix(nil), random[:], h.Share[:])
	if keys != want {
		t.Fatalf("DeriveKeys of SH in parts = %x", keys)
	}
	keys = DeriveKeys(&secret, &dh, &random, ch, sh[:1], nil, sh[1:])
	if keys != want {
		t.Fatal("DeriveKeys of SH split after byte 1 differs")
	}
	if secret != fill32(1) || dh != [32]byte(dhc) || random != fill32(2) {
		t.Fatal("DeriveKeys modified its inputs")
	}
	// Every input matters.
	for name, k := range map[string]func() SessionKeys{
		"secret": func() SessionKeys { s := fill32(4); return DeriveKeys(&s, &dh, &random, ch, sh) },
		"dh":     func() SessionKeys { d := dh; d[31] ^= 1; return DeriveKeys(&secret, &d, &random, ch, sh) },
		"random": func() SessionKeys { r := fill32(3); return DeriveKeys(&secret, &dh, &r, ch, sh) },
		"CH":     func() SessionKeys { return DeriveKeys(&secret, &dh, &random, ch[:119], sh) },
		"SH":     func() SessionKeys { return DeriveKeys(&secret, &dh, &random, ch, sh[:106]) },
		"order":  func() SessionKeys { return DeriveKeys(&secret, &dh, &random, sh, ch) },
	} {
		if got := k(); keysOverlap(got, want) {
			t.Errorf("changed %s: keys %x", name, got)
		}
	}

	// The server side of the vector: the same plaintext and shares, sealed
	// for real, derive the keys DeriveKeys gives for that CH.
	plain := (&ClientHello{Version: 2, BlockSize: 8192, Secret: secret}).Append(nil)
	sealed, err := server.Public().Seal([]byte(TransportInfo), plain)
	if err != nil {
		t.Fatal(err)
	}
	real := binary.BigEndian.AppendUint16(nil, uint16(len(sealed)))
	real = append(append(real, sealed...), alice.PublicKey().Bytes()...)
	wantReal := DeriveKeys(&secret, &dh, &random, real, sh)
	got, err := ServerHandshake(server, bob, 8192, &random, real, sh)
	if err != nil || got != wantReal {
		t.Fatalf("ServerHandshake of the vector sealed for real = %x, %v", got, err)
	}
	// The placeholder sealed bytes do not open.
	if got, err := ServerHandshake(server, bob, 8192, &random, ch, sh); !errors.Is(err, ErrKEMOpen) || got != (SessionKeys{}) {
		t.Fatalf("placeholder CH: %x, %v", got, err)
	}
}

// keysOverlap reports whether any key or nonce of a equals the same field of b.
func keysOverlap(a, b SessionKeys) bool {
	return a.C2SKey == b.C2SKey || a.C2SNonce == b.C2SNonce || a.S2CKey == b.S2CKey || a.S2CNonce == b.S2CNonce
}

// testServer is one accepted connection's server side.
type testServer struct {
	priv   *KEMPrivateKey
	share  *ecdh.PrivateKey
	hello  ServerHello
	sh     []byte
	parsed ServerHello // what the client parsed
	pub    *KEMPublicKey
}

func newTestServer(t testing.TB, priv *KEMPrivateKey, share *ecdh.PrivateKey) *testServer {
	t.Helper()
	s := &testServer{priv: priv, share: share}
	s.hello = ServerHello{MinVersion: 2, MaxVersion: 2, BlockSize: DefaultBlockSize, Key: priv.Public().Bytes()}
	if _, err := rand.Read(s.hello.Random[:]); err != nil {
		t.Fatal(err)
	}
	copy(s.hello.Share[:], share.PublicKey().Bytes())
	s.sh = s.hello.Append(nil)
	var err error
	if s.parsed, _, err = ParseServerHello(s.sh); err != nil {
		t.Fatal(err)
	}
	if s.pub, err = ParseKEMPublicKey(s.parsed.Key); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *testServer) handshake(ch []byte) (SessionKeys, error) {
	return ServerHandshake(s.priv, s.share, s.hello.BlockSize, &s.hello.Random, ch, s.sh)
}

func newShare(t testing.TB) *ecdh.PrivateKey {
	t.Helper()
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sealCH builds a client hello with plaintext plain sealed to pub under info.
func sealCH(t testing.TB, pub *KEMPublicKey, info string, plain, clientShare []byte) []byte {
	t.Helper()
	sealed, err := pub.Seal([]byte(info), plain)
	if err != nil {
		t.Fatal(err)
	}
	ch := binary.BigEndian.AppendUint16(nil, uint16(len(sealed)))
	return append(append(ch, sealed...), clientShare...)
}

func TestHandshake(t *testing.T) {
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			s := newTestServer(t, priv, newShare(t))
			ch, ck, err := ClientHandshake(s.sh, &s.parsed, s.pub)
			if err != nil {
				t.Fatal(err)
			}
			sealedSize := map[KEMType]int{KEMX25519: 86, KEMMLKEM768X25519: 1174}[typ]
			if typ == KEMRSA {
				sealedSize = (priv.rsa.N.BitLen() + 7) / 8
			}
			if len(ch) != 2+sealedSize+32 || ClientHelloLen(s.pub) != len(ch) || s.pub.SealedSize(ClientHelloSize) != sealedSize {
				t.Fatalf("CH of %d bytes, ClientHelloLen %d, SealedSize %d; want sealed size %d",
					len(ch), ClientHelloLen(s.pub), s.pub.SealedSize(ClientHelloSize), sealedSize)
			}
			if int(binary.BigEndian.Uint16(ch)) != sealedSize {
				t.Fatalf("sealedLen %d", binary.BigEndian.Uint16(ch))
			}
			// The sealed part is the 38-byte plaintext under "SMP transport v2".
			sealed, clientShare := ch[2:2+sealedSize], ch[2+sealedSize:]
			plain, err := priv.Open([]byte("SMP transport v2"), sealed)
			if err != nil {
				t.Fatal(err)
			}
			hello, err := ParseClientHello(plain)
			if err != nil || hello.Version != 2 || hello.BlockSize != DefaultBlockSize || hello.Secret == ([32]byte{}) {
				t.Fatalf("client hello plaintext %+v, %v", hello, err)
			}
			if _, err := priv.Open([]byte("SMP transport v1"), sealed); !errors.Is(err, ErrKEMOpen) {
				t.Errorf("opens under the v1 info/label: %v", err)
			}
			// The client's keys are the key schedule of what it sent.
			dh, err := s.share.ECDH(mustShare(t, clientShare))
			if err != nil {
				t.Fatal(err)
			}
			if want := DeriveKeys(&hello.Secret, (*[32]byte)(dh), &s.hello.Random, ch, s.sh); ck != want {
				t.Fatal("client keys are not DeriveKeys of its hello")
			}

			sk, err := s.handshake(bytes.Clone(ch))
			if err != nil || sk != ck {
				t.Fatalf("ServerHandshake = %x, %v\nclient %x", sk, err, ck)
			}
			sk, err = ServerHandshake(priv, s.share, DefaultBlockSize, &s.hello.Random, ch, s.hello.AppendPrefix(nil), s.hello.Random[:], s.hello.Share[:])
			if err != nil || sk != ck {
				t.Fatalf("ServerHandshake with SH in parts = %x, %v", sk, err)
			}
			if ck.C2SKey == ck.S2CKey || ck.C2SNonce == ck.S2CNonce || ck.C2SKey == ([32]byte{}) {
				t.Errorf("degenerate keys %x", ck)
			}
			// Each connection gets a fresh secret and share.
			ch2, ck2, err := ClientHandshake(s.sh, &s.parsed, s.pub)
			if err != nil || bytes.Equal(ch2[2+sealedSize:], clientShare) || keysOverlap(ck2, ck) {
				t.Fatalf("second handshake repeats: %v", err)
			}
			var zero SessionKeys
			zero.Clear()
			if ck2.Clear(); ck2 != zero {
				t.Error("Clear left key material")
			}

			// A valid X25519 clientShare other than the client's: the server
			// accepts but derives other keys.
			other := bytes.Clone(ch)
			copy(other[2+sealedSize:], newShare(t).PublicKey().Bytes())
			if k, err := s.handshake(other); err != nil || keysOverlap(k, ck) {
				t.Errorf("swapped clientShare: %v", err)
			}
			// X25519 ignores the share's top bit, the transcript does not.
			other = bytes.Clone(ch)
			other[len(other)-1] ^= 0x80
			if k, err := s.handshake(other); err != nil || keysOverlap(k, ck) {
				t.Errorf("share top bit flipped: %v", err)
			}
			// Another server share, or another SH, gives other keys.
			if k, err := ServerHandshake(priv, newShare(t), DefaultBlockSize, &s.hello.Random, ch, s.sh); err != nil || keysOverlap(k, ck) {
				t.Errorf("other server share: %v", err)
			}
			if k, err := s.handshake(ch[:len(ch):len(ch)]); err != nil || k != ck {
				t.Errorf("repeat: %v", err)
			}
			if k, err := ServerHandshake(priv, s.share, DefaultBlockSize, &s.hello.Random, ch, s.sh[:len(s.sh)-1]); err != nil || keysOverlap(k, ck) {
				t.Errorf("other SH bytes: %v", err)
			}
		})
	}
}

func mustShare(t testing.TB, b []byte) *ecdh.PublicKey {
	t.Helper()
	p, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestServerHandshakeRejects(t *testing.T) {
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			pub := priv.Public()
			s := newTestServer(t, priv, newShare(t))
			ch, _, err := ClientHandshake(s.sh, &s.parsed, s.pub)
			if err != nil {
				t.Fatal(err)
			}
			n := len(ch) - 2 - ShareSize
			share := newShare(t).PublicKey().Bytes()
			plain := func(v uint16, bs uint32) []byte {
				h := ClientHello{Version: v, BlockSize: bs, Secret: fill32(7)}
				return h.Append(nil)
			}
			withLen := func(b []byte, l int) []byte {
				b = bytes.Clone(b)
				binary.BigEndian.PutUint16(b, uint16(l))
				return b
			}
			flip := func(i int) []byte {
				b := bytes.Clone(ch)
				b[i] ^= 0x04
				return b
			}
			good := sealCH(t, pub, TransportInfo, plain(2, DefaultBlockSize), share)
			if _, err := s.handshake(good); err != nil {
				t.Fatalf("hand-built hello: %v", err)
			}
			type tc struct {
				name string
				ch   []byte
				want error
			}
			cases := []tc{
				{"empty", nil, ErrHello},
				{"sealedLen only", ch[:2], ErrHello},
				{"one byte short", ch[:len(ch)-1], ErrHello},
				{"one byte long", append(bytes.Clone(ch), 0), ErrHello},
				{"no clientShare", ch[:len(ch)-ShareSize], ErrHello},
				{"sealedLen+1", withLen(ch, n+1), ErrHello},
				{"sealedLen-1", withLen(ch, n-1), ErrHello},
				{"sealedLen 0", withLen(ch, 0), ErrHello},
				{"sealedLen 65535", withLen(ch, 0xFFFF), ErrHello},
				{"version 1", sealCH(t, pub, TransportInfo, plain(1, DefaultBlockSize), share), ErrHello},
				{"version 3", sealCH(t, pub, TransportInfo, plain(3, DefaultBlockSize), share), ErrHello},
				{"version 0", sealCH(t, pub, TransportInfo, plain(0, DefaultBlockSize), share), ErrHello},
				{"block size 4096", sealCH(t, pub, TransportInfo, plain(2, 4096), share), ErrHello},
				{"block size 16384", sealCH(t, pub, TransportInfo, plain(2, 16384), share), ErrHello},
				{"block size 0", sealCH(t, pub, TransportInfo, plain(2, 0), share), ErrHello},
				{"tampered sealedLen byte", flip(0), ErrHello},
				{"tampered first sealed byte", flip(2), ErrKEMOpen},
				{"tampered middle sealed byte", flip(2 + n/2), ErrKEMOpen},
				{"tampered last sealed byte", flip(1 + n), ErrKEMOpen},
				{"info SMP transport v1", sealCH(t, pub, "SMP transport v1", plain(2, DefaultBlockSize), share), ErrKEMOpen},
				{"empty info", sealCH(t, pub, "", plain(2, DefaultBlockSize), share), ErrKEMOpen},
				{"key schedule info", sealCH(t, pub, KeyScheduleInfo, plain(2, DefaultBlockSize), share), ErrKEMOpen},
			}
			// A plaintext that is not 38 bytes: the HPKE sealed size changes
			// with it, RSA's does not.
			for _, size := range []int{0, ClientHelloSize - 1, ClientHelloSize + 1} {
				p := append(plain(2, DefaultBlockSize), 0)[:size]
				cases = append(cases, tc{"plaintext of " + strconv.Itoa(size), sealCH(t, pub, TransportInfo, p, share), ErrHello})
			}
			for _, low := range lowOrderShares {
				b := bytes.Clone(good)
				copy(b[len(b)-ShareSize:], unhex(t, low))
				cases = append(cases, tc{"low-order clientShare " + low[:8], b, ErrHello})
			}
			// Another key of the same type (same sealed size) and of each
			// other type.
			otherKey, err := GenerateKEMKey(typ)
			if err != nil {
				t.Fatal(err)
			}
			cases = append(cases, tc{"sealed to another key", sealCH(t, otherKey.Public(), TransportInfo, plain(2, DefaultBlockSize), share), ErrKEMOpen})
			for _, ot := range kemTypes {
				if ot != typ {
					p := testKEMKey(t, ot).Public()
					want := ErrHello
					if ClientHelloLen(p) == len(ch) {
						want = ErrKEMOpen // two RSA keys of one size
					}
					cases = append(cases, tc{"sealed to a " + ot.String() + " key", sealCH(t, p, TransportInfo, plain(2, DefaultBlockSize), share), want})
				}
			}
			for _, c := range cases {
				in := bytes.Clone(c.ch)
				k, err := s.handshake(in)
				if !errors.Is(err, c.want) || k != (SessionKeys{}) {
					t.Errorf("%s: keys %x, error %v, want %v", c.name, k, err, c.want)
				}
				if !bytes.Equal(in, c.ch) {
					t.Errorf("%s: input modified", c.name)
				}
			}
			// The server's block size is what the hello must match.
			if k, err := ServerHandshake(priv, s.share, 16384, &s.hello.Random, ch, s.sh); !errors.Is(err, ErrHello) || k != (SessionKeys{}) {
				t.Errorf("server block size 16384: %x, %v", k, err)
			}
			// A different server key.
			if k, err := ServerHandshake(otherKey, s.share, DefaultBlockSize, &s.hello.Random, ch, s.sh); !errors.Is(err, ErrKEMOpen) || k != (SessionKeys{}) {
				t.Errorf("other server key: %x, %v", k, err)
			}
		})
	}
}

// TestHandshakeReplay: a recorded client hello replayed to a server that
// draws a new serverRandom (sent in its new SH) yields keys unrelated to the
// recorded connection's, so the recorded blocks fail under them.
func TestHandshakeReplay(t *testing.T) {
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			share := newShare(t)
			rec := newTestServer(t, priv, share)
			ch, ck, err := ClientHandshake(rec.sh, &rec.parsed, rec.pub)
			if err != nil {
				t.Fatal(err)
			}
			if k, err := rec.handshake(ch); err != nil || k != ck {
				t.Fatalf("recorded connection: %v", err)
			}
			// Same server key and share (within its 60 s), new serverRandom.
			replay := newTestServer(t, priv, share)
			if replay.hello.Random == rec.hello.Random {
				t.Fatal("serverRandom repeats")
			}
			k, err := replay.handshake(ch)
			if err != nil {
				t.Fatalf("replayed hello: %v", err)
			}
			if keysOverlap(k, ck) {
				t.Errorf("replayed hello: keys %x share a field with the recorded %x", k, ck)
			}
			// Only serverRandom changed, in both the salt and the SH.
			if k2, _ := ServerHandshake(priv, share, DefaultBlockSize, &replay.hello.Random, ch, rec.sh); keysOverlap(k2, ck) || keysOverlap(k2, k) {
				t.Error("serverRandom as salt alone does not change the keys")
			}
			if k3, _ := ServerHandshake(priv, share, DefaultBlockSize, &rec.hello.Random, ch, replay.sh); keysOverlap(k3, ck) || keysOverlap(k3, k) {
				t.Error("serverRandom in the transcript alone does not change the keys")
			}
			// A server with a fresh share.
			fresh := newTestServer(t, priv, newShare(t))
			if k, err := fresh.handshake(ch); err != nil || keysOverlap(k, ck) {
				t.Errorf("fresh share: %v", err)
			}
		})
	}
}

func TestClientHandshakeRejects(t *testing.T) {
	priv := testKEMKey(t, KEMX25519)
	s := newTestServer(t, priv, newShare(t))
	check := func(name string, h *ServerHello, pub *KEMPublicKey) {
		t.Helper()
		ch, k, err := ClientHandshake(s.sh, h, pub)
		if !errors.Is(err, ErrHello) || ch != nil || k != (SessionKeys{}) {
			t.Errorf("%s: ch %d bytes, keys %x, error %v; want ErrHello", name, len(ch), k, err)
		}
	}
	for _, v := range [][2]uint16{{1, 1}, {0, 1}, {3, 3}, {3, 5}, {0xFFFF, 0xFFFF}} {
		h := s.parsed
		h.MinVersion, h.MaxVersion = v[0], v[1]
		check("versions "+strconv.Itoa(int(v[0]))+".."+strconv.Itoa(int(v[1])), &h, s.pub)
	}
	for _, low := range lowOrderShares {
		h := s.parsed
		copy(h.Share[:], unhex(t, low))
		check("low-order serverShare "+low[:8], &h, s.pub)
	}
	for _, bs := range []uint32{0, 2048, 5000, 1 << 17} {
		h := s.parsed
		h.BlockSize = bs
		check("block size "+strconv.Itoa(int(bs)), &h, s.pub)
	}
	check("nil hello", nil, s.pub)
	check("nil key", &s.parsed, nil)
	// A range that includes 2 is fine.
	for _, v := range [][2]uint16{{1, 2}, {2, 3}, {0, 0xFFFF}} {
		h := s.parsed
		h.MinVersion, h.MaxVersion = v[0], v[1]
		if _, _, err := ClientHandshake(s.sh, &h, s.pub); err != nil {
			t.Errorf("versions %d..%d: %v", v[0], v[1], err)
		}
	}
}

// BenchmarkServerHandshake is the server's CPU per handshake in the codec:
// the hello open, the X25519 with the share and the key schedule. Beside
// BenchmarkKEMOpen it shows what transport v2 adds (make bench: issue 18).
func BenchmarkServerHandshake(b *testing.B) {
	for _, typ := range kemTypes {
		b.Run(typ.String(), func(b *testing.B) {
			s := newTestServer(b, testKEMKey(b, typ), newShare(b))
			ch, _, err := ClientHandshake(s.sh, &s.parsed, s.pub)
			if err != nil {
				b.Fatal(err)
			}
			prefix := s.hello.AppendPrefix(nil)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ServerHandshake(s.priv, s.share, s.hello.BlockSize, &s.hello.Random, ch,
					prefix, s.hello.Random[:], s.hello.Share[:]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
