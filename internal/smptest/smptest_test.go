package smptest

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// The builders must produce the exact bytes of vectors.md.
func TestBuildersMatchVectors(t *testing.T) {
	seed, _ := hex.DecodeString("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
	signer, err := codec.NewSigner(ed25519.NewKeyFromSeed(seed))
	if err != nil {
		t.Fatal(err)
	}
	sid := []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"signed SEND (§1)", Cmd(signer, "abc1", sid, codec.CmdSEND, nil, []byte("hello")),
			"urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\nabc1\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND 5\r\nhello\r\n\r\n"},
		{"string SEND (§2)", StringSend("x", sid, "hi there"), "\r\nx\r\nAQIDBAUGBwgJCgsMDQ4PEA==\r\nSEND :hi there\r\n"},
		{"PING (§2)", Ping("p1"), "\r\np1\r\n\r\nPING\r\n"},
	}
	for _, tc := range tests {
		if string(tc.got) != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, tc.got, tc.want)
		}
	}
}
