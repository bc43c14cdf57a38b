package engine

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/store"
)

// bodyStore is a Store that keeps message bodies itself, as a disk store
// does: Append of a MessageStored record keeps the body the record lends and
// returns a ref, and the engine reads the body back with ReadBody. Reads can
// be made to fail; a read of a message already deleted, or by a wrong ref,
// fails the test, and so does a deletion that does not name exactly the refs
// that die (MessageDeleted's Ref, QueueDeleted's Refs).
type bodyStore struct {
	store.MemoryStore
	t      testing.TB
	mu     sync.Mutex
	bodies map[bodyKey]keptBody // live bodies; guarded by mu
	next   store.BodyRef        // the last ref given; guarded by mu
	recs   []store.Record       // every record appended, bodies replaced by refs; guarded by mu
	freed  []store.BodyRef      // refs named by deletions, in order; guarded by mu
	replay []store.Record       // what Load replays
	// inMemory, set before the engine starts, picks bodies the store leaves
	// in the engine's memory (ref 0), as a store may per message.
	inMemory func(body []byte) bool
	// lost, set before the engine starts, picks bodies the store has lost:
	// ReadBody answers errLost for them, and their deletions are still
	// checked against their refs.
	lost      func(body []byte) bool
	failReads atomic.Bool  // ReadBody returns errRead
	reads     atomic.Int64 // ReadBody calls
	// copies, set before the engine starts, makes the store a
	// store.BodyCopier: Append copies each body into arena (reused round
	// and round, as a log's buffer is) instead of keeping the record's.
	copies bool
	arena  []byte
}

// CopiesBodies implements store.BodyCopier.
func (s *bodyStore) CopiesBodies() bool { return s.copies }

// copyBody copies b into the arena, from its start when b does not fit in
// what is left.
func (s *bodyStore) copyBody(b []byte) []byte {
	if len(s.arena)+len(b) > cap(s.arena) {
		s.arena = s.arena[:0]
	}
	s.arena = append(s.arena, b...)
	return s.arena[len(s.arena)-len(b) : len(s.arena) : len(s.arena)]
}

// bodyKey names a message across queues.
type bodyKey struct {
	rid store.QueueID
	id  store.MsgID
}

// keptBody is a body the store keeps and the ref it gave for it.
type keptBody struct {
	ref  store.BodyRef
	body []byte
}

var (
	errRead = errors.New("bodystore: injected read error")
	errLost = fmt.Errorf("bodystore: injected loss: %w", store.ErrBodyLost)
)

func newBodyStore(t testing.TB) *bodyStore {
	return &bodyStore{t: t, bodies: make(map[bodyKey]keptBody)}
}

// reopen returns a store with the same bodies that replays recs, as the
// store would after a restart.
func (s *bodyStore) reopen(recs []store.Record) *bodyStore {
	s.mu.Lock()
	defer s.mu.Unlock()
	s2 := newBodyStore(s.t)
	for k, v := range s.bodies {
		s2.bodies[k] = v
	}
	s2.next, s2.replay = s.next, recs
	return s2
}

func (s *bodyStore) Append(r store.Record, _ store.Notifier) (uint64, store.BodyRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ref store.BodyRef
	switch r.Kind {
	case store.MessageStored:
		if r.Ref != 0 || r.Size != len(r.Body) {
			s.t.Errorf("Append of a message with ref %d, size %d and %d bytes", r.Ref, r.Size, len(r.Body))
		}
		if s.inMemory != nil && s.inMemory(r.Body) {
			break
		}
		s.next++
		ref = s.next
		body := r.Body
		if s.copies {
			body = s.copyBody(body)
		}
		s.bodies[bodyKey{r.RID, r.MsgID}] = keptBody{ref: ref, body: body}
		r.Body, r.Ref = nil, ref
	case store.MessageDeleted:
		k := bodyKey{r.RID, r.MsgID}
		if b := s.bodies[k]; r.Ref != b.ref { // b.ref is 0 for a body in memory
			s.t.Errorf("MessageDeleted of %x names ref %d, want %d", r.MsgID, r.Ref, b.ref)
		}
		if r.Ref != 0 {
			s.freed = append(s.freed, r.Ref)
		}
		delete(s.bodies, k)
	case store.QueueDeleted:
		var want []store.BodyRef
		for k, b := range s.bodies {
			if k.rid == r.RID {
				want = append(want, b.ref)
				delete(s.bodies, k)
			}
		}
		slices.Sort(want) // refs grow with each Append, so in the queue's order
		if !slices.Equal(r.Refs, want) || (r.Refs != nil && len(r.Refs) == 0) {
			s.t.Errorf("QueueDeleted names refs %v, want %v (nil for none)", r.Refs, want)
		}
		s.freed = append(s.freed, r.Refs...)
	}
	s.recs = append(s.recs, r)
	return 0, ref, nil
}

