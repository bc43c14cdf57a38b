package client

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// pair is a secured queue: Alice receives on q over alice, Bob sends with s
// over bob.
type pair struct {
	alice, bob *Conn
	q          *RecipientQueue
	s          *SenderQueue
	last       Message // the message receive took last
}

func newPair(t *testing.T, srv *smptest.Server) *pair {
	t.Helper()
	ctx := guard(t)
	p := &pair{alice: dial(t, srv.Addr, fastOptions(srv.Fingerprint)), bob: dial(t, srv.Addr, fastOptions(srv.Fingerprint))}
	var err error
	if p.q, err = CreateQueue(ctx, p.alice, codec.KEMX25519); err != nil {
		t.Fatal(err)
	}
	inv, err := p.q.Invitation()
	if err != nil {
		t.Fatal(err)
	}
	if p.s, err = NewSenderQueue(&inv); err != nil {
		t.Fatal(err)
	}
	if err := p.s.Confirm(ctx, p.bob, []byte("Bob")); err != nil {
		t.Fatal(err)
	}
	if _, err := p.q.Accept(ctx, p.alice, next(t, p.alice, EventMessage).Message); err != nil {
		t.Fatal(err)
	}
	return p
}

// sendRaw sends a decryptedBody of the test's making: header CRLF body CRLF,
// padded and sealed to the queue's x25519 EK as SPEC §10 says, and signed by
// Bob's SK on the wire, as a relay or a holder of EK could inject it.
func (p *pair) sendRaw(t *testing.T, header string, body []byte) {
	t.Helper()
	plain := append(append([]byte(header+"\r\n"), body...), "\r\n"...)
	size, err := e2e.PaddedSize(p.s.EncryptionKey, p.bob.MaxBody())
	if err != nil {
		t.Fatal(err)
	}
	padded := make([]byte, size)
	binary.BigEndian.PutUint32(padded, uint32(len(plain)))
	copy(padded[4:], plain)
	sealed, err := p.s.EncryptionKey.Seal([]byte(e2e.Info), padded)
	if err != nil {
		t.Fatal(err)
	}
	p.sendBody(t, sealed)
}

func (p *pair) sendBody(t *testing.T, sealed []byte) {
	t.Helper()
	if err := p.bob.Send(guard(t), p.s.SID, p.s.SenderKey.Signer(), sealed); err != nil {
		t.Fatal(err)
	}
}

// signed is "MSG seq e2eSig" over body, by signer on Bob's queue.
func (p *pair) signed(t *testing.T, signer *codec.Signer, seq uint64, body []byte) string {
	t.Helper()
	h, err := e2e.Sign(signer, p.s.SID, seq, body)
	if err != nil {
		t.Fatal(err)
	}
	return string(h.Bytes())
}

