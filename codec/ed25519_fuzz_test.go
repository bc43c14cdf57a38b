package codec

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"testing"

	"filippo.io/edwards25519"
)

// Mutations FuzzVerifyDifferential applies to a signature made by
// crypto/ed25519.Sign, chosen by the input's first byte.
const (
	fzFlip          = iota // xor one byte of the signature
	fzSmallR               // R replaced by an encoding of a small-order point
	fzSPlusL               // S + ℓ: the same scalar, non-canonical
	fzTorsionR             // re-signed with R + T, T of small order
	fzMixedKey             // re-signed under the key A + T
	fzNonCanonicalR        // R a small-order point in any encoding, S = k·a
	fzWeakKey              // the key replaced by a small-order one, R = [S]B
	fzOverwrite            // bytes of the input written over the signature
	fzModes
)

// FuzzVerifyDifferential checks the relay's Ed25519 verifier against
// crypto/ed25519. The input's first half seeds a key (SHA-256 of it) and
// picks a mutation (its first three bytes: mode, position, value); its second
// half is the message. The signature crypto/ed25519.Sign makes must verify on
// every path; the mutated one must get the same answer from crypto/ed25519
// and the relay, unless the relay accepts it for a reason ruleDifference
// names (a non-canonical R, a small-order component); crypto/ed25519
// accepting what the relay rejects is always a failure. The batch path must
// agree with the single path on both.
func FuzzVerifyDifferential(f *testing.F) {
	f.Add([]byte(vectorSigned))
	f.Add([]byte{})
	f.Add([]byte{0})
	for mode := range byte(fzModes) {
		for _, pos := range []byte{0, 1, 4, 31, 32, 63} {
			f.Add(append([]byte{mode, pos, 0x80, 'k', 'e', 'y'}, "a message of some length"...))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		half, msg := data[:len(data)/2], data[len(data)/2:]
		seed := sha256.Sum256(half)
		key := newEdTestKey(t, seed[:])
		k := edKeyFromRaw(t, key.pub)

		sig := ed25519.Sign(key.priv, msg)
		if !k.Verify(msg, sig) || !VerifyTimingSafe(k, msg, sig) || !verifyBatched(t, k, msg, sig) {
			t.Fatal("a signature made by crypto/ed25519 does not verify")
		}

		var mode, pos, val byte
		if len(half) >= 3 {
			mode, pos, val = half[0]%fzModes, half[1], half[2]
		}
		pub, vk := key.pub, k
		bad := bytes.Clone(sig)
		small := smallOrderEncodings(t)
		switch mode {
		case fzFlip:
			bad[pos%64] ^= val | 1
		case fzSmallR:
			copy(bad, small[int(pos)%len(small)])
		case fzSPlusL:
			var c uint16
			for i := range 32 {
				c += uint16(bad[32+i]) + uint16(edOrder[i])
				bad[32+i] = byte(c)
				c >>= 8
			}
		case fzTorsionR:
			bad = key.signWith(pub, msg, torsion(t, int(pos)), nil)
		case fzMixedKey:
			var a edwards25519.Point
			a.Add(&key.A, torsion(t, int(pos)))
			pub = a.Bytes()
			vk = edKeyFromRaw(t, pub)
			bad = key.signWith(pub, msg, nil, nil)
		case fzNonCanonicalR:
			r := small[int(pos)%len(small)]
			var kk, s, zero edwards25519.Scalar
			edChallengeRef(&kk, r, pub, msg)
			s.MultiplyAdd(&kk, &key.a, &zero)
			bad = append(bytes.Clone(r), s.Bytes()...)
		case fzWeakKey:
			pub = small[int(pos)%len(small)]
			vk = edKeyFromRaw(t, pub)
			var s edwards25519.Scalar
			s.SetUniformBytes(append(seed[:], seed[:]...))
			var sB edwards25519.Point
			sB.ScalarBaseMult(&s)
			bad = append(sB.Bytes(), s.Bytes()...)
		case fzOverwrite:
			copy(bad[pos%64:], half[3:])
		}

		want := ed25519.Verify(pub, msg, bad)
		got := vk.Verify(msg, bad)
		switch {
		case want && !got:
			t.Fatalf("mode %d: crypto/ed25519 accepts a signature the relay rejects", mode)
		case got && !want && ruleDifference(pub, msg, bad) == "":
			t.Fatalf("mode %d: the relay accepts a signature crypto/ed25519 rejects, and no named rule explains it", mode)
		}
		if VerifyTimingSafe(vk, msg, bad) != got || verifyBatched(t, vk, msg, bad) != got {
			t.Fatalf("mode %d: single and batch paths disagree", mode)
		}
	})
}
