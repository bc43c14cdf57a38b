package main_test

// Crash test (SPEC §8 durability): the real binary runs with --fsync always
// while several connections drive signed SENDs, ACKs, NEW, KEY, OFF and DEL;
// it is killed with SIGKILL after a random number of replies, restarted on
// the same data directory, and every command that got its reply before the
// kill must show: no OK'd message lost, no ACKed message back, no deleted
// queue back, no message twice (the one delivered and not acknowledged comes
// again, as SPEC §5 allows), and stored messages in the order they were sent.
//
// Short form (make test): -crash.cycles 3. Long form (make crash-test): 25.
// The kill moment is a random count of replies, never a sleep.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

var (
	crashCycles  = flag.Int("crash.cycles", 3, "kill -9 cycles of TestCrashRecovery")
	crashWorkers = flag.Int("crash.workers", 6, "connections driving commands in TestCrashRecovery")
	crashSeed    = flag.Uint64("crash.seed", 0, "random seed of TestCrashRecovery (0: from the clock)")
)

// startCrashServer starts the binary on dir with fsync on every write.
func startCrashServer(t *testing.T, dir string) *smptest.Server {
	t.Helper()
	return smptest.StartServerIn(t, dir, "--fsync", "always", "--key-type", "x25519", "--new-queues-per-minute", "100000")
}

// tri is what the test knows of a change whose reply may not have come.
type tri uint8

const (
	no    tri = iota
	maybe     // sent, no reply before the kill
	yes       // replied
)

// cmsg is one message the test sent.
type cmsg struct {
	body     string
	sent     tri  // maybe: no reply; yes: OK
	acked    tri  // maybe: ACK sent for it, no reply; yes: the ACK was answered
	gone     bool // known absent: acknowledged, or found missing after a restart (only allowed when never OK'd)
	quotaErr bool // the SEND got ERR QUOTA: never stored
}

// cqueue is one queue the test created, owned by one worker.
type cqueue struct {
	rk, sk    *codec.Signer
	rid, sid  []byte
	secured   tri
	suspended tri
	deleted   tri
	msgs      []*cmsg // in send order
	delivered *cmsg   // received in a MSG and not yet acknowledged
}

func (q *cqueue) stored() int {
	n := 0
	for _, m := range q.msgs {
		if !m.gone && !m.quotaErr {
			n++
		}
	}
	return n
}

func (q *cqueue) find(body string) *cmsg {
	for _, m := range q.msgs {
		if m.body == body {
			return m
		}
	}
	return nil
}

// usable: the workload may send commands to it.
func (q *cqueue) usable() bool { return q.deleted == no && q.suspended == no }

// crashWorker is one connection and the queues it owns. Its fields are used
// by its goroutine only (and by the test between cycles).
type crashWorker struct {
	id     int
	rng    *rand.Rand
	queues []*cqueue
	c      *smptest.Conn
	seq    int
	cycle  int
	msgN   int
	errs   []string // invariant violations found
}

func (w *crashWorker) corr() string {
	w.seq++
	return fmt.Sprint(w.seq)
}

func (w *crashWorker) failf(format string, args ...any) {
	w.errs = append(w.errs, fmt.Sprintf("worker %d cycle %d: ", w.id, w.cycle)+fmt.Sprintf(format, args...))
}

var errConnGone = errors.New("connection gone")

// call sends tx and reads until the response with corr arrives; pushed MSGs
// met on the way are handled. errConnGone when the server died.
func (w *crashWorker) call(ctx context.Context, corr string, tx []byte) (smptest.Response, error) {
	if err := w.c.Send(tx); err != nil {
		return smptest.Response{}, errConnGone
	}
	for {
		r, err := w.c.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return r, fmt.Errorf("no response to %s: %w", corr, ctx.Err())
			}
			return r, errConnGone
		}
		if r.CorrID == "" && r.Cmd == codec.CmdMSG {
			w.delivered(r)
			continue
		}
		if r.CorrID == "" {
			w.failf("unexpected unsolicited %v", r)
			continue
		}
		if r.CorrID != corr {
			w.failf("response %v while waiting for %s", r, corr)
			continue
		}
		return r, nil
	}
}

func (w *crashWorker) queueByRID(rid []byte) *cqueue {
	for _, q := range w.queues {
		if bytes.Equal(q.rid, rid) {
			return q
		}
	}
	return nil
}

