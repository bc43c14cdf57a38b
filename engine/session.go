package engine

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/bucket"
	"github.com/smprelay/smprelay/store"
)

// eventKind is what another connection (or the expiry sweep) asks a session's
// owner to do on its own loop.
type eventKind uint8

const (
	evDeliver eventKind = iota + 1 // push the queue's oldest message, if seq still matches
	evEnd                          // another connection subscribed: send END, forget the queue
	evDrop                         // the queue was deleted: forget it silently
)

// heldReply marks one reply in Session.held.
type heldReply struct {
	end int    // offset just past the reply in held
	lsn uint64 // the reply leaves once the log is durable up to here
}

type event struct {
	kind eventKind
	q    *queue
	seq  uint64
}

// Session is the protocol state of one connection: its subscriptions and the
// outbox through which other connections hand it pushes. Everything but the
// outbox is owned by the connection's event loop; the outbox is guarded by mu
// and may be posted to from any goroutine.
type Session struct {
	e    *Engine
	wake func() // asks the owner's loop to call Drain soon; safe from any goroutine

	subs map[*queue]struct{} // queues this session subscribed to; owned by the loop

	mx  *loopStats  // counters of the loop that owns the session (metrics.go)
	res codec.Error // error of the reply being written (ErrNone: not ERR), for mx

	newTokens float64 // NEW token bucket (Limits.NewQueuesPerMinute); owned by the loop
	newAt     int64   // Unix nanoseconds of the bucket's last refill
	// newShared, set by the Server, is the NEW bucket of the connection's
	// source, used instead of the session's own (shared by the loops of
	// every connection of that source).
	newShared *bucket.Shared

	// Replies that wait for the log (fsync mode always), owned by the loop.
	// Once one reply waits, every later one queues behind it, so replies keep
	// the order their commands came in.
	lsn    uint64      // LSN the reply being written waits for; 0 when none
	held   []byte      // waiting replies, back to back
	heldAt []heldReply // where each waiting reply ends in held, and its LSN

	mu     sync.Mutex
	outbox []event // pushes waiting for the loop
	spare  []event // the outbox's previous backing array, reused by Drain
	closed bool
}

// NewSession starts a session. wake is called, from whatever goroutine posts,
// when the outbox goes from empty to non-empty; the owner then calls Drain on
// its loop. Safe for concurrent use.
func (e *Engine) NewSession(wake func()) *Session {
	e.sessions.Add(1)
	return &Session{e: e, wake: wake, mx: &e.mx.loops[0], newTokens: float64(e.limits.Load().NewQueuesPerMinute), newAt: e.now().UnixNano()}
}

// SetStatsShard makes the session count into counter shard i (0 to
// StatShards-1; others wrap): a transport gives each event loop its own
// shard, so loops do not share a cache line. Call it before the session is
// used; it is owned by the session's goroutine.
func (s *Session) SetStatsShard(i int) { s.mx = &s.e.mx.loops[i%StatShards] }

// SetNewBucket makes NEW take from b, shared with other sessions (a
// transport's per-source budget), instead of the session's own bucket. Call
// it before the session is used.
func (s *Session) SetNewBucket(b *bucket.Shared) { s.newShared = b }

// Holding reports whether replies wait for the log (fsync mode always).
// Owned by the session's goroutine.
func (s *Session) Holding() bool { return len(s.heldAt) > 0 }

// allowNew takes a token from the NEW bucket, refilled at
// NewQueuesPerMinute per minute up to that many.
func (s *Session) allowNew() bool {
	if s.newShared != nil {
		n := s.e.limits.Load().NewQueuesPerMinute
		return s.newShared.Take(n, n, time.Minute, s.e.now().UnixNano())
	}
	limit := float64(s.e.limits.Load().NewQueuesPerMinute)
	now := s.e.now().UnixNano()
	if now > s.newAt {
		s.newTokens = min(limit, s.newTokens+limit*float64(now-s.newAt)/float64(time.Minute))
		s.newAt = now
	}
	if s.newTokens < 1 {
		return false
	}
	s.newTokens--
	return true
}

// post hands an event to the session's loop. Safe from any goroutine.
func (s *Session) post(ev event) { s.postFrom(nil, ev) }

