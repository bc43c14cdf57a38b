package codec

import (
	"bytes"
	"crypto/hpke"
	"crypto/rand"
	"fmt"
	"testing"
)

// TestHPKEX25519Open: what crypto/hpke seals to an x25519 key, the relay's
// opener opens to the same plaintext, for plaintexts of every length up to
// past a client hello and for two info strings; and crypto/hpke, opening the
// same ciphertext, agrees (the opener is checked against the reference on
// both sides of each case).
func TestHPKEX25519Open(t *testing.T) {
	k, err := GenerateKEMKey(KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	if k.x25519 == nil {
		t.Fatal("an x25519 key has no opener of its own")
	}
	for _, info := range []string{TransportInfo, "", "another info"} {
		o := newHPKEX25519Opener(k.x25519.sk, []byte(info))
		for n := 0; n <= ClientHelloSize+40; n += 7 {
			pt := make([]byte, n)
			_, _ = rand.Read(pt)
			sealed, err := hpke.Seal(k.hpke.PublicKey(), hpkeKDF(), hpkeAEAD(), []byte(info), pt)
			if err != nil {
				t.Fatal(err)
			}
			got, err := o.open(sealed)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("info %q, %d bytes: got %x, %v", info, n, got, err)
			}
			ref, err := hpke.Open(k.hpke, hpkeKDF(), hpkeAEAD(), []byte(info), sealed)
			if err != nil || !bytes.Equal(ref, got) {
				t.Fatalf("info %q, %d bytes: crypto/hpke opens %x, %v", info, n, ref, err)
			}
		}
	}
}

// TestHPKEX25519OpenRejects: the opener fails where crypto/hpke does, with
// its one error: any changed byte of enc or the ciphertext, another info, a
// short input, and an enc that is a low-order point or not canonical.
func TestHPKEX25519OpenRejects(t *testing.T) {
	k, err := GenerateKEMKey(KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := k.Public().Seal([]byte(TransportInfo), []byte("client hello"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{"empty": nil, "enc only": sealed[:x25519KeySize], "short tag": sealed[:x25519KeySize+TagSize-1]}
	for i := range sealed {
		b := bytes.Clone(sealed)
		b[i] ^= 0x01
		cases[fmt.Sprintf("flip byte %d", i)] = b
	}
	for i, enc := range x25519Inputs(t) { // low-order points among them
		cases[fmt.Sprintf("enc %d from x25519Inputs", i)] = append(bytes.Clone(enc), sealed[x25519KeySize:]...)
	}
	for name, b := range cases {
		if pt, err := k.x25519.open(b); err != errHPKEOpen {
			t.Errorf("%s: opened %q, %v", name, pt, err)
		}
		if _, err := hpke.Open(k.hpke, hpkeKDF(), hpkeAEAD(), []byte(TransportInfo), b); err == nil {
			t.Errorf("%s: crypto/hpke opens what the opener refuses", name)
		}
	}
	o := newHPKEX25519Opener(k.x25519.sk, []byte("other info"))
	if _, err := o.open(sealed); err != errHPKEOpen {
		t.Fatalf("opened with another info: %v", err)
	}
}

// TestKEMOpenUsesOwnHPKE: KEMPrivateKey.Open takes the opener for the
// transport's info, also after a MarshalBinary round trip, and crypto/hpke
// for any other info, and both open what the public key sealed.
func TestKEMOpenUsesOwnHPKE(t *testing.T) {
	for _, key := range keyAndReparsed(t, KEMX25519) {
		if key.x25519 == nil || !bytes.Equal(key.x25519.info, []byte(TransportInfo)) {
			t.Fatal("the key has no opener for the transport info")
		}
		for _, info := range []string{TransportInfo, "e2e"} {
			sealed, err := key.Public().Seal([]byte(info), []byte("secret"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := key.Open([]byte(info), sealed)
			if err != nil || string(got) != "secret" {
				t.Fatalf("info %q: Open: %q, %v", info, got, err)
			}
		}
	}
}

// BenchmarkHPKEX25519Open compares the relay's opener with crypto/hpke on a
// sealed client hello.
func BenchmarkHPKEX25519Open(b *testing.B) {
	k, err := GenerateKEMKey(KEMX25519)
	if err != nil {
		b.Fatal(err)
	}
	sealed, err := k.Public().Seal([]byte(TransportInfo), make([]byte, ClientHelloSize))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("own", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := k.x25519.open(sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("crypto-hpke", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := hpke.Open(k.open, hpkeKDF(), hpkeAEAD(), []byte(TransportInfo), sealed); err != nil {
				b.Fatal(err)
			}
		}
	})
}
