package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/store"
)

// TestQueueSize: a queue stays within the 128-byte malloc size class, which
// the creation time was added within (issue 14 counts the memory of an empty
// queue).
func TestQueueSize(t *testing.T) {
	if n := unsafe.Sizeof(queue{}); n > 128 {
		t.Fatalf("queue is %d bytes, want at most 128", n)
	}
}

// quotaCount is one cell of EngineMetrics.Quota, by label.
func quotaCount(t *testing.T, e *Engine, reason string) uint64 {
	t.Helper()
	for i, l := range QuotaLabels {
		if l == reason {
			return e.Metrics().Quota[i]
		}
	}
	t.Fatalf("no quota label %q", reason)
	return 0
}

// TestQuotaRefusals: each limit that SPEC §5 and §11 answer with ERR QUOTA
// refuses its command, changes nothing, and is counted under its own reason
// only.
func TestQuotaRefusals(t *testing.T) {
	for _, tc := range []struct {
		reason string
		limits Limits
		// setup brings a relay to its limit and returns the command past it.
		setup func(t *testing.T, e *Engine) func() resp
	}{
		{"quota", Limits{Quota: 1}, func(t *testing.T, e *Engine) func() resp {
			q := newQueue(t, e, codec.SigEd25519)
			s := newConn(t, e)
			wantCmd(t, s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("a"))), codec.CmdOK)
			return func() resp { return s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("b"))) }
		}},
		{"max_stored_bytes", Limits{MaxStoredBytes: 3}, func(t *testing.T, e *Engine) func() resp {
			q := newQueue(t, e, codec.SigEd25519)
			other := newQueue(t, e, codec.SigEd25519)
			s := newConn(t, e)
			wantCmd(t, s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("ab"))), codec.CmdOK)
			// Relay-wide: another queue, far below its own quota, is refused.
			return func() resp { return s.One(tx(t, nil, "s", other.sid, codec.CmdSEND, nil, []byte("cd"))) }
		}},
		{"max_queues", Limits{MaxQueues: 1}, func(t *testing.T, e *Engine) func() resp {
			newQueue(t, e, codec.SigEd25519)
			rk := signer(t, codec.SigEd25519)
			c := newConn(t, e) // a fresh connection: its NEW budget is whole
			return func() resp { return c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) }
		}},
		{"new_queues_per_minute", Limits{NewQueuesPerMinute: 1}, func(t *testing.T, e *Engine) func() resp {
			q := newQueue(t, e, codec.SigEd25519)
			rk := signer(t, codec.SigEd25519)
			return func() resp { return q.rc.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) }
		}},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			e, _ := newTestEngine(t, tc.limits)
			past := tc.setup(t, e)
			before := e.Stats()
			wantErr(t, past(), codec.ErrQuota)
			if got := e.Stats(); got != before {
				t.Fatalf("stats %+v after the refusal, want %+v", got, before)
			}
			for _, l := range QuotaLabels {
				want := uint64(0)
				if l == tc.reason {
					want = 1
				}
				if got := quotaCount(t, e, l); got != want {
					t.Errorf("refusals counted as %s: %d, want %d", l, got, want)
				}
			}
		})
	}
}

// TestMaxStoredBytes: SEND past the relay's stored-bytes cap gets ERR QUOTA
// (SPEC §11) while SUB and ACK keep working, a body that fits exactly is
// taken, and SEND works again once ACKs free room.
func TestMaxStoredBytes(t *testing.T) {
	e, _ := newTestEngine(t, Limits{MaxStoredBytes: 10})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	send := func(body string) resp { return s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(body))) }
	wantCmd(t, send("aaaa"), codec.CmdOK)
	wantCmd(t, send("bbbb"), codec.CmdOK)
	wantErr(t, send("ccc"), codec.ErrQuota) // 11 > 10
	wantCmd(t, send("cc"), codec.CmdOK)     // 10: at the cap, not past it
	wantErr(t, send("d"), codec.ErrQuota)
	if got := e.Stats(); got.Messages != 3 || got.BodyBytes != 10 {
		t.Fatalf("stats %+v, want 3 messages of 10 bytes: a refusal left its bytes counted", got)
	}

	wantMSG(t, q.rc.Drain()[0], "aaaa")
	wantMSG(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), "aaaa")
	wantMSG(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), "bbbb")
	wantCmd(t, send("dddd"), codec.CmdOK) // the ACK freed 4 bytes
	wantErr(t, send("e"), codec.ErrQuota)
	if n := quotaCount(t, e, "max_stored_bytes"); n != 3 {
		t.Fatalf("%d refusals counted, want 3", n)
	}
}