// postFrom is post from the session from, which skips the wake-up when from is
// the receiver itself: its loop drains after the current batch anyway.
func (s *Session) postFrom(from *Session, ev event) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	first := len(s.outbox) == 0
	s.outbox = append(s.outbox, ev)
	s.mu.Unlock()
	if first && from != s && s.wake != nil {
		s.wake()
	}
}

// Process parses the transmissions in one block's plaintext, carries them out
// and writes the responses to w, in order. p's scratch space is reused. Call it
// on the session's loop only.
func (s *Session) Process(plain []byte, p *codec.Parser, t *codec.Transmission, w *Writer) {
	budget := math.MaxInt
	s.ProcessSome(plain, p, t, w, &budget)
}

// ProcessSome is Process within a work budget: it stops before a
// transmission once *budget is used up, and returns how many bytes of plain
// it consumed (all of them when it did not stop early). Every transmission
// but PING costs one unit, what its signature verification (real, or the
// dummy one of SPEC §7) costs; the server charges the budget per connection
// so that cheap-to-send work cannot crowd out other connections (issue 12).
//
// ProcessSome verifies each signature on its own; the server uses
// ProcessBatched, which gives the same replies.
func (s *Session) ProcessSome(plain []byte, p *codec.Parser, t *codec.Transmission, w *Writer, budget *int) int {
	total := len(plain)
	for codec.More(plain) {
		if *budget <= 0 {
			return total - len(plain)
		}
		n := p.Parse(plain, t)
		plain = plain[n:]
		if t.Cmd != codec.CmdPING {
			*budget--
		}
		var a auth
		s.resolve(t, &a)
		a.ok = !a.verify || codec.VerifyTimingSafe(a.key, t.Signed, t.Signature)
		s.run(t, &a, w)
		charge(&a, budget)
	}
	return total
}

// authPenalty is the work a failed authentication costs on top of its
// verification. A client that authenticates gets a whole work slice of
// commands (batched); one whose commands fail — the cheap flood of SPEC §7's
// dummy verifications — gets about one per turn. Every failure costs the
// same, whether its queue exists or not, so the charge tells the sender
// nothing its ERR AUTH did not.
const authPenalty = 15

// charge charges what a transmission cost beyond the unit it was charged
// when parsed: the verifications against creator keys past the first, and
// authPenalty when it paid a verification and was refused.
func charge(a *auth, budget *int) {
	*budget -= a.extra
	if (a.verify || a.creator) && !a.granted() {
		*budget -= authPenalty
	}
}

// Batch is the scratch space of ProcessBatched: one per worker (one event
// loop at a time), never one per connection (its arena is a block's size). A
// batch holds what one connection sent and nothing else.
type Batch struct {
	bv    codec.BatchVerifier
	items []batchItem // the transmissions of the current batch, at most codec.MaxBatch
	// arena holds the transmissions' fields the Parser decoded into its
	// scratch (signature, queueId), which the next Parse overwrites.
	arena []byte
}

type batchItem struct {
	t codec.Transmission
	a auth
	i int // index of its signature in bv; -1 when it needs no verification
}

func NewBatch(blockSize int) *Batch {
	return &Batch{items: make([]batchItem, 0, codec.MaxBatch), arena: make([]byte, 0, blockSize)}
}

// reset empties the batch and drops its references to keys, queues and
// buffers, keeping the scratch.
func (b *Batch) reset() {
	clear(b.items)
	b.items = b.items[:0]
	b.arena = b.arena[:0]
	b.bv.Reset()
}

// own copies the fields of t that point into the Parser's scratch into the
// arena. The others point into the block's plaintext, which stays put until
// the batch is carried out, or are allocated (Key).
func (b *Batch) own(t *codec.Transmission) {
	// Appending may move the arena to a larger array (only for blocks larger
	// than the arena); the slices taken before still point to the old one,
	// which nothing writes again.
	if n := len(t.Signature); n > 0 {
		b.arena = append(b.arena, t.Signature...)
		t.Signature = b.arena[len(b.arena)-n : len(b.arena) : len(b.arena)]
	}
	if n := len(t.QueueID); n > 0 {
		b.arena = append(b.arena, t.QueueID...)
		t.QueueID = b.arena[len(b.arena)-n : len(b.arena) : len(b.arena)]
	}
}