func (s *bodyStore) ReadBody(rid store.QueueID, id store.MsgID, ref store.BodyRef, dst []byte) ([]byte, error) {
	s.reads.Add(1)
	if s.failReads.Load() {
		return nil, errRead
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bodies[bodyKey{rid, id}]
	if !ok || b.ref != ref {
		s.t.Errorf("ReadBody(%x, %x, %d): the store holds no such body", rid, id, ref)
		return nil, errors.New("bodystore: no such body")
	}
	if s.lost != nil && s.lost(b.body) {
		return nil, errLost
	}
	return append(dst, b.body...), nil
}

func (s *bodyStore) Load(apply func(*store.Record) error) error {
	for i := range s.replay {
		if err := apply(&s.replay[i]); err != nil {
			return err
		}
	}
	return nil
}

// heldBodies reports how many stored messages of the engine hold their body
// in memory, and how many hold a ref.
func heldBodies(e *Engine) (inMemory, byRef int) {
	e.queues.each(func(q *queue) {
		q.mu.Lock()
		for i := range q.msgs.len() {
			if m := q.msgs.at(i); m.ref != 0 {
				byRef++
				if m.body != nil {
					inMemory++ // both: counted in each
				}
			} else {
				inMemory++
			}
		}
		q.mu.Unlock()
	})
	return inMemory, byRef
}

func wantMSG(t testing.TB, r resp, body string) {
	t.Helper()
	if r.Cmd != codec.CmdMSG || string(r.Body) != body {
		t.Fatalf("got %v (ERR %v) %q, want MSG %q", r.Cmd, r.Err, r.Body, body)
	}
}

// TestMessageSize: a stored message costs 48 bytes of RAM besides its body,
// so that with the fifo's spare capacity it stays within issue 14's 64.
func TestMessageSize(t *testing.T) {
	if n := unsafe.Sizeof(message{}); n > 48 {
		t.Fatalf("message is %d bytes, want at most 48", n)
	}
}

// TestBodyStoreDelivery: with a store that keeps bodies, the engine keeps
// refs only, and the push, SUB, redelivery and ACK's next message all carry
// the bytes that were sent; byte counts follow the sizes.
func TestBodyStoreDelivery(t *testing.T) {
	st := newBodyStore(t)
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519) // subscribed by NEW
	sender := newConn(t, e)
	big := bytes.Repeat([]byte{0xA5}, codec.MaxBody(testBlock))
	bodies := []string{"first", "", string(big), "last"}
	for i, b := range bodies {
		wantCmd(t, sender.One(tx(t, nil, fmt.Sprint("s", i), q.sid, codec.CmdSEND, nil, []byte(b))), codec.CmdOK)
	}
	if mem, ref := heldBodies(e); mem != 0 || ref != len(bodies) {
		t.Fatalf("engine holds %d bodies and %d refs, want 0 and %d", mem, ref, len(bodies))
	}
	want := int64(0)
	for _, b := range bodies {
		want += int64(len(b))
	}
	if got := e.Stats(); got.Messages != int64(len(bodies)) || got.BodyBytes != want {
		t.Fatalf("stats %+v, want %d messages of %d bytes", got, len(bodies), want)
	}

	rs := q.rc.Drain()
	if len(rs) != 1 {
		t.Fatalf("push: %d responses, want 1", len(rs))
	}
	wantMSG(t, rs[0], bodies[0])
	wantMSG(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), bodies[0]) // redelivered
	for i := 1; i < len(bodies); i++ {
		wantMSG(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), bodies[i])
	}
	wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 {
		t.Fatalf("stats after the ACKs %+v, want none", got)
	}
	if e.LiveBytes() != liveQueueBytes {
		t.Fatalf("LiveBytes %d, want one empty queue's %d", e.LiveBytes(), liveQueueBytes)
	}
}

