package wal

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/internal/vfs/crashfs"
	"github.com/smprelay/smprelay/store"
)

// Sizes of TestPowerCut: seeds × cycles power cuts, each followed by a
// recovery that is checked.
const (
	powerCutSeeds  = 24
	powerCutCycles = 6
	powerCutSteps  = 60  // bursts of appends per cycle, at most
	powerCutMaxOps = 160 // the cut comes before change 1..powerCutMaxOps of a cycle, or at its end
)

// TestPowerCut runs a log over crashfs through cycles of: recover what the
// last power cut left (sometimes cutting the power during that recovery
// too), check it, then append with the power cut before a random file
// operation (a write whose fsync never came, a rename whose directory was not
// synced, a compaction half done, …). Each cycle picks an fsync mode, a
// compression and a segment size. Recovery must never fail (the relay always
// starts), must replay every record the log had reported durable, nothing
// that was never appended, and a state that is the one after some prefix of
// the appended records: no hole, no reordering.
func TestPowerCut(t *testing.T) {
	seeds := powerCutSeeds
	if testing.Short() {
		seeds = 8
	}
	start := time.Now()
	cuts := 0
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { cuts += runPowerCuts(t, seed) })
	}
	t.Logf("%d power cuts and recoveries checked in %v", cuts, time.Since(start).Round(time.Millisecond))
}

// walCut is TestPowerCut's power cut: a crashfs.PowerCut that also reads,
// at the cut, what the log had reported durable, and tells the test
// goroutine when the writer is about to write a segment. Operations come
// from the test goroutine, the writer and the compaction goroutine.
type walCut struct {
	*crashfs.PowerCut
	answered uint64        // log.Durable() just before the cut: what had been reported durable; read after CutNow
	writes   chan struct{} // capacity 1: a write to a segment is about to happen
}

func newWALCut(fsys *crashfs.FS, seed uint64) *walCut {
	return &walCut{PowerCut: crashfs.NewPowerCut(fsys, seed), writes: make(chan struct{}, 1)}
}

// arm cuts the power before the n-th change from now (of kind only, if
// set), reading l.Durable then if l is not nil: whatever it reported had
// been fsynced before, so the crash must keep it.
func (pc *walCut) arm(l *Log, n int, only string) {
	if l != nil {
		pc.OnCut(func() { pc.answered = l.Durable() })
	}
	pc.Arm(only, "", n)
}

// hook signals writes, then counts the operation towards the cut.
func (pc *walCut) hook(op, name string) error {
	if op == "Write" && strings.HasSuffix(name, segmentExt) {
		select {
		case pc.writes <- struct{}{}:
		default:
		}
	}
	return pc.Hook(op, name)
}

// cutRun is one seed's sequence of cycles.
type cutRun struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	cycle int
	fsys  *crashfs.FS // what the last cut left
	opts  Options     // of the cycle that was cut

	// What the last cycle's checks need.
	start    *model             // the state its appends started from
	base     uint64             // the LSN before its first append
	recs     []store.Record     // what it appended, in LSN order
	answered int                // how many of recs the log had reported durable at the cut
	ever     map[[32]byte]bool  // every record appended by any cycle, by recordKey
	crcs     map[[8]byte]uint32 // checksum of every body appended, by message ID
	live     [][16]byte         // queues of the live model, for the workload
	tick     int64
	scratch  []byte        // for recordKey
	notifier *chanNotifier // of every Append
}

const powerCutDir = "/data/wal"

func runPowerCuts(t *testing.T, seed uint64) int {
	r := &cutRun{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, 0x5eed)), fsys: crashfs.New(),
		start: newModel(), ever: map[[32]byte]bool{}, crcs: map[[8]byte]uint32{}, notifier: newChanNotifier()}
	cuts := 0
	for r.cycle = 0; r.cycle < powerCutCycles; r.cycle++ {
		r.pickOptions()
		if r.cycle > 0 && r.rng.IntN(4) == 0 {
			r.cutDuringRecovery()
			cuts++
		}
		r.runCycle()
		cuts++
	}
	l, _ := r.recover(r.fsys)
	if err := l.Close(); err != nil {
		r.fatalf("Close after the last recovery: %v", err)
	}
	return cuts
}

