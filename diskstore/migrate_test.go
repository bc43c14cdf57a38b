package diskstore_test

// Migration: a data directory written by the wal store (every body inside
// its record, kind 5) opens with the disk store as it is. Replay moves each
// body into the body log, the start-up compaction rewrites the records with
// refs, and what was deleted before the migration leaves no trace.

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/enginetest"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/wal"
)

func TestMigrationFromTheWALStore(t *testing.T) {
	for _, comp := range []wal.Compression{wal.CompressS2, wal.CompressZstd, wal.CompressNone} {
		t.Run(comp.String(), func(t *testing.T) { testMigration(t, comp) })
	}
}

func testMigration(t *testing.T, comp wal.Compression) {
	data := t.TempDir()
	walDir := filepath.Join(data, diskstore.WALDir)
	rng := rand.New(rand.NewPCG(uint64(comp), 7))
	clk := sessiontest.NewClock(time.Unix(1764097639, 0), 3*time.Second)
	eopts := engine.Options{BlockSize: bigBlock, Now: clk.Now}
	maxBody := codec.MaxBody(bigBlock)

	// The wal store, as smp-server --store wal runs it: bodies in the log.
	l, err := wal.Open(walDir, wal.Options{Sync: wal.SyncAlways, Compression: comp, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	eopts.Store = l
	e, err := engine.New(eopts)
	if err != nil {
		t.Fatal(err)
	}
	r, snd := newSess(t, e), newSess(t, e)
	a := newQueue(t, r, freshEd(t), "na")
	a.secure(t, r, freshEd(t), "ka")
	b := newQueue(t, r, freshEd(t), "nb")
	gone := newQueue(t, r, freshEd(t), "ngone")
	var aBodies, bBodies, goneBodies [][]byte
	send := func(q *queue, bodies *[][]byte, n int) {
		b := randBytes(rng, n)
		q.send(t, snd, fmt.Sprint("s", len(*bodies)), b)
		*bodies = append(*bodies, b)
	}
	for _, n := range []int{20, maxBody, 4097, 100} {
		send(a, &aBodies, n)
	}
	send(gone, &goneBodies, 5000)
	send(b, &bBodies, 300)
	// A compaction now puts these in a snapshot, inline; the rest stay in
	// segments. Both must migrate.
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{maxBody, 1, 6000, 64} {
		send(a, &aBodies, n)
	}
	send(gone, &goneBodies, maxBody)
	send(b, &bBodies, 2000)
	// A message ID for each message, to grep for the deleted ones.
	ids := storedMessages(t, e, l)
	// Acknowledged before the migration: a's first three (from the
	// snapshot; their deletions are in a segment). Deleted: gone, with a
	// message in the snapshot and one in a segment.
	wantCmd(t, r.Call("sub", a.cmd("sub", codec.CmdSUB)), codec.CmdMSG)
	for i := range 3 {
		m := wantCmd(t, r.Call(fmt.Sprint("ack", i), a.cmd(fmt.Sprint("ack", i), codec.CmdACK)), codec.CmdMSG)
		if !bytes.Equal(m.Body, aBodies[i+1]) {
			t.Fatalf("ACK %d delivered another body", i)
		}
	}
	wantCmd(t, r.Call("del", gone.cmd("del", codec.CmdDEL)), codec.CmdOK)
	wantState, stats := enginetest.State(t, e, enginetest.StoredBody(l)), e.Stats()
	r.Close()
	snd.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	dead, live := newTraces(), map[string][]byte{}
	for i, body := range aBodies {
		what := fmt.Sprintf("a's message %d", i)
		if i < 3 {
			dead.addBody("acknowledged "+what, body)
			dead.add("acknowledged "+what+" (RID and msgID)", ids[string(body)])
		} else {
			live[what] = body
		}
	}
	for i, body := range goneBodies {
		dead.addBody(fmt.Sprintf("message %d of the deleted queue", i), body)
		dead.add(fmt.Sprintf("message %d of the deleted queue (RID and msgID)", i), ids[string(body)])
	}
	for i, body := range bBodies {
		live[fmt.Sprintf("b's message %d", i)] = body
	}
	inline := newTraces() // every body, dead or live, as the wal store wrote it
	for _, bodies := range [][][]byte{aBodies, bBodies, goneBodies} {
		for i, body := range bodies {
			inline.addBody(fmt.Sprintf("body %d (%d bytes)", i, len(body)), body)
		}
	}
	before := readDisk(t, vfs.OS, walDir)
	for what, body := range live {
		if before.find(body) == "" {
			t.Fatalf("%s is not in the wal store's log: the greps below would prove nothing", what)
		}
	}
	if before.find(goneBodies[1]) == "" || before.find(aBodies[0]) == "" {
		t.Fatal("the deleted bodies are not in the wal store's log: the greps below would prove nothing")
	}

	// The disk store opens it: the same state, every body now read from the
	// body log by ref.
	opts := diskstore.Options{Log: wal.Options{Sync: wal.SyncAlways, Compression: comp}, CacheBytes: 1 << 20}
	e, s := startEngine(t, data, opts, engine.Options{BlockSize: bigBlock, Now: clk.Now})
	if got := enginetest.State(t, e, enginetest.StoredBody(s)); got != wantState {
		t.Fatalf("after the migration the state differs\n got %s\nwant %s", got, wantState)
	}
	if e.Stats() != stats {
		t.Fatalf("after the migration: stats %+v, want %+v", e.Stats(), stats)
	}
	// At once, before the body log's eraser has ever run: the log holds no
	// body any more, the body log no dead one.
	if what, path, off := inline.find(readDisk(t, vfs.OS, walDir)); what != "" {
		t.Fatalf("after the start-up compaction %s is still in the log: %s at offset %d", what, path, off)
	}
	d := readDisk(t, vfs.OS, data)
	assertGone(t, d, dead)
	assertPresent(t, d, live)

	// On the wire, in order, identical.
	r = newSess(t, e)
	want := append(aBodies[3:len(aBodies):len(aBodies)], bBodies...)
	var got [][]byte
	for _, q := range []*queue{a, b} {
		m := wantCmd(t, r.Call("sub", q.cmd("sub", codec.CmdSUB)), codec.CmdMSG)
		for {
			got = append(got, m.Body)
			m = r.Call("ack", q.cmd("ack", codec.CmdACK))
			if m.Cmd == codec.CmdOK {
				break
			}
			wantCmd(t, m, codec.CmdMSG)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("delivered %d messages after the migration, want %d", len(got), len(want))
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("message %d delivered after the migration: %d bytes that differ from the %d sent", i, len(got[i]), len(want[i]))
		}
	}
	last := randBytes(rng, 3000) // a message stored by the disk store itself
	b.send(t, r, "last", last)
	r.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// The wal store can no longer open it: the log names bodies it does not
	// have, and the error says which store to run. Nothing is changed by
	// the attempt: the disk store still opens it.
	l, err = wal.Open(walDir, wal.Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = engine.New(engine.Options{BlockSize: bigBlock, Now: clk.Now, Store: l})
	l.Close()
	if !errors.Is(err, wal.ErrBodiesElsewhere) || !strings.Contains(err.Error(), "--store disk") {
		t.Fatalf("the wal store on a migrated directory: %v; want wal.ErrBodiesElsewhere, naming --store disk", err)
	}
	e, s = startEngine(t, data, opts, engine.Options{BlockSize: bigBlock, Now: clk.Now})
	defer s.Close()
	r = newSess(t, e)
	if m := wantCmd(t, r.Call("sub", b.cmd("sub", codec.CmdSUB)), codec.CmdMSG); !bytes.Equal(m.Body, last) || e.Stats().Queues != 2 {
		t.Fatalf("the disk store after the wal store's failed attempt: %d queues, a body of %d bytes, want 2 and %d",
			e.Stats().Queues, len(m.Body), len(last))
	}
}