// TestBodyStoreSnapshotReplay: a snapshot carries refs and sizes, not
// bodies, and an engine that replays it (or the refs appended) delivers the
// same bytes from the store.
func TestBodyStoreSnapshotReplay(t *testing.T) {
	st := newBodyStore(t)
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	sender := newConn(t, e)
	for i := range 3 {
		wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(fmt.Sprint("m", i)))), codec.CmdOK)
	}
	wantMSG(t, q.rc.Drain()[0], "m0")
	wantMSG(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), "m1") // m0 gone

	var snap []store.Record
	if err := e.Snapshot(func(r *store.Record) error { snap = append(snap, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	msgs := 0
	for _, r := range snap {
		if r.Kind != store.MessageStored {
			continue
		}
		msgs++
		if r.Ref == 0 || r.Body != nil || r.Size != 2 {
			t.Fatalf("snapshot record ref %d, body %q, size %d: want a ref, no body, size 2", r.Ref, r.Body, r.Size)
		}
	}
	if msgs != 2 {
		t.Fatalf("snapshot holds %d messages, want 2", msgs)
	}
	st.mu.Lock()
	log := append([]store.Record(nil), st.recs...)
	st.mu.Unlock()
	for name, recs := range map[string][]store.Record{
		"snapshot":              snap,
		"appended":              log,
		"snapshot then appends": append(append([]store.Record(nil), snap...), log...),
	} {
		t.Run(name, func(t *testing.T) {
			e2, err := New(Options{BlockSize: testBlock, Store: st.reopen(recs)})
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			if got, want := e2.Stats(), e.Stats(); got != want {
				t.Fatalf("replayed stats %+v, want %+v", got, want)
			}
			if mem, ref := heldBodies(e2); mem != 0 || ref != 2 {
				t.Fatalf("replayed engine holds %d bodies and %d refs, want 0 and 2", mem, ref)
			}
			r := newConn(t, e2)
			wantMSG(t, r.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), "m1")
			wantMSG(t, r.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), "m2")
			wantCmd(t, r.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
		})
	}
}

// TestReplayRejectsBadMessages: a MessageStored record must carry its body
// or a ref, with a size that fits.
func TestReplayRejectsBadMessages(t *testing.T) {
	rk := signer(t, codec.SigEd25519)
	rid := store.QueueID{1}
	created := store.Record{Kind: store.QueueCreated, RID: rid, SID: store.QueueID{2}, RecipientKey: rk.VerifyKey()}
	for name, r := range map[string]store.Record{
		"body and ref":   {Size: 2, Body: []byte("hi"), Ref: 7},
		"size too small": {Size: 1, Body: []byte("hi")},
		"size too large": {Size: 3, Body: []byte("hi")},
		"negative size":  {Size: -1, Ref: 7},
		"huge size":      {Size: codec.MaxBlockSize + 1, Ref: 7},
	} {
		r.Kind, r.RID, r.MsgID = store.MessageStored, rid, store.MsgID{3}
		st := newBodyStore(t)
		st.replay = []store.Record{created, r}
		if _, err := New(Options{BlockSize: testBlock, Store: st}); err == nil {
			t.Errorf("%s: replay accepted the record", name)
		}
	}
}

// TestBodyStoreReadErrors: when the store cannot read a body, SUB and ACK
// answer ERR INTERNAL and change nothing, a push is dropped with the
// message kept for the next SEND's push or a SUB, and nothing is lost.
func TestBodyStoreReadErrors(t *testing.T) {
	st := newBodyStore(t)
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519) // subscribed by NEW
	sender := newConn(t, e)

	st.failReads.Store(true)
	wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("a"))), codec.CmdOK)
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("push with a failing read wrote %+v", rs)
	}
	wantErr(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited) // nothing delivered

	// SUB from another connection fails and leaves the subscription alone.
	other := newConn(t, e)
	wantErr(t, other.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.ErrInternal)
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("the subscriber got %+v after a failed SUB elsewhere, want nothing (no END)", rs)
	}

	// The store recovers: the next SEND pushes the message that waited.
	st.failReads.Store(false)
	wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("b"))), codec.CmdOK)
	rs := q.rc.Drain()
	if len(rs) != 1 {
		t.Fatalf("push after recovery: %d responses, want 1", len(rs))
	}
	wantMSG(t, rs[0], "a")

	// ACK cannot read the next message: ERR INTERNAL, and "a" is not deleted.
	st.failReads.Store(true)
	wantErr(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.ErrInternal)
	if got := e.Stats(); got.Messages != 2 || got.BodyBytes != 2 {
		t.Fatalf("stats after a failed ACK %+v, want 2 messages of 1 byte", got)
	}
	wantErr(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.ErrInternal)

	st.failReads.Store(false)
	wantMSG(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), "a")
	wantMSG(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), "b")
	wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 {
		t.Fatalf("stats at the end %+v, want none", got)
	}
	if n := e.Metrics().Lost; n != 0 {
		t.Fatalf("%d messages counted lost after read errors that were not losses", n)
	}
}