func (r *cutRun) fatalf(format string, args ...any) {
	r.t.Helper()
	r.t.Fatalf("seed %d cycle %d (%s, %s, %d-byte segments): %s", r.seed, r.cycle, r.opts.Sync, r.opts.Compression,
		r.opts.SegmentBytes, fmt.Sprintf(format, args...))
}

func (r *cutRun) pickOptions() {
	modes := []SyncMode{SyncAlways, SyncAlways, SyncInterval, SyncNever}
	r.opts = Options{
		Sync:            modes[r.rng.IntN(len(modes))],
		SyncInterval:    20 * time.Millisecond,
		SegmentBytes:    int64(16<<10 + r.rng.IntN(48<<10)),
		CompactMinBytes: 32 << 10,
		Compression:     []Compression{CompressS2, CompressZstd, CompressNone}[r.rng.IntN(3)],
	}
}

// cutDuringRecovery opens what the last cut left and cuts the power again
// during Load (or just after it): the checks of the next recovery stay the
// same, since nothing was appended.
func (r *cutRun) cutDuringRecovery() {
	pc := newWALCut(r.fsys, r.rng.Uint64())
	opts := r.opts
	opts.FS = crashfs.WithHook(r.fsys, pc.hook)
	l, err := Open(powerCutDir, opts)
	if err != nil {
		r.fatalf("Open before a cut during recovery: %v", err)
	}
	pc.arm(nil, 1+r.rng.IntN(8), "")
	if err := l.Load(newModel().apply); err != nil && !pc.IsCut() {
		r.fatalf("Load before a cut during recovery: %v", err)
	}
	r.fsys = pc.CutNow()
	_ = l.Close() // fails: the power is off
}

// recover opens and loads, over fsys, the log that the last cut left and
// checks what it replayed; it returns the log and the model it replayed
// into.
func (r *cutRun) recover(fsys vfs.FS) (*Log, *model) {
	r.t.Helper()
	opts := r.opts
	opts.FS = fsys
	l, err := Open(powerCutDir, opts)
	if err != nil {
		r.fatalf("Open after the cut: %v", err)
	}
	m := newModel()
	unknown := 0
	var scratch []byte
	err = l.Load(func(rec *store.Record) error {
		if !r.ever[recordKey(rec, &scratch)] {
			unknown++
		}
		return m.apply(rec)
	})
	if err != nil {
		l.Close()
		r.fatalf("recovery failed: %v", err)
	}
	if unknown > 0 {
		r.fatalf("replayed %d records never appended", unknown)
	}
	// Load made everything it replayed durable, up to the last LSN it
	// replayed: that names the prefix whose state it must have rebuilt.
	k := int(l.Durable() - r.base)
	if l.Durable() < r.base || k < r.answered || k > len(r.recs) {
		r.fatalf("replay ended at LSN %d; the cycle appended LSNs %d..%d and the log had reported up to %d durable",
			l.Durable(), r.base+1, r.base+uint64(len(r.recs)), r.base+uint64(r.answered))
	}
	want := r.start.clone()
	for i := range r.recs[:k] {
		_ = want.apply(&r.recs[i])
	}
	if got := digest(m, nil); got != digest(want, r.crcs) {
		r.fatalf("the replayed state is not the one after the %d records up to LSN %d", k, l.Durable())
	}
	r.live = slices.SortedFunc(maps.Keys(m.queues), func(a, b [16]byte) int { return strings.Compare(string(a[:]), string(b[:])) })
	return l, m
}

