package diskstore_test

// The engine on the disk store, as the server runs it: a restart rebuilds
// the same state — queues, keys, suspension, and every stored message with
// its msgId, timestamp, body and place in its queue — and the bodies it
// delivers then come from the body log on disk, not from memory.

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/enginetest"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/wal"
)

// bigBlock is the largest block size, so that the largest body a relay
// stores (codec.MaxBody of it, 64,512 bytes: sixteen pages) goes through.
const bigBlock = codec.MaxBlockSize

func TestEngineRestart(t *testing.T) {
	for _, mode := range syncModes {
		t.Run(mode.String(), func(t *testing.T) { testEngineRestart(t, mode, noAsyncSyncs) })
	}
}

// TestEngineRestartAsyncSyncs is TestEngineRestart with the log's fsyncs by
// io_uring (wal.Log.AttachSyncs): completions reaped by a goroutine that
// plays the event loop, and with nobody reaping them (the writer's own
// fallback).
func TestEngineRestartAsyncSyncs(t *testing.T) {
	for _, async := range []asyncSyncs{asyncPolled, asyncUnpolled} {
		t.Run(fmt.Sprint(async), func(t *testing.T) { testEngineRestart(t, wal.SyncAlways, async) })
	}
}

func testEngineRestart(t *testing.T, mode wal.SyncMode, async asyncSyncs) {
	data := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(mode), 14))
	// The clock moves on by 7 s at each reading, so each message has its own
	// timestamp, and by two days when the test says so.
	clk := sessiontest.NewClock(time.Unix(1764097639, 0), 7*time.Second)
	// Every group by io_uring when it is attached: this test's groups are
	// of one record, below the relay's default AsyncMinRecords.
	opts := diskstore.Options{Log: wal.Options{Sync: mode, AsyncMinRecords: 1}, CacheBytes: 16 << 20}
	eopts := engine.Options{BlockSize: bigBlock, Now: clk.Now, Limits: engine.Limits{MessageTTL: 24 * time.Hour}}
	e, s := startEngine(t, data, opts, eopts)
	reaped := attachSyncs(t, s, async)
	r, snd := newSess(t, e), newSess(t, e)
	maxBody := codec.MaxBody(bigBlock)

	// d: two messages sent two days before the others, which expire.
	d := newQueue(t, r, edSigner(t, 3), "nd")
	for i, n := range []int{300, 5000} {
		d.send(t, snd, fmt.Sprint("d", i), randBytes(rng, n))
	}
	clk.Advance(48 * time.Hour)

	// a: secured; bodies of every size around page boundaries, the largest
	// ones, an empty one. Two acknowledged, the third delivered and not.
	a := newQueue(t, r, edSigner(t, 0), "na")
	a.secure(t, r, edSigner(t, 1), "ka")
	var aBodies [][]byte
	for i, n := range []int{1, 100, 0, 4095, 4096, 4097, 9000, maxBody, maxBody - 1, maxBody, 777} {
		aBodies = append(aBodies, randBytes(rng, n))
		a.send(t, snd, fmt.Sprint("a", i), aBodies[i])
	}
	first := wantCmd(t, r.Call("suba", a.cmd("suba", codec.CmdSUB)), codec.CmdMSG)
	wantCmd(t, r.Call("a1", a.cmd("a1", codec.CmdACK)), codec.CmdMSG)
	third := wantCmd(t, r.Call("a2", a.cmd("a2", codec.CmdACK)), codec.CmdMSG)
	if !bytes.Equal(first.Body, aBodies[0]) || !bytes.Equal(third.Body, aBodies[2]) {
		t.Fatalf("delivery order before the restart: %d then %d bytes", len(first.Body), len(third.Body))
	}
	// b: RSA keys, unsecured, two messages, suspended.
	b := newQueue(t, r, rsaSigner(t), "nb")
	bBodies := [][]byte{randBytes(rng, 4100), randBytes(rng, maxBody)}
	for i, body := range bBodies {
		b.send(t, snd, fmt.Sprint("b", i), body)
	}
	wantCmd(t, r.Call("offb", b.cmd("offb", codec.CmdOFF)), codec.CmdOK)
	// c: messages, then deleted.
	c := newQueue(t, r, edSigner(t, 2), "nc")
	for i, n := range []int{10, maxBody, 6000} {
		c.send(t, snd, fmt.Sprint("c", i), randBytes(rng, n))
	}
	wantCmd(t, r.Call("delc", c.cmd("delc", codec.CmdDEL)), codec.CmdOK)
	// d's two old messages expire; a new one stays.
	e.Expire(clk.Now())
	if got := e.Metrics().Expired; got != 2 {
		t.Fatalf("%d messages expired, want d's 2", got)
	}
	dBody := randBytes(rng, 64)
	d.send(t, snd, "d2", dBody)

	before, stats := enginetest.State(t, e, enginetest.StoredBody(s)), e.Stats()
	if want := (engine.Stats{Queues: 3, Messages: int64(len(aBodies) - 2 + len(bBodies) + 1)}); stats.Queues != want.Queues || stats.Messages != want.Messages {
		t.Fatalf("before the restart: %+v, want %d queues and %d messages", stats, want.Queues, want.Messages)
	}
	// Live bytes, not the blocks the files occupy: with delayed allocation
	// a file written but not yet fsynced (modes interval and never) may
	// have none yet.
	if st, bs := s.StoreStats(), s.BodyStats(); bs.LiveBytes <= int64(2*maxBody) || st.BodyFiles == 0 {
		t.Fatalf("the body log holds %d live bytes in %d files: the bodies are not in it", bs.LiveBytes, st.BodyFiles)
	}
	if async == asyncPolled && reaped.Load() == 0 {
		t.Fatal("the log fsynced by io_uring, and the loop never reaped a completion")
	}
	r.Close()
	snd.Close()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Two restarts rebuild the same state; the second replays the snapshot
	// of the first's start-up compaction, with the creation times it wrote
	// (record kind 8).
	var created map[[16]byte]int64
	for round := range 2 {
		e, s = startEngine(t, data, opts, eopts)
		attachSyncs(t, s, async)
		if got := enginetest.State(t, e, enginetest.StoredBody(s)); got != before {
			t.Fatalf("restart %d: the state differs\n got %s\nwant %s", round, got, before)
		}
		if e.Stats() != stats {
			t.Fatalf("restart %d: stats %+v, want %+v", round, e.Stats(), stats)
		}
		times := createdTimes(t, e)
		if round > 0 && !maps.Equal(times, created) {
			t.Fatalf("restart %d: creation times %v, the restart before had %v", round, times, created)
		}
		created = times
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	// On the wire: the un-acknowledged message comes again with the same
	// msgId and timestamp, then the rest in order, every body read from the
	// body log (a miss of its empty cache each), none from memory.
	e, s = startEngine(t, data, opts, eopts)
	attachSyncs(t, s, async)
	defer s.Close()
	r, snd = newSess(t, e), newSess(t, e)
	atStart := s.BodyStats()
	deliver := func(q *queue, corr string, c codec.Cmd, body []byte) resp {
		t.Helper()
		m := wantCmd(t, r.Call(corr, q.cmd(corr, c)), codec.CmdMSG)
		if !bytes.Equal(m.Body, body) {
			t.Fatalf("%s after the restart: a body of %d bytes, want the %d sent", corr, len(m.Body), len(body))
		}
		return m
	}
	m := deliver(a, "suba", codec.CmdSUB, aBodies[2])
	if !bytes.Equal(m.MsgID, third.MsgID) || m.Time != third.Time {
		t.Fatalf("redelivery after the restart: msgId %x at %s, want %x at %s", m.MsgID, m.Time, third.MsgID, third.Time)
	}
	for i := 3; i < len(aBodies); i++ {
		deliver(a, fmt.Sprint("acka", i), codec.CmdACK, aBodies[i])
	}
	wantCmd(t, r.Call("acka", a.cmd("acka", codec.CmdACK)), codec.CmdOK)
	deliver(b, "subb", codec.CmdSUB, bBodies[0])
	deliver(b, "ackb", codec.CmdACK, bBodies[1])
	wantCmd(t, r.Call("ackb2", b.cmd("ackb2", codec.CmdACK)), codec.CmdOK)
	deliver(d, "subd", codec.CmdSUB, dBody)
	wantCmd(t, r.Call("ackd", d.cmd("ackd", codec.CmdACK)), codec.CmdOK)
	delivered := uint64(len(aBodies) - 2 + len(bBodies) + 1)
	now := s.BodyStats()
	if misses, hits := now.CacheMisses-atStart.CacheMisses, now.CacheHits-atStart.CacheHits; misses != delivered || hits != 0 {
		t.Fatalf("delivering %d bodies after the restart: %d cache misses and %d hits, want a miss each", delivered, misses, hits)
	}
	if st := s.StoreStats(); st.CacheMisses != now.CacheMisses || st.CacheMax != 16<<20 {
		t.Fatalf("StoreStats: %d misses, cache bound %d; the body log says %d misses, the options %d",
			st.CacheMisses, st.CacheMax, now.CacheMisses, 16<<20)
	}
	if got := e.Stats(); got.Messages != 0 || got.BodyBytes != 0 || got.Queues != 3 {
		t.Fatalf("after every message was acknowledged: %+v", got)
	}

	// a is still secured, b still suspended, c gone.
	if got := snd.Call("u", smptest.Cmd(nil, "u", a.sid, codec.CmdSEND, nil, []byte("x"))); got.Err != codec.ErrAuth {
		t.Fatalf("unsigned SEND to the secured queue after the restart: %+v", got)
	}
	a.send(t, snd, "v", []byte("signed"))
	if got := snd.Call("w", b.sendTx("w", []byte("x"))); got.Err != codec.ErrAuth {
		t.Fatalf("SEND to the suspended queue after the restart: %+v", got)
	}
	if got := r.Call("subc", c.cmd("subc", codec.CmdSUB)); got.Err != codec.ErrAuth {
		t.Fatalf("SUB to the deleted queue after the restart: %+v", got)
	}
}
