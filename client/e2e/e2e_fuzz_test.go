package e2e

import (
	"bytes"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// FuzzOpen: the recipient's opener never panics on any body, rejects what was
// not sealed to its key, and Seal→Open round-trips any header-free content.
func FuzzOpen(f *testing.F) {
	k, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		f.Fatal(err)
	}
	const maxBody = codec.DefaultBlockSize - codec.BlockOverhead
	sealed, err := Seal(k.Public(), maxBody, nil, []byte("hello"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, []byte("hello"))
	f.Add([]byte("garbage"), []byte(""))
	f.Fuzz(func(t *testing.T, body, content []byte) {
		if _, err := Open(k, body); err == nil && !bytes.Equal(body, sealed) {
			// Only a body sealed to k opens; a fuzzer cannot forge one.
			t.Fatalf("a body not sealed to the key opened: %x", body)
		}
		if len(content) > 1000 {
			content = content[:1000]
		}
		s, err := Seal(k.Public(), maxBody, nil, content)
		if err != nil {
			t.Fatalf("Seal of %d bytes: %v", len(content), err)
		}
		if len(s) != maxBody {
			t.Fatalf("sealed body is %d bytes, want %d", len(s), maxBody)
		}
		env, err := Open(k, s)
		if err != nil || len(env.Header) != 0 || !bytes.Equal(env.Body, content) {
			t.Fatalf("round trip: %v, %q", err, env.Body)
		}
	})
}