// endsBatch reports whether t may change the key or the state another
// transmission of its batch is authenticated against: NEW adds a queue, KEY
// sets a sender key, OFF and DEL close a queue.
//
// Keys are resolved in the first pass, before any command of the batch runs,
// so such a command is the last of its batch: the transmissions after it are
// resolved in the next batch, once it has run, against the state the single
// path would see (KEY then a signed SEND verifies against the new key; DEL
// then SUB costs the dummy verification of a missing queue). The other
// choice, re-checking each key at execution and verifying again when it
// changed, would cost a second verification in exactly those cases and
// spread the check over every command; ending the batch costs nothing on the
// hot path (SEND, ACK, SUB), where these commands are rare.
func endsBatch(t *codec.Transmission) bool {
	if t.Err != codec.ErrNone {
		return false
	}
	switch t.Cmd {
	case codec.CmdNEW, codec.CmdKEY, codec.CmdOFF, codec.CmdDEL:
		return true
	}
	return false
}

// ProcessBatched is ProcessSome with the signatures of the transmissions in
// plain verified in batches (codec.BatchVerifier), with the same replies in
// the same order. Each batch takes two passes: parse up to codec.MaxBatch
// transmissions within the budget, resolve each one's key as the single path
// does and add its signature; then verify the batch and carry out each
// command in order with its result. A batch holds what one block of one
// connection holds, never more, so that whatever a batch costs lands on the
// connection that sent it (codec.BatchVerifier now checks its entries one by
// one, so a bad signature costs what it costs alone).
func (s *Session) ProcessBatched(plain []byte, p *codec.Parser, b *Batch, w *Writer, budget *int) int {
	total := len(plain)
	for codec.More(plain) && *budget > 0 {
		b.reset()
		for len(b.items) < codec.MaxBatch && codec.More(plain) && *budget > 0 {
			b.items = b.items[:len(b.items)+1]
			it := &b.items[len(b.items)-1]
			n := p.Parse(plain, &it.t)
			plain = plain[n:]
			if it.t.Cmd != codec.CmdPING {
				*budget--
			}
			b.own(&it.t)
			s.resolve(&it.t, &it.a)
			it.i = -1
			if it.a.verify {
				it.i = b.bv.Add(it.a.key, it.t.Signed, it.t.Signature)
			}
			if endsBatch(&it.t) {
				break
			}
		}
		res := b.bv.Verify()
		for i := range b.items {
			it := &b.items[i]
			it.a.ok = it.i < 0 || res[it.i]
			s.run(&it.t, &it.a, w)
			charge(&it.a, budget)
		}
	}
	b.reset()
	if codec.More(plain) {
		return total - len(plain)
	}
	return total
}

// auth is how one transmission authenticates: what resolve found before
// verification, then the verification's result.
type auth struct {
	q      *queue           // SEND, recipient commands: the queue its ID names, of the right kind
	sk     *codec.VerifyKey // SEND: the sender key the queue had
	key    *codec.VerifyKey // the key to verify with; nil for the dummy of SPEC §7
	verify bool             // it costs one verification (real or dummy)
	deny   bool             // ERR AUTH whatever the verification says
	ok     bool             // set after verification: it verified, or needed none
	// creator: NEW on a relay with creator keys, which resolve verified
	// itself (creatorAuth); the result is in deny, and verify is false.
	creator bool
	extra   int // verifications it cost beyond one (creator keys), charged to the budget
}

// granted reports whether the transmission authenticated.
func (a *auth) granted() bool { return a.ok && !a.deny }

// resolve fills in a for t: which key its signature is checked against.
// Every path to ERR AUTH costs one signature verification (SPEC §7): a
// missing queue, an ID of the wrong kind, or a signature that does not fit
// the key is checked against a dummy key.
func (s *Session) resolve(t *codec.Transmission, a *auth) {
	*a = auth{}
	if t.Err != codec.ErrNone {
		return
	}
	switch t.Cmd {
	case codec.CmdNEW:
		if lim := s.e.limits.Load(); lim.NewQueuesClosed || lim.CreatorKeys != nil {
			creatorAuth(t, a, lim)
			return
		}
		a.key, a.verify = t.Key, len(t.Signature) > 0
	case codec.CmdSEND:
		a.verify = true
		q := s.e.queues.get(t.QueueID)
		if q == nil || string(q.sid[:]) != string(t.QueueID) {
			a.deny = true
			return
		}
		q.mu.Lock()
		sk, closed := q.sk, q.deleted || q.suspended || q.blocked
		q.mu.Unlock()
		a.q, a.sk, a.key = q, sk, sk
		switch {
		case closed || (sk == nil && len(t.Signature) > 0):
			a.deny = true
		case sk == nil:
			a.verify = false // an unsigned SEND to an unsecured queue (the confirmation)
		}
	case codec.CmdSUB, codec.CmdKEY, codec.CmdACK, codec.CmdOFF, codec.CmdDEL:
		// The queueId must be a RID, and the signature must verify with its RK.
		a.verify = true
		q := s.e.queues.get(t.QueueID)
		if q == nil || string(q.rid[:]) != string(t.QueueID) {
			a.deny = true
			return
		}
		a.q, a.key = q, q.rk
	}
}

