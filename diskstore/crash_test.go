package diskstore_test

// TestPowerCut: the engine on the disk store over crashfs, through cycles of
// commands cut short by a simulated power loss, each followed by a recovery
// that is checked against what the clients were told.

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/internal/vfs/crashfs"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/wal"
)

// Sizes of TestPowerCut: seeds × cycles power cuts, each followed by a
// checked recovery.
const (
	powerCutSeeds  = 12
	powerCutCycles = 5
	powerCutSteps  = 50  // workload steps per cycle, at most
	powerCutMaxOps = 120 // a cut "at any change" comes before change 1..powerCutMaxOps of a cycle
	cutBlock       = 16384
)

// TestPowerCut runs the engine on a disk store over crashfs through cycles
// of: recover what the last power cut left (sometimes cutting the power
// during that recovery too); check the state against what the clients were
// told; deliver and acknowledge every message of two queues in three (the
// others keep theirs, in the same body segments as the dead ones, for a
// later recovery to check); check that SPEC §8 holds after a compaction
// (nothing dead anywhere in the data directory, every live thing there); then
// NEW, KEY, SEND (bodies up to the block's largest, many over a page), ACK,
// DEL and compactions until the power is cut before a chosen file
// operation: any change; the log's fsync (after the body log's Sync, before
// the log's own fsync: bodies durable, records not); the log's group write;
// the body log's fsync, write or erasure. Each cycle picks an fsync mode, a
// compression and segment sizes.
//
// The relay must always start. A change is durable when its reply came in
// fsync mode always, or when a Compact returned after it in any mode; after
// recovery every durable SEND is delivered with its body, msgId and
// timestamp, every durable ACK and DEL stays applied, and every message
// delivered is one that was sent, with its exact body, in the order sent.
// A message whose body did not survive (its record did: mode interval or
// never, or a record written but not yet fsynced) is dropped by the engine
// as lost (store.ErrBodyLost), never delivered corrupt and never answered
// with ERR INTERNAL.
func TestPowerCut(t *testing.T) {
	seeds := powerCutSeeds
	if testing.Short() {
		seeds = 4
	}
	start := time.Now()
	var total cutTotals
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { total.add(runPowerCuts(t, seed)) })
	}
	t.Logf("%d power cuts (%d during recovery) and recoveries checked in %v; %d messages delivered after them, %d dropped as lost",
		total.cuts, total.recoveryCuts, time.Since(start).Round(time.Millisecond), total.delivered, total.lost)
	if !t.Failed() && total.delivered == 0 {
		t.Errorf("no message was delivered after any recovery: the checks above proved little")
	}
}

type cutTotals struct{ cuts, recoveryCuts, delivered, lost int }

func (c *cutTotals) add(o cutTotals) {
	c.cuts += o.cuts
	c.recoveryCuts += o.recoveryCuts
	c.delivered += o.delivered
	c.lost += o.lost
}

// cmsg is a message as its sender and recipient know it.
type cmsg struct {
	body         []byte
	sendAnswered bool   // OK came
	sendFailed   bool   // ERR came: never stored
	sendDurable  bool   // answered in mode always, or a Compact returned after the answer
	ackIssued    bool   // an ACK that may have deleted it was sent
	ackAnswered  bool   // and its answer came
	ackDurable   bool   // as sendDurable
	msgID        []byte // as delivered, once it was
	ts           string // its timestamp as delivered, once it was
	why          string // how sendDurable came to be set, for a failure
}

// cqueue is a queue as its clients know it. rid is nil until IDS came (or
// recovery found the queue by its recipient key).
type cqueue struct {
	queue
	newDurable             bool
	key                    *codec.Signer // KEY sent with it
	keyAnswered, keyDur    bool
	delIssued, delAnswered bool
	delDurable             bool
	msgs                   []*cmsg
}

// head is the message an ACK deletes: the oldest one stored, not yet
// acknowledged.
func (q *cqueue) head() *cmsg {
	for _, m := range q.msgs {
		if !m.sendFailed && !m.ackAnswered {
			return m
		}
	}
	return nil
}

// client is one connection whose replies may never come (the power was cut
// while the log held them): its calls wait for a wake-up or the cut.
type client struct {
	c    *sess
	wake chan struct{}
}

func newClient(t testing.TB, e *engine.Engine) *client {
	cl := &client{wake: make(chan struct{}, 1)}
	w := engine.NewWriter(e.BlockSize())
	cl.c = sessiontest.NewConn(t, e.BlockSize(), func(wake func()) *engine.Session {
		return e.NewSession(func() {
			wake()
			select {
			case cl.wake <- struct{}{}:
			default:
			}
		})
	}, w, &w.Send)
	return cl
}

