package engine

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

func TestPing(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	c := newConn(t, e)
	r := c.One([]byte("\r\np1\r\n\r\nPING\r\n"))
	wantCmd(t, r, codec.CmdPONG)
	if r.CorrID != "p1" || r.QueueID != nil {
		t.Fatalf("PONG echoes %q %x", r.CorrID, r.QueueID)
	}
}

func TestNewSubscribesCreator(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	if len(q.rid) != 16 || len(q.sid) != 16 || bytes.Equal(q.rid, q.sid) {
		t.Fatalf("IDS gave rid %x sid %x", q.rid, q.sid)
	}
	sender := newConn(t, e)
	wantCmd(t, sender.One(tx(t, nil, "s1", q.sid, codec.CmdSEND, nil, []byte("hello"))), codec.CmdOK)
	if q.rc.Woken.Load() != 1 {
		t.Fatalf("recipient's loop woken %d times, want 1", q.rc.Woken.Load())
	}
	rs := q.rc.Drain()
	if len(rs) != 1 {
		t.Fatalf("pushes: %+v", rs)
	}
	m := rs[0]
	wantCmd(t, m, codec.CmdMSG)
	if m.CorrID != "" || !bytes.Equal(m.QueueID, q.rid) || string(m.Body) != "hello" || m.Time != "2026-11-25T19:07:19Z" {
		t.Fatalf("pushed MSG: %+v", m)
	}
}