// creatorAuth settles a NEW on a relay that restricts creation: closed
// (SPEC §11, --new-queues off) or with creator keys (§5).
//
// Closed without creator keys, the NEW costs what a failed NEW costs where
// anyone may create: one verification, against its recipient key (a dummy
// key when unsigned, SPEC §7), and is refused whatever it says.
//
// With creator keys, nothing in the transmission names the key that signed
// it (§4, §5), so the signature is verified against every key, all of them
// whichever matched and whether creation is closed or not: the cost depends
// on the number of keys and the signature's length only (each mismatched
// length costs the dummy verification of §7), never on which key signed or
// whether one did. An empty set costs one dummy verification. These
// verifications are not batched: all but one fail, which would make a batch
// equation fall back to single verification every time.
func creatorAuth(t *codec.Transmission, a *auth, lim *Limits) {
	if lim.CreatorKeys == nil {
		a.key, a.verify, a.deny = t.Key, true, true
		return
	}
	ok := false
	for _, k := range lim.CreatorKeys {
		if codec.VerifyTimingSafe(k, t.Signed, t.Signature) {
			ok = true // no early exit: every key costs its verification
		}
	}
	if len(lim.CreatorKeys) == 0 {
		codec.VerifyTimingSafe(nil, t.Signed, t.Signature)
	}
	a.creator, a.deny = true, !ok || lim.NewQueuesClosed
	a.extra = max(len(lim.CreatorKeys), 1) - 1
}

// run carries out one transmission whose authentication is settled and
// writes its reply, or holds it until the log is durable.
func (s *Session) run(t *codec.Transmission, a *auth, w *Writer) {
	s.lsn = 0
	s.res = codec.ErrNone
	start, flushes := len(w.buf), w.flushes
	s.handle(t, a, w)
	s.countCommand(t)
	if (s.lsn != 0 && s.lsn > s.e.store.Durable()) || len(s.heldAt) > 0 {
		if w.flushes != flushes {
			start = 0 // reserve sealed the block before the reply: it alone is in this one
		}
		s.held = append(s.held, w.buf[start:]...)
		s.heldAt = append(s.heldAt, heldReply{end: len(s.held), lsn: s.lsn})
		w.buf = w.buf[:start]
	}
}

// logged appends r to the store for the command being run, notes the LSN
// its reply must wait for, and returns the ref the store gave a message body
// (0 when the engine keeps it).
func (s *Session) logged(r store.Record) (store.BodyRef, error) {
	lsn, ref, err := s.e.store.Append(r, s)
	if err != nil {
		return 0, err
	}
	s.lsn = max(s.lsn, lsn)
	return ref, nil
}

// NotifyDurable implements store.Notifier: the log made some of this session's
// records durable, so its loop should release the replies that waited.
// Safe from any goroutine.
func (s *Session) NotifyDurable() {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	// A closed session's connection (and after shutdown its poller) is gone:
	// waking it could write to a descriptor that now belongs to something else.
	if !closed && s.wake != nil {
		s.wake()
	}
}

// release writes the held replies whose records are durable, in order.
func (s *Session) release(w *Writer) {
	if len(s.heldAt) == 0 {
		return
	}
	durable := s.e.store.Durable()
	from, n := 0, 0
	for _, h := range s.heldAt {
		if h.lsn > durable {
			break
		}
		w.writeRaw(s.held[from:h.end])
		from = h.end
		n++
	}
	if n == 0 {
		return
	}
	rest := copy(s.held, s.held[from:])
	s.held = s.held[:rest]
	k := copy(s.heldAt, s.heldAt[n:])
	s.heldAt = s.heldAt[:k]
	for i := range s.heldAt {
		s.heldAt[i].end -= from
	}
}

