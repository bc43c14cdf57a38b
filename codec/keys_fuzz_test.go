package codec

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"testing"
)

// fzSealPlain is what the key targets seal: a client hello's length.
var fzSealPlain = bytes.Repeat([]byte{0x5a}, ClientHelloSize)

// fzSealedLen is the length Seal returns for fzSealPlain, by SPEC §2.
func fzSealedLen(k *KEMPublicKey) int {
	switch k.Type() {
	case KEMX25519:
		return 32 + len(fzSealPlain) + 16
	case KEMMLKEM768X25519:
		return 1120 + len(fzSealPlain) + 16
	}
	return k.rsa.Size()
}

// FuzzKEMPublicKey checks ParseKEMPublicKey on arbitrary typed keys. It
// never panics; an unknown type byte is ErrKEMType and any other failure
// ErrKEMKey; a parsed key has Bytes() equal to the input (and not aliasing
// it), the input's type and length rules, a Fingerprint equal to
// Fingerprint(input) that does not change when the input does, and a Seal
// that never panics and returns the length SPEC §2 gives (RSA must not fail;
// an HPKE seal may, to a degenerate point).
func FuzzKEMPublicKey(f *testing.F) {
	typed, _ := hex.DecodeString(fzVectorTypedKey)
	x, m := fzServerKeys(f)
	f.Add(typed)
	f.Add(x.Public().Bytes())
	f.Add(m.Public().Bytes())
	f.Add(testKEMKey(f, KEMRSA).Public().Bytes())
	f.Add(append([]byte{byte(KEMRSA)}, fakeRSASPKI(f, 4096, rsaExp)...))
	f.Add(append([]byte{byte(KEMRSA)}, fakeRSASPKI(f, 2048, 3)...))
	f.Add(append([]byte{byte(KEMRSA)}, vectorSigner(f).PublicSPKI()...)) // SPKI of the wrong kind
	f.Add(make([]byte, 33))                                              // type 0
	f.Add([]byte{byte(KEMX25519)})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, typed []byte) {
		in := bytes.Clone(typed)
		k, err := ParseKEMPublicKey(in)
		if err != nil {
			unknown := len(typed) > 0 && (typed[0] < byte(KEMRSA) || typed[0] > byte(KEMMLKEM768X25519))
			if k != nil || unknown != errors.Is(err, ErrKEMType) || !unknown && !errors.Is(err, ErrKEMKey) {
				t.Fatalf("ParseKEMPublicKey(% x): %v, %v", typed, k, err)
			}
			return
		}
		if !bytes.Equal(in, typed) {
			t.Fatal("ParseKEMPublicKey modified its input")
		}
		switch typ := KEMType(typed[0]); {
		case typ != k.Type():
			t.Fatalf("Type() = %v for type byte %#x", k.Type(), typed[0])
		case typ == KEMX25519 && len(typed) != 1+x25519KeySize,
			typ == KEMMLKEM768X25519 && len(typed) != 1+mlkem768x25519KeySize:
			t.Fatalf("%v key of %d bytes accepted", typ, len(typed)-1)
		case typ == KEMRSA && (k.rsa.N.BitLen() < minRSABits || k.rsa.N.BitLen() > maxRSABits || k.rsa.E != rsaExp):
			t.Fatalf("RSA key of %d bits, e=%d accepted", k.rsa.N.BitLen(), k.rsa.E)
		}
		fp := k.Fingerprint()
		if !bytes.Equal(k.Bytes(), typed) || fp != Fingerprint(typed) {
			t.Fatalf("Bytes() = % x, Fingerprint %s for input % x", k.Bytes(), fp, typed)
		}
		clear(in) // the key owns a copy
		if !bytes.Equal(k.Bytes(), typed) || k.Fingerprint() != fp {
			t.Fatal("the key aliases its input")
		}
		sealed, err := k.Seal([]byte(TransportInfo), fzSealPlain)
		switch {
		case err != nil && k.Type() == KEMRSA:
			t.Fatalf("RSA seal: %v", err)
		case err == nil && len(sealed) != fzSealedLen(k):
			t.Fatalf("%v seal of %d bytes: %d bytes, want %d", k.Type(), len(fzSealPlain), len(sealed), fzSealedLen(k))
		}
	})
}

