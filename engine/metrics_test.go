package engine

import (
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// TestLabelTables: the label tables agree with codec's names, so a command or
// error added to codec cannot be silently counted under another's label.
func TestLabelTables(t *testing.T) {
	for c := codec.CmdNEW; c <= codec.CmdPING; c++ {
		if got := CommandLabels[cmdLabel(c)]; got != c.String() {
			t.Errorf("command %v is counted as %q", c, got)
		}
	}
	for _, c := range []codec.Cmd{codec.CmdNone, codec.CmdIDS, codec.CmdMSG, codec.CmdEND, codec.CmdOK, codec.CmdPONG, codec.CmdERR} {
		if got := CommandLabels[cmdLabel(c)]; got != "other" {
			t.Errorf("command %v is counted as %q, want other", c, got)
		}
	}
	if got := ResultLabels[resultLabel(codec.ErrNone)]; got != "ok" {
		t.Errorf("no error is counted as %q, want ok", got)
	}
	for e := codec.ErrNone + 1; e <= codec.ErrInternal; e++ {
		name := strings.ToLower(strings.Fields(e.String())[0])
		if got := ResultLabels[resultLabel(e)]; got != name {
			t.Errorf("ERR %v is counted as %q, want %q", e, got, name)
		}
	}
}

// cmdCount is one cell of EngineMetrics.Commands, by label.
func cmdCount(t *testing.T, m EngineMetrics, cmd, result string) uint64 {
	t.Helper()
	for c, cn := range CommandLabels {
		for r, rn := range ResultLabels {
			if cn == cmd && rn == result {
				return m.Commands[c][r]
			}
		}
	}
	t.Fatalf("no label pair %s/%s", cmd, result)
	return 0
}

// TestCommandCounts: each transmission is counted once, under its command
// and the result its reply carried.
func TestCommandCounts(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Quota: 1})
	q := newQueue(t, e, codec.SigEd25519)
	sk := signer(t, codec.SigEd25519)
	other := signer(t, codec.SigEd25519)
	c := newConn(t, e)
	for _, tc := range []struct {
		name        string
		conn        *tconn
		tx          []byte
		cmd, result string
	}{
		{"PING", c, tx(t, nil, "p", nil, codec.CmdPING, nil, nil), "PING", "ok"},
		{"KEY", q.rc, tx(t, q.rk, "k", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil), "KEY", "ok"},
		{"SEND", c, tx(t, sk, "s", q.sid, codec.CmdSEND, nil, []byte("hi")), "SEND", "ok"},
		{"SEND over quota", c, tx(t, sk, "s", q.sid, codec.CmdSEND, nil, []byte("hi")), "SEND", "quota"},
		{"SEND badly signed", c, tx(t, other, "s", q.sid, codec.CmdSEND, nil, []byte("hi")), "SEND", "auth"},
		{"SUB with a MSG reply", q.rc, tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil), "SUB", "ok"},
		{"ACK", q.rc, tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil), "ACK", "ok"},
		{"ACK with nothing delivered", q.rc, tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil), "ACK", "prohibited"},
		{"DEL by the sender", c, tx(t, sk, "d", q.sid, codec.CmdDEL, nil, nil), "DEL", "auth"},
		{"unknown command", c, []byte("\r\nc\r\n\r\nHELLO\r\n"), "other", "unknown"},
		{"lower-case command", c, []byte("\r\nc\r\n\r\nping\r\n"), "other", "syntax"},
		{"server command", c, []byte("\r\nc\r\n\r\nPONG\r\n"), "other", "prohibited"},
		{"NEW without a key", c, []byte("\r\nc\r\n\r\nNEW\r\n"), "NEW", "syntax"},
		{"SEND body cut short", c, []byte("\r\nc\r\n\r\nSEND 5\r\nab\r\n\r\n"), "SEND", "syntax"},
		{"OFF", q.rc, tx(t, q.rk, "o", q.rid, codec.CmdOFF, nil, nil), "OFF", "ok"},
		{"NEW", c, tx(t, nil, "n", nil, codec.CmdNEW, other.PublicSPKI(), nil), "NEW", "ok"},
	} {
		before := e.Metrics()
		tc.conn.Do(tc.tx)
		after := e.Metrics()
		if d := cmdCount(t, after, tc.cmd, tc.result) - cmdCount(t, before, tc.cmd, tc.result); d != 1 {
			t.Errorf("%s: %s/%s went up by %d, want 1", tc.name, tc.cmd, tc.result, d)
		}
		var total uint64
		for c := range after.Commands {
			for r := range after.Commands[c] {
				total += after.Commands[c][r] - before.Commands[c][r]
			}
		}
		if total != 1 {
			t.Errorf("%s: %d counts in all, want 1", tc.name, total)
		}
	}
}