// delivered notes a MSG (push, or reply to SUB/ACK) during the workload: it
// must be the oldest message of the queue that may still be there.
func (w *crashWorker) delivered(r smptest.Response) {
	q := w.queueByRID(r.QueueID)
	if q == nil {
		w.failf("MSG for an unknown queue %x", r.QueueID)
		return
	}
	m := q.find(string(r.Body))
	if m == nil || m.gone || m.quotaErr {
		w.failf("MSG %q is not a message the queue holds", r.Body)
		return
	}
	for _, earlier := range q.msgs {
		if earlier == m {
			break
		}
		if !earlier.gone && !earlier.quotaErr {
			w.failf("MSG %q delivered before the older %q", r.Body, earlier.body)
			break
		}
	}
	q.delivered = m
}

// step sends one random command and records what its reply proves. It
// returns false when the connection is gone.
func (w *crashWorker) step(ctx context.Context) bool {
	var usable []*cqueue
	for _, q := range w.queues {
		if q.usable() {
			usable = append(usable, q)
		}
	}
	k := w.rng.IntN(100)
	switch {
	case len(usable) == 0 || k < 5:
		return w.doNew(ctx)
	case k < 15:
		for _, q := range usable {
			if q.delivered != nil {
				return w.doAck(ctx, q)
			}
		}
	}
	q := usable[w.rng.IntN(len(usable))]
	switch {
	case k < 20 && q.secured == no:
		return w.doKey(ctx, q)
	case k == 20:
		return w.doOff(ctx, q)
	case k == 21:
		return w.doDel(ctx, q)
	case k < 45 && q.delivered != nil:
		return w.doAck(ctx, q)
	case q.stored() >= 100:
		if q.delivered != nil {
			return w.doAck(ctx, q)
		}
		return true
	}
	return w.doSend(ctx, q)
}

func (w *crashWorker) doNew(ctx context.Context) bool {
	rk := crashSigner()
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(rk, corr, nil, codec.CmdNEW, rk.PublicSPKI(), nil))
	if err != nil {
		return w.gone(err)
	}
	if r.Cmd != codec.CmdIDS {
		w.failf("NEW: %v", r)
		return true
	}
	w.queues = append(w.queues, &cqueue{rk: rk, rid: r.RID, sid: r.SID})
	return true
}

func (w *crashWorker) doKey(ctx context.Context, q *cqueue) bool {
	q.sk = crashSigner()
	q.secured = maybe
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdKEY, q.sk.PublicSPKI(), nil))
	if err != nil {
		return w.gone(err)
	}
	if r.Cmd != codec.CmdOK {
		w.failf("KEY: %v", r)
	}
	q.secured = yes
	return true
}

func (w *crashWorker) doOff(ctx context.Context, q *cqueue) bool {
	q.suspended = maybe
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdOFF, nil, nil))
	if err != nil {
		return w.gone(err)
	}
	if r.Cmd != codec.CmdOK {
		w.failf("OFF: %v", r)
	}
	q.suspended = yes
	return true
}

func (w *crashWorker) doDel(ctx context.Context, q *cqueue) bool {
	q.deleted = maybe
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdDEL, nil, nil))
	if err != nil {
		return w.gone(err)
	}
	if r.Cmd != codec.CmdOK {
		w.failf("DEL: %v", r)
	}
	q.deleted = yes
	return true
}

// sendTx is a SEND of body to q, signed when q is (or may be) secured.
func (w *crashWorker) sendTx(q *cqueue, corr, body string) []byte {
	var s *codec.Signer
	if q.secured == yes {
		s = q.sk
	}
	return smptest.Cmd(s, corr, q.sid, codec.CmdSEND, nil, []byte(body))
}

func (w *crashWorker) doSend(ctx context.Context, q *cqueue) bool {
	w.msgN++
	m := &cmsg{body: fmt.Sprintf("w%d-c%d-m%d-%x", w.id, w.cycle, w.msgN, w.rng.Uint64()), sent: maybe}
	q.msgs = append(q.msgs, m)
	corr := w.corr()
	r, err := w.call(ctx, corr, w.sendTx(q, corr, m.body))
	if err != nil {
		return w.gone(err)
	}
	switch {
	case r.Cmd == codec.CmdOK:
		m.sent = yes
	case r.Cmd == codec.CmdERR && r.Err == codec.ErrQuota:
		m.quotaErr = true
	default:
		w.failf("SEND: %v", r)
		m.quotaErr = true
	}
	return true
}

