package engine

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// blockFixture is a secured queue with one message delivered to its
// subscribed recipient, and the sender's connection.
type blockFixture struct {
	queueFixture
	sk *codec.Signer
	sc *tconn
}

func newBlockFixture(t *testing.T, e *Engine) blockFixture {
	t.Helper()
	q := newQueue(t, e, codec.SigEd25519)
	f := blockFixture{queueFixture: q, sk: q.secure(t, codec.SigEd25519), sc: newConn(t, e)}
	wantCmd(t, f.sc.One(tx(t, f.sk, "s0", q.sid, codec.CmdSEND, nil, []byte("m0"))), codec.CmdOK)
	wantMsg(t, q.rc.One(), "m0")
	return f
}

func wantMsg(t *testing.T, r resp, body string) {
	t.Helper()
	if r.Cmd != codec.CmdMSG || string(r.Body) != body {
		t.Fatalf("got %+v, want MSG %q", r, body)
	}
}

// wantAllAuth checks that every command of both sides gets ERR AUTH.
func (f blockFixture) wantAllAuth(t *testing.T) {
	t.Helper()
	wantErr(t, f.sc.One(tx(t, f.sk, "s", f.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
	for _, cmd := range []codec.Cmd{codec.CmdSUB, codec.CmdACK, codec.CmdOFF, codec.CmdDEL} {
		wantErr(t, f.rc.One(tx(t, f.rk, "r", f.rid, cmd, nil, nil)), codec.ErrAuth)
	}
	other := signer(t, codec.SigEd25519)
	wantErr(t, f.rc.One(tx(t, f.rk, "k", f.rid, codec.CmdKEY, other.PublicSPKI(), nil)), codec.ErrAuth)
}

// TestBlockUnblock: a queue blocked by either of its IDs answers ERR AUTH to
// both sides and keeps its messages; its subscription ends without END;
// Unblock (by the other ID) restores both sides, and the kept message is
// delivered again on SUB.
func TestBlockUnblock(t *testing.T) {
	for _, by := range []string{"rid", "sid"} {
		t.Run(by, func(t *testing.T) {
			st := &recordingStore{auto: true}
			e, err := New(Options{BlockSize: testBlock, Store: st})
			if err != nil {
				t.Fatal(err)
			}
			f := newBlockFixture(t, e)
			id, other := f.rid, f.sid
			if by == "sid" {
				id, other = f.sid, f.rid
			}
			res, err := e.Block(id, false)
			if err != nil || res.WasBlocked || res.Dropped != 0 {
				t.Fatalf("Block: %+v, %v", res, err)
			}
			if rs := f.rc.Drain(); len(rs) != 0 {
				t.Fatalf("the subscriber got %+v; the subscription ends silently", rs)
			}
			f.wantAllAuth(t)
			if got := e.Stats(); got.Queues != 1 || got.Messages != 1 {
				t.Fatalf("stats after the block: %+v, want the queue and its message kept", got)
			}
			if res, err := e.Block(other, false); err != nil || !res.WasBlocked {
				t.Fatalf("Block again: %+v, %v", res, err)
			}
			if was, err := e.Unblock(other); err != nil || !was {
				t.Fatalf("Unblock: %v, %v", was, err)
			}
			if was, err := e.Unblock(id); err != nil || was {
				t.Fatalf("Unblock again: %v, %v", was, err)
			}
			// The subscription ended: a SEND pushes nothing until SUB.
			wantCmd(t, f.sc.One(tx(t, f.sk, "s1", f.sid, codec.CmdSEND, nil, []byte("m1"))), codec.CmdOK)
			if rs := f.rc.Drain(); len(rs) != 0 {
				t.Fatalf("a push to the ended subscription: %+v", rs)
			}
			wantMsg(t, f.rc.One(tx(t, f.rk, "sub", f.rid, codec.CmdSUB, nil, nil)), "m0")
			wantMsg(t, f.rc.One(tx(t, f.rk, "ack", f.rid, codec.CmdACK, nil, nil)), "m1")
			var kinds []store.Kind
			for _, r := range st.recs {
				if r.Kind == store.QueueBlocked || r.Kind == store.QueueUnblocked {
					kinds = append(kinds, r.Kind)
				}
			}
			if len(kinds) != 2 || kinds[0] != store.QueueBlocked || kinds[1] != store.QueueUnblocked {
				t.Fatalf("block records %v, want one QueueBlocked then one QueueUnblocked", kinds)
			}
		})
	}
}

// TestBlockDropsMessages: Block with dropMessages deletes the messages, each
// with its MessageDeleted record; after Unblock SUB finds none.
func TestBlockDropsMessages(t *testing.T) {
	st := &recordingStore{auto: true}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	f := newBlockFixture(t, e)
	wantCmd(t, f.sc.One(tx(t, f.sk, "s1", f.sid, codec.CmdSEND, nil, []byte("m1"))), codec.CmdOK)
	n := len(st.recs)
	res, err := e.Block(f.sid, true)
	if err != nil || res.Dropped != 2 {
		t.Fatalf("Block with drop: %+v, %v; want 2 dropped", res, err)
	}
	deleted := 0
	for _, r := range st.recs[n:] {
		if r.Kind == store.MessageDeleted {
			deleted++
		}
	}
	if deleted != 2 {
		t.Fatalf("%d MessageDeleted records, want 2", deleted)
	}
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 || got.Queues != 1 {
		t.Fatalf("stats: %+v", got)
	}
	f.wantAllAuth(t)
	if _, err := e.Unblock(f.rid); err != nil {
		t.Fatal(err)
	}
	wantCmd(t, f.rc.One(tx(t, f.rk, "sub", f.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
}

// TestAdminDelete: Delete by RID or SID removes the queue and its messages;
// its subscriber forgets it silently, and every later command is ERR AUTH.
// An unknown or deleted ID is ErrNoQueue for every action.
func TestAdminDelete(t *testing.T) {
	for _, by := range []string{"rid", "sid"} {
		t.Run(by, func(t *testing.T) {
			e, _ := newTestEngine(t, Limits{})
			f := newBlockFixture(t, e)
			id := f.rid
			if by == "sid" {
				id = f.sid
			}
			if n, err := e.Delete(id); err != nil || n != 1 {
				t.Fatalf("Delete: %d, %v", n, err)
			}
			if rs := f.rc.Drain(); len(rs) != 0 {
				t.Fatalf("the subscriber got %+v", rs)
			}
			f.wantAllAuth(t)
			if got := e.Stats(); got != (Stats{}) {
				t.Fatalf("stats after Delete: %+v", got)
			}
			for _, bad := range [][]byte{f.rid, f.sid, bytes.Repeat([]byte{7}, codec.QueueIDSize), []byte("short")} {
				if _, err := e.Block(bad, false); !errors.Is(err, ErrNoQueue) {
					t.Errorf("Block: %v", err)
				}
				if _, err := e.Unblock(bad); !errors.Is(err, ErrNoQueue) {
					t.Errorf("Unblock: %v", err)
				}
				if _, err := e.Delete(bad); !errors.Is(err, ErrNoQueue) {
					t.Errorf("Delete: %v", err)
				}
			}
		})
	}
}

// TestBlockReplayed: the block survives a restart, replayed from the records
// appended and from a snapshot; Unblock works on the replayed engine.
func TestBlockReplayed(t *testing.T) {
	st := &recordingStore{auto: true}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	f := newBlockFixture(t, e)
	if _, err := e.Block(f.rid, false); err != nil {
		t.Fatal(err)
	}
	var snap []store.Record
	if err := e.Snapshot(func(r *store.Record) error { snap = append(snap, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	blocked := 0
	for _, r := range snap {
		if r.Kind == store.QueueBlocked {
			blocked++
		}
	}
	if blocked != 1 {
		t.Fatalf("the snapshot has %d QueueBlocked records, want 1", blocked)
	}
	for name, replay := range map[string][]store.Record{"log": st.recs, "snapshot": snap,
		"snapshot and log": append(append([]store.Record(nil), snap...), st.recs...)} {
		t.Run(name, func(t *testing.T) {
			e2, err := New(Options{BlockSize: testBlock, Store: &recordingStore{replay: replay, auto: true}})
			if err != nil {
				t.Fatal(err)
			}
			g := f
			g.rc, g.sc = newConn(t, e2), newConn(t, e2)
			g.wantAllAuth(t)
			if was, err := e2.Unblock(f.sid); err != nil || !was {
				t.Fatalf("Unblock after replay: %v, %v", was, err)
			}
			wantMsg(t, g.rc.One(tx(t, f.rk, "sub", f.rid, codec.CmdSUB, nil, nil)), "m0")
		})
	}
}

// TestAdminWaitsForDurability: an admin action returns only once its
// records are durable.
func TestAdminWaitsForDurability(t *testing.T) {
	st := &recordingStore{auto: true}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	f := newBlockFixture(t, e)
	st.mu.Lock()
	st.auto = false
	st.mu.Unlock()
	done := make(chan error, 1)
	go func() { _, err := e.Block(f.rid, false); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("Block returned before its record was durable: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	st.sync()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
