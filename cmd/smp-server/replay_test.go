package main_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/netctx"
	"github.com/smprelay/smprelay/internal/smptest"
)

// replay plays bytes recorded from a client (its hello and blocks) to the
// server on a new connection, as a passive observer could, and returns how
// many bytes the server sent after its hello before it closed.
func replay(t *testing.T, ctx context.Context, s *smptest.Server, c2s []byte) int {
	t.Helper()
	r := rawConn(t, ctx, s)
	if _, err := r.nc.Write(c2s); err != nil && !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
		t.Fatal(err)
	}
	var n int
	err := netctx.Do(ctx, r.nc, func() error {
		b := make([]byte, 64<<10)
		for {
			m, err := r.nc.Read(b)
			n += m
			if err != nil {
				return err
			}
		}
	})
	if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("replayed connection not closed by the server: %v", err)
	}
	return n
}

// TestReplayRunsNothing: a recorded connection replayed on a new one runs
// none of its commands (SPEC §3, transport v2): the client hello still
// opens, but the keys depend on the new connection's serverRandom, so the
// recorded blocks fail authentication and the server closes after its
// welcome. A replayed SEND stores no message, a replayed SUB and ACK delete
// none.
func TestReplayRunsNothing(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519")
	owner := dial(t, ctx, s)
	rk, sk, rid, sid := securedQueue(t, ctx, owner, false)

	// Bob's SEND, recorded on the wire.
	bobWire := smptest.StartProxy(t, s.Addr)
	bob, err := smptest.Dial(ctx, bobWire.Addr, s.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	send(t, bob, smptest.Cmd(sk, "s1", sid, codec.CmdSEND, nil, []byte("pay Carol 100 EUR")))
	expect(t, ctx, bob, ok("s1", sid))
	bob.Close()

	// Alice's SUB and ACK of it, recorded on the wire.
	aliceWire := smptest.StartProxy(t, s.Addr)
	alice, err := smptest.Dial(ctx, aliceWire.Addr, s.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	send(t, alice, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	expectMSG(t, ctx, alice, "sub", rid, []byte("pay Carol 100 EUR"))
	send(t, alice, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
	expect(t, ctx, alice, ok("ack", rid))
	alice.Close()

	// Bob sends a new message, which Alice has not read yet.
	bob2 := dial(t, ctx, s)
	send(t, bob2, smptest.Cmd(sk, "s2", sid, codec.CmdSEND, nil, []byte("see you at four")))
	expect(t, ctx, bob2, ok("s2", sid))

	for _, rec := range []struct {
		name string
		p    *smptest.Proxy
	}{{"Bob's SEND", bobWire}, {"Alice's SUB and ACK", aliceWire}} {
		c2s, _ := rec.p.Recorded()
		if n := replay(t, ctx, s, c2s); n > 8192 {
			t.Errorf("replay of %s: the server sent %d bytes after its hello, more than the welcome block", rec.name, n)
		}
	}

	// The queue holds exactly the unread message: the replayed SEND stored
	// nothing, the replayed ACK deleted nothing.
	reader := dial(t, ctx, s)
	send(t, reader, smptest.Cmd(rk, "sub2", rid, codec.CmdSUB, nil, nil))
	expectMSG(t, ctx, reader, "sub2", rid, []byte("see you at four"))
	send(t, reader, smptest.Cmd(rk, "ack2", rid, codec.CmdACK, nil, nil))
	r := next(t, ctx, reader)
	if r.Cmd != codec.CmdOK || !bytes.Equal(r.QueueID, rid) {
		t.Fatalf("after the ACK: %v, want OK and no further message", r)
	}
	ping(t, ctx, reader, "empty") // a replayed SEND would have come before this PONG
}
