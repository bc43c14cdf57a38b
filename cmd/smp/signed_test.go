package main

import (
	"context"
	"encoding/binary"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// injector sends to Alice's queue with Bob's stored keys what a hostile
// relay, or a holder of EK, could put there: the server takes every one,
// and only Alice's end-to-end checks stand between them and her screen.
type injector struct {
	sq *client.SenderQueue
	c  *client.Conn
}

func newInjector(t *testing.T, ctx context.Context, r *relay) *injector {
	t.Helper()
	s, err := store{path: filepath.Join(r.dir, "bob.json")}.load()
	if err != nil {
		t.Fatal(err)
	}
	sq := s.Contacts["alice"].Send
	c, err := client.DialServer(ctx, sq.Server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &injector{sq: sq, c: c}
}

// raw seals header CRLF body CRLF as SPEC §10 pads it, whatever the header,
// to the queue's x25519 key, and sends it signed by SK on the wire.
func (in *injector) raw(t *testing.T, ctx context.Context, header string, body string) {
	t.Helper()
	plain := header + "\r\n" + body + "\r\n"
	size, err := e2e.PaddedSize(in.sq.EncryptionKey, in.c.MaxBody())
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, size)
	binary.BigEndian.PutUint32(padded, uint32(len(plain)))
	copy(padded[4:], plain)
	sealed, err := in.sq.EncryptionKey.Seal([]byte(e2e.Info), padded)
	if err != nil {
		t.Fatal(err)
	}
	if err := in.c.Send(ctx, in.sq.SID, in.sq.SenderKey.Signer(), sealed); err != nil {
		t.Fatal(err)
	}
}

// signed sends body as message seq, signed by signer.
func (in *injector) signed(t *testing.T, ctx context.Context, signer *codec.Signer, seq uint64, body string) {
	t.Helper()
	h, err := e2e.Sign(signer, in.sq.SID, seq, []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	in.raw(t, ctx, string(h.Bytes()), body)
}

// TestDroppedMessages: smp receive prints only Bob's signed messages, in
// order, once each; it says which are missing, and drops everything else
// with a notice naming the reason, acknowledging it so the queue moves on.
func TestDroppedMessages(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	r := relayAt(t, srv, srv.Addr)
	ctx := guard(t)
	r.pair(t, ctx)
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "one")

	in := newInjector(t, ctx, r)
	mallory, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	bob := in.sq.SenderKey.Signer()
	in.signed(t, ctx, bob, 1, "one")                                                 // replayed
	in.raw(t, ctx, "", "unsigned")                                                   // empty header
	in.raw(t, ctx, "MSG 2", "unsigned")                                              // no e2eSig
	in.signed(t, ctx, mallory, 2, "forged")                                          // wrong signer
	in.raw(t, ctx, "MSG 02 "+strings.Repeat("A", 88), "bad number")                  // leading zero
	in.raw(t, ctx, string(e2e.ConfirmationHeader(in.sq.SenderKey.PublicSPKI())), "") // KEY after the confirmation
	// Bob's messages 2 and 3 go missing; 4 arrives, then 3, late.
	if err := r.st("bob.json").update(func(s *State) error { s.Contacts["alice"].Send.NextSeq = 4; return nil }); err != nil {
		t.Fatal(err)
	}
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "four")
	in.signed(t, ctx, bob, 3, "three")

	out, errOut, code := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob")
	if code != 0 || out != "one\nfour\n" {
		t.Fatalf("receive: exit %d, stdout %q; want Bob's two messages that arrived in order", code, out)
	}
	want := []string{
		"smp: dropped message 1: a replay, or out of order (message 1 was shown already)",
		"smp: dropped a message that is not signed: not from bob, or from an older smp",
		"smp: dropped a message that is not signed: not from bob, or from an older smp",
		"smp: dropped a message whose signature is not bob's: forged or damaged",
		"smp: dropped a message with an invalid number: not from bob",
		"smp: dropped a repeated confirmation: the queue is already secured",
		"smp: messages 2…3 are missing: bob numbered them, and they never arrived",
		"smp: dropped message 3: a replay, or out of order (message 4 was shown already)",
	}
	if got := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("notices:\n%s\nwant:\n%s", errOut, strings.Join(want, "\n"))
	}
	s, err := r.st("alice.json").load()
	if err != nil {
		t.Fatal(err)
	}
	if q := s.Contacts["bob"].Recv; q.LastSeq != 4 {
		t.Fatalf("alice.json: lastSeq %d, want 4", q.LastSeq)
	}
	if _, errOut, _ := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob"); errOut != "smp: no messages from bob\n" {
		t.Fatalf("the dropped messages were not acknowledged: %q", errOut)
	}
}

// TestSendKept: a message the relay refuses with ERR QUOTA is kept in the
// state file and sent again, unchanged, by send --retry or before the next
// message, so Alice sees every message once and no gap.
func TestSendKept(t *testing.T) {
	srv := smptest.StartServer(t, "--quota", "1")
	r := relayAt(t, srv, srv.Addr)
	ctx := guard(t)
	r.pair(t, ctx)
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "a")
	_, errOut, code := r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "b")
	if code != 1 || !strings.Contains(errOut, "smp: message 2 to alice is kept: the next 'smp send alice' or chat sends it again first") ||
		!strings.Contains(errOut, "(ERR QUOTA)") {
		t.Fatalf("send into a full queue: exit %d, %q", code, errOut)
	}
	if out := r.must(t, ctx, "--state", "bob.json", "list"); !strings.Contains(out, "message 2 kept to send again") {
		t.Fatalf("list does not show the kept message: %q", out)
	}
	if out := r.must(t, ctx, "--state", "alice.json", "receive", "bob"); out != "a\n" {
		t.Fatalf("receive: %q", out)
	}
	_, errOut, code = r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "--retry", "alice")
	if code != 0 || !strings.Contains(errOut, "sending message 2 to alice again") {
		t.Fatalf("send --retry: exit %d, %q", code, errOut)
	}
	if _, errOut, _ := r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "--retry", "alice"); !strings.Contains(errOut, "no message to alice is waiting") {
		t.Fatalf("second send --retry: %q", errOut)
	}
	out, errOut, _ := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob")
	if out != "b\n" || errOut != "" {
		t.Fatalf("receive after the retry: %q, notices %q", out, errOut)
	}
	// Kept again, then sent before the next message.
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "c")
	if _, _, code := r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "d"); code != 1 {
		t.Fatal("send into a full queue succeeded")
	}
	r.must(t, ctx, "--state", "alice.json", "receive", "bob")
	_, errOut, code = r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "e")
	if code != 1 || !strings.Contains(errOut, "sending message 4 to alice again") || !strings.Contains(errOut, "message 5 to alice is kept") {
		t.Fatalf("send after a kept message: exit %d, %q", code, errOut)
	}
	// While the kept message cannot go, a new one is not sent at all.
	_, errOut, code = r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "f")
	if code != 1 || !strings.Contains(errOut, "try again later; the new message was not sent") {
		t.Fatalf("send while the kept message is refused: exit %d, %q", code, errOut)
	}
	for _, want := range []string{"d\n", "e\n"} {
		out, errOut, _ := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob")
		if out != want || errOut != "" {
			t.Fatalf("receive: %q %q, want %q and no notice", out, errOut, want)
		}
		r.must(t, ctx, "--state", "bob.json", "send", "--retry", "alice")
	}
}

// st is the store of a state file in r's folder.
func (r *relay) st(name string) store { return store{path: filepath.Join(r.dir, name)} }