// FuzzVerifyKey checks ParseVerifyKey on arbitrary DER and verification of
// arbitrary signatures. Parsing never panics; a failure is ErrSigKey; a
// parsed key has SPKI() equal to the input (not aliasing it) and the SigLen
// of its algorithm. Verify and VerifyTimingSafe never panic, never modify
// their inputs, and agree with crypto/ed25519 and crypto/rsa (PSS, SHA-256,
// salt 32) called directly — for the parsed key, for the vectors.md §1 key,
// and, as false, for no key at all — except that an Ed25519 signature may
// verify where crypto/ed25519 rejects it under one of the named ZIP-215
// rules (ruleDifference).
func FuzzVerifyKey(f *testing.F) {
	vs := vectorSigner(f)
	vsig, _ := base64.StdEncoding.DecodeString("urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==")
	f.Add(vs.PublicSPKI(), []byte(vectorSigned), vsig)
	f.Add(vs.PublicSPKI(), []byte(vectorSigned), make([]byte, 64))
	rs := rsaSigner(f)
	rsig, err := rs.Sign([]byte(vectorSigned))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(rs.PublicSPKI(), []byte(vectorSigned), rsig)
	f.Add(rs.PublicSPKI(), []byte(vectorSigned), bytes.Repeat([]byte{0xff}, len(rsig))) // above the modulus
	f.Add(fakeRSASPKI(f, 3072, rsaExp), []byte("x"), make([]byte, 384))
	f.Add(fakeRSASPKI(f, 1024, rsaExp), []byte("x"), make([]byte, 128))
	f.Add([]byte{0x30, 0x00}, []byte{}, []byte{})
	// Ed25519 DER other than the canonical 44 bytes, which crypto/x509
	// accepts and SPKI must give back: an element after the BIT STRING, and
	// unused bits in it.
	trailing := append(append([]byte{0x30, 0x2c}, vs.PublicSPKI()[2:]...), 0x05, 0x00)
	f.Add(trailing, []byte(vectorSigned), vsig)
	unused := vs.PublicSPKI()
	unused[11], unused[43] = 1, unused[43]&^1
	f.Add(unused, []byte(vectorSigned), vsig)
	f.Fuzz(func(t *testing.T, der, signed, sig []byte) {
		inSigned, inSig := bytes.Clone(signed), bytes.Clone(sig)
		checkInputs := func(what string) {
			if !bytes.Equal(inSigned, signed) || !bytes.Equal(inSig, sig) {
				t.Fatalf("%s modified its input", what)
			}
		}

		// The vectors.md §1 key against crypto/ed25519.
		want := ed25519.Verify(ed25519.PublicKey(vs.VerifyKey().ed[:]), signed, sig)
		if got := VerifyTimingSafe(vs.VerifyKey(), inSigned, inSig); got != want && !zip215Only(vs.VerifyKey().ed[:], signed, sig, got, want) {
			t.Fatalf("vector key: VerifyTimingSafe = %v, crypto/ed25519 %v", got, want)
		}
		if VerifyTimingSafe(nil, inSigned, inSig) {
			t.Fatal("VerifyTimingSafe(nil key) = true")
		}
		checkInputs("VerifyTimingSafe")

		in := bytes.Clone(der)
		k, err := ParseVerifyKey(in)
		if err != nil {
			if k != nil || !errors.Is(err, ErrSigKey) {
				t.Fatalf("ParseVerifyKey: %v, %v", k, err)
			}
			return
		}
		if !bytes.Equal(k.SPKI(), der) {
			t.Fatalf("SPKI() = % x, parsed from % x", k.SPKI(), der)
		}
		clear(in)
		if !bytes.Equal(k.SPKI(), der) {
			t.Fatal("SPKI() aliases the input")
		}
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			t.Fatalf("ParseVerifyKey accepted what crypto/x509 rejects: %v", err)
		}
		switch p := pub.(type) {
		case ed25519.PublicKey:
			want = k.Alg() == SigEd25519 && k.SigLen() == ed25519.SignatureSize && ed25519.Verify(p, signed, sig)
			if k.Alg() != SigEd25519 || k.SigLen() != ed25519.SignatureSize {
				t.Fatalf("ed25519 key parsed as %v with SigLen %d", k.Alg(), k.SigLen())
			}
		case *rsa.PublicKey:
			if k.Alg() != SigRSA || k.SigLen() != p.Size() || k.SigLen() < minRSABits/8 || k.SigLen() > maxRSABits/8 {
				t.Fatalf("%d-bit RSA key parsed as %v with SigLen %d", p.N.BitLen(), k.Alg(), k.SigLen())
			}
			digest := sha256.Sum256(signed)
			want = len(sig) == p.Size() && rsa.VerifyPSS(p, crypto.SHA256, digest[:], sig, pssOptions) == nil
		default:
			t.Fatalf("ParseVerifyKey accepted a %T", pub)
		}
		if got := k.Verify(inSigned, inSig); got != want && !(k.Alg() == SigEd25519 && zip215Only(k.ed[:], signed, sig, got, want)) {
			t.Fatalf("%v Verify = %v, standard library %v", k.Alg(), got, want)
		}
		if got := VerifyTimingSafe(k, inSigned, inSig); got != want && !(k.Alg() == SigEd25519 && zip215Only(k.ed[:], signed, sig, got, want)) {
			t.Fatalf("%v VerifyTimingSafe = %v, standard library %v", k.Alg(), got, want)
		}
		checkInputs("Verify")
	})
}