func (w *crashWorker) doAck(ctx context.Context, q *cqueue) bool {
	m := q.delivered
	m.acked = maybe
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdACK, nil, nil))
	if err != nil {
		return w.gone(err)
	}
	m.acked, m.gone = yes, true
	q.delivered = nil
	switch r.Cmd {
	case codec.CmdMSG:
		w.delivered(r)
	case codec.CmdOK:
	default:
		w.failf("ACK: %v", r)
	}
	return true
}

// gone reports the end of the connection; any other error is a failure.
func (w *crashWorker) gone(err error) bool {
	if !errors.Is(err, errConnGone) {
		w.failf("%v", err)
	}
	return false
}

// verify runs after a restart, before the workload: it resolves every
// "maybe", checks what the replies before the kill proved, drains every
// queue (SUB, then ACK until OK) and leaves it subscribed on this connection.
func (w *crashWorker) verify(ctx context.Context) {
	kept := w.queues[:0]
	for _, q := range w.queues {
		if w.verifyQueue(ctx, q) {
			kept = append(kept, q)
		}
	}
	w.queues = kept
}

// verifyQueue checks one queue and reports whether it still exists.
func (w *crashWorker) verifyQueue(ctx context.Context, q *cqueue) bool {
	q.delivered = nil
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdSUB, nil, nil))
	if err != nil {
		w.failf("SUB after restart: %v", err)
		return false
	}
	if r.Cmd == codec.CmdERR && r.Err == codec.ErrAuth {
		if q.deleted == no {
			w.failf("queue %x is gone after the restart, but it was never deleted", q.rid)
		}
		return false
	}
	if q.deleted == yes {
		w.failf("queue %x was deleted (DEL answered OK) and is back after the restart: %v", q.rid, r)
		return false
	}
	q.deleted = no

	// Drain: the messages present, oldest first.
	var got []string
	for r.Cmd == codec.CmdMSG {
		got = append(got, string(r.Body))
		corr = w.corr()
		if r, err = w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdACK, nil, nil)); err != nil {
			w.failf("ACK after restart: %v", err)
			return false
		}
	}
	if r.Cmd != codec.CmdOK {
		w.failf("SUB/ACK after restart: %v", r)
	}
	w.checkMessages(q, got)

	// Resolve KEY and OFF whose replies did not come, then check the flags.
	if q.secured == maybe { // a signed SEND works only on a secured queue
		if w.probe(ctx, q, q.sk) {
			q.secured = yes
		} else {
			q.secured = no
		}
	}
	if q.suspended == maybe { // a proper SEND works only on a queue not suspended
		var s *codec.Signer
		if q.secured == yes {
			s = q.sk
		}
		if w.probe(ctx, q, s) {
			q.suspended = no
		} else {
			q.suspended = yes
		}
	}
	if q.secured == yes { // an unsigned SEND must fail: the key survived
		corr = w.corr()
		if r, err = w.call(ctx, corr, smptest.Cmd(nil, corr, q.sid, codec.CmdSEND, nil, []byte("unsigned"))); err == nil &&
			!(r.Cmd == codec.CmdERR && r.Err == codec.ErrAuth) {
			w.failf("queue %x was secured (KEY answered OK) but takes an unsigned SEND after the restart: %v", q.rid, r)
		}
	}
	if q.suspended == yes { // a proper SEND must fail: the suspension survived
		corr = w.corr()
		if r, err = w.call(ctx, corr, w.sendTx(q, corr, "after-off")); err == nil && !(r.Cmd == codec.CmdERR && r.Err == codec.ErrAuth) {
			w.failf("queue %x was suspended (OFF answered OK) but takes a SEND after the restart: %v", q.rid, r)
		}
	}
	return true
}

// probe sends a message signed by s (nil: unsigned) to q and reports
// whether it was accepted; an accepted probe is received and acknowledged,
// so the queue is empty again.
func (w *crashWorker) probe(ctx context.Context, q *cqueue, s *codec.Signer) bool {
	w.msgN++
	m := &cmsg{body: fmt.Sprintf("probe-w%d-c%d-%d", w.id, w.cycle, w.msgN), sent: maybe}
	q.msgs = append(q.msgs, m)
	corr := w.corr()
	r, err := w.call(ctx, corr, smptest.Cmd(s, corr, q.sid, codec.CmdSEND, nil, []byte(m.body)))
	if err != nil {
		w.failf("probe: %v", err)
		return false
	}
	if r.Cmd != codec.CmdOK {
		m.quotaErr = true // refused: never stored
		return false
	}
	m.sent = yes
	for q.delivered != m { // the push may have come before the OK, or comes now
		r, err := w.c.Next(ctx)
		if err != nil {
			w.failf("probe was not pushed: %v", err)
			return true
		}
		if r.CorrID != "" || r.Cmd != codec.CmdMSG {
			w.failf("unexpected %v while waiting for the probe", r)
			return true
		}
		w.delivered(r)
	}
	corr = w.corr()
	if r, err = w.call(ctx, corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdACK, nil, nil)); err != nil || r.Cmd != codec.CmdOK {
		w.failf("ACK of the probe: %v %v", r, err)
	}
	m.acked, m.gone, q.delivered = yes, true, nil
	return true
}