// TestDeliveryLatency: a message stored by SEND is observed once, when it is
// first written as MSG (pushed, or as the reply to SUB or ACK); a redelivery
// and a message replayed from the log are not observed.
func TestDeliveryLatency(t *testing.T) {
	st := &recordingStore{auto: true}
	e, err := New(Options{BlockSize: testBlock, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	count := func() uint64 { m := e.Metrics(); return m.Delivery.Count() }

	wantCmd(t, s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("m0"))), codec.CmdOK)
	if got := count(); got != 0 {
		t.Fatalf("before the push: %d observations, want 0", got)
	}
	wantCmd(t, q.rc.Drain()[0], codec.CmdMSG) // pushed
	if got := count(); got != 1 {
		t.Fatalf("after the push: %d observations, want 1", got)
	}
	wantCmd(t, q.rc.One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdMSG) // redelivered
	if got := count(); got != 1 {
		t.Fatalf("after a redelivery: %d observations, want still 1", got)
	}
	wantCmd(t, s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("m1"))), codec.CmdOK) // waits behind m0
	if rs := q.rc.Drain(); len(rs) != 0 {
		t.Fatalf("pushed %v while m0 awaits its ACK", rs)
	}
	wantCmd(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdMSG) // m1 in the ACK's reply
	if got := count(); got != 2 {
		t.Fatalf("after the ACK delivered m1: %d observations, want 2", got)
	}
	m := e.Metrics()
	if m.Delivery.Sum <= 0 || m.Delivery.Sum > float64(time.Hour) {
		t.Fatalf("latency sum %v ns: want a positive time under an hour", m.Delivery.Sum)
	}

	// The same state replayed: m1 has no store time in the new process.
	st2 := &recordingStore{replay: st.recs, auto: true}
	e2, err := New(Options{BlockSize: testBlock, Store: st2})
	if err != nil {
		t.Fatal(err)
	}
	wantCmd(t, newConn(t, e2).One(tx(t, q.rk, "sub", q.rid, codec.CmdSUB, nil, nil)), codec.CmdMSG)
	if m := e2.Metrics(); m.Delivery.Count() != 0 {
		t.Fatalf("a replayed message was observed: %d observations", m.Delivery.Count())
	}
}

// TestStoredAndExpired: the stored gauges follow SEND, ACK and the TTL sweep,
// and each message the TTL deletes is counted.
func TestStoredAndExpired(t *testing.T) {
	e, clk := newTestEngine(t, Limits{MessageTTL: time.Hour})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	for _, body := range []string{"one", "three", "fiver"} {
		wantCmd(t, s.One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte(body))), codec.CmdOK)
	}
	m := e.Metrics()
	if m.Queues != 1 || m.Messages != 3 || m.BodyBytes != 13 || m.Expired != 0 {
		t.Fatalf("after 3 SENDs: %d queues, %d messages, %d bytes, %d expired; want 1, 3, 13, 0",
			m.Queues, m.Messages, m.BodyBytes, m.Expired)
	}
	q.rc.Drain()
	wantCmd(t, q.rc.One(tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)), codec.CmdMSG)
	clk.Advance(2 * time.Hour)
	e.Expire(clk.Now())
	m = e.Metrics()
	if m.Messages != 0 || m.BodyBytes != 0 || m.Expired != 2 {
		t.Fatalf("after the sweep: %d messages, %d bytes, %d expired; want 0, 0, 2", m.Messages, m.BodyBytes, m.Expired)
	}
}

// BenchmarkPingBlock measures one block of 16 PINGs at the engine level: no
// signature, no cipher, so the per-transmission cost of the counters is not
// hidden behind cryptography as in BenchmarkSignedCycle.
func BenchmarkPingBlock(b *testing.B) {
	e, _ := newTestEngine(b, Limits{})
	c := newConn(b, e)
	c.W.Send = func([]byte) error { return nil }
	var txs [][]byte
	for range 16 {
		txs = append(txs, []byte("\r\np\r\n\r\nPING\r\n"))
	}
	blk := block(txs...)
	b.ReportAllocs()
	for b.Loop() {
		c.S.Process(blk, c.P, &c.Tr, c.W)
		c.W.Finish()
	}
}
