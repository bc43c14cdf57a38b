package engine

import (
	"sync"
	"unsafe"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// queueID is a RID or SID.
type queueID = [codec.QueueIDSize]byte

// message is one stored message, in 48 bytes: issue 14 allows at most 64
// bytes of RAM per stored message besides a body the engine holds, and the
// fifo's spare capacity comes on top (TestMessageSize checks the size). Its
// body is either in memory (body points at its first byte; bodyBytes gives
// the slice: a pointer, not a 24-byte slice header, since size already holds
// the length) or, when the store keeps it, behind ref; size is its length in
// both cases. All its fields but stored are immutable once stored, so a
// reader that copied the message under the queue lock may keep reading the
// body after unlocking: an ACK or DEL drops the reference, never the bytes.
// A ref, though, is read (store.ReadBody) under the queue lock only: the
// store may reuse it once the message's MessageDeleted or QueueDeleted
// record, which names the ref, is appended, which happens under that lock.
type message struct {
	id   [codec.MsgIDSize]byte // random, unique within the queue
	ts   int64                 // server receive time, Unix seconds
	body *byte                 // first byte of the body the engine holds; nil when ref is set or the body is empty
	ref  store.BodyRef         // where the store keeps the body; 0 when the engine holds it
	// stored is the monotonic store time (engineStats.mono) for the delivery
	// latency, 0 once the message was first written as MSG or when it was
	// replayed from the log; changed under the queue lock.
	stored int64
	size   uint32 // the body's length, in memory or in the store; bodies are below codec.MaxBlockSize
}

// setBody makes b the body the message holds (b must not change afterwards).
func (m *message) setBody(b []byte) {
	m.size = uint32(len(b))
	m.body = nil
	if len(b) > 0 {
		m.body = &b[0]
	}
}

// bodyBytes returns the body the message holds, nil when the store keeps it.
func (m *message) bodyBytes() []byte {
	if m.body == nil {
		return nil
	}
	return unsafe.Slice(m.body, m.size)
}

// queue is one simplex queue. rid, sid and rk never change after creation and
// may be read without the lock; everything else is guarded by mu. mu is held
// only for short, non-blocking sections: signatures are verified outside it.
//
// Memory per queue matters (issue 14 counts it for an empty queue): the
// fields are ordered so that the four bools share one word, which brings
// the struct from 136 bytes (a 144-byte malloc slot) to 128 with createdAt
// (TestQueueSize). Reusing suspendedAt as the creation time instead would
// save 8 bytes of struct and no memory (120 bytes still take a 128-byte
// slot), and would count the unsecured TTL of a queue suspended before it
// was secured from OFF rather than from NEW.
type queue struct {
	rid, sid queueID
	rk       *codec.VerifyKey // recipient key, set by NEW

	mu          sync.Mutex
	sk          *codec.VerifyKey // sender key, set once by KEY; nil until secured
	msgs        fifo             // stored messages, oldest first
	sub         *Session         // the one subscriber, or nil
	seq         uint64           // delivery generation: pushes carry it so a stale push is dropped
	suspendedAt int64            // Unix seconds of OFF, for the suspended-queue TTL
	// createdAt is the Unix seconds of NEW, for the unsecured-queue TTL; for a
	// queue replayed without its creation time, the load's (see replay).
	createdAt int64
	suspended bool // OFF was applied
	deleted   bool // DEL or expiry removed it; every later command is AUTH
	delivered bool // the oldest message was sent to sub and awaits ACK
	// blocked: the operator blocked the queue (Engine.Block, issue 16);
	// every command of both sides is AUTH until Unblock. Guarded by mu;
	// packed with the bools above, so the struct keeps its 128 bytes.
	blocked bool
}

// fifo is a queue of messages: append at the tail, pop at the head.
type fifo struct {
	buf  []message
	head int
}

func (f *fifo) len() int { return len(f.buf) - f.head }

func (f *fifo) front() *message { return &f.buf[f.head] }

// at returns the i-th message from the head (0 is the front).
func (f *fifo) at(i int) *message { return &f.buf[f.head+i] }

func (f *fifo) push(m message) {
	if f.head > 0 && len(f.buf) == cap(f.buf) {
		// Reuse the popped prefix before growing.
		n := copy(f.buf, f.buf[f.head:])
		clear(f.buf[n:])
		f.buf = f.buf[:n]
		f.head = 0
	}
	f.buf = append(f.buf, m)
}

func (f *fifo) pop() {
	f.buf[f.head] = message{} // drop the body so the GC can take it at once (SPEC §8)
	f.head++
	if f.head == len(f.buf) {
		f.buf = f.buf[:0]
		f.head = 0
	}
}

// removeID removes the message with id wherever it is, keeping the order of
// the rest, and returns its body's size. Only replay needs it: live ACKs and
// expiry always pop the head.
func (f *fifo) removeID(id [codec.MsgIDSize]byte) (int, bool) {
	for i := f.head; i < len(f.buf); i++ {
		if f.buf[i].id == id {
			n := int(f.buf[i].size)
			f.removeAt(i - f.head)
			return n, true
		}
	}
	return 0, false
}

// removeAt removes the i-th message from the head, keeping the order of the
// rest: the head (pop), or a lost body's message behind the one an ACK deletes.
func (f *fifo) removeAt(i int) {
	if i == 0 {
		f.pop()
		return
	}
	j := f.head + i
	copy(f.buf[j:], f.buf[j+1:])
	f.buf[len(f.buf)-1] = message{}
	f.buf = f.buf[:len(f.buf)-1]
}

// refs returns the refs of the messages whose bodies the store keeps, oldest
// first, for the QueueDeleted record that frees them; nil when there are none,
// so a queue whose bodies are in memory allocates nothing.
func (f *fifo) refs() []store.BodyRef {
	var refs []store.BodyRef
	for i := f.head; i < len(f.buf); i++ {
		if r := f.buf[i].ref; r != 0 {
			if refs == nil {
				refs = make([]store.BodyRef, 0, len(f.buf)-i)
			}
			refs = append(refs, r)
		}
	}
	return refs
}

func (f *fifo) clear() {
	clear(f.buf)
	f.buf = nil
	f.head = 0
}

// numShards splits the ID map so that event loops rarely wait on one lock.
// IDs are uniformly random, so the first byte spreads them evenly.
const numShards = 256

// queueMap maps both IDs of every live queue to the queue. Each shard's map is
// guarded by its own mutex; no code holds a shard lock and a queue lock at the
// same time.
type queueMap struct {
	shards [numShards]struct {
		mu  sync.Mutex
		ids map[queueID]*queue
		_   [40]byte // keep neighbouring shards' locks off one cache line
	}
}

func newQueueMap() *queueMap {
	m := &queueMap{}
	for i := range m.shards {
		m.shards[i].ids = make(map[queueID]*queue)
	}
	return m
}

// get returns the queue that id names (as RID or SID), or nil.
func (m *queueMap) get(id []byte) *queue {
	if len(id) != codec.QueueIDSize {
		return nil
	}
	k := queueID(id)
	s := &m.shards[k[0]]
	s.mu.Lock()
	q := s.ids[k]
	s.mu.Unlock()
	return q
}

// add maps id to q unless id is taken, and reports whether it did.
func (m *queueMap) add(id queueID, q *queue) bool {
	s := &m.shards[id[0]]
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, taken := s.ids[id]; taken {
		return false
	}
	s.ids[id] = q
	return true
}

// remove unmaps id if it still names q.
func (m *queueMap) remove(id queueID, q *queue) {
	s := &m.shards[id[0]]
	s.mu.Lock()
	if s.ids[id] == q {
		delete(s.ids, id)
	}
	s.mu.Unlock()
}

// each calls f for every live queue once (by its RID), outside the shard locks.
func (m *queueMap) each(f func(q *queue)) {
	var batch []*queue
	for i := range m.shards {
		s := &m.shards[i]
		batch = batch[:0]
		s.mu.Lock()
		for id, q := range s.ids {
			if id == q.rid {
				batch = append(batch, q)
			}
		}
		s.mu.Unlock()
		for _, q := range batch {
			f(q)
		}
	}
}
