package engine

import (
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
)

// doBatched runs the server's batched path (ProcessBatched) on one block
// of c, as often as the budget makes it stop early, and returns the
// responses.
func doBatched(c *tconn, b *Batch, budget int, txs ...[]byte) []resp {
	c.T.Helper()
	plain := block(txs...)
	for codec.More(plain) {
		left := budget
		n := c.S.ProcessBatched(plain, c.P, b, c.W, &left)
		if n == 0 {
			c.T.Fatal("ProcessBatched consumed nothing")
		}
		plain = plain[n:]
	}
	return c.Drain()
}

// batchScenario builds, on a fresh engine, a mixed sequence of transmissions
// from one connection, and names the IDs it uses so that replies from two
// engines can be compared.
func batchScenario(t *testing.T) (*tconn, [][]byte, map[string]string) {
	e, _ := newTestEngine(t, Limits{})
	qa := newQueue(t, e, codec.SigEd25519)
	qb := newQueue(t, e, codec.SigRSA)
	qc := newQueue(t, e, codec.SigEd25519)
	ska, skb, wrong := signer(t, codec.SigEd25519), signer(t, codec.SigRSA), signer(t, codec.SigEd25519)
	newKey := signer(t, codec.SigEd25519)
	missing := make([]byte, 16)
	rand.Read(missing)
	garbage := make([]byte, 64)
	rand.Read(garbage)
	signedGarbage := codec.AppendClientTransmission(nil, garbage,
		codec.AppendSigned(nil, []byte("garbage"), qa.sid, codec.CmdSEND, nil, []byte("g")))
	body := func(s string) []byte { return []byte(s) }
	txs := [][]byte{
		tx(t, nil, "confirm", qa.sid, codec.CmdSEND, nil, body("hello")),  // unsigned confirmation: OK
		tx(t, qa.rk, "key", qa.rid, codec.CmdKEY, ska.PublicSPKI(), nil),  // OK
		tx(t, ska, "send", qa.sid, codec.CmdSEND, nil, body("after key")), // verifies with the key just set
		tx(t, wrong, "wrong", qa.sid, codec.CmdSEND, nil, body("x")),      // AUTH
		tx(t, nil, "unsigned", qa.sid, codec.CmdSEND, nil, body("x")),     // AUTH: secured now
		tx(t, ska, "missing", missing, codec.CmdSEND, nil, body("x")),     // AUTH
		tx(t, ska, "kind", qa.rid, codec.CmdSEND, nil, body("x")),         // AUTH: a RID
		signedGarbage, // AUTH
		tx(t, qa.rk, "subkind", qa.sid, codec.CmdSUB, nil, nil),                       // AUTH: an SID
		tx(t, qa.rk, "sub", qa.rid, codec.CmdSUB, nil, nil),                           // MSG hello
		tx(t, qa.rk, "ack1", qa.rid, codec.CmdACK, nil, nil),                          // MSG after key
		tx(t, qa.rk, "ack2", qa.rid, codec.CmdACK, nil, nil),                          // OK
		tx(t, qa.rk, "ack3", qa.rid, codec.CmdACK, nil, nil),                          // PROHIBITED
		[]byte("\r\nping\r\n\r\nPING\r\n"),                                            // PONG
		tx(t, qb.rk, "keyb", qb.rid, codec.CmdKEY, skb.PublicSPKI(), nil),             // OK
		tx(t, skb, "sendb", qb.sid, codec.CmdSEND, nil, body("rsa")),                  // OK
		tx(t, ska, "sendb-ed", qb.sid, codec.CmdSEND, nil, body("x")),                 // AUTH: wrong length
		tx(t, qb.rk, "keyb2", qb.rid, codec.CmdKEY, ska.PublicSPKI(), nil),            // AUTH: secured
		tx(t, qb.rk, "offb", qb.rid, codec.CmdOFF, nil, nil),                          // OK
		tx(t, skb, "sendb-off", qb.sid, codec.CmdSEND, nil, body("x")),                // AUTH: suspended
		tx(t, qb.rk, "subb", qb.rid, codec.CmdSUB, nil, nil),                          // MSG rsa
		tx(t, nil, "confirmc", qc.sid, codec.CmdSEND, nil, body("c")),                 // OK
		tx(t, qc.rk, "delc", qc.rid, codec.CmdDEL, nil, nil),                          // OK
		tx(t, qc.rk, "subc", qc.rid, codec.CmdSUB, nil, nil),                          // AUTH: deleted
		tx(t, nil, "sendc", qc.sid, codec.CmdSEND, nil, body("c")),                    // AUTH: deleted
		tx(t, wrong, "delc2", qc.rid, codec.CmdDEL, nil, nil),                         // AUTH
		tx(t, newKey, "new", nil, codec.CmdNEW, newKey.PublicSPKI(), nil),             // IDS
		tx(t, wrong, "newbad", nil, codec.CmdNEW, newKey.PublicSPKI(), nil),           // AUTH
		[]byte("\r\nhello\r\n\r\nHELLO\r\n"),                                          // ERR
		tx(t, qa.rk, "suba", qa.rid, codec.CmdSUB, nil, nil),                          // OK
		tx(t, ska, "last", qa.sid, codec.CmdSEND, nil, body("to a subscriber: push")), // OK, then a push
	}
	names := map[string]string{
		string(qa.rid): "A.rid", string(qa.sid): "A.sid", string(qb.rid): "B.rid", string(qb.sid): "B.sid",
		string(qc.rid): "C.rid", string(qc.sid): "C.sid", string(missing): "missing",
	}
	return newConn(t, e), txs, names
}

