package diskstore_test

// SPEC §8: after compaction no acknowledged or deleted body, and no deleted
// queue, is anywhere in the data directory — neither in the body log's
// segments nor in the write-ahead log's files, compressed or not.

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/enginetest"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/wal"
)

func TestCompactionLeavesNothingDeleted(t *testing.T) {
	for i, tc := range []struct {
		mode wal.SyncMode
		comp wal.Compression
	}{
		{wal.SyncAlways, wal.CompressS2},
		{wal.SyncAlways, wal.CompressZstd},
		{wal.SyncInterval, wal.CompressNone},
		{wal.SyncNever, wal.CompressS2},
	} {
		t.Run(fmt.Sprintf("%s-%s", tc.mode, tc.comp), func(t *testing.T) {
			testCompactionLeavesNothingDeleted(t, tc.mode, tc.comp, uint64(i))
		})
	}
}

// storedMessages returns, for each message the engine stores, its body
// (read back from the store when it keeps it) and its queue's RID followed by its msgID: the
// 24 bytes both logs write side by side, in a body record's header and in
// the log's message records.
func storedMessages(t testing.TB, e *engine.Engine, s store.Store) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := e.Snapshot(func(r *store.Record) error {
		if r.Kind != store.MessageStored {
			return nil
		}
		body := r.Body
		if r.Ref != 0 {
			b, err := s.ReadBody(r.RID, r.MsgID, r.Ref, nil)
			if err != nil {
				return err
			}
			body = b
		}
		out[string(body)] = append(r.RID[:len(r.RID):len(r.RID)], r.MsgID[:]...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testCompactionLeavesNothingDeleted(t *testing.T, mode wal.SyncMode, comp wal.Compression, seed uint64) {
	data := t.TempDir()
	rng := rand.New(rand.NewPCG(seed, 8))
	clk := fixedClock()
	// Small body segments, so that some of them hold only dead bodies and
	// must go whole, and others hold both.
	opts := diskstore.Options{Log: wal.Options{Sync: mode, Compression: comp}, CacheBytes: 1 << 20, BodySegmentBytes: 128 << 10}
	eopts := engine.Options{BlockSize: bigBlock, Now: clk.Now,
		Limits: engine.Limits{MessageTTL: 24 * time.Hour, SuspendedTTL: 24 * time.Hour}}
	e, s := startEngine(t, data, opts, eopts)
	r, snd := newSess(t, e), newSess(t, e)
	maxBody := codec.MaxBody(bigBlock)
	size := func() int {
		switch rng.IntN(4) {
		case 0:
			return maxBody
		case 1:
			return 16 + rng.IntN(200)
		}
		return 16 + rng.IntN(maxBody-16)
	}
	sendN := func(q *queue, n int, tag string) [][]byte {
		var out [][]byte
		for i := range n {
			b := randBytes(rng, size())
			q.send(t, snd, fmt.Sprint(tag, i), b)
			out = append(out, b)
		}
		return out
	}

	// Every key is fresh, so that it can be looked for.
	keep := newQueue(t, r, freshEd(t), "nkeep")
	keep.secure(t, r, freshEd(t), "kkeep")
	plain := newQueue(t, r, freshEd(t), "nplain")
	gone := newQueue(t, r, freshEd(t), "ngone")
	gone.secure(t, r, freshEd(t), "kgone")
	susp := newQueue(t, r, freshEd(t), "nsusp")

	// Two days before the rest: plain's first messages, which expire, and
	// susp's, whose queue is suspended and expires with them.
	plainOld := sendN(plain, 4, "p")
	suspBodies := sendN(susp, 3, "s")
	wantCmd(t, r.Call("offsusp", susp.cmd("offsusp", codec.CmdOFF)), codec.CmdOK)
	clk.Advance(48 * time.Hour)
	keepBodies := sendN(keep, 12, "k")
	goneBodies := sendN(gone, 6, "g")
	plainNew := sendN(plain, 3, "q")

	// Everything is on disk now (a compaction writes and fsyncs all of it),
	// so the grep below can find what it looks for.
	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	ids := storedMessages(t, e, s)
	if len(ids) != 4+3+12+6+3 {
		t.Fatalf("the engine stores %d messages, want 28", len(ids))
	}
	onDisk := map[string][]byte{}
	all := [][][]byte{plainOld, suspBodies, keepBodies, goneBodies, plainNew}
	for i, bodies := range all {
		for j, b := range bodies {
			onDisk[fmt.Sprintf("body %d of group %d", j, i)] = b
		}
	}
	for _, q := range []*queue{keep, plain, gone, susp} {
		onDisk[fmt.Sprintf("RID %x", q.rid)] = q.rid
		onDisk[fmt.Sprintf("SID %x", q.sid)] = q.sid
		onDisk[fmt.Sprintf("recipient key of %x", q.rid)] = q.rk.PublicSPKI()
	}
	assertPresent(t, readDisk(t, vfs.OS, data), onDisk)

	// Acknowledge 5 of keep's messages (the sixth is delivered, not
	// acknowledged), delete gone with its messages, and let plain's old
	// messages and the suspended queue expire.
	wantCmd(t, r.Call("sub", keep.cmd("sub", codec.CmdSUB)), codec.CmdMSG)
	for i := range 5 {
		m := wantCmd(t, r.Call(fmt.Sprint("ack", i), keep.cmd(fmt.Sprint("ack", i), codec.CmdACK)), codec.CmdMSG)
		if string(m.Body) != string(keepBodies[i+1]) {
			t.Fatalf("ACK %d delivered another body", i)
		}
	}
	wantCmd(t, r.Call("del", gone.cmd("del", codec.CmdDEL)), codec.CmdOK)
	e.Expire(clk.Now())
	if m := e.Metrics(); m.Expired != 4 || e.Queues() != 2 {
		t.Fatalf("after expiry: %d messages expired, %d queues; want 4 and 2", m.Expired, e.Queues())
	}

	dead, live := newTraces(), map[string][]byte{}
	deadBody := func(what string, b []byte) {
		dead.addBody(what, b)
		dead.add(what+" (RID and msgID)", ids[string(b)])
	}
	for i, b := range keepBodies {
		what := fmt.Sprintf("keep's message %d", i)
		if i < 5 {
			deadBody("acknowledged "+what, b)
		} else {
			live[what] = b
			live[what+" (RID and msgID)"] = ids[string(b)]
		}
	}
	for i, b := range goneBodies {
		deadBody(fmt.Sprintf("message %d of the deleted queue", i), b)
	}
	for i, b := range plainOld {
		deadBody(fmt.Sprintf("expired message %d", i), b)
	}
	for i, b := range suspBodies {
		deadBody(fmt.Sprintf("message %d of the expired queue", i), b)
	}
	for i, b := range plainNew {
		live[fmt.Sprintf("plain's message %d", i)] = b
	}
	for _, q := range []*queue{gone, susp} {
		dead.add(fmt.Sprintf("deleted queue's RID %x", q.rid), q.rid)
		dead.add(fmt.Sprintf("deleted queue's SID %x", q.sid), q.sid)
		dead.add("deleted queue's recipient key", q.rk.PublicSPKI())
	}
	dead.add("deleted queue's sender key", gone.sk.PublicSPKI())
	for _, q := range []*queue{keep, plain} {
		live[fmt.Sprintf("RID %x", q.rid)] = q.rid
		live[fmt.Sprintf("SID %x", q.sid)] = q.sid
		live[fmt.Sprintf("recipient key of %x", q.rid)] = q.rk.PublicSPKI()
	}
	live["sender key of keep"] = keep.sk.PublicSPKI()

	if err := s.Compact(); err != nil {
		t.Fatal(err)
	}
	d := readDisk(t, vfs.OS, data)
	assertGone(t, d, dead)
	assertPresent(t, d, live)
	t.Logf("%d traces of deleted data looked for in %d files", dead.len(), len(d))

	// A restart (its start-up compaction, the body log's Retain) brings
	// nothing back: the same state, nothing dead on disk.
	want, stats := enginetest.State(t, e, enginetest.StoredBody(s)), e.Stats()
	r.Close()
	snd.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	e, s = startEngine(t, data, opts, eopts)
	defer s.Close()
	if got := enginetest.State(t, e, enginetest.StoredBody(s)); got != want || e.Stats() != stats {
		t.Fatalf("after a restart the state differs\n got %s\nwant %s", got, want)
	}
	d = readDisk(t, vfs.OS, data)
	assertGone(t, d, dead)
	assertPresent(t, d, live)
}
