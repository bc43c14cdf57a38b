package codec

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"math/big"
	"testing"
)

// Ways FuzzRSAVerify turns its input into a signature, chosen by the input's
// first byte.
const (
	fzRSAMaskValid = iota // a valid encoded message XORed with the input, signed raw
	fzRSARawEM            // the input as the encoded message, signed raw
	fzRSASig              // the input as the signature itself
	fzRSAModes
)

// FuzzRSAVerify holds the relay's RSASSA-PSS verifier (rsaKey.verifyPSS and
// VerifyKey.Verify) to crypto/rsa.VerifyPSS on any input. The second byte
// picks one of pssKeys (2048, 2049, 2055 and 3072 bits); the rest is XORed
// into a valid encoded message, or taken as the encoded message, or as the
// signature (first byte mod fzRSAModes). Signing an encoded message with the
// raw private operation lets the fuzzer reach every step of RFC 8017 §9.1.2
// with its own bytes; most valid-message masks break only a late step.
func FuzzRSAVerify(f *testing.F) {
	f.Add([]byte{fzRSAMaskValid, 0})
	f.Add([]byte{fzRSAMaskValid, 1, 0, 0, 1})
	f.Add([]byte{fzRSARawEM, 2, 0xbc})
	f.Add([]byte{fzRSASig, 3, 0xff, 0xff})
	keys := pssKeys(f)
	digest := sha256.Sum256([]byte("FuzzRSAVerify"))
	valid := make([][]byte, len(keys)) // per key, the encoded message of one crypto/rsa signature
	for i, k := range keys {
		sig, err := rsa.SignPSS(rand.Reader, k.priv, crypto.SHA256, digest[:], pssOptions)
		if err != nil {
			f.Fatal(err)
		}
		valid[i] = rawOpen(&k.priv.PublicKey, sig)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 2 {
			return
		}
		mode, i, data := in[0]%fzRSAModes, int(in[1])%len(keys), in[2:]
		k := keys[i]
		size := k.priv.Size()
		if len(data) > size {
			data = data[:size]
		}
		var sig []byte
		switch mode {
		case fzRSAMaskValid, fzRSARawEM:
			em := make([]byte, size)
			if mode == fzRSAMaskValid {
				copy(em, valid[i])
			}
			for j, b := range data { // aligned to the end: the trailer, H, salt first
				em[size-1-j] ^= b
			}
			if new(big.Int).SetBytes(em).Cmp(k.priv.N) >= 0 {
				em[0] = 0 // below N, so a signature opens to it
			}
			sig = rawSign(k.priv, em)
		case fzRSASig:
			sig = make([]byte, size)
			copy(sig[size-len(data):], data)
		}
		got := checkPSSAgree(t, k, digest, sig, "fuzz")
		if mode == fzRSAMaskValid && len(data) == 0 && !got {
			t.Fatal("a crypto/rsa signature does not verify")
		}
	})
}
