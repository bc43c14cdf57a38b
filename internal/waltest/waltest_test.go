package waltest_test

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/internal/waltest"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/wal"
)

// TestContents: a body that compression hides from the raw bytes of the
// log's files is in what Contents returns, under every compression, with
// files of subdirectories and files that are not the log's as they are; a
// damaged frame is an error, not a silent gap.
func TestContents(t *testing.T) {
	s, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []wal.Compression{wal.CompressS2, wal.CompressZstd, wal.CompressNone} {
		t.Run(c.String(), func(t *testing.T) {
			data := t.TempDir()
			dir := filepath.Join(data, "wal")
			l, err := wal.Open(dir, wal.Options{Compression: c})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Load(func(*store.Record) error { return nil }); err != nil {
				t.Fatal(err)
			}
			var rid store.QueueID
			_, _ = rand.Read(rid[:])
			marker := make([]byte, 16)
			_, _ = rand.Read(marker)
			body := bytes.Repeat(marker, 256) // compresses to far less than itself
			for _, r := range []store.Record{
				{Kind: store.QueueCreated, RID: rid, SID: rid, RecipientKey: s.VerifyKey()},
				{Kind: store.MessageStored, RID: rid, MsgID: store.MsgID{1}, Size: len(body), Body: body},
			} {
				if _, _, err := l.Append(r, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			other := filepath.Join(data, "other", "file")
			if err := os.MkdirAll(filepath.Dir(other), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(other, []byte("not the log's"), 0o600); err != nil {
				t.Fatal(err)
			}

			files, err := waltest.Contents(vfs.OS, data)
			if err != nil {
				t.Fatal(err)
			}
			seg := filepath.Join(dir, "0000000000000001.wal")
			raw, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			if inRaw := bytes.Contains(raw, body); inRaw != (c == wal.CompressNone) {
				t.Fatalf("the body is in the raw segment: %v; with compression %s it should not be", inRaw, c)
			}
			if got := files[seg]; !bytes.HasPrefix(got, raw) || !bytes.Contains(got[len(raw):], body) {
				t.Fatal("the segment's contents lack its raw bytes or the decompressed body")
			}
			if got := files[other]; string(got) != "not the log's" {
				t.Fatalf("a file that is not the log's: %q", got)
			}

			raw[len(raw)-20] ^= 1 // in the last frame (the commit)
			if err := os.WriteFile(seg, raw, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := waltest.Contents(vfs.OS, data); err == nil {
				t.Fatal("a damaged frame read without an error")
			}
		})
	}
}