// TestMaxQueues: NEW past the relay's queue cap gets ERR QUOTA (SPEC §11)
// without taking a token of the connection's NEW budget, and works again
// once a queue is deleted.
func TestMaxQueues(t *testing.T) {
	e, _ := newTestEngine(t, Limits{MaxQueues: 1, NewQueuesPerMinute: 2})
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	newq := func() resp { return c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) }
	ids := newq()
	wantCmd(t, ids, codec.CmdIDS)
	for range 3 {
		wantErr(t, newq(), codec.ErrQuota)
	}
	if e.Queues() != 1 {
		t.Fatalf("%d queues, want 1", e.Queues())
	}
	wantCmd(t, c.One(tx(t, rk, "d", ids.RID, codec.CmdDEL, nil, nil)), codec.CmdOK)
	wantCmd(t, newq(), codec.CmdIDS) // the second token: refusals by the cap took none
	if got := quotaCount(t, e, "max_queues"); got != 3 {
		t.Fatalf("%d refusals by max_queues, want 3", got)
	}
	if got := quotaCount(t, e, "new_queues_per_minute"); got != 0 {
		t.Fatalf("%d refusals by the NEW rate, want 0", got)
	}
}

// flakyStore fails Append while fail is set.
type flakyStore struct {
	store.MemoryStore
	fail atomic.Bool
}

func (s *flakyStore) Append(store.Record, store.Notifier) (uint64, store.BodyRef, error) {
	if s.fail.Load() {
		return 0, 0, errors.New("disk full")
	}
	return 0, 0, nil
}

// TestCapsAfterStoreFailure: a NEW or SEND that the store fails leaves no
// reservation behind, so the caps count only what is stored.
func TestCapsAfterStoreFailure(t *testing.T) {
	st := &flakyStore{}
	e, err := New(Options{BlockSize: testBlock, Store: st, Limits: Limits{MaxQueues: 1, MaxStoredBytes: 4}})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	st.fail.Store(true)
	wantErr(t, c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.ErrInternal)
	st.fail.Store(false)
	q := newQueue(t, e, codec.SigEd25519) // the cap of 1 is free again
	st.fail.Store(true)
	wantErr(t, c.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("abcd"))), codec.ErrInternal)
	st.fail.Store(false)
	if got := e.Stats(); got != (Stats{Queues: 1}) {
		t.Fatalf("stats %+v after failed changes, want one empty queue", got)
	}
	wantCmd(t, c.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("abcd"))), codec.CmdOK)
}