// do sends txs (their corrIDs in corrs) in one block and returns the
// replies that came before the power was cut (all of them if it was not),
// handing every other transmission (pushed MSGs) to push.
func (cl *client) do(pc *crashfs.PowerCut, push func(resp), corrs []string, txs ...[]byte) map[string]resp {
	c := cl.c
	c.S.Process(sessiontest.Block(c.BlockSize, txs...), c.P, &c.Tr, c.W)
	got := map[string]resp{}
	for {
		for _, r := range c.Drain() {
			if r.CorrID == "" {
				push(r)
			} else {
				got[r.CorrID] = r
			}
		}
		if len(got) == len(corrs) {
			return got
		}
		select {
		case <-cl.wake:
		case <-pc.Off():
			for _, r := range c.Drain() {
				if r.CorrID == "" {
					push(r)
				} else {
					got[r.CorrID] = r
				}
			}
			return got
		}
	}
}

// cutRun is one seed's cycles.
type cutRun struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	cycle   int
	fsys    *crashfs.FS // what the last cut left
	opts    diskstore.Options
	clk     *sessiontest.Clock
	queues  []*cqueue // every queue NEW was sent for and not known gone
	dead    *traces   // what must not be on disk after a compaction
	corr    int
	totals  cutTotals
	cutWhat string   // where the last cut was armed, for failures
	logs    *ringLog // the stores' last log lines, shown on failure
}

// ringLog keeps the last lines the stores logged, for a failure to show
// (every cycle logs dozens; a passing run shows none).
type ringLog struct {
	mu    sync.Mutex
	lines []string
}

const ringLines = 60

func (l *ringLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.lines) == ringLines {
		l.lines = l.lines[1:]
	}
	l.lines = append(l.lines, strings.TrimSpace(string(p)))
	return len(p), nil
}

func (l *ringLog) dump(t testing.TB) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("the stores' last %d log lines:\n%s", len(l.lines), strings.Join(l.lines, "\n"))
}

func (l *ringLog) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

const cutData = "/data"

func runPowerCuts(t *testing.T, seed uint64) cutTotals {
	r := &cutRun{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0xd15c)), fsys: crashfs.New(),
		clk: sessiontest.NewClock(time.Unix(1764097639, 0), time.Second), dead: newTraces(), logs: &ringLog{}}
	for r.cycle = 0; r.cycle < powerCutCycles; r.cycle++ {
		r.pickOptions()
		if r.cycle > 0 && r.rng.IntN(4) == 0 {
			r.cutDuringRecovery()
		}
		r.runCycle()
		r.totals.cuts++
	}
	e, s, pc := r.recover(r.fsys, r.opts)
	r.check(e, s, pc, true)
	r.grep(e, s, pc)
	if err := s.Close(); err != nil {
		r.fatalf("Close after the last recovery: %v", err)
	}
	return r.totals
}

func (r *cutRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.logs.dump(r.t)
	o := r.opts.Log
	r.t.Fatalf("seed %d cycle %d (%s, %s, %d-byte segments, %d-byte body segments; cut %s): %s", r.seed, r.cycle,
		o.Sync, o.Compression, o.SegmentBytes, r.opts.BodySegmentBytes, r.cutWhat, fmt.Sprintf(format, args...))
}

func (r *cutRun) pickOptions() {
	modes := []wal.SyncMode{wal.SyncAlways, wal.SyncAlways, wal.SyncInterval, wal.SyncNever}
	r.opts = diskstore.Options{
		Log: wal.Options{
			Sync:            modes[r.rng.IntN(len(modes))],
			SyncInterval:    5 * time.Millisecond,
			SegmentBytes:    int64(16<<10 + r.rng.IntN(48<<10)),
			CompactMinBytes: 32 << 10,
			Compression:     []wal.Compression{wal.CompressS2, wal.CompressZstd, wal.CompressNone}[r.rng.IntN(3)],
		},
		BodySegmentBytes: int64(32<<10 + r.rng.IntN(128<<10)),
		CacheBytes:       []int64{0, 1 << 20}[r.rng.IntN(2)],
	}
}

// engineOptions are the engine's for every run: a clock of its own, no
// expiry, no rate limit on NEW.
func (r *cutRun) engineOptions(s store.Store) engine.Options {
	return engine.Options{BlockSize: cutBlock, Now: r.clk.Now, Store: s, Logger: r.logs.logger(),
		Limits: engine.Limits{NewQueuesPerMinute: 1 << 20, MaxQueues: -1, MaxStoredBytes: -1}}
}

// cutDuringRecovery opens what the last cut left and cuts the power again
// during the recovery (Load, the start-up compaction, Retain) or just after
// it: the next recovery's checks stay the same, since no command ran.
func (r *cutRun) cutDuringRecovery() {
	pc := crashfs.NewPowerCut(r.fsys, r.rng.Uint64())
	opts := r.opts
	opts.FS = crashfs.WithHook(r.fsys, pc.Hook)
	opts.Logger = r.logs.logger()
	pc.Arm("", "", 1+r.rng.IntN(40))
	s, err := diskstore.Open(cutData, opts)
	if err == nil {
		if _, err = engine.New(r.engineOptions(s)); err != nil && !pc.IsCut() {
			r.fatalf("starting before a cut during recovery: %v", err)
		}
	} else if !pc.IsCut() {
		r.fatalf("Open before a cut during recovery: %v", err)
	}
	r.fsys = pc.CutNow()
	if s != nil {
		_ = s.Close() // fails: the power is off
	}
	r.totals.recoveryCuts++
}

