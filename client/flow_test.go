package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

var kemKinds = []codec.KEMType{codec.KEMMLKEM768X25519, codec.KEMX25519, codec.KEMRSA}

// TestSeedFlow runs the seed's procedure over a server of every transport
// key kind, with every EK kind on the default (mlkem768x25519) one: Alice creates a queue and an invitation, Bob confirms,
// Alice secures the queue, Bob sends, Alice receives and acknowledges. What
// the server relays is checked to be opaque and of one size.
func TestSeedFlow(t *testing.T) {
	for _, transport := range kemKinds {
		t.Run("transport="+transport.String(), func(t *testing.T) {
			srv := smptest.StartServer(t, "--key-type", transport.String())
			eks := kemKinds
			if transport != codec.KEMMLKEM768X25519 {
				eks = eks[:1] // the EK kinds do not depend on the transport
			}
			for _, ek := range eks {
				t.Run("ek="+ek.String(), func(t *testing.T) { seedFlow(t, srv, ek) })
			}
		})
	}
}

func seedFlow(t *testing.T, srv *smptest.Server, kem codec.KEMType) {
	ctx := guard(t)
	alice := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	q, err := CreateQueue(ctx, alice, kem)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := q.Invitation()
	if err != nil {
		t.Fatal(err)
	}
	// The invitation travels as text: Bob parses what Alice printed.
	parsed, err := codec.ParseInvitation(inv.URI())
	if err != nil {
		t.Fatal(err)
	}
	bobQ, err := NewSenderQueue(&parsed)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := DialServer(ctx, bobQ.Server, fastOptions(""))
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()
	if err := bobQ.Confirm(ctx, bob, []byte("Bob here")); err != nil {
		t.Fatal(err)
	}
	// Alice's Conn is subscribed since NEW: the confirmation is pushed.
	m := next(t, alice, EventMessage)
	if len(m.Message.Body) != alice.MaxBody() {
		t.Fatalf("confirmation body is %d bytes, want maxBody %d", len(m.Message.Body), alice.MaxBody())
	}
	info, err := q.Accept(ctx, alice, m.Message)
	if err != nil {
		t.Fatal(err)
	}
	if string(info) != "Bob here" || !q.Secured || !bytes.Equal(q.SID, bobQ.SID) ||
		!bytes.Equal(q.SenderKey, bobQ.SenderKey.PublicSPKI()) || q.LastSeq != 0 {
		t.Fatalf("Accept: info %q secured %v sid %x, sender key kept %v, last seq %d", info, q.Secured, q.SID,
			bytes.Equal(q.SenderKey, bobQ.SenderKey.PublicSPKI()), q.LastSeq)
	}
	if _, err := q.Invitation(); err == nil {
		t.Fatal("a secured queue still hands out its invitation")
	}

	const marker = "PLAINTEXT-MARKER-7f3a"
	msgs := []string{marker, "", marker + string(bytes.Repeat([]byte("x"), 3000))}
	for _, s := range msgs {
		if err := bobQ.Send(ctx, bob, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range msgs {
		e := next(t, alice, EventMessage)
		if len(e.Message.Body) != alice.MaxBody() {
			t.Fatalf("message %d: body %d bytes, want %d for every message", i, len(e.Message.Body), alice.MaxBody())
		}
		if bytes.Contains(e.Message.Body, []byte(marker)) {
			t.Fatalf("message %d: the relayed body holds the plaintext", i)
		}
		r := q.Receive(e.Message)
		if r.Drop != DropNone || r.Seq != uint64(i+1) || r.FirstMissing != 0 {
			t.Fatalf("message %d: %+v", i, r)
		}
		if string(r.Body) != want {
			t.Fatalf("message %d: received %d bytes, want %d bytes", i, len(r.Body), len(want))
		}
		if _, err := q.Ack(ctx, alice); err != nil {
			t.Fatal(err)
		}
	}
	// Unsigned sends are refused once the queue is secured.
	if err := bob.Send(ctx, bobQ.SID, nil, []byte("x")); !errors.Is(err, codec.ErrAuth) {
		t.Fatalf("unsigned SEND to a secured queue: %v, want ERR AUTH", err)
	}
	if err := q.Suspend(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if err := bobQ.Send(ctx, bob, []byte("late")); !errors.Is(err, codec.ErrAuth) {
		t.Fatalf("SEND to a suspended queue: %v, want ERR AUTH", err)
	}
	if err := q.Delete(ctx, alice); err != nil {
		t.Fatal(err)
	}
	if alice.Subscribed(q.RID) {
		t.Fatal("still subscribed after DEL")
	}
	if _, err := q.Subscribe(ctx, alice); !errors.Is(err, codec.ErrAuth) {
		t.Fatalf("SUB after DEL: %v, want ERR AUTH", err)
	}
}

// TestForgedConfirmationIgnored: someone who learned the SID but not EK
// sends confirmations first; Alice drops them and secures the queue with
// Bob's key only.
func TestForgedConfirmationIgnored(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	alice := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	q, err := CreateQueue(ctx, alice, codec.KEMMLKEM768X25519)
	if err != nil {
		t.Fatal(err)
	}
	inv, _ := q.Invitation()

	// Mallory has the SID and the server, and an EK of her own.
	forged := inv
	mk, err := codec.GenerateKEMKey(codec.KEMMLKEM768X25519)
	if err != nil {
		t.Fatal(err)
	}
	forged.EncryptionKey = mk.Public()
	mallory, err := NewSenderQueue(&forged)
	if err != nil {
		t.Fatal(err)
	}
	mc := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	if err := mallory.Confirm(ctx, mc, []byte("I am Bob")); err != nil {
		t.Fatal(err)
	}
	if err := mc.Send(ctx, inv.SenderID, nil, bytes.Repeat([]byte{1}, mc.MaxBody())); err != nil {
		t.Fatal(err)
	}

	bobQ, _ := NewSenderQueue(&inv)
	bob := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	if err := bobQ.Confirm(ctx, bob, []byte("the real Bob")); err != nil {
		t.Fatal(err)
	}

	var info []byte
	for i := 0; ; i++ {
		e := next(t, alice, EventMessage)
		info, err = q.Accept(ctx, alice, e.Message)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrDropped) || !errors.Is(err, e2e.ErrOpen) {
			t.Fatalf("message %d: %v, want a dropped message that does not open", i, err)
		}
		if i >= 2 {
			t.Fatal("more than two messages dropped")
		}
	}
	if string(info) != "the real Bob" {
		t.Fatalf("accepted %q", info)
	}
	if err := mallory.Send(ctx, mc, []byte("hi")); !errors.Is(err, codec.ErrAuth) {
		t.Fatalf("Mallory's signed SEND: %v, want ERR AUTH", err)
	}
	if err := bobQ.Send(ctx, bob, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	e := next(t, alice, EventMessage)
	if r := q.Receive(e.Message); r.Drop != DropNone || string(r.Body) != "hi" {
		t.Fatalf("Bob's message: %+v", r)
	}
}

// TestEnd: a second subscriber takes the queue; the first gets END.
func TestEnd(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	a := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	q, err := CreateQueue(ctx, a, codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	b := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	if got, err := q.Subscribe(ctx, b); err != nil || got {
		t.Fatalf("Subscribe: %v %v", got, err)
	}
	e := next(t, a, EventEnd)
	if !bytes.Equal(e.RID, q.RID) || a.Subscribed(q.RID) || !b.Subscribed(q.RID) {
		t.Fatalf("END %v; subscribed a=%v b=%v", e, a.Subscribed(q.RID), b.Subscribed(q.RID))
	}
}

func TestQueueJSON(t *testing.T) {
	for _, kem := range kemKinds {
		ek, err := codec.GenerateKEMKey(kem)
		if err != nil {
			t.Fatal(err)
		}
		rk, _ := GenerateSigningKey()
		q := RecipientQueue{Server: Server{"127.0.0.1:5223", "fp"}, RID: make([]byte, 16), SID: bytes.Repeat([]byte{2}, 16),
			RecipientKey: rk, EncryptionKey: ek, Secured: true}
		b, err := json.Marshal(q)
		if err != nil {
			t.Fatal(err)
		}
		var back RecipientQueue
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		b2, _ := json.Marshal(back)
		if !bytes.Equal(b, b2) || !bytes.Equal(back.RecipientKey.PublicSPKI(), rk.PublicSPKI()) {
			t.Fatalf("%v: recipient queue does not round-trip", kem)
		}
		inv := codec.Invitation{EncryptionKey: ek.Public(), SenderID: q.SID, Host: "127.0.0.1", Port: 5223, ServerKeyHash: "fp"}
		s, _ := NewSenderQueue(&inv)
		b, err = json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		var sback SenderQueue
		if err := json.Unmarshal(b, &sback); err != nil {
			t.Fatal(err)
		}
		if b2, _ := json.Marshal(sback); !bytes.Equal(b, b2) {
			t.Fatalf("%v: sender queue does not round-trip", kem)
		}
	}
}
