package engine

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/store"
)

// syncBuffer is a log destination safe for the engine's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer // guarded by mu
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestBodyStoreLostBodies: a message whose body the store lost
// (store.ErrBodyLost) is deleted, with its ref named, counted and warned
// about at most once per lostLogEvery, and the queue goes on with the next
// message, on every read path: a push, ACK's next message, SUB. A replay of
// what was logged does not bring a lost message back.
func TestBodyStoreLostBodies(t *testing.T) {
	st := newBodyStore(t)
	st.lost = func(b []byte) bool { return bytes.HasPrefix(b, []byte("lost")) }
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	logs := newSyncBuffer()
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519) // subscribed by NEW
	sender := newConn(t, e)
	send := func(q queueFixture, bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(b))), codec.CmdOK)
		}
	}
	lost := func(want uint64) {
		t.Helper()
		if got := e.Metrics().Lost; got != want {
			t.Fatalf("%d messages counted lost, want %d", got, want)
		}
	}

	// A push whose body is lost: deleted, nothing written, nothing awaits ACK.
	send(q, "lost0")
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("push of a lost body wrote %+v", rs)
	}
	lost(1)
	wantErr(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited)

	// A push that skips a lost head to the next message.
	q.rc.Close()
	send(q, "lost1", "a")
	rc := newConn(t, e)
	wantMSG(t, rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), "a") // SUB skips lost1
	lost(2)

	// ACK's next message: two lost ones are skipped.
	send(q, "lost2", "lost3", "b")
	wantMSG(t, rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), "b")
	lost(4)
	// ACK whose every next message is lost answers OK.
	send(q, "lost4")
	wantCmd(t, rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	lost(5)
	// SUB of a queue left with lost bodies only answers OK.
	rc.Close()
	send(q, "lost5", "lost6")
	rc = newConn(t, e)
	wantCmd(t, rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
	lost(7)
	// A push after a lost head delivers the next message and awaits its ACK.
	send(q, "lost7")
	send(q, "c") // lost7 was dropped by its own push; c is pushed
	if rs := rc.Drain(); len(rs) != 1 {
		t.Fatalf("push after a lost body: %+v, want one MSG", rs)
	} else {
		wantMSG(t, rs[0], "c")
	}
	lost(8)
	wantCmd(t, rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 {
		t.Fatalf("stats %+v, want none", got)
	}

	// Every lost body's ref was freed (bodyStore checked each record).
	st.mu.Lock()
	left, freed := len(st.bodies), len(st.freed)
	recs := append([]store.Record(nil), st.recs...)
	st.mu.Unlock()
	if left != 0 || freed != 11 {
		t.Fatalf("the store keeps %d bodies and freed %d refs, want 0 and 11", left, freed)
	}
	e2, err := New(Options{BlockSize: testBlock, Store: st.reopen(recs)})
	if err != nil {
		t.Fatal(err)
	}
	if got := e2.Stats(); got.Messages != 0 || got.Queues != 1 {
		t.Fatalf("replayed stats %+v, want 1 queue and no message", got)
	}

	// All of that happened at one instant: one warning line, and the next
	// one after lostLogEvery says how many were not logged.
	if n := strings.Count(logs.String(), "body is lost"); n != 1 {
		t.Fatalf("%d warnings for 8 lost bodies at one instant, want 1:\n%s", n, logs)
	}
	clk.Advance(lostLogEvery)
	send(q, "lost8")
	if rs := rc.Drain(); len(rs) != 0 {
		t.Fatalf("push of a lost body wrote %+v", rs)
	}
	out := logs.String()
	if n := strings.Count(out, "body is lost"); n != 2 || !strings.Contains(out, "lost-unlogged=7 lost-total=9") {
		t.Fatalf("after %v: %d warnings, want 2, the second with 7 unlogged of 9:\n%s", lostLogEvery, n, out)
	}
	if strings.Contains(out, b64(q.rid)) || strings.Contains(out, b64(q.sid)) {
		t.Fatalf("the warning names the queue:\n%s", out)
	}
}