// Drain writes the replies whose log records became durable and the pushes
// other connections posted. Call it on the session's loop only, after Process
// and whenever the loop is woken.
func (s *Session) Drain(w *Writer) {
	s.release(w)
	s.mu.Lock()
	evs := s.outbox
	s.outbox = s.spare[:0]
	s.mu.Unlock()
	for i := range evs {
		ev := &evs[i]
		switch ev.kind {
		case evDeliver:
			s.push(ev.q, ev.seq, w)
		case evEnd:
			// A stale END (this session subscribed again since) is dropped.
			ev.q.mu.Lock()
			stale := ev.q.sub == s
			ev.q.mu.Unlock()
			if !stale {
				delete(s.subs, ev.q)
				w.writeEND(ev.q.rid[:])
			}
		case evDrop:
			ev.q.mu.Lock()
			stale := ev.q.sub == s
			ev.q.mu.Unlock()
			if !stale {
				delete(s.subs, ev.q)
			}
		}
		evs[i] = event{}
	}
	s.mu.Lock()
	s.spare = evs[:0]
	s.mu.Unlock()
}

// push writes the oldest message of q as a MSG with an empty corrId, if this
// session is still the subscriber of the same delivery.
func (s *Session) push(q *queue, seq uint64, w *Writer) {
	q.mu.Lock()
	if q.sub != s || q.seq != seq || !q.delivered || q.msgs.len() == 0 {
		q.mu.Unlock()
		return
	}
	m, body, ok, _ := s.readAt(q, 0, w)
	if !ok {
		// Every message left had lost its body, or on an error the message
		// stays at the head, undelivered: the next SEND pushes it again and
		// a SUB answers with it. Nothing is logged on a path that every SEND
		// can take (a failing store logs its own failure).
		q.delivered = false
		q.mu.Unlock()
		return
	}
	s.observeDelivery(q.msgs.front())
	q.mu.Unlock()
	w.writeMSG(nil, q.rid[:], m.id[:], m.ts, body)
}

// readAt returns a copy of the i-th message of q (0: the head; 1: the one
// after the head, which an ACK answers with) and its body, read into w's
// scratch when the store keeps it. A message whose body the store has lost
// (store.ErrBodyLost) is deleted, as expiry would, and the next one takes its
// place; ok is false when no message is left at i. On another read error,
// or when a lost message's deletion cannot be logged, ok is false and err
// says why: nothing changed but the lost messages deleted before. The caller
// holds q.mu.
func (s *Session) readAt(q *queue, i int, w *Writer) (m message, body []byte, ok bool, err error) {
	for q.msgs.len() > i {
		m = *q.msgs.at(i)
		if body, err = s.bodyOf(q, &m, w); err == nil {
			return m, body, true, nil
		}
		if !errors.Is(err, store.ErrBodyLost) {
			return message{}, nil, false, err
		}
		if err = s.e.dropLost(q, i, err); err != nil {
			return message{}, nil, false, err
		}
	}
	return message{}, nil, false, nil
}

// bodyOf returns m's body: the one it holds, or the body the store keeps read into w's
// scratch (valid until the next bodyOf on w). The caller holds q.mu, as the
// store may reuse a ref once the message is deleted under that lock.
func (s *Session) bodyOf(q *queue, m *message, w *Writer) ([]byte, error) {
	if m.ref == 0 {
		return m.bodyBytes(), nil
	}
	b, err := s.e.store.ReadBody(q.rid, m.id, m.ref, w.scratch())
	if err != nil {
		return nil, fmt.Errorf("engine: reading a stored body: %w", err)
	}
	if len(b) != int(m.size) {
		return nil, fmt.Errorf("engine: the store read a body of %d bytes, want %d", len(b), m.size)
	}
	return b, nil
}

// Close ends the session: its subscriptions end and later posts are dropped.
// Call it on the session's loop, once.
func (s *Session) Close() {
	s.mu.Lock()
	s.closed = true
	s.outbox, s.spare = nil, nil
	s.mu.Unlock()
	for q := range s.subs {
		q.mu.Lock()
		if q.sub == s {
			q.sub = nil
			q.delivered = false
		}
		q.mu.Unlock()
	}
	s.subs = nil
	s.held, s.heldAt = nil, nil // the connection is gone: nobody to answer
	s.e.sessions.Add(-1)
}