// show renders a response without what differs between engines (random IDs).
func show(r resp, names map[string]string) string {
	qid := names[string(r.QueueID)]
	if qid == "" && len(r.QueueID) > 0 {
		qid = "?"
	}
	return fmt.Sprintf("%v corrId=%q queueId=%s err=%v ids=%v/%v msgId=%v time=%q body=%q",
		r.Cmd, r.CorrID, qid, r.Err, len(r.RID), len(r.SID), len(r.MsgID), r.Time, r.Body)
}

// TestBatchedSameReplies: the batched path answers a mixed sequence exactly
// as the single path does, one transmission per block, whether the sequence
// comes packed in one block (one batch per key-changing command) or is cut
// into pieces by the work budget.
func TestBatchedSameReplies(t *testing.T) {
	render := func(rs []resp, names map[string]string) []string {
		var out []string
		for _, r := range rs {
			out = append(out, show(r, names))
		}
		return out
	}
	c, txs, names := batchScenario(t)
	var want []string
	for _, x := range txs {
		want = append(want, render(c.Do(x), names)...)
	}
	if len(want) != len(txs)+1 {
		t.Fatalf("single path: %d responses for %d transmissions", len(want), len(txs))
	}
	for _, budget := range []int{1 << 30, 1, 3} {
		t.Run(fmt.Sprintf("budget=%d", budget), func(t *testing.T) {
			c, txs, names := batchScenario(t)
			got := render(doBatched(c, NewBatch(testBlock), budget, txs...), names)
			if !slices.Equal(got, want) {
				for i := range max(len(got), len(want)) {
					var g, w string
					if i < len(got) {
						g = got[i]
					}
					if i < len(want) {
						w = want[i]
					}
					if g != w {
						t.Errorf("reply %d:\n got %s\nwant %s", i, g, w)
					}
				}
			}
		})
	}
}