// TestCapsConcurrent: SENDs and NEWs from many connections at once never
// take the relay past its caps (the reservation is one atomic add), and the
// counters match what was stored.
func TestCapsConcurrent(t *testing.T) {
	const (
		conns    = 8
		perConn  = 40
		bodySize = 10
		maxBytes = 1000 // a quarter of what the SENDs would store
		maxQs    = 20   // fewer than the NEWs
	)
	e, _ := newTestEngine(t, Limits{MaxStoredBytes: maxBytes, MaxQueues: maxQs, Quota: perConn})
	qs := make([]queueFixture, conns)
	for i := range qs {
		qs[i] = newQueue(t, e, codec.SigEd25519)
	}
	var sent, created atomic.Int64
	var wg sync.WaitGroup
	for i := range conns {
		c := newConn(t, e)
		rk := signer(t, codec.SigEd25519)
		wg.Go(func() {
			for range perConn {
				r := c.One(tx(t, nil, "s", qs[i].sid, codec.CmdSEND, nil, make([]byte, bodySize)))
				if r.Cmd == codec.CmdOK {
					sent.Add(1)
				}
				r = c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
				if r.Cmd == codec.CmdIDS {
					created.Add(1)
				}
			}
		})
	}
	wg.Wait()
	got := e.Stats()
	if got.BodyBytes > maxBytes || got.BodyBytes != sent.Load()*bodySize || got.Messages != sent.Load() {
		t.Errorf("stats %+v after %d SENDs taken: past the cap of %d bytes, or miscounted", got, sent.Load(), maxBytes)
	}
	if got.Queues > maxQs || got.Queues != conns+created.Load() {
		t.Errorf("%d queues after %d NEWs taken: past the cap of %d, or miscounted", got.Queues, created.Load(), maxQs)
	}
}

// expiredCount is one cell of EngineMetrics.QueuesExpired, by label.
func expiredCount(t *testing.T, e *Engine, reason string) uint64 {
	t.Helper()
	for i, l := range ExpiredQueueLabels {
		if l == reason {
			return e.Metrics().QueuesExpired[i]
		}
	}
	t.Fatalf("no expiry label %q", reason)
	return 0
}

