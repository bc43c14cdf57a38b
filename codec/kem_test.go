package codec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"sync"
	"testing"
)

var kemTypes = []KEMType{KEMRSA, KEMX25519, KEMMLKEM768X25519}

// testKEMKeys caches one generated key per type: RSA generation is slow.
var (
	testKEMMu   sync.Mutex
	testKEMKeys = map[KEMType]*KEMPrivateKey{}
)

func testKEMKey(t testing.TB, typ KEMType) *KEMPrivateKey {
	t.Helper()
	testKEMMu.Lock()
	defer testKEMMu.Unlock()
	if k := testKEMKeys[typ]; k != nil {
		return k
	}
	k, err := GenerateKEMKey(typ)
	if err != nil {
		t.Fatalf("GenerateKEMKey(%v): %v", typ, err)
	}
	testKEMKeys[typ] = k
	return k
}

// fakeRSASPKI returns SPKI DER of an RSA public key with a random odd
// modulus of exactly bits bits: enough to test size and exponent checks
// without generating primes.
func fakeRSASPKI(t testing.TB, bits, e int) []byte {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), uint(bits-1)))
	if err != nil {
		t.Fatal(err)
	}
	n.SetBit(n, bits-1, 1)
	n.SetBit(n, 0, 1)
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: e})
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestKEMTypeNames(t *testing.T) {
	for _, tc := range []struct {
		t    KEMType
		name string
	}{
		{KEMRSA, "rsa"},
		{KEMX25519, "x25519"},
		{KEMMLKEM768X25519, "mlkem768x25519"},
	} {
		if got := tc.t.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", tc.t, got, tc.name)
		}
		got, err := ParseKEMType(tc.name)
		if err != nil || got != tc.t {
			t.Errorf("ParseKEMType(%q) = %v, %v", tc.name, got, err)
		}
	}
	for _, bad := range []string{"", "RSA", "x448", "mlkem768"} {
		if _, err := ParseKEMType(bad); !errors.Is(err, ErrKEMType) {
			t.Errorf("ParseKEMType(%q) error = %v, want ErrKEMType", bad, err)
		}
	}
	if s := KEMType(9).String(); s != "KEMType(9)" {
		t.Errorf("KEMType(9).String() = %q", s)
	}
}