func (s *Session) subscribe(q *queue) {
	if s.subs == nil {
		s.subs = make(map[*queue]struct{})
	}
	s.subs[q] = struct{}{}
}

// handle carries out one parsed transmission, authenticated as a says, and
// writes its response.
func (s *Session) handle(t *codec.Transmission, a *auth, w *Writer) {
	if s.e.debug {
		s.e.log.Debug("command", "cmd", t.Cmd.String(), "corr-id", string(t.CorrID),
			"queue-id", base64.StdEncoding.EncodeToString(t.QueueID), "err", t.Err.String())
	}
	if t.Err != codec.ErrNone {
		s.fail(t, t.Err, w)
		return
	}
	switch t.Cmd {
	case codec.CmdPING:
		w.writePONG(t.CorrID)
	case codec.CmdNEW:
		s.cmdNew(t, a, w)
	case codec.CmdSEND:
		s.cmdSend(t, a, w)
	case codec.CmdSUB, codec.CmdKEY, codec.CmdACK, codec.CmdOFF, codec.CmdDEL:
		if !a.granted() {
			s.fail(t, codec.ErrAuth, w)
			return
		}
		q := a.q
		switch t.Cmd {
		case codec.CmdSUB:
			s.cmdSub(t, q, w)
		case codec.CmdKEY:
			s.cmdKey(t, q, w)
		case codec.CmdACK:
			s.cmdAck(t, q, w)
		case codec.CmdOFF:
			s.cmdOff(t, q, w)
		case codec.CmdDEL:
			s.cmdDel(t, q, w)
		}
	default:
		// Parse lets only client commands through on the server side.
		s.fail(t, codec.ErrInternal, w)
	}
}

// fail writes ERR e, echoing the corrId and queueId that were valid.
func (s *Session) fail(t *codec.Transmission, e codec.Error, w *Writer) {
	s.res = e
	w.writeERR(t.CorrID, t.QueueID, e)
}

func (s *Session) ok(t *codec.Transmission, w *Writer) {
	w.writeOK(t.CorrID, t.QueueID)
}

// cmdNew creates a queue and subscribes this session to it (SPEC §5 NEW).
func (s *Session) cmdNew(t *codec.Transmission, a *auth, w *Writer) {
	if !a.granted() {
		s.fail(t, codec.ErrAuth, w)
		return
	}
	// SPEC §11 (server-wide limits): NEW past the relay's queue cap or past
	// its source's creation rate gets ERR QUOTA. The cap is checked first, so
	// that a refusal by it takes no token from the source's budget.
	lim := s.e.limits.Load()
	if !reserve(&s.e.stats.queues, 1, lim.MaxQueues) {
		s.refuse(t, quotaMaxQueues, w)
		return
	}
	if !s.allowNew() {
		s.e.stats.queues.Add(-1)
		s.refuse(t, quotaNewRate, w)
		return
	}
	q, err := s.e.newQueue(t.Key)
	if err != nil {
		s.e.stats.queues.Add(-1)
		s.e.log.Error("creating a queue", "err", err)
		s.fail(t, codec.ErrInternal, w)
		return
	}
	q.mu.Lock()
	_, err = s.logged(store.Record{Kind: store.QueueCreated, RID: q.rid, SID: q.sid, RecipientKey: q.rk, Time: q.createdAt})
	if err != nil {
		s.e.deleteLocked(q)
		q.mu.Unlock()
		s.e.unlink(q)
		s.e.log.Error("logging a new queue", "err", err)
		s.fail(t, codec.ErrInternal, w)
		return
	}
	q.sub = s
	q.mu.Unlock()
	s.subscribe(q)
	w.writeIDS(t.CorrID, q.rid[:], q.sid[:])
}

// lockLive locks q and reports whether it is still live; a queue deleted
// since it was looked up, or blocked by the operator (Engine.Block), answers
// ERR AUTH and is left unlocked. The check comes after the command's one
// signature verification, so a blocked queue costs what any AUTH failure
// costs (SPEC §7).
func (s *Session) lockLive(t *codec.Transmission, q *queue, w *Writer) bool {
	q.mu.Lock()
	if q.deleted || q.blocked {
		q.mu.Unlock()
		s.fail(t, codec.ErrAuth, w)
		return false
	}
	return true
}