// recover opens the disk store over fsys and starts an engine on it: that
// must never fail.
func (r *cutRun) recover(fsys *crashfs.FS, opts diskstore.Options) (*engine.Engine, *diskstore.Store, *crashfs.PowerCut) {
	r.t.Helper()
	pc := crashfs.NewPowerCut(fsys, r.rng.Uint64())
	opts.FS = crashfs.WithHook(fsys, pc.Hook)
	opts.Logger = r.logs.logger()
	s, err := diskstore.Open(cutData, opts)
	if err != nil {
		r.fatalf("Open after the cut: %v", err)
	}
	e, err := engine.New(r.engineOptions(s))
	if err != nil {
		s.Close()
		r.fatalf("the relay does not start after the cut: %v", err)
	}
	return e, s, pc
}

// snapQueue is a queue as the engine's snapshot shows it.
type snapQueue struct {
	rid, sid []byte
	rk, sk   []byte // SPKIs
	msgs     int
}

func snapshotQueues(t testing.TB, e *engine.Engine) map[string]*snapQueue {
	out := map[string]*snapQueue{}
	err := e.Snapshot(func(rec *store.Record) error {
		switch rec.Kind {
		case store.QueueCreated:
			out[string(rec.RID[:])] = &snapQueue{rid: bytes.Clone(rec.RID[:]), sid: bytes.Clone(rec.SID[:]), rk: rec.RecipientKey.SPKI()}
		case store.QueueSecured:
			out[string(rec.RID[:])].sk = rec.SenderKey.SPKI()
		case store.MessageStored:
			out[string(rec.RID[:])].msgs++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// check compares the recovered state with what the clients were told, then
// delivers and acknowledges every message of most queues (all of them when
// all is set), leaving the model with the queues that exist, those empty.
func (r *cutRun) check(e *engine.Engine, s store.Store, pc *crashfs.PowerCut, all bool) {
	r.t.Helper()
	snap := snapshotQueues(r.t, e)
	// No two messages may share a body: deleting one would erase the other's.
	refs := map[store.BodyRef]int{}
	_ = e.Snapshot(func(rec *store.Record) error {
		if rec.Kind == store.MessageStored {
			refs[rec.Ref]++
		}
		return nil
	})
	for ref, n := range refs {
		if n > 1 {
			r.fatalf("%d messages replayed with ref %#x", n, uint64(ref))
		}
	}
	byKey := map[string]*snapQueue{}
	stored, undelivered := 0, 0 // messages in the queues drained, and in the others
	for _, sq := range snap {
		byKey[string(sq.rk)] = sq
	}
	lostBefore := e.Metrics().Lost
	rc := newClient(r.t, e)
	noPush := func(resp) {}
	var kept []*cqueue
	delivered := 0
	adopted := map[*snapQueue]bool{}
	for _, q := range r.queues {
		sq := byKey[string(q.rk.PublicSPKI())]
		switch {
		case sq == nil && q.newDurable && !q.delIssued:
			r.fatalf("queue %x (NEW durable, no DEL) is gone", q.rid)
		case sq != nil && q.delDurable:
			r.fatalf("queue %x came back after its DEL was durable", q.rid)
		case sq != nil && q.rid != nil && (!bytes.Equal(sq.rid, q.rid) || !bytes.Equal(sq.sid, q.sid)):
			r.fatalf("queue %x came back as %x", q.rid, sq.rid)
		case sq == nil:
			r.forget(q)
			continue
		}
		adopted[sq] = true
		q.rid, q.sid = sq.rid, sq.sid // a NEW whose IDS never came is known now
		switch {
		case q.keyDur && !bytes.Equal(sq.sk, q.key.PublicSPKI()):
			r.fatalf("queue %x lost the sender key of a durable KEY", q.rid)
		case sq.sk != nil && (q.key == nil || !bytes.Equal(sq.sk, q.key.PublicSPKI())):
			r.fatalf("queue %x is secured with a key no KEY sent", q.rid)
		case sq.sk != nil:
			q.sk = q.key
		default:
			q.sk, q.key, q.keyAnswered, q.keyDur = nil, nil, false, false
		}

		q.newDurable = true // Load made what it replayed durable
		q.delIssued, q.delAnswered, q.keyAnswered = false, false, q.sk != nil
		q.keyDur = q.sk != nil
		kept = append(kept, q)
		if !all && r.rng.IntN(3) == 0 {
			// Left as it is: its messages stay stored, beside those of the
			// queues drained below in the same segments, and are checked by
			// a later recovery. What was answered and not durable may or
			// may not have survived this one: a later Compact does not make
			// it durable.
			for _, m := range q.msgs {
				m.sendAnswered, m.ackAnswered = m.sendDurable, m.ackDurable
			}
			undelivered += sq.msgs
			continue
		}
		stored += sq.msgs

		// Deliver and acknowledge everything: each message one sent, in
		// the order sent, with its body, msgId and timestamp; every
		// durable one there.
		next := 0 // index in q.msgs after the last delivered
		take := func(m resp, what string) bool {
			r.t.Helper()
			switch {
			case m.Cmd == codec.CmdOK:
				return false
			case m.Cmd == codec.CmdERR:
				r.fatalf("%s of queue %x after recovery: ERR %v (a body the store cannot read is lost, not an error); the store says: %v",
					what, q.rid, m.Err, headError(e, s, q.rid))
			case m.Cmd != codec.CmdMSG:
				r.fatalf("%s of queue %x after recovery: %v", what, q.rid, m.Cmd)
			}
			i := slices.IndexFunc(q.msgs[next:], func(c *cmsg) bool { return bytes.Equal(c.body, m.Body) })
			if i < 0 {
				if slices.ContainsFunc(q.msgs, func(c *cmsg) bool { return bytes.Equal(c.body, m.Body) }) {
					r.fatalf("queue %x delivered a message again, or out of order, after recovery", q.rid)
				}
				r.fatalf("queue %x delivered a body of %d bytes that was never sent to it", q.rid, len(m.Body))
			}
			c := q.msgs[next+i]
			for _, skipped := range q.msgs[next : next+i] {
				if skipped.sendDurable && !skipped.ackIssued {
					r.fatalf("queue %x: a message whose SEND was durable (%d bytes) was not delivered after recovery (%s)", q.rid, len(skipped.body), skipped.why)
				}
			}
			switch {
			case c.sendFailed:
				r.fatalf("queue %x delivered a message whose SEND was refused", q.rid)
			case c.ackDurable:
				r.fatalf("queue %x delivered again a message whose ACK was durable", q.rid)
			case c.msgID != nil && (!bytes.Equal(c.msgID, m.MsgID) || c.ts != m.Time):
				r.fatalf("queue %x: a message delivered as %x at %s came back as %x at %s", q.rid, c.msgID, c.ts, m.MsgID, m.Time)
			}
			next += i + 1
			delivered++
			return true
		}
		res := rc.do(pc, noPush, []string{"sub"}, q.cmd("sub", codec.CmdSUB))
		for more := take(res["sub"], "SUB"); more; {
			res = rc.do(pc, noPush, []string{"ack"}, q.cmd("ack", codec.CmdACK))
			more = take(res["ack"], "ACK")
		}
		for _, m := range q.msgs[next:] {
			if m.sendDurable && !m.ackIssued {
				r.fatalf("queue %x: a message whose SEND was durable (%d bytes) was not delivered after recovery (%s)", q.rid, len(m.body), m.why)
			}
		}
		for _, m := range q.msgs {
			r.dead.addBody("a message delivered and acknowledged after recovery, or lost", m.body)
		}
		q.msgs = nil
	}
	for _, sq := range snap {
		if !adopted[sq] {
			r.fatalf("queue %x after recovery was never created", sq.rid)
		}
	}
	r.queues = kept
	lost := int(e.Metrics().Lost - lostBefore)
	if delivered+lost != stored || e.Stats().Messages != int64(undelivered) {
		r.fatalf("the engine loaded %d messages in the queues drained: %d delivered, %d counted lost; %d left, want the other queues' %d",
			stored, delivered, lost, e.Stats().Messages, undelivered)
	}
	r.totals.delivered += delivered
	r.totals.lost += lost
	rc.c.Close()
}

// forget drops a queue that recovery did not bring back: nothing of it may
// be on disk after the next compaction.
func (r *cutRun) forget(q *cqueue) {
	if q.rid != nil {
		r.dead.add(fmt.Sprintf("RID %x of a deleted queue", q.rid), q.rid)
		r.dead.add(fmt.Sprintf("SID %x of a deleted queue", q.sid), q.sid)
	}
	r.dead.add("recipient key of a deleted queue", q.rk.PublicSPKI())
	if q.key != nil {
		r.dead.add("sender key of a deleted queue", q.key.PublicSPKI())
	}
	for _, m := range q.msgs {
		r.dead.addBody("a message of a deleted queue", m.body)
	}
}

// grep sends a canary to each queue, compacts, and checks that the data
// directory holds nothing dead and each canary, queue ID and key.
func (r *cutRun) grep(e *engine.Engine, s *diskstore.Store, pc *crashfs.PowerCut) {
	r.t.Helper()
	sc := newClient(r.t, e)
	live := map[string][]byte{}
	for i, q := range r.queues {
		body := randBytes(r.rng, 64+r.rng.IntN(400))
		corr := fmt.Sprint("canary", i)
		if got := sc.do(pc, func(resp) {}, []string{corr}, q.sendTx(corr, body))[corr]; got.Cmd != codec.CmdOK {
			r.fatalf("SEND of a canary: %+v", got)
		}
		q.msgs = append(q.msgs, &cmsg{body: body, sendAnswered: true})
		live[fmt.Sprintf("canary %d", i)] = body
		live[fmt.Sprintf("RID %x", q.rid)] = q.rid
		live[fmt.Sprintf("SID %x", q.sid)] = q.sid
		live[fmt.Sprintf("recipient key of %x", q.rid)] = q.rk.PublicSPKI()
	}
	sc.c.Close()
	if err := s.Compact(); err != nil {
		r.fatalf("Compact after recovery: %v", err)
	}
	r.durable()
	d := readDisk(r.t, r.fsys, cutData)
	if what, path, off := r.dead.find(d); what != "" {
		var files []string
		for p, b := range d {
			files = append(files, fmt.Sprintf("%s (%d bytes)", p, len(b)))
		}
		slices.Sort(files)
		r.fatalf("after recovery and a compaction, %s is still on disk: in %s at offset %d\nfiles: %s\nbody log: %+v",
			what, path, off, strings.Join(files, ", "), s.BodyStats())
	}
	assertPresent(r.t, d, live)
}

// durable marks every change answered so far as durable: a Compact
// returned after it.
func (r *cutRun) durable() {
	for _, q := range r.queues {
		q.newDurable = q.newDurable || q.rid != nil
		q.keyDur = q.keyDur || q.keyAnswered
		q.delDurable = q.delDurable || q.delAnswered
		for _, m := range q.msgs {
			if !m.sendDurable && m.sendAnswered {
				m.why = fmt.Sprintf("compact in cycle %d", r.cycle)
			}
			m.sendDurable = m.sendDurable || m.sendAnswered
			m.ackDurable = m.ackDurable || m.ackAnswered
		}
	}
}

// runCycle recovers what the last cut left, checks it, greps, then runs
// commands until the power cut.
func (r *cutRun) runCycle() {
	e, s, pc := r.recover(r.fsys, r.opts)
	r.check(e, s, pc, false)
	r.grep(e, s, pc)
	r.armCut(pc)
	r.workload(e, s, pc)
	r.fsys = pc.CutNow()
	_ = s.Close() // fails once the power is off
}

// armCut picks where the power goes off.
func (r *cutRun) armCut(pc *crashfs.PowerCut) {
	type spec struct {
		op, suffix string
		n          int
	}
	specs := []spec{
		{"", "", powerCutMaxOps}, // any change
		{"Sync", ".wal", 12},     // the log's fsync: the body log's Sync came just before
		{"Write", ".wal", 12},    // the log's group write: the body log's Flush came just before
		{"Sync", ".body", 12},    // the body log's fsync
		{"Write", ".body", 12},   // a write of the body log's buffer
		{"WriteAt", ".body", 6},  // erasure (zeros; crashfs punches no holes)
		{"SyncDir", "bodies", 4}, // a body segment's creation or removal made durable
		{"Remove", ".body", 3},   // a body segment with nothing live
		{"Rename", ".snap", 2},   // a compaction's snapshot put in place
		{"Truncate", ".body", 2}, // Retain cutting a torn tail
		{"", "", powerCutMaxOps}, // any change, again: the most general
		{"Sync", ".wal", 12},     // and the ordering that matters most
	}
	sp := specs[r.rng.IntN(len(specs))]
	n := 1 + r.rng.IntN(sp.n)
	r.cutWhat = fmt.Sprintf("before %s #%d of %q", orElse(sp.op, "any change"), n, sp.suffix)
	pc.Arm(sp.op, sp.suffix, n)
}

func orElse(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// workload runs commands until the power is cut or the steps are done.
func (r *cutRun) workload(e *engine.Engine, s *diskstore.Store, pc *crashfs.PowerCut) {
	rc, sc := newClient(r.t, e), newClient(r.t, e)
	defer rc.c.Close()
	defer sc.c.Close()
	always := r.opts.Log.Sync == wal.SyncAlways
	push := func(m resp) { r.delivered(m) }
	// answered records a reply, or that it never came.
	answered := func(got resp, ok bool, what string) bool {
		r.t.Helper()
		if !ok {
			if !pc.IsCut() {
				r.fatalf("%s: no reply, and the power is on", what)
			}
			return false
		}
		if got.Cmd == codec.CmdERR && got.Err == codec.ErrInternal && !pc.IsCut() {
			r.fatalf("%s: ERR INTERNAL with the power on", what)
		}
		return true
	}
	maxBody := codec.MaxBody(cutBlock)
	size := func() int {
		switch k := r.rng.IntN(10); {
		case k < 4:
			return 16 + r.rng.IntN(300)
		case k < 7:
			return 300 + r.rng.IntN(3800)
		case k < 9:
			return 4097 + r.rng.IntN(5000) // over a page or two
		}
		return maxBody - r.rng.IntN(16)
	}
	live := func() []*cqueue {
		return slices.DeleteFunc(slices.Clone(r.queues), func(q *cqueue) bool { return q.rid == nil || q.delIssued })
	}
	for range powerCutSteps {
		if pc.IsCut() {
			return
		}
		qs := live()
		k := r.rng.IntN(100)
		switch {
		case len(qs) < 2 || k < 7: // NEW
			q := &cqueue{queue: queue{rk: freshEd(r.t)}}
			r.queues = append(r.queues, q)
			corr := r.nextCorr()
			got, ok := rc.do(pc, push, []string{corr}, smptest.Cmd(q.rk, corr, nil, codec.CmdNEW, q.rk.PublicSPKI(), nil))[corr]
			if !answered(got, ok, "NEW") {
				return
			}
			if got.Cmd == codec.CmdIDS {
				q.rid, q.sid = got.RID, got.SID
				q.newDurable = always
			}
		case k < 11: // KEY
			q := qs[r.rng.IntN(len(qs))]
			if q.key != nil {
				continue
			}
			q.key = freshEd(r.t)
			corr := r.nextCorr()
			got, ok := rc.do(pc, push, []string{corr}, smptest.Cmd(q.rk, corr, q.rid, codec.CmdKEY, q.key.PublicSPKI(), nil))[corr]
			if !answered(got, ok, "KEY") {
				return
			}
			if got.Cmd == codec.CmdOK {
				q.sk, q.keyAnswered, q.keyDur = q.key, true, always
			}
		case k < 62: // SEND: a burst of small ones in one block, or one
			q := qs[r.rng.IntN(len(qs))]
			var ms []*cmsg
			var corrs []string
			var txs [][]byte
			room := cutBlock - 64
			for n := 1 + r.rng.IntN(4); n > 0; n-- {
				body := randBytes(r.rng, size())
				corr := r.nextCorr()
				tx := q.sendTx(corr, body)
				if len(txs) > 0 && len(tx)+8 > room {
					break
				}
				room -= len(tx) + 8
				m := &cmsg{body: body}
				q.msgs = append(q.msgs, m)
				ms, corrs, txs = append(ms, m), append(corrs, corr), append(txs, tx)
			}
			got := sc.do(pc, push, corrs, txs...)
			for i, m := range ms {
				res, ok := got[corrs[i]]
				if !answered(res, ok, "SEND") {
					continue
				}
				if res.Cmd == codec.CmdOK {
					m.sendAnswered, m.sendDurable = true, always
					m.why = fmt.Sprintf("answered in cycle %d (always %v)", r.cycle, always)
				} else {
					m.sendFailed = true
				}
			}
		case k < 88: // ACK
			q := qs[r.rng.IntN(len(qs))]
			h := q.head()
			if h == nil {
				continue
			}
			corr := r.nextCorr()
			wasIssued := h.ackIssued // an ACK before the last cut may have deleted it already
			h.ackIssued = true
			got, ok := rc.do(pc, push, []string{corr}, q.cmd(corr, codec.CmdACK))[corr]
			if !answered(got, ok, "ACK") {
				return
			}
			switch got.Cmd {
			case codec.CmdMSG:
				r.delivered(got)
				fallthrough
			case codec.CmdOK:
				h.ackAnswered, h.ackDurable = true, always
			default:
				h.ackIssued = wasIssued // nothing was delivered: this ACK deleted nothing
			}
		case k < 92: // DEL
			q := qs[r.rng.IntN(len(qs))]
			corr := r.nextCorr()
			q.delIssued = true
			got, ok := rc.do(pc, push, []string{corr}, q.cmd(corr, codec.CmdDEL))[corr]
			if !answered(got, ok, "DEL") {
				return
			}
			if got.Cmd == codec.CmdOK {
				q.delAnswered, q.delDurable = true, always
			}
		default: // a compaction: everything answered before it is durable once it returns
			if err := s.Compact(); err != nil {
				if !pc.IsCut() {
					r.fatalf("Compact: %v", err)
				}
				return
			}
			r.durable()
		}
	}
}

// delivered records the msgId and timestamp a message was delivered with.
func (r *cutRun) delivered(m resp) {
	if m.Cmd != codec.CmdMSG {
		return
	}
	for _, q := range r.queues {
		if !bytes.Equal(q.rid, m.QueueID) {
			continue
		}
		for _, c := range q.msgs {
			if bytes.Equal(c.body, m.Body) && c.msgID == nil {
				c.msgID, c.ts = m.MsgID, m.Time
			}
		}
	}
}

func (r *cutRun) nextCorr() string {
	r.corr++
	return fmt.Sprint(r.corr)
}

// headError reads the messages of queue rid the way the engine does, for
// a failure to say why the store could not.
func headError(e *engine.Engine, s store.Store, rid []byte) error {
	var err error
	_ = e.Snapshot(func(rec *store.Record) error {
		if err != nil || rec.Kind != store.MessageStored || !bytes.Equal(rec.RID[:], rid) {
			return nil
		}
		_, err = s.ReadBody(rec.RID, rec.MsgID, rec.Ref, nil)
		if errors.Is(err, store.ErrBodyLost) {
			err = nil // the engine drops those
		}
		return nil
	})
	return err
}

// loseDir is a power cut that keeps every page written and every directory
// operation, except those of the directories named: what the log wrote
// survives, the creation of a body segment does not.
type loseDir []string

func (o loseDir) DirOps(dir string, n int) int {
	if slices.Contains(o, dir) {
		return 0
	}
	return n
}

func (loseDir) Size(_ string, _, current int64) int64 { return current }
func (loseDir) Page(string, int64) bool               { return true }

// TestPowerCutBeforeABodySegmentIsDurable: the body log starts a segment
// for a SEND's body; the power goes before the body log's directory fsync,
// and the crash keeps everything written but that segment's directory
// entry. Had the log written its group naming the body before that fsync,
// the next run would give the lost segment's number to its own first new
// segment, the replayed message's ref would name another message's body,
// and deleting the replayed message (its body lost) would erase that body:
// here the body of a later SEND answered in fsync mode always, which must
// survive a compaction and a restart.
func TestPowerCutBeforeABodySegmentIsDurable(t *testing.T) {
	fsys := crashfs.New()
	logs := &ringLog{}
	rng := rand.New(rand.NewPCG(1, 2))
	clk := sessiontest.NewClock(time.Unix(1764097639, 0), time.Second)
	// A body segment holds one 3000-byte body: each SEND starts one.
	opts := diskstore.Options{Log: wal.Options{Sync: wal.SyncAlways}, BodySegmentBytes: 4096, Logger: logs.logger()}
	start := func(fsys *crashfs.FS, pc *crashfs.PowerCut) (*engine.Engine, *diskstore.Store) {
		t.Helper()
		return startOnCut(t, fsys, pc, opts, clk, logs)
	}
	pc := crashfs.NewPowerCut(fsys, 0)
	pc.SetOutcome(loseDir{"/data/bodies"})
	e, s := start(fsys, pc)
	r, snd := newSess(t, e), newSess(t, e)
	q := newQueue(t, r, freshEd(t), "n")
	m0, m1, m2 := randBytes(rng, 3000), randBytes(rng, 3000), randBytes(rng, 3000)
	q.send(t, snd, "s0", m0)
	pc.Arm("SyncDir", "bodies", 1)
	cl := newClient(t, e)
	if got := cl.do(pc, func(resp) {}, []string{"s1"}, q.sendTx("s1", m1)); len(got) != 0 {
		t.Fatalf("SEND answered before the cut: %+v", got)
	}
	_ = s.Close()
	cut := pc.CutNow()

	// Whether the second message's record was written before the cut (and
	// kept by it) depends on the store's order of writes: with the body
	// log's directory fsynced before any record names its new segment, it
	// was not. Either way the third message must survive.
	e, s = start(cut, crashfs.NewPowerCut(cut, 0))
	t.Logf("the recovery replayed %d of the 2 messages sent", e.Stats().Messages)
	r, snd = newSess(t, e), newSess(t, e)
	q.send(t, snd, "s2", m2) // answered: durable
	m := wantCmd(t, r.Call("sub", q.cmd("sub", codec.CmdSUB)), codec.CmdMSG)
	if !bytes.Equal(m.Body, m0) {
		t.Fatal("SUB after the recovery delivered another body than the first message's")
	}
	// The second message is not there, or its body is lost and it is
	// dropped: the third comes next.
	if m := wantCmd(t, r.Call("ack", q.cmd("ack", codec.CmdACK)), codec.CmdMSG); !bytes.Equal(m.Body, m2) {
		t.Fatalf("ACK after the recovery delivered a body of %d bytes that is not the third message's", len(m.Body))
	}
	if err := s.Compact(); err != nil { // erases the lost message's body
		t.Fatal(err)
	}
	r.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e, s = start(cut, crashfs.NewPowerCut(cut, 0))
	defer s.Close()
	r = newSess(t, e)
	if m := r.Call("sub", q.cmd("sub", codec.CmdSUB)); m.Cmd != codec.CmdMSG || !bytes.Equal(m.Body, m2) {
		logs.dump(t)
		t.Fatalf("after a compaction and a restart the third message, whose SEND was answered, is gone: SUB got %v (%d lost)",
			m.Cmd, e.Metrics().Lost)
	}
}

// loseBodies is a power cut that keeps everything the log wrote and every
// directory operation, and of the body log's un-synced pages only those the
// set names.
type loseBodies map[int64]bool

func (loseBodies) DirOps(_ string, n int) int            { return n }
func (loseBodies) Size(_ string, _, current int64) int64 { return current }
func (o loseBodies) Page(name string, page int64) bool {
	return !strings.HasSuffix(name, ".body") || o[page]
}

// TestLostBodiesAreDropped: in fsync modes interval and never a power cut
// may keep the log's records of answered SENDs and lose their bodies. The
// relay starts; the engine drops those messages as lost (store.ErrBodyLost,
// counted), never answers ERR INTERNAL for them and never delivers a body
// other than the one sent; the queue goes on; and after a compaction
// nothing of the lost bodies is on disk. The cut comes at the body log's
// first fsync, when the log has written every record, and keeps of the
// body segment either its first page (the header, a whole body, and the
// record header of a body that goes on into the next page) or nothing.
func TestLostBodiesAreDropped(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode wal.SyncMode
		keep loseBodies
	}{
		{"interval-first-page-kept", wal.SyncInterval, loseBodies{0: true}},
		{"never-first-page-kept", wal.SyncNever, loseBodies{0: true}},
		{"never-nothing-kept", wal.SyncNever, loseBodies{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs := &ringLog{}
			rng := rand.New(rand.NewPCG(uint64(tc.mode), uint64(len(tc.keep))))
			clk := sessiontest.NewClock(time.Unix(1764097639, 0), time.Second)
			// An interval no test waits for: nothing is fsynced but by a
			// compaction.
			opts := diskstore.Options{Log: wal.Options{Sync: tc.mode, SyncInterval: time.Hour}, Logger: logs.logger()}
			start := func(fsys *crashfs.FS, pc *crashfs.PowerCut) (*engine.Engine, *diskstore.Store) {
				t.Helper()
				return startOnCut(t, fsys, pc, opts, clk, logs)
			}
			fsys := crashfs.New()
			pc := crashfs.NewPowerCut(fsys, 0)
			pc.SetOutcome(tc.keep)
			e, s := start(fsys, pc)
			r, snd := newSess(t, e), newSess(t, e)
			q := newQueue(t, r, freshEd(t), "n")
			// kept fills the first page but for 32 bytes; then a body whose
			// record header is on the first page, its body on the next; then
			// two on later pages.
			kept := randBytes(rng, crashfs.PageSize-3*32-32)
			lost := [][]byte{randBytes(rng, 300), randBytes(rng, 9000), randBytes(rng, 40)}
			for i, b := range append([][]byte{kept}, lost...) {
				q.send(t, snd, fmt.Sprint("s", i), b)
			}
			pc.Arm("Sync", ".body", 1)
			if err := s.Compact(); err == nil {
				t.Fatal("Compact succeeded through the power cut")
			}
			_ = s.Close()
			cut := pc.CutNow()

			e, s = start(cut, crashfs.NewPowerCut(cut, 0))
			defer s.Close()
			if n := e.Stats().Messages; n != 4 {
				t.Fatalf("the recovery replayed %d messages, want the 4 whose records the log wrote", n)
			}
			r, snd = newSess(t, e), newSess(t, e)
			m := r.Call("sub", q.cmd("sub", codec.CmdSUB))
			if len(tc.keep) > 0 {
				if m.Cmd != codec.CmdMSG || !bytes.Equal(m.Body, kept) {
					logs.dump(t)
					t.Fatalf("SUB after the cut: %v (ERR %v), want the message whose body survived", m.Cmd, m.Err)
				}
				m = r.Call("ack", q.cmd("ack", codec.CmdACK))
			}
			if m.Cmd != codec.CmdOK {
				logs.dump(t)
				t.Fatalf("after the cut the queue answers %v (ERR %v), want OK: the lost messages dropped", m.Cmd, m.Err)
			}
			if got, want := e.Metrics().Lost, uint64(4-len(tc.keep)); got != want {
				t.Fatalf("%d messages counted lost, want %d", got, want)
			}
			next := randBytes(rng, 500)
			q.send(t, snd, "next", next)
			if m := wantCmd(t, r.Call("sub2", q.cmd("sub2", codec.CmdSUB)), codec.CmdMSG); !bytes.Equal(m.Body, next) {
				t.Fatal("the queue does not go on with the next message")
			}
			if err := s.Compact(); err != nil {
				t.Fatal(err)
			}
			dead := newTraces()
			for i, b := range lost {
				dead.addBody(fmt.Sprintf("lost body %d", i), b)
			}
			dead.addBody("the acknowledged body", kept)
			d := readDisk(t, cut, cutData)
			assertGone(t, d, dead)
			assertPresent(t, d, map[string][]byte{"the next body": next})
		})
	}
}

// startOnCut opens the disk store on fsys (what a cut left, or the running
// filesystem) with pc's hook, and an engine on it, as a restart of the
// relay would; it fails the test, with the stores' log lines, when the relay
// would not start.
func startOnCut(t *testing.T, fsys *crashfs.FS, pc *crashfs.PowerCut, opts diskstore.Options, clk *sessiontest.Clock, logs *ringLog) (*engine.Engine, *diskstore.Store) {
	t.Helper()
	opts.FS = crashfs.WithHook(fsys, pc.Hook)
	s, err := diskstore.Open(cutData, opts)
	if err != nil {
		logs.dump(t)
		t.Fatalf("the store does not open: %v", err)
	}
	e, err := engine.New(engine.Options{BlockSize: cutBlock, Now: clk.Now, Store: s, Logger: logs.logger()})
	if err != nil {
		logs.dump(t)
		t.Fatalf("the relay does not start: %v", err)
	}
	return e, s
}
