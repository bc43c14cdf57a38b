package codec

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"sync"
	"testing"
)

// pssTestKey is a private key for the differential tests, with the VerifyKey
// built from its public half.
type pssTestKey struct {
	priv *rsa.PrivateKey
	vk   *VerifyKey
}

var (
	pssTestKeysOnce sync.Once
	pssTestKeys     []pssTestKey
	pssTestKeysErr  error
)

// pssKeys returns keys of 2048 bits, of 2049 (N's bit length 1 mod 8, where
// the encoded message is a byte shorter than N) and of 2055 and 3072 bits,
// generated once per test binary.
func pssKeys(t testing.TB) []pssTestKey {
	t.Helper()
	pssTestKeysOnce.Do(func() {
		for _, bits := range []int{2048, 2049, 2055, 3072} {
			priv, err := rsa.GenerateKey(rand.Reader, bits)
			if err != nil {
				pssTestKeysErr = err
				return
			}
			vk, err := newRSAVerifyKey(&priv.PublicKey)
			if err != nil {
				pssTestKeysErr = err
				return
			}
			pssTestKeys = append(pssTestKeys, pssTestKey{priv, vk})
		}
	})
	if pssTestKeysErr != nil {
		t.Fatal(pssTestKeysErr)
	}
	return pssTestKeys
}

// rawSign is the RSA private operation on em (em < N), by the Chinese
// remainder theorem: the signature whose public operation gives back em,
// whatever em holds.
func rawSign(priv *rsa.PrivateKey, em []byte) []byte {
	c := new(big.Int).SetBytes(em)
	p, q := priv.Primes[0], priv.Primes[1]
	m1 := new(big.Int).Exp(c, priv.Precomputed.Dp, p)
	m2 := new(big.Int).Exp(c, priv.Precomputed.Dq, q)
	h := m1.Sub(m1, m2)
	h.Mul(h, priv.Precomputed.Qinv).Mod(h, p)
	m := h.Mul(h, q).Add(h, m2)
	return m.FillBytes(make([]byte, priv.Size()))
}

// rawOpen is the RSA public operation: s^e mod N, N's size in bytes.
func rawOpen(pub *rsa.PublicKey, sig []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(sig), big.NewInt(int64(pub.E)), pub.N)
	return m.FillBytes(make([]byte, pub.Size()))
}

// checkPSSAgree fails t unless rsaKey.verifyPSS and crypto/rsa.VerifyPSS
// give the same answer for sig over digest; it returns that answer.
func checkPSSAgree(t testing.TB, k pssTestKey, digest [32]byte, sig []byte, what string) bool {
	t.Helper()
	std := rsa.VerifyPSS(&k.priv.PublicKey, crypto.SHA256, digest[:], sig, pssOptions) == nil
	own := k.vk.x.rsa.verifyPSS(&digest, sig)
	if own != std {
		t.Fatalf("%d bits, %s: own verifier %v, crypto/rsa %v (sig %x)", k.priv.N.BitLen(), what, own, std, sig)
	}
	return own
}

