package e2e

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// The §1 key and SID of vectors.md, which §7 signs with.
const (
	vecSeed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
	vecSPKI = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
	vecSID  = "AQIDBAUGBwgJCgsMDQ4PEA=="
)

func vecSigner(t testing.TB) (*codec.Signer, []byte) {
	t.Helper()
	seed, err := hex.DecodeString(vecSeed)
	if err != nil {
		t.Fatal(err)
	}
	s, err := codec.NewSigner(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(s.PublicSPKI()); got != vecSPKI {
		t.Fatalf("vector key's SPKI %s, want %s", got, vecSPKI)
	}
	sid, _ := base64.StdEncoding.DecodeString(vecSID)
	return s, sid
}

// testHeader is the header of message seq with body, signed by the vector key.
func testHeader(t testing.TB, seq uint64, body []byte) []byte {
	t.Helper()
	s, sid := vecSigner(t)
	h, err := Sign(s, sid, seq, body)
	if err != nil {
		t.Fatal(err)
	}
	return h.Bytes()
}

// TestVectors checks vectors.md §7 byte for byte: the signed bytes, e2eSig
// and the clientHeader, and that they parse and verify.
func TestVectors(t *testing.T) {
	const (
		signedHex = "534d5020653265207631207369670102030405060708090a0b0c0d0e0f10000000000000000168656c6c6f"
		sig       = "OHT8iw2aqwrcPGWxK/h0W1osqVEWo4Iy6hltX4RAkaCSmFeVjT3J2hqw2FzzMLlCHWX/8pIu9kkpUBrDy7jXAQ=="
		header    = "MSG 1 " + sig
	)
	s, sid := vecSigner(t)
	if got := hex.EncodeToString(SignedBytes(sid, 1, []byte("hello"))); got != signedHex {
		t.Fatalf("signed bytes\n%s, want\n%s", got, signedHex)
	}
	h, err := Sign(s, sid, 1, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(h.Sig); got != sig {
		t.Fatalf("e2eSig %s, want %s", got, sig)
	}
	if string(h.Bytes()) != header {
		t.Fatalf("clientHeader %q, want %q", h.Bytes(), header)
	}
	p, err := ParseMsgHeader([]byte(header))
	if err != nil || p.Seq != 1 || !bytes.Equal(p.Sig, h.Sig) {
		t.Fatalf("parsed %+v, %v", p, err)
	}
	vk, err := codec.ParseVerifyKey(s.PublicSPKI())
	if err != nil {
		t.Fatal(err)
	}
	if !Verify(vk, sid, p, []byte("hello")) {
		t.Fatal("the vector does not verify")
	}
}

func TestParseMsgHeader(t *testing.T) {
	sig := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xab}, 64))
	for _, c := range []struct {
		h    string
		seq  uint64
		want error
	}{
		{"MSG 1 " + sig, 1, nil},
		{"MSG 18446744073709551615 " + sig, 1<<64 - 1, nil},
		{"MSG 10 AA==", 10, nil},
		{"", 0, ErrHeader},
		{"hello", 0, ErrHeader},
		{"msg 1 " + sig, 0, ErrHeader},
		{"MSG\t1 " + sig, 0, ErrHeader},
		{"KEY " + sig, 0, ErrHeader},
		{"MSG", 0, ErrSeq},
		{"MSG ", 0, ErrSeq},
		{"MSG 0 " + sig, 0, ErrSeq},
		{"MSG 01 " + sig, 0, ErrSeq},
		{"MSG +1 " + sig, 0, ErrSeq},
		{"MSG -1 " + sig, 0, ErrSeq},
		{"MSG 1_0 " + sig, 0, ErrSeq},
		{"MSG 18446744073709551616 " + sig, 0, ErrSeq},
		{"MSG 100000000000000000000 " + sig, 0, ErrSeq},
		{"MSG  1 " + sig, 0, ErrSeq},
		{"MSG 1", 1, ErrUnsigned},
		{"MSG 1 ", 1, ErrUnsigned},
		{"MSG 1  " + sig, 1, ErrSig},
		{"MSG 1 " + sig + " ", 1, ErrSig},
		{"MSG 1 " + sig + " x", 1, ErrSig},
		{"MSG 1 " + strings.TrimRight(sig, "="), 1, ErrSig},
		{"MSG 1 " + sig[:40] + "\n" + sig[40:], 1, ErrSig},
		{"MSG 1 AB==", 1, ErrSig}, // non-zero trailing bits: a second spelling of AA==
		{"MSG 1 A-_=", 1, ErrSig},
	} {
		h, err := ParseMsgHeader([]byte(c.h))
		if c.want == nil {
			if err != nil || h.Seq != c.seq || string(h.Bytes()) != c.h {
				t.Errorf("%q: %+v %v", c.h, h, err)
			}
			continue
		}
		if !errors.Is(err, c.want) {
			t.Errorf("%q: %v, want %v", c.h, err, c.want)
		}
		for _, other := range []error{ErrHeader, ErrSeq, ErrUnsigned, ErrSig} {
			if other != c.want && errors.Is(err, other) {
				t.Errorf("%q: %v is also %v", c.h, err, other)
			}
		}
	}
}