// TestUnsecuredTTL: a queue never secured is deleted, with its messages,
// once older than the unsecured TTL, counted from NEW even when it was
// suspended since; its subscriber forgets it silently and every later
// command gets ERR AUTH. A secured queue is not, and neither is one younger
// than the TTL. The store is told which refs died.
func TestUnsecuredTTL(t *testing.T) {
	const ttl = 48 * time.Hour
	st := newBodyStore(t)
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now,
		Limits: Limits{UnsecuredTTL: ttl, SuspendedTTL: 10 * ttl}})
	if err != nil {
		t.Fatal(err)
	}
	sender := newConn(t, e)
	unsecured := newQueue(t, e, codec.SigEd25519)
	wantCmd(t, sender.One(tx(t, nil, "s", unsecured.sid, codec.CmdSEND, nil, []byte("confirmation"))), codec.CmdOK)
	suspended := newQueue(t, e, codec.SigEd25519)
	secured := newQueue(t, e, codec.SigEd25519)
	sk := secured.secure(t, codec.SigEd25519)
	clk.Advance(ttl / 2)
	wantCmd(t, suspended.rc.One(tx(t, suspended.rk, "o", suspended.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	newQueue(t, e, codec.SigEd25519) // young: created half a TTL later

	wantMSG(t, unsecured.rc.Drain()[0], "confirmation")
	clk.Advance(ttl/2 - time.Second)
	e.Expire(clk.Now())
	if n := e.Queues(); n != 4 {
		t.Fatalf("a second before the TTL: %d queues, want all 4", n)
	}
	clk.Advance(time.Second)
	e.Expire(clk.Now())
	if got := e.Stats(); got != (Stats{Queues: 2}) {
		t.Fatalf("at the TTL: %+v, want the secured and the young queue, no message", got)
	}
	if n := expiredCount(t, e, "unsecured"); n != 2 {
		t.Fatalf("%d queues counted as expired unsecured, want 2", n)
	}
	if rs := unsecured.rc.Drain(); len(rs) != 0 {
		t.Fatalf("the subscriber got %+v: want nothing, not even END", rs)
	}
	wantErr(t, unsecured.rc.One(tx(t, unsecured.rk, "sub", unsecured.rid, codec.CmdSUB, nil, nil)), codec.ErrAuth)
	wantErr(t, sender.One(tx(t, nil, "s", unsecured.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
	wantErr(t, suspended.rc.One(tx(t, suspended.rk, "d", suspended.rid, codec.CmdDEL, nil, nil)), codec.ErrAuth)
	wantCmd(t, sender.One(tx(t, sk, "s", secured.sid, codec.CmdSEND, nil, []byte("y"))), codec.CmdOK)

	clk.Advance(ttl / 2)
	e.Expire(clk.Now())
	if n := e.Queues(); n != 1 {
		t.Fatalf("once the young queue is as old: %d queues, want the secured one", n)
	}
	if n := expiredCount(t, e, "suspended"); n != 0 {
		t.Fatalf("%d queues counted as expired suspended, want 0", n)
	}
}

// TestUnsecuredTTLReplay: the creation time survives a restart when the
// store keeps it (a snapshot carries it); a store that does not (Time 0)
// gets the load time, lowered to the oldest message the queue holds, so
// an unsecured queue never expires earlier than the TTL after its NEW.
func TestUnsecuredTTLReplay(t *testing.T) {
	const ttl = 48 * time.Hour
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	created := clk.Now().Unix()
	rk := signer(t, codec.SigEd25519).VerifyKey()
	queueRec := func(id byte, at int64) store.Record {
		return store.Record{Kind: store.QueueCreated, RID: store.QueueID{id}, SID: store.QueueID{id, 1}, RecipientKey: rk, Time: at}
	}
	msgRec := func(id byte, at int64) store.Record {
		return store.Record{Kind: store.MessageStored, RID: store.QueueID{id}, MsgID: store.MsgID{id}, Time: at, Size: 1, Body: []byte("m")}
	}
	clk.Advance(ttl / 2) // the restart: half the TTL after the NEWs
	st := newBodyStore(t)
	st.replay = []store.Record{
		queueRec(1, created),                    // kept by the store
		queueRec(2, 0),                          // not kept: the load time
		queueRec(3, 0), msgRec(3, created+3600), // not kept, but a message an hour younger than its NEW
	}
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now, Limits: Limits{UnsecuredTTL: ttl}})
	if err != nil {
		t.Fatal(err)
	}
	var snap []store.Record
	if err := e.Snapshot(func(r *store.Record) error { snap = append(snap, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	times := map[byte]int64{}
	for _, r := range snap {
		if r.Kind == store.QueueCreated {
			times[r.RID[0]] = r.Time
		}
	}
	want := map[byte]int64{1: created, 2: clk.Now().Unix(), 3: created + 3600}
	if fmt.Sprint(times) != fmt.Sprint(want) {
		t.Fatalf("creation times in the snapshot %v, want %v", times, want)
	}

	left := func(at time.Duration) int {
		t.Helper()
		e.Expire(time.Unix(created, 0).Add(at))
		return e.Queues()
	}
	if n := left(ttl - time.Second); n != 3 {
		t.Fatalf("a second before the TTL after NEW: %d queues, want 3", n)
	}
	if n := left(ttl); n != 2 {
		t.Fatalf("at the TTL after NEW: %d queues, want 2 (queue 1 expired)", n)
	}
	if n := left(ttl + time.Hour); n != 1 {
		t.Fatalf("an hour later: %d queues, want 1 (queue 3 expired too)", n)
	}
	if n := left(ttl + ttl/2); n != 0 {
		t.Fatalf("at the TTL after the load: %d queues, want none (queue 2 expired too)", n)
	}
}

// TestSetLimitsCaps: the caps and the unsecured TTL change live; a cap
// lowered below what is stored deletes nothing, and a negative cap is no
// limit.
func TestSetLimitsCaps(t *testing.T) {
	e, clk := newTestEngine(t, Limits{MaxStoredBytes: 4, MaxQueues: 1})
	q := newQueue(t, e, codec.SigEd25519)
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	send := func(body string) resp { return c.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(body))) }
	newq := func() resp { return c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)) }
	wantCmd(t, send("abcd"), codec.CmdOK)
	wantErr(t, send("e"), codec.ErrQuota)
	wantErr(t, newq(), codec.ErrQuota)

	if err := e.SetLimits(Limits{MaxStoredBytes: 5, MaxQueues: 2}); err != nil {
		t.Fatal(err)
	}
	wantCmd(t, send("e"), codec.CmdOK)
	wantCmd(t, newq(), codec.CmdIDS)
	wantErr(t, send("f"), codec.ErrQuota)
	wantErr(t, newq(), codec.ErrQuota)

	if err := e.SetLimits(Limits{MaxStoredBytes: 1, MaxQueues: 1}); err != nil {
		t.Fatal(err)
	}
	if got := e.Stats(); got.Queues != 2 || got.BodyBytes != 5 {
		t.Fatalf("lowered caps left %+v, want the 2 queues and 5 bytes stored", got)
	}
	wantErr(t, send(""), codec.ErrQuota) // even an empty body: the relay is past its cap

	if err := e.SetLimits(Limits{MaxStoredBytes: -1, MaxQueues: -1}); err != nil {
		t.Fatal(err)
	}
	if l := e.Limits(); l.MaxStoredBytes != -1 || l.MaxQueues != -1 || l.UnsecuredTTL != DefaultLimits.UnsecuredTTL {
		t.Fatalf("limits %+v: want no caps and the default unsecured TTL", l)
	}
	wantCmd(t, send("f"), codec.CmdOK)
	wantCmd(t, newq(), codec.CmdIDS)

	if err := e.SetLimits(Limits{UnsecuredTTL: -time.Second}); err == nil || e.Limits().MaxQueues != -1 {
		t.Fatalf("negative unsecured TTL: err %v, limits %+v; want an error and the old limits", err, e.Limits())
	}
	if err := e.SetLimits(Limits{UnsecuredTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Hour)
	e.Expire(clk.Now())
	if n := e.Queues(); n != 0 {
		t.Fatalf("an hour after an unsecured TTL of 1h: %d queues left", n)
	}
}

// TestCapWarnings: a relay-wide cap's refusals are logged at most once per
// fullLogEvery, with the number held back, and name no queue.
func TestCapWarnings(t *testing.T) {
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	logs := newSyncBuffer()
	e, err := New(Options{BlockSize: testBlock, Now: clk.Now, Limits: Limits{MaxStoredBytes: 1, MaxQueues: 1},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	for range 3 {
		wantErr(t, c.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("ab"))), codec.ErrQuota)
		wantErr(t, c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.ErrQuota)
	}
	out := logs.String()
	if strings.Count(out, "max-stored-bytes of messages") != 1 || strings.Count(out, "max-queues queues") != 1 {
		t.Fatalf("want one warning per cap for 3 refusals each:\n%s", out)
	}
	clk.Advance(fullLogEvery)
	wantErr(t, c.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("ab"))), codec.ErrQuota)
	out = logs.String()
	if strings.Count(out, "max-stored-bytes of messages") != 2 || !strings.Contains(out, "refused-unlogged=2") {
		t.Fatalf("after %v: want a second warning with the 2 held back:\n%s", fullLogEvery, out)
	}
	if strings.Contains(out, b64(q.rid)) || strings.Contains(out, b64(q.sid)) {
		t.Fatalf("a warning names the queue:\n%s", out)
	}
}

// createdStore records the creation time of each QueueCreated it is given.
type createdStore struct {
	store.MemoryStore
	mu    sync.Mutex
	times []int64
}

func (s *createdStore) Append(r store.Record, _ store.Notifier) (uint64, store.BodyRef, error) {
	if r.Kind == store.QueueCreated {
		s.mu.Lock()
		s.times = append(s.times, r.Time)
		s.mu.Unlock()
	}
	return 0, 0, nil
}

// TestNewLogsCreationTime: NEW hands the store the queue's creation time, so
// that the unsecured-queue TTL counts from NEW across restarts.
func TestNewLogsCreationTime(t *testing.T) {
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	st := &createdStore{}
	e, err := New(Options{BlockSize: testBlock, Store: st, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	newQueue(t, e, codec.SigEd25519)
	if len(st.times) != 1 || st.times[0] != clk.Now().Unix() {
		t.Fatalf("QueueCreated times %v, want one at %d", st.times, clk.Now().Unix())
	}
}