// checkMessages compares the messages found after a restart with what the
// replies before the kill proved, and marks them all gone (they were drained).
func (w *crashWorker) checkMessages(q *cqueue, got []string) {
	seen := map[string]bool{}
	pos := 0 // order: got must follow the send order
	for _, body := range got {
		if seen[body] {
			w.failf("message %q appears twice after the restart", body)
		}
		seen[body] = true
		m := q.find(body)
		switch {
		case m == nil:
			w.failf("message %q after the restart was never sent to this queue", body)
			continue
		case m.acked == yes:
			w.failf("message %q was acknowledged (ACK answered) and is back after the restart", body)
		case m.gone:
			w.failf("message %q was already gone and is back", body)
		case m.quotaErr:
			w.failf("message %q got ERR QUOTA yet is stored", body)
		}
		i := 0
		for i = pos; i < len(q.msgs) && q.msgs[i] != m; i++ {
		}
		if i == len(q.msgs) {
			w.failf("message %q is out of the order it was sent in", body)
		} else {
			pos = i + 1
		}
	}
	for _, m := range q.msgs {
		if !m.gone && !m.quotaErr && m.sent == yes && m.acked == no && !seen[m.body] {
			w.failf("message %q was answered OK, never acknowledged, and is lost after the restart", m.body)
		}
		m.gone = true // drained now, or proved absent
	}
}

func crashSigner() *codec.Signer {
	s, err := codec.GenerateSigner(codec.SigEd25519, 0)
	if err != nil {
		panic(err)
	}
	return s
}

func TestCrashRecovery(t *testing.T) {
	seed := *crashSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -crash.seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	dir := t.TempDir()
	workers := make([]*crashWorker, *crashWorkers)
	for i := range workers {
		workers[i] = &crashWorker{id: i, rng: rand.New(rand.NewPCG(seed, uint64(i+1)))}
	}
	var totalReplies, totalQueues, totalMsgs, tornTails int
	for cycle := 0; cycle <= *crashCycles; cycle++ {
		p := startCrashServer(t, dir)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		// Connect and verify every worker's queues against what the replies
		// before the last kill proved.
		var wg sync.WaitGroup
		for _, w := range workers {
			w.cycle = cycle
			c, err := smptest.Dial(ctx, p.Addr, p.Fingerprint)
			if err != nil {
				t.Fatalf("cycle %d: dial: %v\n%s", cycle, err, p.Stderr())
			}
			w.c = c
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.verify(ctx)
			}()
		}
		wg.Wait()
		failed := false
		for _, w := range workers {
			for _, e := range w.errs {
				t.Error(e)
				failed = true
			}
			w.errs = nil
		}
		if failed {
			cancel()
			t.Fatalf("cycle %d: invariants broken after restart; server log:\n%s", cycle, p.Stderr())
		}
		if cycle > 0 && strings.Contains(p.Stderr(), "torn tail") {
			tornTails++
			t.Logf("cycle %d: recovery cut a torn tail: %s", cycle, lineWith(p.Stderr(), "torn tail"))
		}
		if cycle == *crashCycles {
			// The last restart only verifies; then a clean stop.
			for _, w := range workers {
				totalQueues += len(w.queues)
				w.c.Close()
			}
			if code := p.Signal(os.Interrupt); code != 0 {
				t.Fatalf("clean stop: exit status %d; log:\n%s", code, p.Stderr())
			}
			cancel()
			break
		}

		// Workload until the server is killed after a random number of replies.
		target := int64(20 + rng.IntN(400))
		var replies atomic.Int64
		kill := make(chan struct{})
		var killOnce sync.Once
		for _, w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for w.step(ctx) {
					if replies.Add(1) == target {
						killOnce.Do(func() { close(kill) })
					}
				}
			}()
		}
		select {
		case <-kill:
		case <-ctx.Done():
			t.Fatalf("cycle %d: workload stalled before %d replies (%d so far)", cycle, target, replies.Load())
		}
		p.Kill()
		wg.Wait() // every worker saw its connection end
		cancel()
		for _, w := range workers {
			w.c.Close()
			for _, e := range w.errs {
				t.Errorf("during the workload: %s", e)
			}
			w.errs = nil
		}
		if t.Failed() {
			t.Fatalf("cycle %d: server log:\n%s", cycle, p.Stderr())
		}
		totalReplies += int(replies.Load())
		for _, w := range workers {
			totalMsgs += w.msgN
			w.msgN = 0
		}
		t.Logf("cycle %d: killed after %d replies (target %d)", cycle, replies.Load(), target)
	}
	t.Logf("%d kill -9 cycles, %d replies before kills, %d SENDs, %d queues alive at the end, %d torn tails cut",
		*crashCycles, totalReplies, totalMsgs, totalQueues, tornTails)
}