// receive takes the next message, judges it, stores the queue and reads it
// back (as a program that stops between messages would), then acknowledges.
func (p *pair) receive(t *testing.T) Received {
	t.Helper()
	p.last = next(t, p.alice, EventMessage).Message
	r := p.q.Receive(p.last)
	b, err := json.Marshal(p.q)
	if err != nil {
		t.Fatal(err)
	}
	var back RecipientQueue
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	p.q = &back
	if _, err := p.q.Ack(guard(t), p.alice); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestReceiveDrops sends, through a real relay, one message for each way
// SPEC §10 says a message is dropped, between good ones, and checks the
// reason given, that LastSeq moves only for messages shown, and that the
// gap is reported.
func TestReceiveDrops(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	p := newPair(t, srv)
	ctx := guard(t)
	mallory, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		t.Fatal(err)
	}
	otherEK, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}

	if err := p.s.Send(ctx, p.bob, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if r := p.receive(t); r.Drop != DropNone || string(r.Body) != "one" || r.Seq != 1 || r.FirstMissing != 0 || p.q.LastSeq != 1 {
		t.Fatalf("message 1: %+v, LastSeq %d", r, p.q.LastSeq)
	}
	one := p.last.Body

	sig := p.signed(t, p.s.SenderKey.Signer(), 2, []byte("two"))
	for _, c := range []struct {
		name string
		send func()
		want DropReason
		err  error
	}{
		{"empty header", func() { p.sendRaw(t, "", []byte("two")) }, DropUnsigned, e2e.ErrHeader},
		{"MSG without e2eSig", func() { p.sendRaw(t, "MSG 2", []byte("two")) }, DropUnsigned, e2e.ErrUnsigned},
		{"MSG with an empty e2eSig", func() { p.sendRaw(t, "MSG 2 ", []byte("two")) }, DropUnsigned, e2e.ErrUnsigned},
		{"other header", func() { p.sendRaw(t, "HELLO", []byte("two")) }, DropUnsigned, e2e.ErrHeader},
		{"wrong signer", func() { p.sendRaw(t, p.signed(t, mallory, 2, []byte("two")), []byte("two")) }, DropBadSignature, e2e.ErrSig},
		{"signature of another body", func() { p.sendRaw(t, sig, []byte("Two")) }, DropBadSignature, e2e.ErrSig},
		{"e2eSig not canonical", func() { p.sendRaw(t, sig+"\n", []byte("two")) }, DropBadSignature, e2e.ErrSig},
		{"seq 0", func() { p.sendRaw(t, "MSG 0"+sig[5:], []byte("two")) }, DropInvalidSeq, e2e.ErrSeq},
		{"leading zero", func() { p.sendRaw(t, "MSG 02"+sig[5:], []byte("two")) }, DropInvalidSeq, e2e.ErrSeq},
		{"seq past 2^64-1", func() { p.sendRaw(t, "MSG 18446744073709551616"+sig[5:], []byte("two")) }, DropInvalidSeq, e2e.ErrSeq},
		{"replay", func() { p.sendBody(t, one) }, DropReplay, nil},
		{"replay, sealed anew", func() { p.sendRaw(t, p.signed(t, p.s.SenderKey.Signer(), 1, []byte("one")), []byte("one")) }, DropReplay, nil},
		{"KEY after the confirmation", func() { p.sendRaw(t, string(e2e.ConfirmationHeader(p.s.SenderKey.PublicSPKI())), nil) }, DropLateKey, nil},
		{"KEY with a bad key", func() { p.sendRaw(t, "KEY AAAA", nil) }, DropLateKey, nil},
		{"sealed to another key", func() {
			b, err := e2e.Seal(otherEK.Public(), p.bob.MaxBody(), []byte(sig), []byte("two"))
			if err != nil {
				t.Fatal(err)
			}
			p.sendBody(t, b)
		}, DropNotOpen, e2e.ErrOpen},
	} {
		c.send()
		r := p.receive(t)
		if r.Drop != c.want || !errors.Is(r.Err, ErrDropped) || (c.err != nil && !errors.Is(r.Err, c.err)) || r.Body != nil {
			t.Fatalf("%s: %+v (%v), want %v wrapping %v", c.name, r, r.Err, c.want, c.err)
		}
		if p.q.LastSeq != 1 {
			t.Fatalf("%s: LastSeq %d", c.name, p.q.LastSeq)
		}
	}

	// A gap: as far as Bob knows the relay stored his messages 2…4, and it
	// withholds them; 4 comes later, after 5.
	var four Outgoing
	for _, m := range []string{"two", "three", "four"} {
		if four, err = p.s.Prepare([]byte(m)); err != nil {
			t.Fatal(err)
		}
		p.s.Sent(four, nil)
	}
	if err := p.s.Send(ctx, p.bob, []byte("five")); err != nil {
		t.Fatal(err)
	}
	if r := p.receive(t); r.Drop != DropNone || r.Seq != 5 || r.FirstMissing != 2 || string(r.Body) != "five" {
		t.Fatalf("message 5 after 1: %+v, want messages 2…4 missing", r)
	}
	// Out of order: 4 arrives after 5, correctly signed, and is dropped.
	if err := p.s.SendPrepared(ctx, p.bob, four); err != nil {
		t.Fatal(err)
	}
	if r := p.receive(t); r.Drop != DropReplay || r.Seq != 4 {
		t.Fatalf("message 4 after 5: %+v", r)
	}
	if err := p.s.Send(ctx, p.bob, []byte("six")); err != nil {
		t.Fatal(err)
	}
	if r := p.receive(t); r.Drop != DropNone || r.Seq != 6 || r.FirstMissing != 0 || p.q.LastSeq != 6 {
		t.Fatalf("message 6: %+v", r)
	}
}

