package codec

import (
	"bytes"
	"crypto/hpke"
	"testing"
)

// FuzzHPKEX25519Open holds the relay's own HPKE open to crypto/hpke's on the
// fixed x25519 fuzz key. For any input, as sealed bytes: both refuse it, or
// both open it to the same plaintext (the input cut in two and each half
// tried too). As a plaintext: what crypto/hpke seals of it, the opener
// opens to it, and with any one byte of the ciphertext changed (picked by
// the input) it refuses, as crypto/hpke does.
func FuzzHPKEX25519Open(f *testing.F) {
	k, _ := fzServerKeys(f)
	if k.x25519 == nil {
		f.Fatal("the fixed x25519 key has no opener of its own")
	}
	sealed, err := k.Public().Seal([]byte(TransportInfo), fzSealPlain)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add(fzSealPlain)
	f.Add([]byte{})
	f.Add(make([]byte, x25519KeySize+TagSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		for _, b := range [][]byte{in, in[:len(in)/2], in[len(in)/2:]} {
			got, err := k.x25519.open(b)
			ref, rerr := hpke.Open(k.hpke, hpkeKDF(), hpkeAEAD(), []byte(TransportInfo), b)
			if (err == nil) != (rerr == nil) || !bytes.Equal(got, ref) {
				t.Fatalf("%x: opener %x, %v; crypto/hpke %x, %v", b, got, err, ref, rerr)
			}
			if err != nil && err != errHPKEOpen {
				t.Fatalf("%x: error %v, not errHPKEOpen", b, err)
			}
		}
		if len(in) > ClientHelloSize+64 {
			return // sealing long plaintexts adds nothing the opener treats differently
		}
		s, err := hpke.Seal(k.hpke.PublicKey(), hpkeKDF(), hpkeAEAD(), []byte(TransportInfo), in)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := k.x25519.open(s); err != nil || !bytes.Equal(got, in) {
			t.Fatalf("sealed %x: opened %x, %v", in, got, err)
		}
		if len(in) > 0 {
			i := int(in[0]) * len(s) / 256
			s[i] ^= 1 + in[len(in)-1]%255
			if got, err := k.x25519.open(s); err != errHPKEOpen {
				t.Fatalf("byte %d changed: opened %x, %v", i, got, err)
			}
		}
	})
}
