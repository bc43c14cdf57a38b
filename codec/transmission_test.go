package codec

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/race"
)

// vectors.md §1: the signed binary SEND, parsed and rebuilt byte for byte.
func TestVectorSignedSend(t *testing.T) {
	const (
		signed = "abc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n"
		whole  = "urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\n" + signed + "\r\n"
	)
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	s, err := NewSigner(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

	built := AppendSigned(nil, []byte("abc1"), sid, CmdSEND, nil, []byte("hello"))
	if string(built) != signed {
		t.Fatalf("AppendSigned = %q, want %q", built, signed)
	}
	sig, err := s.Sign(built)
	if err != nil {
		t.Fatal(err)
	}
	if got := AppendClientTransmission(nil, sig, built); string(got) != whole {
		t.Fatalf("transmission = %q, want %q", got, whole)
	}

	p := NewParser(ServerSide, DefaultBlockSize)
	var tr Transmission
	n := p.Parse([]byte(whole+"####"), &tr)
	if tr.Err != ErrNone || n != len(whole) {
		t.Fatalf("Parse: err %v, used %d of %d", tr.Err, n, len(whole))
	}
	if tr.Cmd != CmdSEND || string(tr.CorrID) != "abc1" || !bytes.Equal(tr.QueueID, sid) ||
		string(tr.Body) != "hello" || string(tr.Signed) != signed {
		t.Fatalf("parsed %+v", tr)
	}
	if !s.VerifyKey().Verify(tr.Signed, tr.Signature) {
		t.Fatal("the parsed signature does not verify over the parsed signed bytes")
	}
}

// vectors.md §2: server transmissions and the string-form SEND and PING.
func TestVectorServerTransmissions(t *testing.T) {
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	rid := []byte{17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32}
	ts := time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC).Unix()

	for _, tc := range []struct {
		name string
		got  []byte
		want string
	}{
		{"OK", AppendOK(nil, []byte("abc1"), sid), "\r\nabc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nOK\r\n"},
		{"MSG", AppendMSG(nil, nil, rid, []byte{1, 2, 3, 4, 5, 6, 7, 8}, ts, []byte("hello")),
			"\r\n\r\nERITFBUWFxgZGhscHR4fIA==\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 5\r\nhello\r\n\r\n"},
		{"PONG", AppendPONG(nil, []byte("p1")), "\r\np1\r\n\r\nPONG\r\n"},
	} {
		if string(tc.got) != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
		if n := MSGSize(nil, rid, 5); tc.name == "MSG" && n != len(tc.got) {
			t.Errorf("MSGSize = %d, AppendMSG wrote %d", n, len(tc.got))
		}
	}

	// The client parses the pushed MSG back.
	cp := NewParser(ClientSide, DefaultBlockSize)
	var tr Transmission
	msg := "\r\n\r\nERITFBUWFxgZGhscHR4fIA==\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 5\r\nhello\r\n\r\n"
	if n := cp.Parse([]byte(msg), &tr); tr.Err != ErrNone || n != len(msg) || tr.Cmd != CmdMSG ||
		!bytes.Equal(tr.QueueID, rid) || string(tr.Time) != "2026-11-25T19:07:19Z" || string(tr.Body) != "hello" ||
		!bytes.Equal(tr.MsgID, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("client parse of MSG: %+v (used %d)", tr, n)
	}

	// The server parses the string SEND and PING.
	sp := NewParser(ServerSide, DefaultBlockSize)
	str := "\r\nx\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND :hi there\r\n"
	if sp.Parse([]byte(str), &tr); tr.Err != ErrNone || tr.Cmd != CmdSEND || string(tr.Body) != "hi there" ||
		len(tr.Signature) != 0 {
		t.Fatalf("string SEND: %+v", tr)
	}
	if sp.Parse([]byte("\r\np1\r\n\r\nPING\r\n"), &tr); tr.Err != ErrNone || tr.Cmd != CmdPING || string(tr.CorrID) != "p1" {
		t.Fatalf("PING: %+v", tr)
	}
}

// TestParseNeverReadsPast: every prefix of valid and invalid transmissions
// parses without panicking and uses no more than it was given.
func TestParseNeverReadsPast(t *testing.T) {
	inputs := []string{
		"urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\nabc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n\r\n",
		"\r\n\r\nERITFBUWFxgZGhscHR4fIA==\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 5\r\nhello\r\n\r\n",
		"\r\nc\r\n\r\nIDS ERITFBUWFxgZGhscHR4fIA== AQIDBAUGBwgJCgsMDQ4PEA==\r\n",
		"\r\nc\r\n\r\nERR SYNTAX 1\r\n",
		"\r\nc\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 00000\r\n\r\n\r\n",
	}
	for _, side := range []Side{ServerSide, ClientSide} {
		p := NewParser(side, 4096)
		var tr Transmission
		for _, in := range inputs {
			for i := 0; i <= len(in); i++ {
				b := []byte(in[:i])
				if n := p.Parse(b, &tr); n > len(b) || n <= 0 && len(b) > 0 {
					t.Fatalf("side %d: Parse(%q) used %d bytes", side, b, n)
				}
			}
		}
	}
}

func TestErrorText(t *testing.T) {
	for e := ErrSyntaxStructure; e < numErrors; e++ {
		got, ok := ParseError([]byte(e.String()))
		if !ok || got != e {
			t.Errorf("ParseError(%q) = %v, %v", e.String(), got, ok)
		}
	}
	if _, ok := ParseError([]byte("SYNTAX 7")); ok {
		t.Error("ParseError accepted SYNTAX 7")
	}
}

func TestParseAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	p := NewParser(ServerSide, DefaultBlockSize)
	var tr Transmission
	in := []byte("urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\nabc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n\r\n")
	if n := testing.AllocsPerRun(100, func() { p.Parse(in, &tr) }); n != 0 {
		t.Fatalf("Parse allocates %.1f times per SEND", n)
	}
}

func BenchmarkParseSend(b *testing.B) {
	p := NewParser(ServerSide, DefaultBlockSize)
	var tr Transmission
	in := []byte("urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\nabc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(in)))
	for b.Loop() {
		p.Parse(in, &tr)
	}
}
