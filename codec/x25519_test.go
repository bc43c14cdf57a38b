package codec

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"math/big"
	"testing"
)

// x25519Inputs are peer encodings crypto/ecdh and X25519Key must treat
// alike: low-order points (RFC 7748 §6.1's list, in canonical and
// non-canonical forms), values at and above p, and the top bit set.
func x25519Inputs(t *testing.T) [][]byte {
	p := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(19))
	le := func(n *big.Int) []byte {
		b := make([]byte, 32)
		n.FillBytes(b)
		for i, j := 0, 31; i < j; i, j = i+1, j-1 {
			b[i], b[j] = b[j], b[i]
		}
		return b
	}
	var in [][]byte
	for _, v := range []int64{0, 1, 2, 9} {
		n := big.NewInt(v)
		in = append(in, le(n), le(new(big.Int).Add(n, p)))
	}
	in = append(in, le(new(big.Int).Sub(p, big.NewInt(1))))
	// The order-8 points of Curve25519 (RFC 7748's list, libsodium's blocklist).
	for _, h := range []string{
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	} {
		b := make([]byte, 32)
		for i := range b {
			var v byte
			for _, c := range h[2*i : 2*i+2] {
				v <<= 4
				if c >= 'a' {
					v |= byte(c-'a') + 10
				} else {
					v |= byte(c - '0')
				}
			}
			b[i] = v
		}
		in = append(in, b)
		top := bytes.Clone(b)
		top[31] |= 0x80
		in = append(in, top)
	}
	for range 200 {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		in = append(in, b)
	}
	return in
}

// TestX25519Differential checks X25519Key against crypto/ecdh: the same
// public key, and for every peer input the same shared secret or an error
// from both.
func TestX25519Differential(t *testing.T) {
	peers := x25519Inputs(t)
	for range 20 {
		scalar := make([]byte, 32)
		if _, err := rand.Read(scalar); err != nil {
			t.Fatal(err)
		}
		std, err := ecdh.X25519().NewPrivateKey(scalar)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := NewX25519Key(scalar)
		if err != nil {
			t.Fatal(err)
		}
		if !fast.PublicKey().Equal(std.PublicKey()) {
			t.Fatalf("public keys differ for scalar %x", scalar)
		}
		for _, pb := range peers {
			pub, err := ecdh.X25519().NewPublicKey(pb)
			if err != nil {
				t.Fatalf("peer %x: %v", pb, err)
			}
			want, werr := std.ECDH(pub)
			got, gerr := fast.ECDH(pub)
			if (werr != nil) != (gerr != nil) || !bytes.Equal(want, got) {
				t.Fatalf("peer %x: crypto/ecdh %x, %v; X25519Key %x, %v", pb, want, werr, got, gerr)
			}
		}
	}
}

// TestX25519Erase: an erased key no longer gives the shared secret.
func TestX25519Erase(t *testing.T) {
	a, _ := GenerateX25519Key()
	b, _ := GenerateX25519Key()
	before, err := a.ECDH(b.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	a.Erase()
	after, _ := a.ECDH(b.PublicKey())
	if bytes.Equal(before, after) {
		t.Fatal("the erased key still gives the shared secret")
	}
}

// TestKEMOpensWithX25519Key: both HPKE kinds open with the rebuilt key (the
// faster X25519 is in use, not the fallback), and what it opens is what the
// public key sealed, also after a MarshalBinary round trip.
func TestKEMOpensWithX25519Key(t *testing.T) {
	for _, kt := range []KEMType{KEMX25519, KEMMLKEM768X25519} {
		t.Run(kt.String(), func(t *testing.T) {
			for _, key := range keyAndReparsed(t, kt) {
				if key.open == key.hpke {
					t.Fatal("Open uses crypto/ecdh's X25519: the rebuilt key's public key differed")
				}
				sealed, err := key.Public().Seal([]byte("info"), []byte("secret"))
				if err != nil {
					t.Fatal(err)
				}
				got, err := key.Open([]byte("info"), sealed)
				if err != nil || string(got) != "secret" {
					t.Fatalf("Open: %q, %v", got, err)
				}
			}
		})
	}
}

// keyAndReparsed returns a new key of type kt and the key MarshalBinary and
// ParseKEMPrivateKey make of it, for tests that hold both to the same.
func keyAndReparsed(t *testing.T, kt KEMType) []*KEMPrivateKey {
	t.Helper()
	k, err := GenerateKEMKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseKEMPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return []*KEMPrivateKey{k, k2}
}