// TestBatchedAuthTiming is TestAuthTiming for transmissions verified in one
// batch: a block of valid SUBs with one that fails (wrong signature on a real
// queue, or a missing queue / ID of the wrong kind), and a block of failures
// only. The absent variant must cost what the real one costs: medians of
// interleaved tries within 20% of each other, retried when noisy.
func TestBatchedAuthTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("timing comparison skipped in -short mode")
	}
	const perBlock = 8
	for _, alg := range []codec.SigAlg{codec.SigEd25519, codec.SigRSA} {
		e, _ := newTestEngine(t, Limits{})
		q := newQueue(t, e, alg)
		wrong := signer(t, alg)
		q.secure(t, alg)
		missing := make([]byte, 16)
		rand.Read(missing)
		valid := tx(t, q.rk, "v", q.rid, codec.CmdSUB, nil, nil)

		type pair struct {
			name         string
			real, absent []byte
		}
		cases := []pair{
			{"SUB", tx(t, wrong, "a", q.rid, codec.CmdSUB, nil, nil), tx(t, wrong, "a", missing, codec.CmdSUB, nil, nil)},
			{"DEL", tx(t, wrong, "a", q.rid, codec.CmdDEL, nil, nil), tx(t, wrong, "a", missing, codec.CmdDEL, nil, nil)},
			{"SEND", tx(t, wrong, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, wrong, "a", missing, codec.CmdSEND, nil, []byte("x"))},
			{"SEND-unsigned", tx(t, nil, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, nil, "a", missing, codec.CmdSEND, nil, []byte("x"))},
			{"SEND-wrong-kind", tx(t, wrong, "a", q.sid, codec.CmdSEND, nil, []byte("x")), tx(t, wrong, "a", q.rid, codec.CmdSEND, nil, []byte("x"))},
			{"SUB-wrong-kind", tx(t, wrong, "a", q.rid, codec.CmdSUB, nil, nil), tx(t, wrong, "a", q.sid, codec.CmdSUB, nil, nil)},
		}
		for _, tc := range cases {
			for _, shape := range []string{"mixed", "all"} {
				t.Run(fmt.Sprintf("%v/%s/%s", alg, tc.name, shape), func(t *testing.T) {
					build := func(bad []byte) []byte {
						var txs [][]byte
						for i := range perBlock {
							switch {
							case shape == "all" || i == perBlock/2:
								txs = append(txs, bad)
							default:
								txs = append(txs, valid)
							}
						}
						return block(txs...)
					}
					blocks := [2][]byte{build(tc.real), build(tc.absent)}
					c := newConn(t, e)
					b := NewBatch(testBlock)
					for _, r := range doBatched(c, b, 1<<30, tc.real, tc.absent) {
						if r.Cmd == codec.CmdERR {
							wantErr(t, r, codec.ErrAuth)
						}
					}
					const tries, attempts = 100, 5
					var ratio float64
					var times [2][]time.Duration
					for range attempts {
						times[0], times[1] = times[0][:0], times[1][:0]
						for i := range 2 * tries {
							plain := blocks[i%2]
							budget := 1 << 30
							start := time.Now()
							c.S.ProcessBatched(plain, c.P, b, c.W, &budget)
							times[i%2] = append(times[i%2], time.Since(start))
							c.W.Finish()
							c.Blocks = c.Blocks[:0]
						}
						slices.Sort(times[0])
						slices.Sort(times[1])
						real, absent := times[0][tries/2], times[1][tries/2]
						ratio = float64(absent) / float64(real)
						if ratio > 1/1.2 && ratio < 1.2 {
							t.Logf("absent/real median time ratio %.3f (median real %v per block of %d)", ratio, real, perBlock)
							return
						}
					}
					t.Fatalf("ERR AUTH for a missing queue took %.2fx the time of a wrong signature in a batch (want within 20%%)", ratio)
				})
			}
		}
	}
}

// TestBatchedAllocations: the batched path allocates nothing per block after
// warm-up but the stored copy of each SEND body.
func TestBatchedAllocations(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes allocation counts")
	}
	const n = 8
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	sk := q.secure(t, codec.SigEd25519)
	sender := newConn(t, e)
	sender.W.Send = func([]byte) error { return nil }
	q.rc.W.Send = func([]byte) error { return nil }
	sends, acks := packedCycle(t, q, sk, n)
	bad := block(slices.Repeat([][]byte{tx(t, sk, "s", q.rid, codec.CmdSUB, nil, nil)}, n)...)
	bs, br := NewBatch(testBlock), NewBatch(testBlock)
	run := func(c *tconn, b *Batch, plain []byte) {
		budget := 1 << 30
		c.S.ProcessBatched(plain, c.P, b, c.W, &budget)
		c.S.Drain(c.W)
		c.W.Finish()
	}
	cycle := func() {
		run(sender, bs, sends)
		q.rc.S.Drain(q.rc.W)
		q.rc.W.Finish()
		run(q.rc, br, acks)
	}
	for range 3 {
		cycle()
		run(sender, bs, bad)
	}
	if got := testing.AllocsPerRun(100, cycle); got > n {
		t.Errorf("%d SENDs and ACKs in one block each: %.1f allocations per run, want at most %d", n, got, n)
	}
	if got := testing.AllocsPerRun(100, func() { run(sender, bs, bad) }); got > 0 {
		t.Errorf("%d AUTH failures in one block: %.1f allocations per run, want none", n, got)
	}
}

