package engine

import (
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
)

// signedCycle is one secured SEND → pushed MSG → ACK on e, its Writers
// discarding what they write: what the allocation tests and
// BenchmarkSignedCycle run. warm is the cycle with a drain that needs no
// Finish of its own.
type signedCycle struct {
	sender *tconn
	q      queueFixture
	sk     *codec.Signer // the queue's sender key
	send   []byte        // the SEND block, signed by the sender key
	ack    []byte        // the ACK block, signed by the recipient key
}

func newSignedCycle(tb testing.TB, e *Engine) *signedCycle {
	q := newQueue(tb, e, codec.SigEd25519)
	sk := q.secure(tb, codec.SigEd25519)
	c := &signedCycle{sender: newConn(tb, e), q: q, sk: sk,
		send: block(tx(tb, sk, "s", q.sid, codec.CmdSEND, nil, make([]byte, 1000))),
		ack:  block(tx(tb, q.rk, "a", q.rid, codec.CmdACK, nil, nil))}
	c.sender.W.Send = func([]byte) error { return nil }
	q.rc.W.Send = func([]byte) error { return nil }
	return c
}

// run is one cycle.
func (c *signedCycle) run() {
	s, r := c.sender, c.q.rc
	s.S.Process(c.send, s.P, &s.Tr, s.W)
	s.W.Finish()
	r.S.Drain(r.W)
	r.W.Finish()
	r.S.Process(c.ack, r.P, &r.Tr, r.W)
	r.W.Finish()
}

// TestHotPathAllocations pins the allocation budget of the hot path: none per
// block or transmission, except the stored copy of a SEND body.
func TestHotPathAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	e, _ := newTestEngine(t, Limits{})
	c := newSignedCycle(t, e)
	sender, q := c.sender, c.q
	ping := block([]byte("\r\np\r\n\r\nPING\r\n"))
	bad := block([]byte("\r\nc\r\n\r\nHELLO\r\n"), []byte("\r\nc\r\n\r\nSEND 5\r\nab\r\n\r\n"))
	auth := block(tx(t, c.sk, "s", q.rid, codec.CmdSUB, nil, nil))
	for range 3 { // warm the Writers' buffers, the outbox and the fifo
		c.run()
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
		// A failed Ed25519 verification allocates nothing (curve25519-voi's
		// errors are package values), and neither does the engine.
		{"AUTH", 0, func() {
			sender.S.Process(auth, sender.P, &sender.Tr, sender.W)
			sender.W.Finish()
		}},
		{"SEND-push-ACK", 1, c.run},
	} {
		if got := testing.AllocsPerRun(200, tc.run); got > tc.max {
			t.Errorf("%s: %.1f allocations per run, want at most %.0f", tc.name, got, tc.max)
		}
	}
}

// TestBodyStoreAllocations: with a store that keeps bodies and returns refs,
// a SEND still makes one copy (which the store keeps), and the push and
// ACK's next MSG read the body into the Writer's scratch without
// allocating; with a store that copies bodies itself (store.BodyCopier, the
// disk store), the SEND makes none. The test store's map and record log add
// amortized growth, below one allocation per run.
func TestBodyStoreAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	for _, tc := range []struct {
		name   string
		copies bool
		max    float64
	}{{"store keeps the engine's copy", false, 1}, {"store copies", true, 0}} {
		st := newBodyStore(t)
		st.copies = tc.copies
		st.arena = make([]byte, 0, 1<<20)
		e, err := New(Options{BlockSize: testBlock, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		c := newSignedCycle(t, e)
		cycle := c.run
		for range 3 {
			cycle()
		}
		reads := st.reads.Load()
		if got := testing.AllocsPerRun(200, cycle); got > tc.max {
			t.Errorf("SEND-push-ACK, %s: %.1f allocations per run, want at most %.0f", tc.name, got, tc.max)
		}
		if st.reads.Load() == reads {
			t.Fatalf("%s: the push read no body from the store", tc.name)
		}
	}
}

// BenchmarkSignedCycle measures one secured SEND → pushed MSG → ACK cycle at
// the engine level (two Ed25519 verifications), without sockets or ciphers.
func BenchmarkSignedCycle(b *testing.B) {
	e, _ := newTestEngine(b, Limits{})
	c := newSignedCycle(b, e)
	b.ReportAllocs()
	for b.Loop() {
		c.run()
	}
}
