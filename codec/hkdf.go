package codec

import "crypto/sha256"

// HMAC-SHA256 (RFC 2104) and HKDF-SHA256 (RFC 5869) for the handshake, on
// stack buffers: every call is over a short message (at most hmacMaxMsg
// bytes), so the two hashes take the whole input at once through
// sha256.Sum256 and nothing is allocated. crypto/hkdf allocates an HMAC, two
// hash states and its output per call; the server runs eight to ten of these
// per handshake, where that overhead was a tenth of the handshake's CPU.

// hmacMaxMsg is the longest message hmacSHA256 takes: the longest label of
// the HPKE key schedule (hpkex25519.go) with its key schedule context, and an
// HKDF-Expand block of DeriveKeys, fit with room to spare.
const hmacMaxMsg = 192

// hmacSHA256 sets out to HMAC-SHA256(key, msg) for a key of at most 64 bytes
// and the concatenation of the msg parts (at most hmacMaxMsg bytes; more
// panics, which is a bug in this package). It does not allocate; its stack
// copies of the key are cleared before it returns.
func hmacSHA256(out *[sha256.Size]byte, key []byte, msg ...[]byte) {
	if len(key) > sha256.BlockSize {
		panic("codec: hmacSHA256 key too long")
	}
	var buf [sha256.BlockSize + hmacMaxMsg]byte
	n := sha256.BlockSize
	for _, m := range msg {
		if len(m) > len(buf)-n {
			panic("codec: hmacSHA256 message too long")
		}
		n += copy(buf[n:], m)
	}
	copy(buf[:sha256.BlockSize], key)
	for i := range sha256.BlockSize {
		buf[i] ^= 0x36
	}
	inner := sha256.Sum256(buf[:n])
	var outer [sha256.BlockSize + sha256.Size]byte
	copy(outer[:], key)
	for i := range sha256.BlockSize {
		outer[i] ^= 0x5c
	}
	copy(outer[sha256.BlockSize:], inner[:])
	*out = sha256.Sum256(outer[:])
	clear(buf[:sha256.BlockSize])
	clear(outer[:sha256.BlockSize])
	clear(inner[:])
}

// hkdfSHA256 fills out with HKDF-SHA256(ikm, salt, info) (RFC 5869; an empty
// salt is HashLen zeros, which HMAC pads to the same key). len(out) is at most
// 255·32, and len(info) at most hmacMaxMsg−33 (panics otherwise). It does
// not allocate.
func hkdfSHA256(out, ikm, salt, info []byte) {
	var prk, t [sha256.Size]byte
	hmacSHA256(&prk, salt, ikm)
	var ctr [1]byte
	prev := t[:0]
	for done := 0; done < len(out); done += sha256.Size {
		ctr[0]++
		hmacSHA256(&t, prk[:], prev, info, ctr[:])
		copy(out[done:], t[:])
		prev = t[:]
	}
	clear(prk[:])
	clear(t[:])
}
