package client

import (
	"errors"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestPrepared sends pre-signed SENDs and one reused pre-signed ACK through a
// secured queue: every message arrives, the repeated corrId is answered each
// time, and a second Do of a Prepared still in flight is refused.
func TestPrepared(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	events := make(chan Event, 16)
	opts := fastOptions(srv.Fingerprint)
	opts.OnEvent = func(e Event) { events <- e }
	rc := dial(t, srv.Addr, opts)
	sc := dial(t, srv.Addr, fastOptions(srv.Fingerprint))

	rk, _ := codec.GenerateSigner(codec.SigEd25519, 0)
	sk, _ := codec.GenerateSigner(codec.SigEd25519, 0)
	ids, err := rc.NewQueue(ctx, rk)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Secure(ctx, ids.RID, rk, sk.PublicSPKI()); err != nil {
		t.Fatal(err)
	}

	bodies := []string{"one", "two", "three"}
	sends := make([]*Prepared, len(bodies))
	for i, b := range bodies {
		if sends[i], err = sc.PrepareSend(ids.SID, sk, []byte(b)); err != nil {
			t.Fatal(err)
		}
	}
	ack, err := rc.PrepareAck(ids.RID, rk)
	if err != nil {
		t.Fatal(err)
	}
	if ack.Cmd() != codec.CmdACK || sends[0].CorrID() == sends[1].CorrID() {
		t.Fatalf("ack is %v; corrIds of two SENDs on one Conn: %q, %q", ack.Cmd(), sends[0].CorrID(), sends[1].CorrID())
	}
	// An unsigned SEND to a secured queue is refused: the signature in a
	// Prepared is what the server checks.
	unsigned, err := sc.PrepareSend(ids.SID, nil, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sc.Do(ctx, unsigned); !errors.Is(err, codec.ErrAuth) {
		t.Fatalf("unsigned SEND to a secured queue: %v, want ERR AUTH", err)
	}

	for round := range 2 { // the second round resends the same bytes
		for i, p := range sends {
			if got, err := sc.Do(ctx, p); err != nil || got != codec.CmdOK {
				t.Fatalf("round %d SEND %d: %v %v", round, i, got, err)
			}
		}
		for i, want := range bodies {
			e := <-events
			if e.Kind != EventMessage || string(e.Message.Body) != want {
				t.Fatalf("round %d message %d: %v %q, want %q", round, i, e, e.Message.Body, want)
			}
			got, err := rc.Do(ctx, ack)
			if err != nil {
				t.Fatalf("round %d ACK %d: %v", round, i, err)
			}
			if wantCmd := map[bool]codec.Cmd{true: codec.CmdOK, false: codec.CmdMSG}[i == len(bodies)-1]; got != wantCmd {
				t.Fatalf("round %d ACK %d answered %v, want %v", round, i, got, wantCmd)
			}
		}
	}
	// Nothing awaits ACK now: the server says so, with the same corrId.
	if _, err := rc.Do(ctx, ack); !errors.Is(err, codec.ErrProhibited) {
		t.Fatalf("ACK with nothing delivered: %v, want ERR PROHIBITED", err)
	}
	if _, err := sc.Do(ctx, ack); err == nil {
		t.Fatal("Do of a command prepared on another Conn succeeded")
	}
}

// TestPreparedInFlight checks that one Prepared cannot be in flight twice:
// the link refuses a corrId that is already pending. The proxy holds the
// server's bytes, so the first reply cannot arrive before the second Do.
func TestPreparedInFlight(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	px := smptest.StartProxy(t, srv.Addr)
	c := dial(t, px.Addr, fastOptions(srv.Fingerprint))
	p, err := c.Prepare(codec.CmdPING, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.current(guard(t))
	if err != nil {
		t.Fatal(err)
	}
	px.Hold()
	first, err := l.queue(p.req, p.corr, p.t)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Do(guard(t), p); !errors.Is(err, ErrInFlight) {
		t.Fatalf("second Do while the first is pending: %v, want ErrInFlight", err)
	}
	px.Release()
	if r, err := l.wait(guard(t), first); err != nil || r.cmd != codec.CmdPONG {
		t.Fatalf("first: %v %v", r.cmd, err)
	}
	if got, err := c.Do(guard(t), p); err != nil || got != codec.CmdPONG {
		t.Fatalf("Do after the first returned: %v %v", got, err)
	}
	if _, err := c.Prepare(codec.CmdOK, nil, nil, nil, nil); err == nil {
		t.Fatal("Prepare of a server transmission succeeded")
	}
}