// TestVectorTypedKey reproduces vectors.md §5.
func TestVectorTypedKey(t *testing.T) {
	typed, _ := hex.DecodeString("028520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
	k, err := ParseKEMPublicKey(typed)
	if err != nil {
		t.Fatal(err)
	}
	if k.Type() != KEMX25519 {
		t.Errorf("Type = %v", k.Type())
	}
	if got, want := base64.StdEncoding.EncodeToString(k.Bytes()), "AoUg8AmJMKdUdIt93LQ+91oNvzoNJjga9OukqY6qm05q"; got != want {
		t.Errorf("typed key base64 = %s, want %s", got, want)
	}
	const fp = "VlJ8/8GyjK16/MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc="
	if got := k.Fingerprint(); got != fp {
		t.Errorf("Fingerprint = %s, want %s", got, fp)
	}
	if got := Fingerprint(typed); got != fp {
		t.Errorf("Fingerprint(typed) = %s, want %s", got, fp)
	}
	typed[1] ^= 1 // the key owns a copy
	if k.Fingerprint() != fp {
		t.Error("key aliases its input")
	}
}

func TestParseKEMPublicKey(t *testing.T) {
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	edSPKI, _ := x509.MarshalPKIXPublicKey(edPub)
	typed := func(t KEMType, b []byte) []byte { return append([]byte{byte(t)}, b...) }
	cases := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"rsa 2048", testKEMKey(t, KEMRSA).Public().Bytes(), true},
		{"rsa 4096", typed(KEMRSA, fakeRSASPKI(t, 4096, 65537)), true},
		{"rsa 2056", typed(KEMRSA, fakeRSASPKI(t, 2056, 65537)), true},
		{"x25519", testKEMKey(t, KEMX25519).Public().Bytes(), true},
		{"mlkem768x25519", testKEMKey(t, KEMMLKEM768X25519).Public().Bytes(), true},
		{"empty", nil, false},
		{"type only", []byte{byte(KEMX25519)}, false},
		{"unknown type", typed(4, make([]byte, 32)), false},
		{"type 0", typed(0, make([]byte, 32)), false},
		{"x25519 short", typed(KEMX25519, make([]byte, 31)), false},
		{"x25519 long", typed(KEMX25519, make([]byte, 33)), false},
		{"mlkem short", typed(KEMMLKEM768X25519, make([]byte, 1215)), false},
		{"mlkem long", typed(KEMMLKEM768X25519, make([]byte, 1217)), false},
		{"rsa 2040", typed(KEMRSA, fakeRSASPKI(t, 2040, 65537)), false},
		{"rsa 4104", typed(KEMRSA, fakeRSASPKI(t, 4104, 65537)), false},
		{"rsa e=3", typed(KEMRSA, fakeRSASPKI(t, 2048, 3)), false},
		{"rsa garbage", typed(KEMRSA, []byte{0x30, 0x03, 0x01, 0x02}), false},
		{"rsa trailing", append(bytes.Clone(testKEMKey(t, KEMRSA).Public().Bytes()), 0), false},
		{"ed25519 as rsa", typed(KEMRSA, edSPKI), false},
	}
	for _, lo := range lowOrderX25519(t) {
		cases = append(cases, struct {
			name string
			in   []byte
			ok   bool
		}{"x25519 low order " + hex.EncodeToString(lo), typed(KEMX25519, lo), false})
		mixed := bytes.Clone(testKEMKey(t, KEMMLKEM768X25519).Public().Bytes())
		copy(mixed[len(mixed)-32:], lo)
		cases = append(cases, struct {
			name string
			in   []byte
			ok   bool
		}{"mlkem768x25519 with low-order x25519 " + hex.EncodeToString(lo), mixed, false})
	}
	for _, tc := range cases {
		k, err := ParseKEMPublicKey(tc.in)
		if tc.ok {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			} else if !bytes.Equal(k.Bytes(), tc.in) {
				t.Errorf("%s: Bytes differ", tc.name)
			}
			continue
		}
		if err == nil || !(errors.Is(err, ErrKEMKey) || errors.Is(err, ErrKEMType)) {
			t.Errorf("%s: error = %v, want ErrKEMKey or ErrKEMType", tc.name, err)
		}
	}
}

// lowOrderX25519 returns the encodings of X25519 points of small order:
// 0, 1, the two points of order 8, p − 1, p and p + 1 (libsodium's
// blocklist), each also with the top bit set, which X25519 ignores.
func lowOrderX25519(t *testing.T) [][]byte {
	t.Helper()
	var out [][]byte
	for _, h := range []string{
		"0000000000000000000000000000000000000000000000000000000000000000",
		"0100000000000000000000000000000000000000000000000000000000000000",
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
		"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	} {
		b, err := hex.DecodeString(h)
		if err != nil {
			t.Fatal(err)
		}
		high := bytes.Clone(b)
		high[31] |= 0x80
		out = append(out, b, high)
	}
	return out
}

