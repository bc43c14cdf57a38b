package e2e

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strconv"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// FuzzOpen: the recipient's opener never panics on any body and rejects what
// was not sealed to its key; the signed header parser takes exactly the
// headers of SPEC §10, each with one spelling; and Sign → Seal → Open →
// ParseMsgHeader → Verify round-trips any content.
//
// header is fed to the parser as it is, and its two halves as the seq and
// e2eSig of "MSG " + first + " " + second, checked against an oracle that
// shares no code with the parser.
func FuzzOpen(f *testing.F) {
	k, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		f.Fatal(err)
	}
	s, sid := vecSigner(f)
	const maxBody = codec.DefaultBlockSize - codec.BlockOverhead
	vector := testHeader(f, 1, []byte("hello"))
	sealed, err := Seal(k.Public(), maxBody, vector, []byte("hello"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed, []byte("hello"), vector)
	f.Add([]byte("garbage"), []byte(""), []byte(""))
	for _, h := range []string{"MSG 0 AA==", "MSG 01 AA==", "MSG 18446744073709551616 AA==", "MSG 1 ", "MSG 1 AB==",
		"MSG 1 AA=\n=", "KEY AA==", "18446744073709551615AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="} {
		f.Add([]byte{}, []byte("x"), []byte(h))
	}
	f.Fuzz(func(t *testing.T, body, content, header []byte) {
		if _, err := Open(k, body); err == nil && !bytes.Equal(body, sealed) {
			// Only a body sealed to k opens; a fuzzer cannot forge one.
			t.Fatalf("a body not sealed to the key opened: %x", body)
		}

		if h, err := ParseMsgHeader(header); err == nil {
			if !bytes.Equal(h.Bytes(), header) {
				t.Fatalf("%q parses but spells %q", header, h.Bytes())
			}
		} else if !errors.Is(err, ErrHeader) && !errors.Is(err, ErrSeq) && !errors.Is(err, ErrUnsigned) && !errors.Is(err, ErrSig) {
			t.Fatalf("%q: untyped error %v", header, err)
		}

		first, second := header[:len(header)/2], header[len(header)/2:]
		joined := append(append(append([]byte(msgPrefix), first...), ' '), second...)
		h, err := ParseMsgHeader(joined)
		wantSeq, seqOK := oracleSeq(first)
		wantSig, sigOK := oracleSig(second)
		if seqOK && sigOK {
			if err != nil || h.Seq != wantSeq || !bytes.Equal(h.Sig, wantSig) {
				t.Fatalf("%q: parsed %+v, %v; want seq %d", joined, h, err, wantSeq)
			}
		} else if err == nil {
			t.Fatalf("%q parsed as %+v; the oracle says seq ok %v, e2eSig ok %v", joined, h, seqOK, sigOK)
		}

		if len(content) > 1000 {
			content = content[:1000]
		}
		seq := uint64(len(header))<<32 | uint64(len(content)) + 1
		sh, err := Sign(s, sid, seq, content)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := Seal(k.Public(), maxBody, sh.Bytes(), content)
		if err != nil {
			t.Fatalf("Seal of %d bytes: %v", len(content), err)
		}
		if len(sb) != maxBody {
			t.Fatalf("sealed body is %d bytes, want %d", len(sb), maxBody)
		}
		env, err := Open(k, sb)
		if err != nil || !bytes.Equal(env.Body, content) {
			t.Fatalf("round trip: %v, %q", err, env.Body)
		}
		got, err := env.Signed()
		if err != nil || got.Seq != seq || !Verify(s.VerifyKey(), sid, got, env.Body) {
			t.Fatalf("round trip of the header %q: %+v %v", env.Header, got, err)
		}
		if Verify(s.VerifyKey(), sid, got, append(bytes.Clone(content), 0)) {
			t.Fatal("the signature covers a longer body too")
		}
	})
}

// oracleSeq: SPEC §10 seq, by printing the value back.
func oracleSeq(b []byte) (uint64, bool) {
	v, err := strconv.ParseUint(string(b), 10, 64)
	return v, err == nil && v != 0 && strconv.FormatUint(v, 10) == string(b)
}

// oracleSig: non-empty canonical padded base64, by encoding it back.
func oracleSig(b []byte) ([]byte, bool) {
	v, err := base64.StdEncoding.DecodeString(string(b))
	return v, err == nil && len(b) > 0 && base64.StdEncoding.EncodeToString(v) == string(b)
}