// TestSignVerify: a signature verifies only for its own key, queue, seq and
// body, with Ed25519 and RSA sender keys alike.
func TestSignVerify(t *testing.T) {
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		s, err := codec.GenerateSigner(alg, 2048)
		if err != nil {
			t.Fatal(err)
		}
		other, err := codec.GenerateSigner(alg, 2048)
		if err != nil {
			t.Fatal(err)
		}
		sid := bytes.Repeat([]byte{1}, codec.QueueIDSize)
		h, err := Sign(s, sid, 42, []byte("body"))
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseMsgHeader(h.Bytes())
		if err != nil || back.Seq != 42 || !bytes.Equal(back.Sig, h.Sig) {
			t.Fatalf("%v: round trip %+v %v", alg, back, err)
		}
		if !Verify(s.VerifyKey(), sid, h, []byte("body")) {
			t.Fatalf("%v: own signature does not verify", alg)
		}
		otherSID := bytes.Repeat([]byte{2}, codec.QueueIDSize)
		for name, ok := range map[string]bool{
			"other key":   Verify(other.VerifyKey(), sid, h, []byte("body")),
			"other queue": Verify(s.VerifyKey(), otherSID, h, []byte("body")),
			"other seq":   Verify(s.VerifyKey(), sid, MsgHeader{Seq: 43, Sig: h.Sig}, []byte("body")),
			"other body":  Verify(s.VerifyKey(), sid, h, []byte("Body")),
			"no key":      Verify(nil, sid, h, []byte("body")),
			"short sid":   Verify(s.VerifyKey(), sid[1:], h, []byte("body")),
		} {
			if ok {
				t.Errorf("%v: %s verifies", alg, name)
			}
		}
		if _, err := Sign(s, sid[1:], 1, nil); err == nil {
			t.Errorf("%v: signed for a 15-byte sender ID", alg)
		}
		if _, err := Sign(s, sid, 0, nil); !errors.Is(err, ErrSeq) {
			t.Errorf("%v: seq 0: %v", alg, err)
		}
		if n := MaxMsgHeader(s.VerifyKey().SigLen()); len(MsgHeader{Seq: 1<<64 - 1, Sig: h.Sig}.Bytes()) != n {
			t.Errorf("%v: MaxMsgHeader %d is not the longest header", alg, n)
		}
	}
}

// TestMaxBody pins the longest signed message with an Ed25519 sender key on
// 8192-byte blocks (maxBody 7168): the padded size less the length, the two
// CRLFs and the longest header, "MSG " + 20 digits + " " + 88 base64.
func TestMaxBody(t *testing.T) {
	maxBody := codec.MaxBody(codec.DefaultBlockSize)
	for kt, want := range map[codec.KEMType]int{codec.KEMMLKEM768X25519: 5911, codec.KEMX25519: 6999} {
		k := genKEM(t, kt)
		n, err := MaxBody(k.Public(), maxBody, ed25519.SignatureSize)
		if err != nil || n != want {
			t.Fatalf("%v: MaxBody %d %v, want %d", kt, n, err, want)
		}
		h := MsgHeader{Seq: 1<<64 - 1, Sig: make([]byte, ed25519.SignatureSize)}.Bytes()
		if _, err := Seal(k.Public(), maxBody, h, make([]byte, n)); err != nil {
			t.Fatalf("%v: the longest message with the longest header: %v", kt, err)
		}
		if _, err := Seal(k.Public(), maxBody, h, make([]byte, n+1)); !errors.Is(err, ErrTooLong) {
			t.Fatalf("%v: one byte more: %v", kt, err)
		}
	}
}