func TestKEMSealOpen(t *testing.T) {
	info := []byte("test info")
	msg := []byte("a short secret, like a client hello")
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			pub, err := ParseKEMPublicKey(priv.Public().Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if pub.Type() != typ || pub.Fingerprint() != priv.Public().Fingerprint() {
				t.Fatal("parsed public key differs")
			}
			sealed, err := pub.Seal(info, msg)
			if err != nil {
				t.Fatal(err)
			}
			got, err := priv.Open(info, sealed)
			if err != nil || !bytes.Equal(got, msg) {
				t.Fatalf("Open = %q, %v", got, err)
			}
			again, _ := pub.Seal(info, msg)
			if bytes.Equal(again, sealed) {
				t.Error("Seal is deterministic")
			}
			for _, i := range []int{0, len(sealed) / 2, len(sealed) - 1} {
				bad := bytes.Clone(sealed)
				bad[i] ^= 0x01
				if _, err := priv.Open(info, bad); !errors.Is(err, ErrKEMOpen) {
					t.Errorf("flipped byte %d: error = %v", i, err)
				}
			}
			for _, bad := range [][]byte{nil, sealed[:len(sealed)-1], append(bytes.Clone(sealed), 0)} {
				if _, err := priv.Open(info, bad); !errors.Is(err, ErrKEMOpen) {
					t.Errorf("%d bytes: error = %v", len(bad), err)
				}
			}
			// info binds for every type: the HPKE info, the RSA-OAEP label.
			for _, other := range []string{"other info", "", "test inf", "test info\x00"} {
				if _, err := priv.Open([]byte(other), sealed); !errors.Is(err, ErrKEMOpen) {
					t.Errorf("wrong info %q: error = %v", other, err)
				}
			}
			// No info is the empty info (the empty OAEP label of SPEC §2).
			empty, err := pub.Seal(nil, msg)
			if err != nil {
				t.Fatal(err)
			}
			if got, err := priv.Open([]byte{}, empty); err != nil || !bytes.Equal(got, msg) {
				t.Errorf("nil info, opened with empty info: %q, %v", got, err)
			}
			if _, err := priv.Open(info, empty); !errors.Is(err, ErrKEMOpen) {
				t.Errorf("empty info, opened with %q: error = %v", info, err)
			}
			other, err := GenerateKEMKey(typ)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := other.Open(info, sealed); !errors.Is(err, ErrKEMOpen) {
				t.Errorf("wrong key: error = %v", err)
			}
		})
	}
}

func TestKEMPrivateKeyMarshal(t *testing.T) {
	for _, typ := range kemTypes {
		t.Run(typ.String(), func(t *testing.T) {
			priv := testKEMKey(t, typ)
			b, err := priv.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if KEMType(b[0]) != typ {
				t.Fatalf("type byte %d", b[0])
			}
			if typ != KEMRSA && len(b) != 33 {
				t.Errorf("serialized %v private key is %d bytes, want 33", typ, len(b))
			}
			back, err := ParseKEMPrivateKey(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(back.Public().Bytes(), priv.Public().Bytes()) {
				t.Fatal("public key changed")
			}
			b2, _ := back.MarshalBinary()
			if !bytes.Equal(b, b2) {
				t.Error("MarshalBinary not stable")
			}
			sealed, err := priv.Public().Seal([]byte("i"), []byte("m"))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := back.Open([]byte("i"), sealed); err != nil || string(got) != "m" {
				t.Errorf("Open after round trip = %q, %v", got, err)
			}
			for _, bad := range [][]byte{nil, b[:1], b[:len(b)-1], append([]byte{9}, b[1:]...)} {
				if _, err := ParseKEMPrivateKey(bad); err == nil {
					t.Errorf("ParseKEMPrivateKey(%d bytes) succeeded", len(bad))
				}
			}
		})
	}
	if _, err := GenerateKEMKey(7); !errors.Is(err, ErrKEMType) {
		t.Errorf("GenerateKEMKey(7) error = %v", err)
	}
}

func TestKEMZeroValues(t *testing.T) {
	var pub KEMPublicKey
	if _, err := pub.Seal(nil, []byte("x")); err == nil {
		t.Error("zero KEMPublicKey sealed")
	}
	if pub.Type() != 0 {
		t.Error("zero KEMPublicKey has a type")
	}
	var priv KEMPrivateKey
	if _, err := priv.Open(nil, make([]byte, 64)); err == nil {
		t.Error("zero KEMPrivateKey opened")
	}
	if _, err := priv.MarshalBinary(); err == nil {
		t.Error("zero KEMPrivateKey marshaled")
	}
}

func BenchmarkKEMOpen(b *testing.B) {
	for _, typ := range kemTypes {
		b.Run(typ.String(), func(b *testing.B) {
			priv := testKEMKey(b, typ)
			sealed, err := priv.Public().Seal([]byte(TransportInfo), make([]byte, ClientHelloSize))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := priv.Open([]byte(TransportInfo), sealed); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