// cmdSub makes this session the queue's only subscriber and answers with the
// oldest message (again, with the same msgId, if it was delivered before) or OK.
// Messages whose bodies the store lost are deleted first (readAt). When the
// store cannot read the oldest message's body, SUB answers ERR INTERNAL and
// changes nothing else.
func (s *Session) cmdSub(t *codec.Transmission, q *queue, w *Writer) {
	if !s.lockLive(t, q, w) {
		return
	}
	var m *message
	head, body, ok, err := s.readAt(q, 0, w)
	if err != nil {
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	if ok {
		m = &head
		s.observeDelivery(q.msgs.front())
	}
	old := q.sub
	q.sub = s
	q.seq++
	q.delivered = m != nil
	q.mu.Unlock()
	s.subscribe(q)
	if old != nil && old != s {
		old.post(event{kind: evEnd, q: q})
	}
	s.answerWith(t, q, m, body, w)
}

// answerWith answers t with m and its body as a MSG, or with OK when m is nil.
func (s *Session) answerWith(t *codec.Transmission, q *queue, m *message, body []byte, w *Writer) {
	if m == nil {
		s.ok(t, w)
		return
	}
	w.writeMSG(t.CorrID, q.rid[:], m.id[:], m.ts, body)
}

// cmdKey secures the queue with the sender's key, once.
func (s *Session) cmdKey(t *codec.Transmission, q *queue, w *Writer) {
	q.mu.Lock()
	if q.deleted || q.suspended || q.blocked || q.sk != nil {
		q.mu.Unlock()
		s.fail(t, codec.ErrAuth, w)
		return
	}
	if _, err := s.logged(store.Record{Kind: store.QueueSecured, RID: q.rid, SenderKey: t.Key}); err != nil {
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	q.sk = t.Key
	q.mu.Unlock()
	s.ok(t, w)
}

// cmdAck deletes the delivered message and answers with the next one or OK.
// The next message's body is read first, so that when the store cannot read
// it ACK answers ERR INTERNAL and changes nothing, as when the log fails;
// next messages whose bodies the store lost are deleted (readAt).
func (s *Session) cmdAck(t *codec.Transmission, q *queue, w *Writer) {
	if !s.lockLive(t, q, w) {
		return
	}
	if q.sub != s || !q.delivered || q.msgs.len() == 0 {
		q.mu.Unlock()
		s.fail(t, codec.ErrProhibited, w)
		return
	}
	var m *message
	next, body, ok, err := s.readAt(q, 1, w)
	if err != nil {
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	if ok {
		m = &next
	}
	if _, err := s.logged(store.Record{Kind: store.MessageDeleted, RID: q.rid, MsgID: q.msgs.front().id, Ref: q.msgs.front().ref}); err != nil {
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	s.e.stats.dropMessage(int(q.msgs.front().size))
	q.msgs.pop()
	q.seq++
	q.delivered = m != nil
	if m != nil {
		s.observeDelivery(q.msgs.front())
	}
	q.mu.Unlock()
	s.answerWith(t, q, m, body, w)
}

// cmdOff suspends the queue; OFF again is OK.
func (s *Session) cmdOff(t *codec.Transmission, q *queue, w *Writer) {
	if !s.lockLive(t, q, w) {
		return
	}
	if !q.suspended {
		now := s.e.now().Unix()
		if _, err := s.logged(store.Record{Kind: store.QueueSuspended, RID: q.rid, Time: now}); err != nil {
			q.mu.Unlock()
			s.internal(t, err, w)
			return
		}
		q.suspended, q.suspendedAt = true, now
	}
	q.mu.Unlock()
	s.ok(t, w)
}

// cmdDel deletes the queue and its messages before answering OK.
func (s *Session) cmdDel(t *codec.Transmission, q *queue, w *Writer) {
	if !s.lockLive(t, q, w) {
		return
	}
	if _, err := s.logged(store.Record{Kind: store.QueueDeleted, RID: q.rid, Refs: q.msgs.refs()}); err != nil {
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	sub := q.sub
	s.e.dropMessages(q)
	s.e.deleteLocked(q)
	q.mu.Unlock()
	s.e.unlink(q)
	if sub == s {
		delete(s.subs, q)
	} else if sub != nil {
		sub.post(event{kind: evDrop, q: q})
	}
	s.ok(t, w)
}

// cmdSend stores a message (SPEC §5 SEND). Its signature was verified
// (resolve) outside the queue lock; the state it was checked against is
// checked again under it.
func (s *Session) cmdSend(t *codec.Transmission, a *auth, w *Writer) {
	if !a.granted() {
		s.fail(t, codec.ErrAuth, w)
		return
	}
	q, sk := a.q, a.sk

	var m message
	if _, err := rand.Read(m.id[:]); err != nil {
		s.internal(t, err, w)
		return
	}
	m.ts = s.e.now().Unix()
	m.stored = s.e.mx.mono()

	q.mu.Lock()
	if q.deleted || q.suspended || q.blocked || q.sk != sk {
		q.mu.Unlock()
		s.fail(t, codec.ErrAuth, w)
		return
	}
	lim := s.e.limits.Load()
	if q.msgs.len() >= lim.Quota {
		q.mu.Unlock()
		s.refuse(t, quotaQueue, w)
		return
	}
	// SPEC §11: SEND past the relay's stored-bytes cap gets ERR QUOTA. The
	// body's bytes are counted here, before the store sees it.
	if !reserve(&s.e.stats.bodyBytes, int64(len(t.Body)), lim.MaxStoredBytes) {
		q.mu.Unlock()
		s.refuse(t, quotaMaxStoredBytes, w)
		return
	}
	// The stored copy of the body: the one allocation a SEND makes, unless
	// the store copies it itself (store.BodyCopier), which t.Body, valid
	// until the block is done, is lent to.
	body := t.Body
	if !s.e.lendBodies {
		body = append(make([]byte, 0, len(t.Body)), t.Body...)
	}
	m.setBody(body)
	ref, err := s.logged(store.Record{Kind: store.MessageStored, RID: q.rid, MsgID: m.id, Time: m.ts, Size: len(body), Body: body})
	if err != nil {
		s.e.stats.bodyBytes.Add(-int64(m.size))
		q.mu.Unlock()
		s.internal(t, err, w)
		return
	}
	switch {
	case ref != 0:
		// The store keeps the body (it may keep this very copy, which the
		// record lent it, so no second one is made); the message keeps the ref.
		m.body, m.ref = nil, ref
	case s.e.lendBodies:
		// A copying store left the body to the engine after all: t.Body is
		// only lent, so keep a copy.
		m.setBody(append(make([]byte, 0, len(t.Body)), t.Body...))
	}
	q.msgs.push(m)
	s.e.stats.messages.Add(1) // its bytes were reserved above
	var sub *Session
	var seq uint64
	if q.sub != nil && !q.delivered {
		q.delivered = true
		q.seq++
		sub, seq = q.sub, q.seq
	}
	q.mu.Unlock()
	if sub != nil {
		// A push to this very session waits in its own outbox for the Drain at
		// the end of this batch; waking its loop would only cost a spare call.
		sub.postFrom(s, event{kind: evDeliver, q: q, seq: seq})
	}
	s.ok(t, w)
}

// refuse answers ERR QUOTA for the limit reason (QuotaLabels) and counts it.
// A relay-wide cap also warns the operator, at most once per fullLogEvery.
func (s *Session) refuse(t *codec.Transmission, reason int, w *Writer) {
	s.mx.quota[reason].Add(1)
	s.fail(t, codec.ErrQuota, w)
	if reason != quotaMaxStoredBytes && reason != quotaMaxQueues {
		return
	}
	ok, held := s.e.mx.fullLog[reason].allow(s.e.now().UnixNano(), fullLogEvery)
	if !ok {
		return
	}
	lim := s.e.limits.Load()
	if reason == quotaMaxQueues {
		s.e.log.Warn("the relay holds max-queues queues: NEW gets ERR QUOTA until queues are deleted or expire",
			"max-queues", lim.MaxQueues, "queues", s.e.stats.queues.Load(), "refused-unlogged", held)
		return
	}
	s.e.log.Warn("the relay holds max-stored-bytes of messages: SEND gets ERR QUOTA until messages are acknowledged or expire",
		"max-stored-bytes", lim.MaxStoredBytes, "stored-bytes", s.e.stats.bodyBytes.Load(), "refused-unlogged", held)
}

// internal answers ERR INTERNAL after a failure of the server itself.
func (s *Session) internal(t *codec.Transmission, err error, w *Writer) {
	s.e.log.Error("command failed", "cmd", t.Cmd.String(), "err", err)
	s.fail(t, codec.ErrInternal, w)
}