// runCycle recovers, checks, then appends until the power cut.
func (r *cutRun) runCycle() {
	pc := newWALCut(r.fsys, r.rng.Uint64())
	l, m := r.recover(crashfs.WithHook(r.fsys, pc.hook))
	base := l.Durable() // appends follow the last LSN replayed
	r.start, r.base, r.recs = m.clone(), base, r.recs[:0]
	if r.rng.IntN(2) == 0 {
		pc.arm(l, 1+r.rng.IntN(powerCutMaxOps), "")
	} else { // before an fsync: a write whose fsync never came
		pc.arm(l, 1+r.rng.IntN(powerCutMaxOps/4), "Sync")
	}
	snapRng := rand.New(rand.NewPCG(r.rng.Uint64(), 0x5a))
	busy := busySnap{m, func() {
		for range snapRng.IntN(4) {
			if _, _, err := r.appendOne(l, m, snapRng, 0); err != nil {
				return // the power is off (an Append that fails otherwise fails the test goroutine's too)
			}
		}
	}}
	if err := l.Attach(busy); err != nil && !pc.IsCut() {
		r.fatalf("Attach: %v", err)
	}
	if !pc.IsCut() {
		r.append(l, m, pc)
	}
	r.fsys = pc.CutNow()
	_ = l.Close() // fails once the power is off
	r.answered = int(max(pc.answered, base) - base)
	if r.answered > len(r.recs) {
		r.fatalf("the log reported LSN %d durable; only %d were appended after %d", pc.answered, len(r.recs), base)
	}
}

// append runs bursts of appends, as the engine makes them (appended and
// applied under the model's lock), until the power is cut or the cycle's
// steps are done. After most bursts it waits for the writer to write a
// group, so that the tail holds many groups, not one that took everything;
// in mode always it often waits for its last record to be durable, as a
// client waits for its reply; now and then it compacts.
func (r *cutRun) append(l *Log, m *model, pc *walCut) {
	n := r.notifier
	for range powerCutSteps {
		burst, big := 1+r.rng.IntN(8), 0
		if r.rng.IntN(50) == 0 {
			burst, big = 24, 16<<10 // more than one batch frame in a group
		}
		select {
		case <-pc.writes: // an earlier group's: not the signal awaited below
		default:
		}
		var last uint64
		appended := false
		for range burst {
			lsn, ok, err := r.appendOne(l, m, r.rng, big)
			if err != nil {
				if !pc.IsCut() {
					r.fatalf("Append: %v", err)
				}
				return
			}
			if ok {
				last, appended = lsn, true
			}
		}
		if appended && r.rng.IntN(4) > 0 {
			// The writer had these records or will take them (Append
			// kicked it): a write follows.
			select {
			case <-pc.writes:
			case <-pc.Off():
				return
			}
		}
		switch {
		case r.opts.Sync == SyncAlways && last != 0 && r.rng.IntN(3) > 0:
			for l.Durable() < last {
				select {
				case <-n.c:
				case <-pc.Off():
					return
				}
			}
		case r.rng.IntN(40) == 0:
			if err := l.Compact(); err != nil && !pc.IsCut() {
				r.fatalf("Compact: %v", err)
			}
		}
		if pc.IsCut() {
			return
		}
	}
}

// appendOne appends a record made from rng's choices to l and applies it to
// m, under m's lock as the engine does, and keeps what the checks need. It
// reports false when it found nothing to append.
func (r *cutRun) appendOne(l *Log, m *model, rng *rand.Rand, big int) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	rec, ok := r.next(m, rng, big)
	if !ok {
		return 0, false, nil
	}
	lsn, _, err := l.Append(rec, r.notifier)
	if err != nil {
		return 0, false, err
	}
	_ = m.apply(&rec)
	r.recs = append(r.recs, rec)
	r.ever[recordKey(&rec, &r.scratch)] = true
	if rec.Kind == store.MessageStored {
		r.crcs[rec.MsgID] = crc32.ChecksumIEEE(rec.Body)
	}
	r.track(&rec)
	return lsn, true, nil
}

// busySnap is the Snapshotter of a cycle: a snapshot starts with a few
// appends, as the engine's event loops keep appending while one runs, so
// that it shows records that may not be fsynced yet (the fuzzy snapshot of
// compaction step 2). It runs on whichever goroutine compacts.
type busySnap struct {
	*model
	during func()
}

