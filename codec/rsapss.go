package codec

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math/big"

	"filippo.io/bigmod"
)

// RSASSA-PSS verification with the modulus decoded once.
//
// crypto/rsa.VerifyPSS takes an *rsa.PublicKey and rebuilds its Montgomery
// form on every call (bigmod.NewModulus: R² mod N by 2·bits modular
// doublings), about a quarter of a 2048-bit verification. An RSA key here
// keeps that form (rsaKey), built when the key is parsed, so a verification
// is the exponentiation and the EMSA-PSS decoding only.
//
// The arithmetic is filippo.io/bigmod, the standard library's own
// crypto/internal/fips140/bigmod republished by its author for use outside
// it: the same code, assembly included, that crypto/rsa runs. The EMSA-PSS
// decoding below follows RFC 8017 §9.1.2 step by step for SPEC §2's one
// parameter set (SHA-256, MGF1-SHA-256, a 32-byte salt), as crypto/rsa's
// emsaPSSVerify does. TestRSAVerifyMatchesStdlib and FuzzRSAVerify hold it
// to crypto/rsa.VerifyPSS: every signature one accepts the other accepts.

// pssSaltLen is SPEC §2's RSASSA-PSS salt length; any other is rejected.
const pssSaltLen = 32

// rsaKey is an RSA public key ready to verify. It is immutable after
// newRSAKey and safe for concurrent use: a verification allocates its own
// numbers and only reads the modulus.
type rsaKey struct {
	m      *bigmod.Modulus // N in Montgomery-ready form (R² mod N kept)
	emBits int             // N.BitLen()-1, the EMSA-PSS encoded message's bits
}

// newRSAKey decodes n (big-endian, no leading zero byte) as an odd modulus
// for e = 65537 (SPEC §2; the caller has checked both).
func newRSAKey(n *big.Int) (rsaKey, error) {
	m, err := bigmod.NewModulus(n.Bytes())
	if err != nil {
		return rsaKey{}, fmt.Errorf("rsa: modulus: %w", err)
	}
	return rsaKey{m: m, emBits: n.BitLen() - 1}, nil
}

// verifyPSS reports whether sig is an RSASSA-PSS signature of digest (a
// SHA-256 hash) under k with SPEC §2's parameters. A signature that is not
// k's size in bytes is false at once, as in crypto/rsa (VerifyKey.Verify
// checks the length first).
func (k rsaKey) verifyPSS(digest *[sha256.Size]byte, sig []byte) bool {
	if len(sig) != k.m.Size() {
		return false
	}
	s, err := bigmod.NewNat().SetBytes(sig, k.m)
	if err != nil {
		// sig is not below N, which crypto/rsa too rejects before any
		// exponentiation. Spend that work anyway on a value that is below
		// N (top byte cleared; N's is not zero), so the cost of a failure
		// does not depend on where sig falls against this key's modulus,
		// which a dummy key's differs from (SPEC §7).
		var buf [maxRSABits / 8]byte
		low := buf[:len(sig)]
		copy(low, sig)
		low[0] = 0
		if s, err = bigmod.NewNat().SetBytes(low, k.m); err != nil {
			return false // cannot happen: low is below N
		}
		k.open(digest, s)
		return false
	}
	return k.open(digest, s)
}

// open is the rest of verifyPSS for s below N: the public operation, then
// the encoded message's checks.
func (k rsaKey) open(digest *[sha256.Size]byte, s *bigmod.Nat) bool {
	em := bigmod.NewNat().ExpShortVarTime(s, rsaExp, k.m).Bytes(k.m)
	// The encoded message has emBits bits in emLen bytes; when N's bit
	// length is 1 mod 8 it is a byte shorter than N, and the extra top byte
	// must be zero (crypto/rsa's verifyPSS does the same).
	emLen := (k.emBits + 7) / 8
	for len(em) > emLen {
		if em[0] != 0 {
			return false
		}
		em = em[1:]
	}
	return emsaPSSVerifySHA256(digest, em, k.emBits)
}

// emsaPSSVerifySHA256 is RFC 8017 §9.1.2 EMSA-PSS-VERIFY for SHA-256,
// MGF1-SHA-256 and sLen = 32; em is modified. The steps are numbered as in
// the RFC (step 1 and 2 are the caller's hash).
func emsaPSSVerifySHA256(mHash *[sha256.Size]byte, em []byte, emBits int) bool {
	const hLen, sLen = sha256.Size, pssSaltLen
	emLen := len(em)
	// 3. emLen < hLen + sLen + 2 is "inconsistent". (SPEC §2's 2048-bit
	// minimum makes this unreachable; it keeps the slicing below safe.)
	if emLen != (emBits+7)/8 || emLen < hLen+sLen+2 {
		return false
	}
	// 4. The rightmost octet is 0xbc.
	if em[emLen-1] != 0xbc {
		return false
	}
	// 5. maskedDB is the leftmost emLen-hLen-1 octets, H the next hLen.
	db := em[:emLen-hLen-1]
	h := em[emLen-hLen-1 : emLen-1]
	// 6. The leftmost 8·emLen−emBits bits of maskedDB are zero.
	bitMask := byte(0xff >> (8*emLen - emBits))
	if em[0]&^bitMask != 0 {
		return false
	}
	// 7-8. DB = maskedDB xor MGF1(H, emLen-hLen-1).
	mgf1XORSHA256(db, h)
	// 9. Clear the same leftmost bits of DB.
	db[0] &= bitMask
	// 10. DB is emLen-hLen-sLen-2 zero octets, then 0x01, then the salt.
	psLen := emLen - hLen - sLen - 2
	for _, b := range db[:psLen] {
		if b != 0 {
			return false
		}
	}
	if db[psLen] != 0x01 {
		return false
	}
	// 11-13. H' = Hash(0x00×8 || mHash || salt).
	salt := db[len(db)-sLen:]
	var mPrime [8 + hLen + sLen]byte
	copy(mPrime[8:], mHash[:])
	copy(mPrime[8+hLen:], salt)
	h0 := sha256.Sum256(mPrime[:])
	// 14. H == H'.
	return subtle.ConstantTimeCompare(h0[:], h) == 1
}

// mgf1XORSHA256 XORs out with MGF1-SHA-256(seed) (RFC 8017 B.2.1).
func mgf1XORSHA256(out, seed []byte) {
	var in [sha256.Size + 4]byte // seed || counter; seed is one hash long
	copy(in[:], seed)
	for counter, done := uint32(0), 0; done < len(out); counter++ {
		binary.BigEndian.PutUint32(in[sha256.Size:], counter)
		mask := sha256.Sum256(in[:])
		done += subtle.XORBytes(out[done:], out[done:], mask[:])
	}
}