// packedCycle returns a block of n signed SENDs to q and a block of n ACKs.
func packedCycle(t testing.TB, q queueFixture, sk *codec.Signer, n int) (sends, acks []byte) {
	send := tx(t, sk, "s", q.sid, codec.CmdSEND, nil, make([]byte, 500))
	ack := tx(t, q.rk, "a", q.rid, codec.CmdACK, nil, nil)
	return block(slices.Repeat([][]byte{send}, n)...), block(slices.Repeat([][]byte{ack}, n)...)
}

// BenchmarkSignedCyclePacked is BenchmarkSignedCycle with 8 SENDs in one
// block and 8 ACKs in another, through the single path and the batched one;
// ns/msg is the cost of one message's SEND, push and ACK.
func BenchmarkSignedCyclePacked(b *testing.B) {
	const n = 8
	for _, batched := range []bool{false, true} {
		name := "single"
		if batched {
			name = "batched"
		}
		b.Run(name, func(b *testing.B) {
			e, _ := newTestEngine(b, Limits{})
			q := newQueue(b, e, codec.SigEd25519)
			sk := q.secure(b, codec.SigEd25519)
			sender := newConn(b, e)
			sender.W.Send = func([]byte) error { return nil }
			q.rc.W.Send = func([]byte) error { return nil }
			sends, acks := packedCycle(b, q, sk, n)
			bs, br := NewBatch(testBlock), NewBatch(testBlock)
			run := func(c *tconn, bt *Batch, plain []byte) {
				if batched {
					budget := 1 << 30
					c.S.ProcessBatched(plain, c.P, bt, c.W, &budget)
				} else {
					c.S.Process(plain, c.P, &c.Tr, c.W)
				}
				c.S.Drain(c.W)
				c.W.Finish()
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				run(sender, bs, sends)
				q.rc.S.Drain(q.rc.W)
				q.rc.W.Finish()
				run(q.rc, br, acks)
			}
			b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N*n), "ns/msg")
		})
	}
}

// TestFailurePenalty: within one work slice a connection whose commands
// authenticate gets all of them done, one whose commands fail (a forged
// signature, or an absent queue: the same charge) gets one done, on both the
// single and the batched path.
func TestFailurePenalty(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	forger := signer(t, codec.SigEd25519)
	absent := make([]byte, codec.QueueIDSize)
	const n = 8
	for _, tc := range []struct {
		name string
		tx   []byte
		want int // transmissions done within a budget of n
	}{
		{"authenticated", tx(t, q.rk, "ok", q.rid, codec.CmdSUB, nil, nil), n},
		{"wrong signature", tx(t, forger, "bad", q.rid, codec.CmdSUB, nil, nil), 1},
		{"absent queue", tx(t, forger, "bad", absent, codec.CmdSUB, nil, nil), 1},
	} {
		plain := block(slices.Repeat([][]byte{tc.tx}, n)...)
		for _, batched := range []bool{false, true} {
			c := newConn(t, e)
			budget := n
			var used int
			if batched {
				used = c.S.ProcessBatched(plain, c.P, NewBatch(testBlock), c.W, &budget)
			} else {
				used = c.S.ProcessSome(plain, c.P, &c.Tr, c.W, &budget)
			}
			// Every copy has the same length; the ones not done are left over.
			done := n - strings.Count(string(plain[used:]), string(tc.tx))
			if batched && tc.want == 1 {
				// A batch verifies together what it parsed within the
				// budget; the failures leave the budget that much in debt,
				// which the server makes the connection repay a slice per turn.
				if want := -authPenalty * n; done != n || budget != want {
					t.Errorf("%s, batched: %d done, budget %d; want %d done and budget %d", tc.name, done, budget, n, want)
				}
				continue
			}
			if done != tc.want {
				t.Errorf("%s (batched %v): %d of %d done within a budget of %d, want %d", tc.name, batched, done, n, n, tc.want)
			}
		}
	}
}