// TestBodyStoreExpireAndDelete: expiry and DEL count sizes out and never
// read a body (the store forgets it at once).
func TestBodyStoreExpireAndDelete(t *testing.T) {
	st := newBodyStore(t)
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	gone := newQueue(t, e, codec.SigEd25519)
	sender := newConn(t, e)
	wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("old"))), codec.CmdOK)
	wantCmd(t, sender.One(tx(t, nil, "s", gone.sid, codec.CmdSEND, nil, []byte("doomed"))), codec.CmdOK)
	reads := st.reads.Load()
	clk.Advance(DefaultLimits.MessageTTL + 1)
	wantCmd(t, gone.rc.One(tx(t, gone.rk, "d", gone.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)
	e.Expire(clk.Now())
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 {
		t.Fatalf("stats after expiry and DEL %+v, want none", got)
	}
	if st.reads.Load() != reads {
		t.Fatal("expiry or DEL read a body")
	}
	st.mu.Lock()
	left := len(st.bodies)
	st.mu.Unlock()
	if left != 0 {
		t.Fatalf("the store still keeps %d bodies", left)
	}
}

// TestBodyStoreDeletesNameRefs: every deletion names exactly the refs that
// die (bodyStore.Append checks each record): ACK and message expiry the
// message's ref (0 for a body in memory), DEL and suspended-queue expiry all
// of the queue's refs (nil when none), whatever mix of bodies in memory and
// in the store a queue holds. In the end every ref given was freed once.
func TestBodyStoreDeletesNameRefs(t *testing.T) {
	st := newBodyStore(t)
	st.inMemory = func(b []byte) bool { return bytes.HasPrefix(b, []byte("mem")) }
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	sender := newConn(t, e)
	send := func(q queueFixture, bodies ...string) {
		t.Helper()
		for _, b := range bodies {
			wantCmd(t, sender.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(b))), codec.CmdOK)
		}
	}
	acked := newQueue(t, e, codec.SigEd25519)
	expiring := newQueue(t, e, codec.SigEd25519)
	deleted := newQueue(t, e, codec.SigEd25519)
	memOnly := newQueue(t, e, codec.SigEd25519)
	suspended := newQueue(t, e, codec.SigEd25519)
	send(acked, "mem1", "disk1", "mem2")
	send(expiring, "disk2", "mem3", "disk3")
	send(deleted, "disk4", "mem4", "disk5")
	send(memOnly, "mem5")
	send(suspended, "disk6", "mem6")
	if mem, ref := heldBodies(e); mem != 6 || ref != 6 {
		t.Fatalf("engine holds %d bodies and %d refs, want 6 and 6", mem, ref)
	}

	wantMSG(t, acked.rc.Drain()[0], "mem1")
	wantMSG(t, acked.rc.One(tx(t, acked.rk, "a", acked.rid, codec.CmdACK, nil, nil)), "disk1")
	wantMSG(t, acked.rc.One(tx(t, acked.rk, "a", acked.rid, codec.CmdACK, nil, nil)), "mem2")
	wantCmd(t, acked.rc.One(tx(t, acked.rk, "a", acked.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	wantCmd(t, deleted.rc.One(tx(t, deleted.rk, "d", deleted.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)
	wantCmd(t, memOnly.rc.One(tx(t, memOnly.rk, "d", memOnly.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)
	wantMSG(t, suspended.rc.Drain()[0], "disk6") // pushed, never acknowledged
	wantCmd(t, suspended.rc.One(tx(t, suspended.rk, "o", suspended.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	clk.Advance(DefaultLimits.SuspendedTTL + time.Second) // the suspended queue goes, messages stay
	e.Expire(clk.Now())
	if got := e.Stats(); got.Queues != 2 || got.Messages != 3 {
		t.Fatalf("after the suspended TTL: %+v, want 2 queues (acked, expiring) and expiring's 3 messages", got)
	}
	clk.Advance(DefaultLimits.MessageTTL)
	e.Expire(clk.Now())
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 {
		t.Fatalf("after the message TTL: %+v, want no messages", got)
	}

	st.mu.Lock()
	defer st.mu.Unlock()
	freed := slices.Sorted(slices.Values(st.freed))
	var want []store.BodyRef
	for r := store.BodyRef(1); r <= st.next; r++ {
		want = append(want, r)
	}
	if !slices.Equal(freed, want) || len(st.bodies) != 0 {
		t.Fatalf("refs freed %v, want each of %v once; %d bodies left", freed, want, len(st.bodies))
	}
}