// TestRedelivered: a message shown and stored whose ACK did not reach the
// server comes again with the same msgId, on a new connection: it is not
// shown twice, and it is told apart from a replay.
func TestRedelivered(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	p := newPair(t, srv)
	ctx := guard(t)
	if err := p.s.Send(ctx, p.bob, []byte("once")); err != nil {
		t.Fatal(err)
	}
	m := next(t, p.alice, EventMessage).Message
	if r := p.q.Receive(m); r.Drop != DropNone || string(r.Body) != "once" {
		t.Fatalf("first delivery: %+v", r)
	}
	// Alice stops before ACK; her next run subscribes again.
	p.alice.Close()
	alice := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	if got, err := p.q.Subscribe(ctx, alice); err != nil || !got {
		t.Fatalf("SUB: %v %v", got, err)
	}
	again := next(t, alice, EventMessage).Message
	if !bytes.Equal(again.ID, m.ID) {
		t.Fatal("the relay gave the message another msgId")
	}
	if r := p.q.Receive(again); r.Drop != DropRedelivered || r.Seq != 1 || !errors.Is(r.Err, ErrDropped) {
		t.Fatalf("second delivery: %+v", r)
	}
	if _, err := p.q.Ack(ctx, alice); err != nil {
		t.Fatal(err)
	}
	// The same seq under another msgId is a replay.
	o := Outgoing{Seq: 1}
	h, _ := e2e.Sign(p.s.SenderKey.Signer(), p.s.SID, 1, []byte("once"))
	o.Sig, o.Body = h.Sig, []byte("once")
	if err := p.s.SendPrepared(ctx, p.bob, o); err != nil {
		t.Fatal(err)
	}
	if r := p.q.Receive(next(t, alice, EventMessage).Message); r.Drop != DropReplay {
		t.Fatalf("seq 1 again under a new msgId: %+v", r)
	}
}

