package engine

import (
	"crypto/rand"
	"runtime"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
	"github.com/smprelay/smprelay/store"
)

// memQueues is how many queues TestQueueMemory creates: enough that the
// engine's fixed costs (256 empty shard maps) are a few bytes per queue.
const memQueues = 100_000

// ed25519SPKIPrefix is the DER of an Ed25519 SubjectPublicKeyInfo before its
// 32 key bytes (RFC 8410).
var ed25519SPKIPrefix = []byte{0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00}

// randomEd25519SPKIs returns n Ed25519 SubjectPublicKeyInfos with random key
// bytes. Parsing a key does not look at its point, so random bytes cost what
// generated keys cost, without n key generations.
func randomEd25519SPKIs(n int) [][]byte {
	const size = 44
	buf := make([]byte, n*size)
	rand.Read(buf)
	out := make([][]byte, n)
	for i := range out {
		der := buf[i*size : (i+1)*size : (i+1)*size]
		copy(der, ed25519SPKIPrefix)
		out[i] = der
	}
	return out
}

// heapInUse returns the bytes of live heap objects after a full collection.
func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// replayStore replays QueueCreated records for rks (and QueueSecured for
// sks, when set), parsing each key as a persistent store does at start.
type replayStore struct {
	store.MemoryStore
	rks, sks [][]byte
}

func (s *replayStore) Load(apply func(*store.Record) error) error {
	for i, der := range s.rks {
		k, err := codec.ParseVerifyKey(der)
		if err != nil {
			return err
		}
		r := store.Record{Kind: store.QueueCreated, RecipientKey: k, Time: 1}
		rand.Read(r.RID[:])
		rand.Read(r.SID[:])
		if err := apply(&r); err != nil {
			return err
		}
		if s.sks == nil {
			continue
		}
		if k, err = codec.ParseVerifyKey(s.sks[i]); err != nil {
			return err
		}
		if err := apply(&store.Record{Kind: store.QueueSecured, RID: r.RID, SenderKey: k}); err != nil {
			return err
		}
	}
	return nil
}

// TestQueueMemory measures the heap an idle queue with Ed25519 keys costs the
// engine: the queue, its keys and its two entries in the ID map, whether it
// was replayed at start or created by NEW on a connection since closed.
// Issue 14 asks for at most 400 bytes for an empty queue with an Ed25519
// recipient key, beyond the decoded-key cache (codec), which verification
// fills and none of these paths touches. The figure is heap accounting after
// a full collection, not time, so it is stable from run to run; map growth
// moves it by a few bytes with the number of queues. A secured queue (a
// sender key more) is held to the same bound. Measured when it was written:
// 246 bytes empty, 294 secured (before the keys left their decoded points
// to codec's cache: 566 and 934): the queue (128), a key (48 each) and two
// map entries (~70).
func TestQueueMemory(t *testing.T) {
	if race.Enabled {
		t.Skip("-race changes the heap")
	}
	const limit = 400
	rks, sks := randomEd25519SPKIs(memQueues), randomEd25519SPKIs(memQueues)
	measure := func(t *testing.T, create func() *Engine) float64 {
		before := heapInUse()
		e := create()
		after := heapInUse()
		if got := e.Queues(); got != memQueues {
			t.Fatalf("%d queues, want %d", got, memQueues)
		}
		runtime.KeepAlive(e)
		return float64(int64(after)-int64(before)) / memQueues
	}
	replay := func(t *testing.T, st *replayStore) *Engine {
		e, err := New(Options{BlockSize: testBlock, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		return e
	}

	t.Run("replayed", func(t *testing.T) {
		per := measure(t, func() *Engine { return replay(t, &replayStore{rks: rks}) })
		t.Logf("empty queue, Ed25519 recipient key: %.0f bytes", per)
		if per > limit {
			t.Errorf("an empty queue costs %.0f bytes, want at most %d", per, limit)
		}
	})
	t.Run("replayed-secured", func(t *testing.T) {
		per := measure(t, func() *Engine { return replay(t, &replayStore{rks: rks, sks: sks}) })
		t.Logf("empty secured queue, Ed25519 recipient and sender keys: %.0f bytes", per)
		if per > limit {
			t.Errorf("an empty secured queue costs %.0f bytes, want at most %d", per, limit)
		}
	})
	t.Run("NEW", func(t *testing.T) {
		// The transmissions are built before the measurement; NEW needs no
		// signature, so none is made.
		const perBlock = 100
		var blocks [][]byte
		for i := 0; i < len(rks); i += perBlock {
			var txs [][]byte
			for _, der := range rks[i:min(i+perBlock, len(rks))] {
				txs = append(txs, tx(t, nil, "n", nil, codec.CmdNEW, der, nil))
			}
			blocks = append(blocks, block(txs...))
		}
		per := measure(t, func() *Engine {
			e, _ := newTestEngine(t, Limits{NewQueuesPerMinute: 2 * memQueues})
			c := newConn(t, e)
			c.W.Send = func([]byte) error { return nil }
			for _, b := range blocks {
				c.S.Process(b, c.P, &c.Tr, c.W)
				c.W.Finish()
			}
			// Closing drops the connection's subscriptions: what stays is
			// what an idle queue costs.
			c.Close()
			return e
		})
		runtime.KeepAlive(blocks) // or the collection after would count them as freed by NEW
		t.Logf("empty queue made by NEW, Ed25519 recipient key: %.0f bytes", per)
		if per > limit {
			t.Errorf("an empty queue costs %.0f bytes, want at most %d", per, limit)
		}
	})
}