func lineWith(log, sub string) string {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// TestRestartKeepsState: after a clean stop (SIGTERM, the log flushed) and a
// restart on the same directory, queues, keys and stored messages are back
// with the same msgId, timestamp and order; a second server on the same
// directory is refused while the first runs.
func TestRestartKeepsState(t *testing.T) {
	for _, mode := range []string{"always", "never"} {
		t.Run(mode, func(t *testing.T) {
			ctx := testCtx(t)
			dir := t.TempDir()
			s := smptest.StartServerIn(t, dir, "--fsync", mode, "--key-type", "x25519")

			// A second server on the same data directory fails at once.
			out, code := smptest.RunServer(t, "start", "--data", dir, "--listen", "127.0.0.1:0")
			if code != 1 || !strings.Contains(out, "is locked by process") {
				t.Fatalf("second server: exit %d, output:\n%s", code, out)
			}

			c := dial(t, ctx, s)
			rk, sk := crashSigner(), crashSigner()
			rid, sid := newQueue(t, ctx, c, rk, true)
			send(t, c, smptest.Cmd(rk, "k", rid, codec.CmdKEY, sk.PublicSPKI(), nil))
			expect(t, ctx, c, ok("k", rid))
			var first smptest.Response
			for i := range 3 {
				corr := fmt.Sprint("s", i)
				send(t, c, smptest.Cmd(sk, corr, sid, codec.CmdSEND, nil, []byte(fmt.Sprint("body-", i))))
				for got := 0; got < 2 && !(i > 0 && got == 1); { // OK, and for the first SEND the push
					r := next(t, ctx, c)
					switch {
					case r.Cmd == codec.CmdOK && r.CorrID == corr:
						got++
					case r.Cmd == codec.CmdMSG && r.CorrID == "":
						first = r
						got++
					default:
						t.Fatalf("unexpected %v", r)
					}
				}
			}
			if string(first.Body) != "body-0" {
				t.Fatalf("first push %v", first)
			}
			c.Close()
			if code := s.Stop(); code != 0 {
				t.Fatalf("stop: exit %d", code)
			}
			if !strings.Contains(s.Stderr(), "store=disk") || !strings.Contains(s.Stderr(), "fsync="+mode) {
				t.Fatalf("the start-up line does not name the store and fsync mode:\n%s", s.Stderr())
			}

			s = smptest.StartServerIn(t, dir, "--fsync", mode)
			c = dial(t, ctx, s)
			send(t, c, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
			r := expectMSG(t, ctx, c, "sub", rid, []byte("body-0"))
			if !bytes.Equal(r.MsgID, first.MsgID) || r.Time != first.Time {
				t.Fatalf("after restart: msgId %x at %s, before %x at %s", r.MsgID, r.Time, first.MsgID, first.Time)
			}
			for i := 1; i < 3; i++ {
				send(t, c, smptest.Cmd(rk, "a", rid, codec.CmdACK, nil, nil))
				expectMSG(t, ctx, c, "a", rid, []byte(fmt.Sprint("body-", i)))
			}
			send(t, c, smptest.Cmd(rk, "a", rid, codec.CmdACK, nil, nil))
			expect(t, ctx, c, ok("a", rid))
			send(t, c, smptest.Cmd(nil, "u", sid, codec.CmdSEND, nil, []byte("unsigned")))
			expect(t, ctx, c, errResp("u", sid, codec.ErrAuth)) // still secured
		})
	}
}
