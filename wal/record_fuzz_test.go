package wal

import (
	"bytes"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
)

// FuzzDecodeRecord feeds arbitrary bytes to the log's record decoder: it never
// panics or reads past its input, and a record it accepts re-encodes to the
// bytes it used, so encoding and decoding agree on every field.
func FuzzDecodeRecord(f *testing.F) {
	s, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range []engine.Record{
		{Kind: engine.RecQueueCreated, RID: [16]byte{1}, SID: [16]byte{2}, RecipientKey: s.VerifyKey()},
		{Kind: engine.RecQueueSecured, RID: [16]byte{1}, SenderKey: s.VerifyKey()},
		{Kind: engine.RecQueueSuspended, RID: [16]byte{1}, Time: 1764097639},
		{Kind: engine.RecQueueDeleted, RID: [16]byte{1}},
		{Kind: engine.RecMessageStored, RID: [16]byte{1}, MsgID: [8]byte{3}, Time: 1764097639, Body: []byte("hello")},
		{Kind: engine.RecMessageDeleted, RID: [16]byte{1}, MsgID: [8]byte{3}},
	} {
		f.Add(appendRecord(nil, &r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		b = b[:len(b):len(b)] // an over-read panics
		var v recordView
		n, err := decodeRecord(b, &v)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("decodeRecord used %d of %d bytes", n, len(b))
		}
		var r engine.Record
		if v.toRecord(&r) != nil {
			return // a key that does not parse: replay reports it
		}
		if got := appendRecord(nil, &r); !bytes.Equal(got, b[:n]) {
			t.Fatalf("record %d re-encodes to %x, decoded from %x", r.Kind, got, b[:n])
		}
	})
}
