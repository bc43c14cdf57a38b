package codec

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"testing"
)

// TestHMACSHA256: hmacSHA256 is crypto/hmac's HMAC-SHA256 for every key
// length it takes (0..64) and message lengths across the SHA-256 block
// boundaries, the message given whole or in parts.
func TestHMACSHA256(t *testing.T) {
	key := make([]byte, sha256.BlockSize)
	msg := make([]byte, hmacMaxMsg)
	_, _ = rand.Read(key)
	_, _ = rand.Read(msg)
	for kl := 0; kl <= len(key); kl += 8 {
		for _, ml := range []int{0, 1, 31, 55, 56, 63, 64, 65, 119, 120, 128, hmacMaxMsg} {
			m := hmac.New(sha256.New, key[:kl])
			m.Write(msg[:ml])
			want := m.Sum(nil)
			var got [sha256.Size]byte
			hmacSHA256(&got, key[:kl], msg[:ml])
			if !bytes.Equal(got[:], want) {
				t.Fatalf("key %d, msg %d: got %x, want %x", kl, ml, got, want)
			}
			hmacSHA256(&got, key[:kl], msg[:ml/3], nil, msg[ml/3:ml])
			if !bytes.Equal(got[:], want) {
				t.Fatalf("key %d, msg %d in parts: got %x, want %x", kl, ml, got, want)
			}
		}
	}
}

// TestHMACSHA256Limits: a key or message longer than it takes panics rather
// than being cut short.
func TestHMACSHA256Limits(t *testing.T) {
	for name, f := range map[string]func(*[32]byte){
		"key":   func(out *[32]byte) { hmacSHA256(out, make([]byte, sha256.BlockSize+1)) },
		"msg":   func(out *[32]byte) { hmacSHA256(out, nil, make([]byte, hmacMaxMsg+1)) },
		"parts": func(out *[32]byte) { hmacSHA256(out, nil, make([]byte, hmacMaxMsg), []byte{1}) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			var out [32]byte
			f(&out)
		})
	}
}

// TestHKDFSHA256: hkdfSHA256 is crypto/hkdf's HKDF-SHA256 for empty and
// 32-byte salts and outputs of one to several blocks, among them the key
// schedule's 88 bytes.
func TestHKDFSHA256(t *testing.T) {
	ikm := make([]byte, 64)
	salt := make([]byte, 32)
	info := make([]byte, hmacMaxMsg-sha256.Size-1)
	_, _ = rand.Read(ikm)
	_, _ = rand.Read(salt)
	_, _ = rand.Read(info)
	for _, s := range [][]byte{nil, salt} {
		for _, n := range []int{1, 12, 32, 33, 64, okmSize, 200} {
			for _, il := range []int{0, 53, len(info)} {
				want, err := hkdf.Key(sha256.New, ikm, s, string(info[:il]), n)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, n)
				hkdfSHA256(got, ikm, s, info[:il])
				if !bytes.Equal(got, want) {
					t.Fatalf("salt %d, out %d, info %d: got %x, want %x", len(s), n, il, got, want)
				}
			}
		}
	}
}

// TestHKDFNoAlloc: the handshake's hashes allocate nothing.
func TestHKDFNoAlloc(t *testing.T) {
	ikm := make([]byte, 64)
	salt := make([]byte, 32)
	info := make([]byte, 53)
	var okm [okmSize]byte
	if n := testing.AllocsPerRun(100, func() { hkdfSHA256(okm[:], ikm, salt, info) }); n != 0 {
		t.Fatalf("hkdfSHA256 allocates %.0f times", n)
	}
}
