package codec

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	testRSASignerOnce sync.Once
	testRSASigner     *Signer
)

// rsaSigner returns a shared 2048-bit RSA signer: generation is slow.
func rsaSigner(t testing.TB) *Signer {
	t.Helper()
	testRSASignerOnce.Do(func() {
		s, err := GenerateSigner(SigRSA, 2048)
		if err != nil {
			t.Fatal(err)
		}
		testRSASigner = s
	})
	if testRSASigner == nil {
		t.Fatal("no RSA signer")
	}
	return testRSASigner
}

func vectorSigner(t testing.TB) *Signer {
	t.Helper()
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	s, err := NewSigner(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const vectorSigned = "abc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n"

// TestVectorEd25519 reproduces vectors.md §1.
func TestVectorEd25519(t *testing.T) {
	s := vectorSigner(t)
	const spki = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	if got := base64.StdEncoding.EncodeToString(s.PublicSPKI()); got != spki {
		t.Errorf("SPKI = %s, want %s", got, spki)
	}
	sig, err := s.Sign([]byte(vectorSigned))
	if err != nil {
		t.Fatal(err)
	}
	const wantSig = "urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw=="
	if got := base64.StdEncoding.EncodeToString(sig); got != wantSig {
		t.Errorf("signature = %s, want %s", got, wantSig)
	}
	der, _ := base64.StdEncoding.DecodeString(spki)
	k, err := ParseVerifyKey(der)
	if err != nil {
		t.Fatal(err)
	}
	if k.Alg() != SigEd25519 || k.SigLen() != 64 {
		t.Errorf("Alg, SigLen = %v, %d", k.Alg(), k.SigLen())
	}
	if !k.Verify([]byte(vectorSigned), sig) || !VerifyTimingSafe(k, []byte(vectorSigned), sig) {
		t.Error("vector signature does not verify")
	}
	for i := range sig {
		bad := bytes.Clone(sig)
		bad[i] ^= 0x01
		if k.Verify([]byte(vectorSigned), bad) || VerifyTimingSafe(k, []byte(vectorSigned), bad) {
			t.Fatalf("signature with byte %d flipped verifies", i)
		}
	}
	msg := []byte(vectorSigned)
	msg[0] ^= 0x01
	if k.Verify(msg, sig) {
		t.Error("signature verifies over other bytes")
	}
}

func TestParseVerifyKey(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecSPKI, _ := x509.MarshalPKIXPublicKey(&ecKey.PublicKey)
	edSPKI := vectorSigner(t).PublicSPKI()
	for _, tc := range []struct {
		name   string
		der    []byte
		alg    SigAlg
		sigLen int
	}{
		{"ed25519", edSPKI, SigEd25519, 64},
		{"rsa 2048", rsaSigner(t).PublicSPKI(), SigRSA, 256},
		{"rsa 2049", fakeRSASPKI(t, 2049, 65537), SigRSA, 257},
		{"rsa 4096", fakeRSASPKI(t, 4096, 65537), SigRSA, 512},
		{"rsa 2047", fakeRSASPKI(t, 2047, 65537), 0, 0},
		{"rsa 1024", fakeRSASPKI(t, 1024, 65537), 0, 0},
		{"rsa 4097", fakeRSASPKI(t, 4097, 65537), 0, 0},
		{"rsa e=3", fakeRSASPKI(t, 2048, 3), 0, 0},
		{"rsa e=65539", fakeRSASPKI(t, 2048, 65539), 0, 0},
		{"ecdsa p256", ecSPKI, 0, 0},
		{"empty", nil, 0, 0},
		{"garbage", []byte("not a key"), 0, 0},
		{"trailing byte", append(bytes.Clone(edSPKI), 0), 0, 0},
		{"truncated", edSPKI[:len(edSPKI)-1], 0, 0},
	} {
		k, err := ParseVerifyKey(tc.der)
		if tc.alg == 0 {
			if !errors.Is(err, ErrSigKey) {
				t.Errorf("%s: error = %v, want ErrSigKey", tc.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if k.Alg() != tc.alg || k.SigLen() != tc.sigLen {
			t.Errorf("%s: Alg, SigLen = %v, %d; want %v, %d", tc.name, k.Alg(), k.SigLen(), tc.alg, tc.sigLen)
		}
	}
}

func TestSignerRSA(t *testing.T) {
	s := rsaSigner(t)
	k := s.VerifyKey()
	if k.Alg() != SigRSA || k.SigLen() != 256 {
		t.Fatalf("Alg, SigLen = %v, %d", k.Alg(), k.SigLen())
	}
	msg := []byte(vectorSigned)
	sig, err := s.Sign(msg)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Verify(msg, sig) || !VerifyTimingSafe(k, msg, sig) {
		t.Fatal("RSA signature does not verify")
	}
	// An independent PSS verifier with the SPEC §2 parameters accepts it.
	pub, _ := x509.ParsePKIXPublicKey(s.PublicSPKI())
	digest := sha256.Sum256(msg)
	if err := rsa.VerifyPSS(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}); err != nil {
		t.Errorf("stdlib VerifyPSS: %v", err)
	}
	for _, i := range []int{0, 100, 255} {
		bad := bytes.Clone(sig)
		bad[i] ^= 0x01
		if k.Verify(msg, bad) {
			t.Errorf("flipped byte %d verifies", i)
		}
	}
	if k.Verify(msg, sig[:255]) || k.Verify(msg, append(bytes.Clone(sig), 0)) {
		t.Error("wrong-length signature verifies")
	}
	// Salt length must be exactly 32.
	priv := s.rsa
	for _, salt := range []int{0, 20, 64} {
		other, err := rsa.SignPSS(rand.Reader, priv, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: salt})
		if err != nil {
			t.Fatal(err)
		}
		if k.Verify(msg, other) {
			t.Errorf("salt length %d accepted", salt)
		}
	}
	if s2, err := NewSigner(priv); err != nil || !bytes.Equal(s2.PublicSPKI(), s.PublicSPKI()) {
		t.Errorf("NewSigner(rsa): %v", err)
	}
}

func TestSignerErrors(t *testing.T) {
	if _, err := GenerateSigner(SigRSA, 1024); !errors.Is(err, ErrSigKey) {
		t.Errorf("1024-bit RSA: error = %v", err)
	}
	if _, err := GenerateSigner(SigAlg(9), 0); !errors.Is(err, ErrSigKey) {
		t.Errorf("unknown alg: error = %v", err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := NewSigner(ecKey); !errors.Is(err, ErrSigKey) {
		t.Errorf("ecdsa: error = %v", err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewSigner(small); !errors.Is(err, ErrSigKey) {
		t.Errorf("1024-bit RSA key: error = %v", err)
	}
	if _, err := (&Signer{}).Sign(nil); err == nil {
		t.Error("zero Signer signed")
	}
	s, err := GenerateSigner(SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	spki := s.PublicSPKI()
	spki[0] ^= 0xff
	if bytes.Equal(spki, s.PublicSPKI()) {
		t.Error("PublicSPKI aliases the signer")
	}
}

func TestVerifyAllocs(t *testing.T) {
	s := vectorSigner(t)
	k := s.VerifyKey()
	msg := []byte(vectorSigned)
	sig, _ := s.Sign(msg)
	if n := testing.AllocsPerRun(100, func() {
		if !k.Verify(msg, sig) {
			t.Fatal("no verify")
		}
	}); n != 0 {
		t.Errorf("Ed25519 Verify allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { VerifyTimingSafe(k, msg, sig) }); n != 0 {
		t.Errorf("VerifyTimingSafe(ed25519) allocates %v times", n)
	}
}

func TestVerifyTimingSafe(t *testing.T) {
	ed := vectorSigner(t)
	msg := []byte(vectorSigned)
	edSig, _ := ed.Sign(msg)
	rs := rsaSigner(t)
	rsaSig, _ := rs.Sign(msg)
	garbage := func(n int) []byte {
		b := make([]byte, n)
		rand.Read(b)
		return b
	}
	for _, tc := range []struct {
		name string
		k    *VerifyKey
		sig  []byte
		want bool
	}{
		{"ed25519 valid", ed.VerifyKey(), edSig, true},
		{"rsa valid", rs.VerifyKey(), rsaSig, true},
		{"nil key, valid ed25519 sig", nil, edSig, false},
		{"nil key, valid rsa sig", nil, rsaSig, false},
		{"nil key, empty", nil, nil, false},
		{"nil key, 1 byte", nil, garbage(1), false},
		{"nil key, 63 bytes", nil, garbage(63), false},
		{"nil key, 64 bytes", nil, garbage(64), false},
		{"nil key, 255 bytes", nil, garbage(255), false},
		{"nil key, 256 bytes", nil, garbage(256), false},
		{"nil key, 257 bytes", nil, garbage(257), false},
		{"nil key, 384 bytes", nil, garbage(384), false},
		{"nil key, 512 bytes", nil, garbage(512), false},
		{"nil key, 513 bytes", nil, garbage(513), false},
		{"ed25519 key, rsa sig", ed.VerifyKey(), rsaSig, false},
		{"rsa key, ed25519 sig", rs.VerifyKey(), edSig, false},
		{"ed25519 key, garbage", ed.VerifyKey(), garbage(64), false},
		{"rsa key, garbage", rs.VerifyKey(), garbage(256), false},
		{"rsa key, short", rs.VerifyKey(), rsaSig[:255], false},
		{"ed25519 key, empty", ed.VerifyKey(), nil, false},
	} {
		if got := VerifyTimingSafe(tc.k, msg, tc.sig); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestDummyRSAKeys checks that each dummy passes crypto/rsa's key checks and
// fails only at the end of verification, after the exponentiation.
func TestDummyRSAKeys(t *testing.T) {
	digest := sha256.Sum256([]byte("x"))
	for _, n := range []int{256, 257, 300, 384, 511, 512} {
		k := dummyRSA(n)
		if k != dummyRSA(n) {
			t.Errorf("%d: dummy rebuilt", n)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(k.x.rsa.m.Nat().Bytes(k.x.rsa.m)), E: rsaExp}
		if pub.N.BitLen() != n*8 || pub.N.Bit(0) != 1 || k.x.rsa.emBits != n*8-1 || k.SigLen() != n {
			t.Errorf("%d: bad dummy: %d bits, emBits %d", n, pub.N.BitLen(), k.x.rsa.emBits)
		}
		sig := make([]byte, n)
		rand.Read(sig)
		sig[0] &= 0x3f // below N, so verification reaches the exponentiation
		if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pssOptions); err != rsa.ErrVerification {
			t.Errorf("%d: VerifyPSS error = %v, want rsa.ErrVerification", n, err)
		}
		if k.x.rsa.verifyPSS(&digest, sig) {
			t.Errorf("%d: a random signature verifies under the dummy", n)
		}
	}
	if d := dummyEd25519(); d != dummyEd25519() || len(d.ed) != 32 { // one key, made once
		t.Error("bad Ed25519 dummy")
	}
	if dummyEdSig[63] != 0 {
		t.Error("dummy Ed25519 signature has non-canonical S")
	}
}

// medianRatio times a and b interleaved over tries rounds and returns
// median(a)/median(b): medians, since one preemption on a shared machine
// can double a mean.
func medianRatio(tries int, a, b func()) float64 {
	ta, tb := make([]time.Duration, tries), make([]time.Duration, tries)
	for i := range tries {
		s := time.Now()
		a()
		ta[i] = time.Since(s)
		s = time.Now()
		b()
		tb[i] = time.Since(s)
	}
	slices.Sort(ta)
	slices.Sort(tb)
	return float64(ta[tries/2]) / float64(tb[tries/2])
}

// TestVerifyTimingSafeCost compares the dummy paths of VerifyTimingSafe with
// a failed verification against a real key of the same kind (SPEC §7).
func TestVerifyTimingSafeCost(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	msg := []byte(vectorSigned)
	rs := rsaSigner(t)
	ed := vectorSigner(t)
	rsaGarbage := make([]byte, 256)
	rand.Read(rsaGarbage)
	rsaGarbage[0] &= 0x3f // below both moduli: both do the exponentiation
	edGarbage := bytes.Clone(dummyEdSig[:])
	odd := make([]byte, 100)
	rsaHigh := bytes.Repeat([]byte{0xff}, 256) // not below any modulus: crypto/rsa alone would fail fast
	for _, tc := range []struct {
		name        string
		real, dummy func()
	}{
		{"rsa-2048",
			func() { rs.VerifyKey().Verify(msg, rsaGarbage) },
			func() { VerifyTimingSafe(nil, msg, rsaGarbage) }},
		{"rsa-2048 signature above the modulus",
			func() { rs.VerifyKey().Verify(msg, rsaGarbage) },
			func() { rs.VerifyKey().Verify(msg, rsaHigh) }},
		{"ed25519",
			func() { ed.VerifyKey().Verify(msg, edGarbage) },
			func() { VerifyTimingSafe(nil, msg, edGarbage) }},
		{"odd length",
			func() { ed.VerifyKey().Verify(msg, edGarbage) },
			func() { VerifyTimingSafe(nil, msg, odd) }},
	} {
		tc.dummy() // build the dummy outside the timed loop
		var r float64
		for attempt := 0; attempt < 3; attempt++ {
			if r = medianRatio(61, tc.dummy, tc.real); r >= 0.5 && r <= 2 {
				break
			}
		}
		t.Logf("%s: dummy/real median ratio %.2f", tc.name, r)
		if r < 0.5 || r > 2 {
			t.Errorf("%s: dummy/real median ratio %.2f outside 0.5..2", tc.name, r)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	msg := []byte(vectorSigned)
	for _, tc := range []struct {
		name string
		s    *Signer
	}{
		{"ed25519", vectorSigner(b)},
		{"rsa-2048", rsaSigner(b)},
	} {
		b.Run(tc.name, func(b *testing.B) {
			sig, _ := tc.s.Sign(msg)
			k := tc.s.VerifyKey()
			b.ReportAllocs()
			for b.Loop() {
				if !k.Verify(msg, sig) {
					b.Fatal("no verify")
				}
			}
		})
	}
	b.Run("dummy-rsa-2048", func(b *testing.B) {
		sig := make([]byte, 256)
		rand.Read(sig)
		sig[0] &= 0x3f
		b.ReportAllocs()
		for b.Loop() {
			VerifyTimingSafe(nil, msg, sig)
		}
	})
}
