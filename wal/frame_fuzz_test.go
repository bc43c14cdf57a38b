package wal

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// FuzzReadFrames feeds arbitrary bytes to the frame reader as the frames of
// a file after its header, the way replay reads a segment or a snapshot: it
// never panics nor reads past its input; every frame it accepts is one the
// recovery scanner (validFrameAt) also finds valid at that offset; a batch
// frame's payload decompresses to the length its header claims, at most
// MaxFrameBytes; and records a batch frame decodes to re-encode to its
// payload exactly. The scanner that looks for a complete group after a
// damaged frame runs from every offset too. Seeds are groups the encoder
// writes, with every compression and every record kind (7 and 8 included),
// and pieces of them.
//
// The first byte of the input is not part of the file: when it is odd, the
// checksum of every frame is recomputed first (following the length
// fields), so that mutations reach the decompressors and the record decoder
// instead of all failing the checksum.
func FuzzReadFrames(f *testing.F) {
	s, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		f.Fatal(err)
	}
	recs := []store.Record{
		{Kind: store.QueueCreated, RID: [16]byte{1}, SID: [16]byte{2}, RecipientKey: s.VerifyKey()},
		{Kind: store.QueueCreated, RID: [16]byte{3}, SID: [16]byte{4}, Time: 1764097639, RecipientKey: s.VerifyKey()},
		{Kind: store.QueueSecured, RID: [16]byte{1}, SenderKey: s.VerifyKey()},
		{Kind: store.QueueSuspended, RID: [16]byte{1}, Time: 1764097639},
		{Kind: store.MessageStored, RID: [16]byte{1}, MsgID: [8]byte{3}, Time: 1764097639, Size: 32, Body: bytes.Repeat([]byte("body"), 8)},
		{Kind: store.MessageStored, RID: [16]byte{1}, MsgID: [8]byte{4}, Time: 1764097640, Size: 64512, Ref: 1<<32 | 32},
		{Kind: store.MessageDeleted, RID: [16]byte{1}, MsgID: [8]byte{3}},
		{Kind: store.QueueBlocked, RID: [16]byte{1}},
		{Kind: store.QueueUnblocked, RID: [16]byte{1}},
		{Kind: store.QueueDeleted, RID: [16]byte{3}},
	}
	for _, c := range []comp{compNone, compS2, compZstd} {
		enc := encoder{comp: c}
		for i := range recs {
			enc.add(&recs[i])
		}
		enc.commit(7)
		enc.add(&recs[0])
		enc.commit(15)
		group := bytes.Clone(enc.out)
		for _, fix := range []byte{0, 1} {
			f.Add(append([]byte{fix}, group...))
			f.Add(append([]byte{fix}, group[:len(group)-frameHeaderSize-commitSize]...)) // the commit torn off
			f.Add(append([]byte{fix}, group[:len(group)/2]...))
		}
		if enc.zenc != nil {
			enc.zenc.Close()
		}
	}
	f.Add(make([]byte, 1+frameHeaderSize+commitSize))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		b := bytes.Clone(in[1:])
		if in[0]&1 == 1 {
			fixFrameCRCs(b)
		}
		b = b[:len(b):len(b)] // an over-read panics
		fr := newFrameReader(bytes.NewReader(b), 0, int64(len(b)))
		defer fr.close()
		var raw []byte
		for {
			off := fr.off
			h, payload, err := fr.next()
			if err != nil {
				break
			}
			if !validFrameAt(b[off:]) {
				t.Fatalf("the reader accepts the frame at %d, the recovery scanner does not", off)
			}
			if h.typ != frameBatch {
				continue
			}
			if raw, err = fr.decompress(h, payload, raw); err != nil {
				continue // replay reports it as corruption
			}
			if len(raw) != h.rawLen || len(raw) > MaxFrameBytes {
				t.Fatalf("the frame at %d decompresses to %d bytes; its header says %d", off, len(raw), h.rawLen)
			}
			got, err := decodeFrame(raw)
			if err != nil {
				continue
			}
			var again []byte
			for i := range got {
				again = appendRecord(again, &got[i])
			}
			if !bytes.Equal(again, raw) {
				t.Fatalf("the %d records of the frame at %d re-encode to other bytes", len(got), off)
			}
		}
		sc := groupScanner{b: b, records: map[int]int{}}
		defer sc.dec.close()
		for i := range b {
			sc.completeGroupAt(i, 0)
		}
	})
}

// fixFrameCRCs rewrites the checksum of each frame of b, following the
// length fields from the start, as long as they stay within b.
func fixFrameCRCs(b []byte) {
	for off := 0; off+frameHeaderSize <= len(b); {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		if n > len(b)-off-frameHeaderSize {
			return
		}
		hdr := b[off : off+frameHeaderSize]
		binary.LittleEndian.PutUint32(hdr[4:], frameCRC(hdr, b[off+frameHeaderSize:off+frameHeaderSize+n]))
		off += frameHeaderSize + n
	}
}