func (b busySnap) Snapshot(emit func(*store.Record) error) error {
	b.during()
	return b.model.Snapshot(emit)
}

// next makes a record that is valid against m (m.mu held) from rng's
// choices: any kind, with bodies of up to big bytes when big is set.
func (r *cutRun) next(m *model, rng *rand.Rand, big int) (store.Record, bool) {
	r.tick++
	id := func() (b [16]byte) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	pick := func() [16]byte { return r.live[rng.IntN(len(r.live))] }
	k := rng.IntN(100)
	if big > 0 && len(r.live) > 0 {
		k = 50
	}
	switch {
	case len(r.live) == 0 || k < 10:
		return store.Record{Kind: store.QueueCreated, RID: id(), SID: id(), RecipientKey: edKey(r.t, rng.IntN(4))}, true
	case k < 15:
		return store.Record{Kind: store.QueueSecured, RID: pick(), SenderKey: edKey(r.t, rng.IntN(4))}, true
	case k < 18:
		return store.Record{Kind: store.QueueSuspended, RID: pick(), Time: r.tick}, true
	case k < 22:
		return store.Record{Kind: store.QueueDeleted, RID: pick()}, true
	case k < 60:
		size := rng.IntN(300)
		if big > 0 {
			size = big/2 + rng.IntN(big/2)
		} else if rng.IntN(4) == 0 {
			size = rng.IntN(6000) // over a page boundary or two
		}
		body := make([]byte, size) // incompressible, so that groups span pages
		var seed [32]byte
		binary.LittleEndian.PutUint64(seed[:], rng.Uint64())
		_, _ = rand.NewChaCha8(seed).Read(body)
		var msgID [8]byte
		rid := id()
		copy(msgID[:], rid[:8])
		return store.Record{Kind: store.MessageStored, RID: pick(), MsgID: msgID, Time: r.tick, Size: len(body), Body: body}, true
	}
	rid := pick()
	q := m.queues[rid]
	if q == nil || len(q.msgs) == 0 {
		return store.Record{}, false
	}
	return store.Record{Kind: store.MessageDeleted, RID: rid, MsgID: q.msgs[rng.IntN(len(q.msgs))].id}, true
}

// track keeps r.live in step with an appended record.
func (r *cutRun) track(rec *store.Record) {
	switch rec.Kind {
	case store.QueueCreated:
		r.live = append(r.live, rec.RID)
	case store.QueueDeleted:
		r.live = slices.DeleteFunc(r.live, func(id [16]byte) bool { return id == rec.RID })
	}
}

// clone copies the model's state.
func (m *model) clone() *model {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := newModel()
	for id, q := range m.queues {
		cq := *q
		cq.msgs = slices.Clone(q.msgs)
		c.queues[id] = &cq
	}
	return c
}

// recordKey identifies a record by its encoding; scratch is reused.
func recordKey(rec *store.Record, scratch *[]byte) [32]byte {
	*scratch = appendRecord((*scratch)[:0], rec)
	return sha256.Sum256(*scratch)
}

// digest renders the state canonically, as dump does, with bodies reduced
// to their length and checksum, taken from crcs when it has them.
func digest(m *model, crcs map[[8]byte]uint32) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	lines := make([]string, 0, len(m.queues))
	for _, q := range m.queues {
		var b strings.Builder
		fmt.Fprintf(&b, "%x %x %x", q.rid, q.sid, q.rk.SPKI())
		if q.sk != nil {
			fmt.Fprintf(&b, " sk %x", q.sk.SPKI())
		}
		if q.suspended {
			fmt.Fprintf(&b, " suspended@%d", q.susAt)
		}
		for _, msg := range q.msgs {
			sum, ok := crcs[msg.id]
			if !ok {
				sum = crc32.ChecksumIEEE(msg.body)
			}
			fmt.Fprintf(&b, " [%x@%d %d/%08x]", msg.id, msg.ts, len(msg.body), sum)
		}
		lines = append(lines, b.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}