// TestRSAVerifyMatchesStdlib holds the relay's RSASSA-PSS verification to
// crypto/rsa.VerifyPSS: on signatures crypto/rsa makes, on other salt
// lengths, on every flipped byte, and on encoded messages broken at each
// step of RFC 8017 §9.1.2 and signed with the raw private operation.
func TestRSAVerifyMatchesStdlib(t *testing.T) {
	for _, k := range pssKeys(t) {
		t.Run(fmt.Sprint(k.priv.N.BitLen()), func(t *testing.T) {
			msg := []byte("abc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n")
			digest := sha256.Sum256(msg)
			sig, err := rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, digest[:], pssOptions)
			if err != nil {
				t.Fatal(err)
			}
			if !checkPSSAgree(t, k, digest, sig, "valid") || !k.vk.Verify(msg, sig) {
				t.Fatal("a crypto/rsa signature does not verify")
			}
			other := sha256.Sum256([]byte("other"))
			checkPSSAgree(t, k, other, sig, "another digest")

			for _, salt := range []int{0, 20, 31, 33, 64, rsa.PSSSaltLengthEqualsHash} {
				s, err := rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, digest[:], &rsa.PSSOptions{SaltLength: salt})
				if err != nil {
					t.Fatal(err)
				}
				checkPSSAgree(t, k, digest, s, fmt.Sprintf("salt length %d", salt))
			}
			for i := range sig {
				for _, bit := range []byte{0x01, 0x80} {
					bad := append([]byte(nil), sig...)
					bad[i] ^= bit
					checkPSSAgree(t, k, digest, bad, fmt.Sprintf("byte %d ^ %#x", i, bit))
				}
			}
			nSig := k.priv.N.FillBytes(make([]byte, k.priv.Size()))
			checkPSSAgree(t, k, digest, nSig, "N itself")
			checkPSSAgree(t, k, digest, make([]byte, k.priv.Size()), "zero")

			em := rawOpen(&k.priv.PublicKey, sig)
			if got := rawSign(k.priv, em); string(got) != string(sig) {
				t.Fatal("rawSign does not invert rawOpen")
			}
			size := len(em)
			emBits := k.priv.N.BitLen() - 1
			top := size - (emBits+7)/8 // 1 when the encoded message is a byte shorter than N
			hStart := size - 33
			z := 8*((emBits+7)/8) - emBits // bits of the top byte above emBits
			breaks := []struct {
				name string
				mod  func(em []byte)
			}{
				{"trailer not 0xbc", func(em []byte) { em[size-1] = 0xbd }},
				{"top byte changed", func(em []byte) { em[0] ^= 1 }},
				{"H changed", func(em []byte) { em[hStart] ^= 1 }},
				{"salt changed", func(em []byte) { em[hStart-1] ^= 1 }},
				{"0x01 separator changed", func(em []byte) { em[hStart-33] ^= 1 }},
				{"padding not zero", func(em []byte) { em[top+1] ^= 1 }},
			}
			if z > 0 {
				breaks = append(breaks, struct {
					name string
					mod  func(em []byte)
				}{"a bit above emBits set", func(em []byte) { em[top] |= 0x80 >> (z - 1) }})
			}
			for _, b := range breaks {
				bad := append([]byte(nil), em...)
				b.mod(bad)
				if new(big.Int).SetBytes(bad).Cmp(k.priv.N) >= 0 {
					continue // no signature opens to a value not below N
				}
				if checkPSSAgree(t, k, digest, rawSign(k.priv, bad), b.name) {
					t.Errorf("%s: verifies", b.name)
				}
			}
		})
	}
}

// BenchmarkRSAVerify compares a verification under a parsed key, whose
// modulus is decoded once, with crypto/rsa.VerifyPSS, which decodes it on
// every call.
func BenchmarkRSAVerify(b *testing.B) {
	k := pssKeys(b)[0]
	msg := []byte("abc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n")
	digest := sha256.Sum256(msg)
	sig, err := rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, digest[:], pssOptions)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("own", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !k.vk.Verify(msg, sig) {
				b.Fatal("does not verify")
			}
		}
	})
	b.Run("crypto-rsa", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if rsa.VerifyPSS(&k.priv.PublicKey, crypto.SHA256, digest[:], sig, pssOptions) != nil {
				b.Fatal("does not verify")
			}
		}
	})
}

// TestRSAVerifyWrongLength checks that a signature longer or shorter than
// the modulus is refused, not padded or cut, on the path below
// VerifyKey.Verify's own length check too.
func TestRSAVerifyWrongLength(t *testing.T) {
	k := pssKeys(t)[0]
	digest := sha256.Sum256([]byte("x"))
	sig, err := rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, digest[:], pssOptions)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, sig[1:], append([]byte{0}, sig...), make([]byte, maxRSABits/8+1)} {
		if k.vk.x.rsa.verifyPSS(&digest, bad) {
			t.Errorf("a %d-byte signature verifies under a %d-byte key", len(bad), len(sig))
		}
	}
}
