package engine

import (
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
)

// TestHotPathAllocations pins the allocation budget of the hot path: none per
// block or transmission, except the stored copy of a SEND body.
func TestHotPathAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	sk := q.secure(t, codec.SigEd25519)
	sender := newConn(t, e)
	sender.W.Send = func([]byte) error { return nil }
	q.rc.W.Send = func([]byte) error { return nil }

	ping := block([]byte("\r\np\r\n\r\nPING\r\n"))
	send := block(tx(t, sk, "s", q.sid, codec.CmdSEND, nil, make([]byte, 1000)))
	ack := block(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil))
	bad := block([]byte("\r\nc\r\n\r\nHELLO\r\n"), []byte("\r\nc\r\n\r\nSEND 5\r\nab\r\n\r\n"))
	auth := block(tx(t, sk, "s", q.rid, codec.CmdSUB, nil, nil))

	// Warm the Writer's buffers, the outbox and the fifo.
	for range 3 {
		sender.S.Process(send, sender.P, &sender.Tr, sender.W)
		sender.W.Finish()
		q.rc.S.Drain(q.rc.W)
		q.rc.S.Process(ack, q.rc.P, &q.rc.Tr, q.rc.W)
		q.rc.W.Finish()
	}

	for _, tc := range []struct {
		name string
		max  float64
		run  func()
	}{
		{"PING", 0, func() {
			sender.S.Process(ping, sender.P, &sender.Tr, sender.W)
			sender.W.Finish()
		}},
		{"errors", 0, func() {
			sender.S.Process(bad, sender.P, &sender.Tr, sender.W)
			sender.W.Finish()
		}},
		// crypto/ed25519 builds an error value inside a failed Verify; the
		// engine itself adds nothing on the AUTH path.
		{"AUTH", 1, func() {
			sender.S.Process(auth, sender.P, &sender.Tr, sender.W)
			sender.W.Finish()
		}},
		{"SEND-push-ACK", 1, func() {
			sender.S.Process(send, sender.P, &sender.Tr, sender.W)
			sender.W.Finish()
			q.rc.S.Drain(q.rc.W)
			q.rc.W.Finish()
			q.rc.S.Process(ack, q.rc.P, &q.rc.Tr, q.rc.W)
			q.rc.W.Finish()
		}},
	} {
		if got := testing.AllocsPerRun(200, tc.run); got > tc.max {
			t.Errorf("%s: %.1f allocations per run, want at most %.0f", tc.name, got, tc.max)
		}
	}
}

// TestBodyStoreAllocations: with a store that keeps bodies and returns refs,
// a SEND still makes one copy (which the store keeps), and the push and
// ACK's next MSG read the body into the Writer's scratch without
// allocating. The test store's map and record log add amortized growth,
// below one allocation per run.
func TestBodyStoreAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	st := newBodyStore(t)
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	sk := q.secure(t, codec.SigEd25519)
	sender := newConn(t, e)
	sender.W.Send = func([]byte) error { return nil }
	q.rc.W.Send = func([]byte) error { return nil }
	send := block(tx(t, sk, "s", q.sid, codec.CmdSEND, nil, make([]byte, 1000)))
	ack := block(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil))
	cycle := func() {
		sender.S.Process(send, sender.P, &sender.Tr, sender.W)
		sender.W.Finish()
		q.rc.S.Drain(q.rc.W)
		q.rc.W.Finish()
		q.rc.S.Process(ack, q.rc.P, &q.rc.Tr, q.rc.W)
		q.rc.W.Finish()
	}
	for range 3 {
		cycle()
	}
	reads := st.reads.Load()
	if got := testing.AllocsPerRun(200, cycle); got > 1 {
		t.Errorf("SEND-push-ACK, body in the store: %.1f allocations per run, want at most 1", got)
	}
	if st.reads.Load() == reads {
		t.Fatal("the push read no body from the store")
	}
}

// BenchmarkSignedCycle measures one secured SEND → pushed MSG → ACK cycle at
// the engine level (two Ed25519 verifications), without sockets or ciphers.
func BenchmarkSignedCycle(b *testing.B) {
	e, _ := newTestEngine(b, Limits{})
	q := newQueue(b, e, codec.SigEd25519)
	sk := q.secure(b, codec.SigEd25519)
	sender := newConn(b, e)
	sender.W.Send = func([]byte) error { return nil }
	q.rc.W.Send = func([]byte) error { return nil }
	send := block(tx(b, sk, "s", q.sid, codec.CmdSEND, nil, make([]byte, 1000)))
	ack := block(tx(b, q.rk, "a", q.rid, codec.CmdACK, nil, nil))
	b.ReportAllocs()
	for b.Loop() {
		sender.S.Process(send, sender.P, &sender.Tr, sender.W)
		sender.W.Finish()
		q.rc.S.Drain(q.rc.W)
		q.rc.W.Finish()
		q.rc.S.Process(ack, q.rc.P, &q.rc.Tr, q.rc.W)
		q.rc.W.Finish()
	}
}
