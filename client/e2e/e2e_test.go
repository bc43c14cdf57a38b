package e2e

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

var kemTypes = []codec.KEMType{codec.KEMMLKEM768X25519, codec.KEMX25519, codec.KEMRSA}

func genKEM(t *testing.T, kt codec.KEMType) *codec.KEMPrivateKey {
	t.Helper()
	k, err := codec.GenerateKEMKey(kt)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenEveryKind(t *testing.T) {
	signer, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	hdr := testHeader(t, 1, nil)
	for _, kt := range kemTypes {
		k := genKEM(t, kt)
		for _, bs := range []int{codec.MinBlockSize, codec.DefaultBlockSize} {
			maxBody := codec.MaxBody(bs)
			max, err := MaxContent(k.Public(), maxBody)
			if err != nil {
				t.Fatal(err)
			}
			max -= len(hdr)
			bodies := [][]byte{nil, []byte("hi"), bytes.Repeat([]byte("\r\n\x00x"), 100), bytes.Repeat([]byte{0xff}, max)}
			for _, body := range bodies {
				sealed, err := Seal(k.Public(), maxBody, hdr, body)
				if err != nil {
					t.Fatalf("%v/%d: Seal(%d bytes): %v", kt, bs, len(body), err)
				}
				if len(sealed) != maxBody {
					t.Fatalf("%v/%d: sealed %d bytes, want maxBody %d", kt, bs, len(sealed), maxBody)
				}
				env, err := Open(k, sealed)
				if err != nil {
					t.Fatalf("%v/%d: Open: %v", kt, bs, err)
				}
				if !bytes.Equal(env.Header, hdr) || !bytes.Equal(env.Body, body) {
					t.Fatalf("%v/%d: opened %q / %d bytes", kt, bs, env.Header, len(env.Body))
				}
				if _, ok := env.SenderKey(); ok || env.IsKey() {
					t.Fatalf("%v: a signed message reads as a confirmation", kt)
				}
			}
			if _, err := Seal(k.Public(), maxBody, hdr, make([]byte, max+1)); !errors.Is(err, ErrTooLong) {
				t.Fatalf("%v/%d: one byte over the limit: %v, want ErrTooLong", kt, bs, err)
			}
		}
		hdr := ConfirmationHeader(signer.PublicSPKI())
		sealed, err := Seal(k.Public(), codec.MaxBody(codec.DefaultBlockSize), hdr, []byte("Bob"))
		if err != nil {
			t.Fatal(err)
		}
		env, err := Open(k, sealed)
		if err != nil {
			t.Fatal(err)
		}
		sk, ok := env.SenderKey()
		if !ok || !env.IsKey() || !bytes.Equal(sk, signer.PublicSPKI()) || string(env.Body) != "Bob" {
			t.Fatalf("%v: confirmation opened as %q %q (key ok %v)", kt, env.Header, env.Body, ok)
		}
	}
}

func TestOpenRejects(t *testing.T) {
	maxBody := codec.MaxBody(codec.DefaultBlockSize)
	for _, kt := range kemTypes {
		k, other := genKEM(t, kt), genKEM(t, kt)
		sealed, err := Seal(k.Public(), maxBody, testHeader(t, 7, []byte("secret")), []byte("secret"))
		if err != nil {
			t.Fatal(err)
		}
		tampered := bytes.Clone(sealed)
		tampered[len(tampered)-20] ^= 1
		for name, body := range map[string][]byte{
			"other key": nil, "tampered": tampered, "truncated": sealed[:len(sealed)-1],
			"empty": {}, "garbage": bytes.Repeat([]byte{7}, maxBody),
		} {
			key := k
			if name == "other key" {
				key, body = other, sealed
			}
			if _, err := Open(key, body); !errors.Is(err, ErrOpen) {
				t.Errorf("%v: %s: Open = %v, want ErrOpen", kt, name, err)
			}
		}
	}
}

// TestPaddedFormat checks plaintexts that open but are not envelopes, and
// that Open leaves any header to the recipient to judge while Seal takes
// only the two of SPEC §10.
func TestPaddedFormat(t *testing.T) {
	mk := func(n uint32, content string, size int) []byte {
		p := make([]byte, size)
		binary.BigEndian.PutUint32(p, n)
		copy(p[4:], content)
		return p
	}
	good := mk(8, "h\r\nbod\r\n", 32)
	if env, ok := parsePadded(good); !ok || string(env.Header) != "h" || string(env.Body) != "bod" {
		t.Fatalf("good envelope: %q %q %v", env.Header, env.Body, ok)
	}
	bad := map[string][]byte{
		"length past end": mk(40, "h\r\nbod\r\n", 32),
		"no CRLF":         mk(3, "abc", 32),
		"no final CRLF":   mk(6, "h\r\nbod", 32),
		"nonzero padding": append(mk(8, "h\r\nbod\r\n", 31), 1),
		"short":           {0, 0},
	}
	for name, p := range bad {
		if _, ok := parsePadded(p); ok {
			t.Errorf("%s: parsed", name)
		}
	}
	for _, h := range []string{"", "a b", "KEY abcd", "KEY", "MSG 1", "MSG 01 AAAA", "hdr"} {
		p := mk(uint32(len(h)+5), h+"\r\nb\r\n", 64)
		env, ok := parsePadded(p)
		if !ok || string(env.Header) != h || string(env.Body) != "b" {
			t.Errorf("header %q: parsed %v as %q %q", h, ok, env.Header, env.Body)
		}
		if env.IsKey() != strings.HasPrefix(h, "KEY") {
			t.Errorf("header %q: IsKey %v", h, env.IsKey())
		}
		if _, err := Seal(genKEM(t, codec.KEMX25519).Public(), 7168, []byte(h), nil); !errors.Is(err, ErrHeader) {
			t.Errorf("Seal with header %q: %v, want ErrHeader", h, err)
		}
	}
}