func TestNewSignature(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	c := newConn(t, e)
	rk, other := signer(t, codec.SigEd25519), signer(t, codec.SigEd25519)
	wantCmd(t, c.One(tx(t, rk, "a", nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.CmdIDS)
	wantErr(t, c.One(tx(t, other, "b", nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.ErrAuth)
	if n := e.Queues(); n != 1 {
		t.Fatalf("%d queues, want 1", n)
	}
}

// TestSeedFlow walks the seed's procedure with both signature algorithms.
func TestSeedFlow(t *testing.T) {
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		t.Run(alg.String(), func(t *testing.T) {
			e, _ := newTestEngine(t, Limits{})
			q := newQueue(t, e, alg)
			bob := newConn(t, e)
			sk := signer(t, alg)

			// Unsigned confirmation, pushed to the subscribed recipient.
			wantCmd(t, bob.One(tx(t, nil, "c", q.sid, codec.CmdSEND, nil, []byte("KEY ..."))), codec.CmdOK)
			m := q.rc.Drain()
			if len(m) != 1 || m[0].Cmd != codec.CmdMSG {
				t.Fatalf("confirmation not pushed: %+v", m)
			}
			// A signed SEND before KEY is AUTH.
			wantErr(t, bob.One(tx(t, sk, "x", q.sid, codec.CmdSEND, nil, []byte("early"))), codec.ErrAuth)
			wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
			wantCmd(t, q.rc.One(tx(t, q.rk, "key", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.CmdOK)
			// Secured: unsigned and wrongly signed SENDs are AUTH, signed is OK.
			wantErr(t, bob.One(tx(t, nil, "u", q.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
			wantErr(t, bob.One(tx(t, q.rk, "w", q.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
			wantCmd(t, bob.One(tx(t, sk, "s", q.sid, codec.CmdSEND, nil, []byte("hi alice"))), codec.CmdOK)
			m = q.rc.Drain()
			if len(m) != 1 || string(m[0].Body) != "hi alice" {
				t.Fatalf("secured message not pushed: %+v", m)
			}
			// KEY again is AUTH.
			wantErr(t, q.rc.One(tx(t, q.rk, "key2", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.ErrAuth)
			wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
		})
	}
}

func TestOneAtATimeDelivery(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(
		tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("one")),
		tx(t, nil, "2", q.sid, codec.CmdSEND, nil, []byte("two")),
		tx(t, nil, "3", q.sid, codec.CmdSEND, nil, []byte("three")),
	)
	rs := q.rc.Drain()
	if len(rs) != 1 || string(rs[0].Body) != "one" {
		t.Fatalf("want only the first message pushed, got %+v", rs)
	}
	for _, want := range []string{"two", "three"} {
		r := q.rc.One(tx(t, q.rk, "a-"+want, q.rid, codec.CmdACK, nil, nil))
		wantCmd(t, r, codec.CmdMSG)
		if string(r.Body) != want || r.CorrID != "a-"+want {
			t.Fatalf("ACK answered %+v, want MSG %q with the ACK's corrId", r, want)
		}
	}
	wantCmd(t, q.rc.One(tx(t, q.rk, "last", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	wantErr(t, q.rc.One(tx(t, q.rk, "again", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited)
	// A later SEND is pushed at once again.
	s.Do(tx(t, nil, "4", q.sid, codec.CmdSEND, nil, []byte("four")))
	if rs := q.rc.Drain(); len(rs) != 1 || string(rs[0].Body) != "four" {
		t.Fatalf("after the queue emptied, SEND was not pushed: %+v", rs)
	}
}

func TestSubscribeEndsOldSubscriber(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("one")))
	first := q.rc.Drain()[0]

	r2 := newConn(t, e)
	r := r2.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil))
	wantCmd(t, r, codec.CmdMSG)
	if !bytes.Equal(r.MsgID, first.MsgID) || r.CorrID != "sub" {
		t.Fatalf("re-delivery on SUB: msgId %x corrId %q, want %x \"sub\"", r.MsgID, r.CorrID, first.MsgID)
	}
	end := q.rc.Drain()
	if len(end) != 1 || end[0].Cmd != codec.CmdEND || !bytes.Equal(end[0].QueueID, q.rid) || end[0].CorrID != "" {
		t.Fatalf("old subscriber got %+v, want one END for the RID", end)
	}
	// The old subscriber gets nothing more for this queue and cannot ACK.
	wantErr(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited)
	wantCmd(t, r2.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	s.Do(tx(t, nil, "2", q.sid, codec.CmdSEND, nil, []byte("two")))
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("old subscriber still receives: %+v", rs)
	}
	if rs := r2.Drain(); len(rs) != 1 || string(rs[0].Body) != "two" {
		t.Fatalf("new subscriber: %+v", rs)
	}
}

// TestStaleEndDropped: a subscriber that takes the queue back before its END
// is drained must not be told its subscription ended.
func TestStaleEndDropped(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	r2 := newConn(t, e)
	wantCmd(t, r2.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
	// q.rc has an END waiting; it subscribes again in the same batch before draining.
	q.rc.S.Process(block(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), q.rc.P, &q.rc.Tr, q.rc.W)
	rs := q.rc.Drain()
	if len(rs) != 1 || rs[0].Cmd != codec.CmdOK {
		t.Fatalf("got %+v, want only the SUB's OK", rs)
	}
	if rs := r2.Drain(); len(rs) != 1 || rs[0].Cmd != codec.CmdEND {
		t.Fatalf("second subscriber got %+v, want END", rs)
	}
}

func TestRedeliveryAfterReconnect(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("one")))
	first := q.rc.Drain()[0]
	q.rc.Close() // the connection drops before ACK

	rc := newConn(t, e)
	r := rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil))
	wantCmd(t, r, codec.CmdMSG)
	if !bytes.Equal(r.MsgID, first.MsgID) || string(r.Body) != "one" || r.Time != first.Time {
		t.Fatalf("redelivered %+v, want the same message %+v", r, first)
	}
	wantCmd(t, rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
}

func TestAckRules(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	// Subscribed, nothing delivered.
	wantErr(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited)
	// Not subscribed at all (another connection with the right key).
	other := newConn(t, e)
	newConn(t, e).Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("one")))
	wantErr(t, other.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.ErrProhibited)
	// The message is still there for the subscriber.
	if rs := q.rc.Drain(); len(rs) != 1 {
		t.Fatalf("push: %+v", rs)
	}
	wantCmd(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
}

func TestOff(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("kept")))
	q.rc.Drain()
	wantCmd(t, q.rc.One(tx(t, q.rk, "off", q.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	wantCmd(t, q.rc.One(tx(t, q.rk, "off2", q.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	wantErr(t, s.One(tx(t, nil, "2", q.sid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
	sk := signer(t, codec.SigEd25519)
	wantErr(t, q.rc.One(tx(t, q.rk, "key", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.ErrAuth)
	// SUB and ACK still work on a suspended queue, and the stored message is still there.
	r2 := newConn(t, e)
	r := r2.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil))
	if r.Cmd != codec.CmdMSG || string(r.Body) != "kept" {
		t.Fatalf("SUB on suspended queue: %+v", r)
	}
	wantCmd(t, r2.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
	wantCmd(t, r2.One(tx(t, q.rk, "del", q.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)
}

func TestDel(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("gone")))
	q.rc.Drain()
	// DEL from another connection: the subscriber's subscription ends silently.
	other := newConn(t, e)
	wantCmd(t, other.One(tx(t, q.rk, "del", q.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("subscriber got %+v after DEL, want nothing", rs)
	}
	if len(q.rc.S.subs) != 0 {
		t.Fatal("deleted queue still in the subscriber's set")
	}
	for _, c := range []struct {
		name string
		tx   []byte
	}{
		{"SUB", tx(t, q.rk, "a", q.rid, codec.CmdSUB, nil, nil)},
		{"ACK", tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)},
		{"OFF", tx(t, q.rk, "a", q.rid, codec.CmdOFF, nil, nil)},
		{"DEL", tx(t, q.rk, "a", q.rid, codec.CmdDEL, nil, nil)},
		{"KEY", tx(t, q.rk, "a", q.rid, codec.CmdKEY, q.rk.PublicSPKI(), nil)},
		{"SEND", tx(t, nil, "a", q.sid, codec.CmdSEND, nil, []byte("x"))},
	} {
		wantErr(t, other.One(c.tx), codec.ErrAuth)
	}
	if e.Queues() != 0 {
		t.Fatalf("%d queues left", e.Queues())
	}
}

func TestWrongKindOfID(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	c := newConn(t, e)
	wantErr(t, c.One(tx(t, q.rk, "a", q.sid, codec.CmdSUB, nil, nil)), codec.ErrAuth)
	wantErr(t, c.One(tx(t, nil, "b", q.rid, codec.CmdSEND, nil, []byte("x"))), codec.ErrAuth)
	// An ID that is valid base64 but not 16 bytes is simply not a queue.
	wantErr(t, c.One(tx(t, q.rk, "c", []byte("short"), codec.CmdSUB, nil, nil)), codec.ErrAuth)
}

func TestQuota(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Quota: 3})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	for i := range 3 {
		wantCmd(t, s.One(tx(t, nil, fmt.Sprint(i), q.sid, codec.CmdSEND, nil, []byte("m"))), codec.CmdOK)
	}
	// The delivered, unacknowledged message counts too.
	wantErr(t, s.One(tx(t, nil, "full", q.sid, codec.CmdSEND, nil, []byte("m"))), codec.ErrQuota)
	q.rc.Drain()
	wantCmd(t, q.rc.One(tx(t, q.rk, "ack", q.rid, codec.CmdACK, nil, nil)), codec.CmdMSG)
	wantCmd(t, s.One(tx(t, nil, "room", q.sid, codec.CmdSEND, nil, []byte("m"))), codec.CmdOK)
}

func TestMessageExpiry(t *testing.T) {
	e, clk := newTestEngine(t, Limits{MessageTTL: time.Hour})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	s.Do(tx(t, nil, "1", q.sid, codec.CmdSEND, nil, []byte("old")))
	q.rc.Drain() // "old" delivered, not acknowledged
	clk.Advance(30 * time.Minute)
	s.Do(tx(t, nil, "2", q.sid, codec.CmdSEND, nil, []byte("young")))

	e.Expire(clk.Now().Add(29 * time.Minute)) // "old" is 59 minutes old: kept
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("nothing expired yet, got %+v", rs)
	}
	e.Expire(clk.Now().Add(31 * time.Minute)) // "old" is 61 minutes old: gone
	rs := q.rc.Drain()
	if len(rs) != 1 || string(rs[0].Body) != "young" {
		t.Fatalf("after the delivered message expired, want the next one pushed, got %+v", rs)
	}
	e.Expire(clk.Now().Add(2 * time.Hour))
	r2 := newConn(t, e)
	wantCmd(t, r2.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
}

func TestSuspendedQueueExpiry(t *testing.T) {
	e, clk := newTestEngine(t, Limits{SuspendedTTL: 24 * time.Hour})
	q := newQueue(t, e, codec.SigEd25519)
	wantCmd(t, q.rc.One(tx(t, q.rk, "off", q.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
	live := newQueue(t, e, codec.SigEd25519)
	e.Expire(clk.Now().Add(23 * time.Hour))
	wantCmd(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
	e.Expire(clk.Now().Add(25 * time.Hour))
	wantErr(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.ErrAuth)
	wantCmd(t, live.rc.One(tx(t, live.rk, "sub", live.rid, codec.CmdSUB, nil, nil)), codec.CmdOK)
}

// TestSameQueueOrder: responses to commands with the same queueId leave in
// the order the commands came, however they are packed.
func TestSameQueueOrder(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Quota: 1000})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	var txs [][]byte
	for i := range 40 {
		txs = append(txs, tx(t, nil, fmt.Sprint(i), q.sid, codec.CmdSEND, nil, bytes.Repeat([]byte{'x'}, 100)))
	}
	rs := s.Do(txs...)
	if len(rs) != 40 {
		t.Fatalf("%d responses", len(rs))
	}
	for i, r := range rs {
		if r.CorrID != fmt.Sprint(i) || r.Cmd != codec.CmdOK {
			t.Fatalf("response %d: %+v", i, r)
		}
	}
}

// TestResponsesPacked: responses ready together share blocks.
func TestResponsesPacked(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	c := newConn(t, e)
	var txs [][]byte
	for i := range 50 {
		txs = append(txs, []byte(fmt.Sprintf("\r\n%d\r\n\r\nPING\r\n", i)))
	}
	c.S.Process(block(txs...), c.P, &c.Tr, c.W)
	c.S.Drain(c.W)
	if err := c.W.Finish(); err != nil {
		t.Fatal(err)
	}
	if n := len(c.Blocks); n != 1 {
		t.Fatalf("50 PONGs took %d blocks, want 1", n)
	}
	if rs := c.Read(); len(rs) != 50 {
		t.Fatalf("%d PONGs", len(rs))
	}
}

// TestMaxBodyRoundTrip: the largest body SEND allows is delivered in one block.
func TestMaxBodyRoundTrip(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	body := bytes.Repeat([]byte{0xff}, codec.MaxBody(testBlock))
	corr := string(bytes.Repeat([]byte{'c'}, codec.MaxCorrID))
	wantCmd(t, s.One(tx(t, nil, corr, q.sid, codec.CmdSEND, nil, body)), codec.CmdOK)
	rs := q.rc.Drain()
	if len(rs) != 1 || !bytes.Equal(rs[0].Body, body) {
		t.Fatalf("max body not delivered intact")
	}
	wantErr(t, s.One([]byte(fmt.Sprintf("\r\nbig\r\n%s\r\nSEND %d\r\n", b64(q.sid), codec.MaxBody(testBlock)+1))), codec.ErrSize)
}

func TestNewRateLimit(t *testing.T) {
	e, clk := newTestEngine(t, Limits{NewQueuesPerMinute: 3})
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	newq := tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)
	for range 3 {
		wantCmd(t, c.One(newq), codec.CmdIDS)
	}
	wantErr(t, c.One(newq), codec.ErrQuota)
	// Another connection has its own bucket.
	wantCmd(t, newConn(t, e).One(newq), codec.CmdIDS)
	clk.Advance(20 * time.Second) // one token back
	wantCmd(t, c.One(newq), codec.CmdIDS)
	wantErr(t, c.One(newq), codec.ErrQuota)
}
