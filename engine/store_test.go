package engine

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// recordingStore logs records in memory with LSNs that become durable only
// when the test says so, like a log whose fsync has not returned yet.
type recordingStore struct {
	store.MemoryStore
	mu       sync.Mutex
	recs     []store.Record
	waiters  []store.Notifier
	durable  atomic.Uint64
	replay   []store.Record // what Load replays
	attached store.Snapshotter
	auto     bool // every record is durable at once
}

func (s *recordingStore) Append(r store.Record, n store.Notifier) (uint64, store.BodyRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.recs = append(s.recs, r)
	if s.auto {
		s.durable.Store(uint64(len(s.recs)))
		return uint64(len(s.recs)), 0, nil
	}
	if n != nil {
		s.waiters = append(s.waiters, n)
	}
	return uint64(len(s.recs)), 0, nil
}

func (s *recordingStore) Durable() uint64 { return s.durable.Load() }

// sync makes everything appended so far durable and notifies the waiters.
func (s *recordingStore) sync() {
	s.mu.Lock()
	s.durable.Store(uint64(len(s.recs)))
	ws := s.waiters
	s.waiters = nil
	s.mu.Unlock()
	for _, w := range ws {
		w.NotifyDurable()
	}
}

func (s *recordingStore) Load(apply func(*store.Record) error) error {
	for i := range s.replay {
		if err := apply(&s.replay[i]); err != nil {
			return err
		}
	}
	return nil
}

func (s *recordingStore) Attach(sn store.Snapshotter) error { s.attached = sn; return nil }

// TestRepliesWaitForDurability: with a log that has not synced, replies to
// changes wait, replies behind them wait too (order), and both leave once the
// log reports them durable.
func TestRepliesWaitForDurability(t *testing.T) {
	st := &recordingStore{}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	rs := c.Do(
		[]byte("\r\np0\r\n\r\nPING\r\n"),
		tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil),
		[]byte("\r\np1\r\n\r\nPING\r\n"),
	)
	if len(rs) != 1 || rs[0].CorrID != "p0" {
		t.Fatalf("before the sync: got %+v, want only the first PONG", rs)
	}
	st.sync()
	if c.Woken.Load() == 0 {
		t.Fatal("the session was not woken when its record became durable")
	}
	rs = c.Drain()
	if len(rs) != 2 || rs[0].Cmd != codec.CmdIDS || rs[1].CorrID != "p1" {
		t.Fatalf("after the sync: got %+v, want IDS then the second PONG", rs)
	}
	// A reply written after the log caught up goes out at once.
	if r := c.One([]byte("\r\np2\r\n\r\nPING\r\n")); r.CorrID != "p2" {
		t.Fatalf("got %+v", r)
	}
}

// TestSnapshotReplayIdempotent: replaying a snapshot followed by records that
// overlap it (as a log compacted under load holds) rebuilds the same state.
func TestSnapshotReplayIdempotent(t *testing.T) {
	st := &recordingStore{auto: true}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	gone := newQueue(t, e, codec.SigRSA)
	s := newConn(t, e)
	sk := signer(t, codec.SigEd25519)
	wantCmd(t, q.rc.One(tx(t, q.rk, "k", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.CmdOK)
	for i := range 4 {
		s.Do(tx(t, sk, fmt.Sprint(i), q.sid, codec.CmdSEND, nil, []byte(fmt.Sprint("m", i))))
	}
	q.rc.Drain()
	q.rc.Do(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)) // m0 gone
	wantCmd(t, q.rc.One(tx(t, q.rk, "off", q.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	gone.rc.Do(tx(t, gone.rk, "d", gone.rid, codec.CmdDEL, nil, nil))

	var snap []store.Record
	if err := e.Snapshot(func(r *store.Record) error { snap = append(snap, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	// Snapshot first, then every record ever appended (a superset of what
	// followed the snapshot's start), so each change shows twice.
	replay := append(append([]store.Record(nil), snap...), st.recs...)
	st2 := &recordingStore{replay: replay, auto: true}
	e2, err := New(Options{BlockSize: testBlock, Store: st2})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if st2.attached != e2 {
		t.Fatal("the store was not attached to the engine")
	}
	if got, want := e2.Stats(), e.Stats(); got != want {
		t.Fatalf("replayed stats %+v, want %+v", got, want)
	}
	// The replayed queue is secured, suspended and holds m1..m3 in order.
	r2 := newConn(t, e2)
	for i := 1; i <= 3; i++ {
		cmd := codec.CmdACK
		if i == 1 {
			cmd = codec.CmdSUB
		}
		r := r2.One(tx(t, q.rk, "x", q.rid, cmd, nil, nil))
		if r.Cmd != codec.CmdMSG || !bytes.Equal(r.Body, []byte(fmt.Sprint("m", i))) {
			t.Fatalf("message %d after replay: %+v", i, r)
		}
	}
	wantErr(t, newConn(t, e2).One(tx(t, sk, "s", q.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth) // suspended
	wantErr(t, r2.One(tx(t, gone.rk, "s", gone.rid, codec.CmdSUB, nil, nil)), codec.ErrAuth)              // deleted
}