// fzSerializePrivate is what MarshalBinary must return for an HPKE private
// key parsed from b: b itself, except that RFC 9180 §7.1.2 SerializePrivateKey
// clamps an X25519 scalar (RFC 7748 §5), so an unclamped input comes back
// clamped. The clamped bits do not change the key.
func fzSerializePrivate(typ KEMType, b []byte) []byte {
	out := bytes.Clone(b)
	if typ == KEMX25519 {
		out[1] &= 248
		out[32] &= 127
		out[32] |= 64
	}
	return out
}

// FuzzKEMPrivateKey checks ParseKEMPrivateKey on arbitrary bytes. It never
// panics; an unknown type byte is ErrKEMType and any other failure ErrKEMKey.
// A parsed HPKE key marshals back to its input (x25519: clamped, see
// fzSerializePrivate); a parsed RSA key
// marshals to canonical PKCS#8 that parses back to the same public key and
// marshals to itself again. The public half's typed key parses with
// ParseKEMPublicKey to the same bytes and fingerprint, Seal→Open round-trips
// under it, and Open of the input itself as sealed data never panics.
func FuzzKEMPrivateKey(f *testing.F) {
	x, m := fzServerKeys(f)
	for _, k := range []*KEMPrivateKey{x, m, testKEMKey(f, KEMRSA)} {
		b, err := k.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{0x04, 1, 2, 3})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := ParseKEMPrivateKey(bytes.Clone(b))
		if err != nil {
			unknown := len(b) > 0 && (b[0] < byte(KEMRSA) || b[0] > byte(KEMMLKEM768X25519))
			if k != nil || unknown != errors.Is(err, ErrKEMType) || !unknown && !errors.Is(err, ErrKEMKey) {
				t.Fatalf("ParseKEMPrivateKey(% x): %v, %v", b, k, err)
			}
			return
		}
		typ := KEMType(b[0])
		if k.Public().Type() != typ {
			t.Fatalf("type byte %#x parsed as %v", b[0], k.Public().Type())
		}
		out, err := k.MarshalBinary()
		if err != nil {
			t.Fatalf("%v: MarshalBinary: %v", typ, err)
		}
		if typ == KEMRSA {
			k2, err := ParseKEMPrivateKey(out)
			if err != nil {
				t.Fatalf("rsa: MarshalBinary output does not parse: %v", err)
			}
			if out2, _ := k2.MarshalBinary(); !bytes.Equal(out2, out) || !bytes.Equal(k2.Public().Bytes(), k.Public().Bytes()) {
				t.Fatal("rsa: MarshalBinary is not stable across a parse")
			}
		} else if want := fzSerializePrivate(typ, b); !bytes.Equal(out, want) {
			t.Fatalf("%v: MarshalBinary = % x, parsed from % x, want % x", typ, out, b, want)
		}

		pub, err := ParseKEMPublicKey(k.Public().Bytes())
		if err != nil || !bytes.Equal(pub.Bytes(), k.Public().Bytes()) || pub.Fingerprint() != k.Public().Fingerprint() {
			t.Fatalf("%v: public half % x does not parse back: %v", typ, k.Public().Bytes(), err)
		}
		sealed, err := pub.Seal([]byte(TransportInfo), fzSealPlain)
		if err != nil {
			t.Fatalf("%v: seal to the public half: %v", typ, err)
		}
		if got, err := k.Open([]byte(TransportInfo), sealed); err != nil || !bytes.Equal(got, fzSealPlain) {
			t.Fatalf("%v: Seal then Open: %q, %v", typ, got, err)
		}
		if _, err := k.Open([]byte(TransportInfo), b); err != nil && !errors.Is(err, ErrKEMOpen) {
			t.Fatalf("%v: Open of garbage: %v, want ErrKEMOpen", typ, err)
		}
	})
}