// TestSendAgain: a message refused with ERR QUOTA stays pending and goes
// again, unchanged, once there is room: the recipient sees it once, in its
// place. One sent twice because the first answer was lost (the server stored
// both) is shown once; the second is dropped as a replay.
func TestSendAgain(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519", "--quota", "1")
	p := newPair(t, srv)
	ctx := guard(t)
	if err := p.s.Send(ctx, p.bob, []byte("a")); err != nil {
		t.Fatal(err)
	}
	err := p.s.Send(ctx, p.bob, []byte("b"))
	if !errors.Is(err, codec.ErrQuota) || p.s.Pending == nil || p.s.Pending.Seq != 2 || !p.s.Pending.Tried || p.s.NextSeq != 3 {
		t.Fatalf("Send into a full queue: %v, pending %+v, next %d", err, p.s.Pending, p.s.NextSeq)
	}
	if _, err := p.s.Prepare([]byte("c")); !errors.Is(err, ErrPending) {
		t.Fatalf("Prepare with a message pending: %v", err)
	}
	if r := p.receive(t); r.Drop != DropNone || string(r.Body) != "a" {
		t.Fatalf("a: %+v", r)
	}
	if err := p.s.Send(ctx, p.bob, []byte("c")); !errors.Is(err, codec.ErrQuota) {
		// b went first and filled the queue again; c waits its turn.
		t.Fatalf("Send c: %v, want ERR QUOTA for c behind b", err)
	}
	if p.s.Pending == nil || string(p.s.Pending.Body) != "c" || p.s.Pending.Seq != 3 {
		t.Fatalf("after b went: pending %+v", p.s.Pending)
	}
	for i, want := range []string{"b", "c"} {
		if i == 1 {
			if err := p.s.SendPending(ctx, p.bob); err != nil || p.s.Pending != nil {
				t.Fatalf("SendPending: %v, pending %+v", err, p.s.Pending)
			}
		}
		if r := p.receive(t); r.Drop != DropNone || string(r.Body) != want || r.FirstMissing != 0 || r.Seq != uint64(i+2) {
			t.Fatalf("%s: %+v", want, r)
		}
	}

	// No answer for d: Bob cannot tell it was stored, and sends it again.
	o, err := p.s.Prepare([]byte("d"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.s.SendPrepared(ctx, p.bob, o)
	if err != nil {
		t.Fatal(err)
	}
	if !p.s.Sent(o, fmt.Errorf("lost answer: %w", ErrConnLost)) {
		t.Fatal("a message whose answer was lost is not pending")
	}
	if r := p.receive(t); r.Drop != DropNone || string(r.Body) != "d" {
		t.Fatalf("d: %+v", r)
	}
	if err := p.s.SendPending(ctx, p.bob); err != nil {
		t.Fatal(err)
	}
	if r := p.receive(t); r.Drop != DropReplay || r.Seq != 4 {
		t.Fatalf("d sent again: %+v", r)
	}
}

// TestSent: how each outcome of a SEND moves Pending and NextSeq, and that
// both survive the stored form, old files included.
func TestSent(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	inv := codec.Invitation{EncryptionKey: ek.Public(), SenderID: bytes.Repeat([]byte{3}, codec.QueueIDSize), Host: "h", Port: 1,
		ServerKeyHash: "fp"}
	s, err := NewSenderQueue(&inv)
	if err != nil {
		t.Fatal(err)
	}
	prep := func() Outgoing {
		t.Helper()
		o, err := s.Prepare([]byte("m"))
		if err != nil {
			t.Fatal(err)
		}
		if s.Pending == nil || s.Pending.Seq != o.Seq || s.NextSeq != o.Seq+1 {
			t.Fatalf("Prepare: %+v, pending %+v, next %d", o, s.Pending, s.NextSeq)
		}
		return o
	}
	check := func(step string, pending bool, next uint64) {
		t.Helper()
		if (s.Pending != nil) != pending || s.NextSeq != next {
			t.Fatalf("%s: pending %+v, next %d; want pending %v, next %d", step, s.Pending, s.NextSeq, pending, next)
		}
	}
	auth := fmt.Errorf("client: SEND: %w", codec.ErrAuth)

	o := prep()
	s.Sent(o, auth)
	check("refused at once", false, 1) // the seq is given back: no gap for the recipient
	o = prep()
	if !s.Sent(o, ErrConnLost) {
		t.Fatal("lost connection: not pending")
	}
	check("lost connection", true, 2)
	s.Sent(*s.Pending, auth)
	check("refused after an uncertain try", false, 2) // it may be stored: 1 is never reused
	o = prep()
	s.Sent(o, fmt.Errorf("client: %w", e2e.ErrTooLong))
	check("too long", false, 2)
	o = prep()
	if !s.Sent(o, fmt.Errorf("client: SEND: %w", codec.ErrQuota)) {
		t.Fatal("ERR QUOTA: not pending")
	}
	s.Sent(Outgoing{Seq: 1}, nil)
	check("outcome of another message", true, 3)

	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back SenderQueue
	if err := json.Unmarshal(b, &back); err != nil || back.NextSeq != 3 || back.Pending == nil ||
		back.Pending.Seq != 2 || !back.Pending.Tried || !bytes.Equal(back.Pending.Sig, s.Pending.Sig) {
		t.Fatalf("stored pending message: %+v %v", back.Pending, err)
	}
	s.Sent(o, nil)
	check("stored", false, 3)

	// A file from before seqs: nextSeq and pending absent.
	var old map[string]any
	b, _ = json.Marshal(s)
	if err := json.Unmarshal(b, &old); err != nil {
		t.Fatal(err)
	}
	delete(old, "nextSeq")
	b, _ = json.Marshal(old)
	if err := json.Unmarshal(b, &back); err != nil || back.NextSeq != 1 || back.Pending != nil {
		t.Fatalf("old sender queue: next %d, pending %+v, %v", back.NextSeq, back.Pending, err)
	}
	old["nextSeq"], old["pending"] = 2, map[string]any{"seq": 2, "sig": "", "body": ""}
	b, _ = json.Marshal(old)
	if err := json.Unmarshal(b, &back); err == nil {
		t.Fatal("a pending message not below nextSeq loaded")
	}
}

// TestRecipientJSONCompat: a recipient queue stored before signed messages
// loads with LastSeq 0 and no sender key, and Receive says why it can
// verify nothing.
func TestRecipientJSONCompat(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	rk, _ := GenerateSigningKey()
	q := RecipientQueue{Server: Server{"127.0.0.1:5223", "fp"}, RID: make([]byte, 16), RecipientKey: rk, EncryptionKey: ek, Secured: true}
	b, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	for _, field := range []string{"senderKey", "lastSeq", "lastMsgId"} {
		if bytes.Contains(b, []byte(field)) {
			t.Fatalf("unset %s is written: %s", field, b)
		}
	}
	var back RecipientQueue
	if err := json.Unmarshal(b, &back); err != nil || back.LastSeq != 0 || back.SenderKey != nil {
		t.Fatalf("old recipient queue: %+v %v", back, err)
	}
	s, _ := GenerateSigningKey()
	h, _ := e2e.Sign(s.Signer(), make([]byte, 16), 1, nil)
	body, err := e2e.Seal(ek.Public(), 7168, h.Bytes(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := back.Receive(Message{Body: body}); r.Drop != DropNoSenderKey {
		t.Fatalf("Receive on a queue without its sender key: %+v", r)
	}
}
