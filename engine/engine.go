package engine

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// Limits is the part of the configuration that governs queues (SPEC §5, §11).
type Limits struct {
	Quota        int           // messages a queue may hold (default 128)
	MessageTTL   time.Duration // a stored message older than this is deleted (default 21 days)
	SuspendedTTL time.Duration // a queue suspended longer than this is deleted (default 7 days)
	// NewQueuesPerMinute caps NEW per connection (a token bucket of this size
	// refilled over a minute); NEW beyond it gets ERR QUOTA. Default 600.
	NewQueuesPerMinute int
	// MaxStoredBytes caps the bytes of message bodies the relay stores, all
	// queues together (Stats.BodyBytes): a SEND whose body would take them
	// past it gets ERR QUOTA (SPEC §11, server-wide limits). Negative: no
	// limit. Default 4 GiB.
	MaxStoredBytes int64
	// MaxQueues caps the live queues: NEW past it gets ERR QUOTA (SPEC §11).
	// Negative: no limit. Default 10,000,000.
	MaxQueues int64
	// UnsecuredTTL: a queue that KEY never secured is deleted this long after
	// its NEW, with its messages (default 21 days).
	UnsecuredTTL time.Duration
	// NewQueuesClosed closes queue creation: every NEW gets ERR AUTH (SPEC
	// §11, --new-queues off), at the cost of a failed NEW (§7). Set by
	// smp-server from its options; false (the zero value) is open.
	NewQueuesClosed bool
	// CreatorKeys, when not nil, are the creator keys of SPEC §5: a NEW must
	// be signed by one of them, not by its own recipient key. nil: anyone
	// may create; empty but not nil: no key admits a NEW. Parsed by
	// smp-server from --creator-keys (the engine reads no file); SetLimits
	// keeps its own copy of the slice, and the keys are immutable.
	CreatorKeys []*codec.VerifyKey
}

// DefaultLimits are SPEC §5 and §11's defaults, and issue 14's caps, sized
// for the reference machine (docs/performance.md: 2 vCPU, 23 GiB):
//
//   - MaxStoredBytes 4 GiB: the memory and wal stores hold bodies on the Go
//     heap, which under the default GOGC grows to about twice what is live,
//     so both caps reached together must fit twice over: 2 × (4 GiB of
//     bodies + 10M empty secured queues at ~0.3 KB each, 3 GiB) = 14 GiB
//     (TestQueueMemory measures a queue; codec's cache of decoded keys adds
//     a fixed 12 MiB). That is about half a million full-size messages
//     (every body is padded to the block, SPEC §10). A store that keeps
//     bodies on disk lets it rise.
//   - MaxQueues 10,000,000: several times what a relay with two cores
//     serves (its ~100k connections, each client with tens of queues),
//     while a flood of NEW from many sources stops short of the machine's
//     memory.
//   - UnsecuredTTL 21 days, the message TTL: by then the confirmation the
//     queue was waiting for has expired too, so a queue still unsecured is an
//     abandoned setup, or one created only to take up room.
var DefaultLimits = Limits{Quota: 128, MessageTTL: 21 * 24 * time.Hour, SuspendedTTL: 7 * 24 * time.Hour,
	NewQueuesPerMinute: 600, MaxStoredBytes: 4 << 30, MaxQueues: 10_000_000, UnsecuredTTL: 21 * 24 * time.Hour}

// Engine holds the queues and carries out commands (SPEC §5). It knows nothing
// of sockets: a Session per connection feeds it parsed transmissions and
// receives the responses. All methods are safe for concurrent use; the queue
// map is sharded and each queue has its own lock.
type Engine struct {
	// limits is replaced whole by SetLimits (smp-server's signal goroutine,
	// on SIGHUP) and read without a lock by every command.
	limits  atomic.Pointer[Limits]
	blockSz int
	now     func() time.Time
	store   store.Store
	// lendBodies: the store copies SEND bodies in Append (store.BodyCopier),
	// so the engine lends it the transmission's bytes; immutable.
	lendBodies bool
	log        *slog.Logger
	debug      bool // log client data (IDs, commands): only at --log-level debug (SPEC §11)
	// loadedAt is the Unix seconds at which Load began: the creation time of
	// a queue whose QueueCreated record has none. Set once in New.
	loadedAt int64

	queues *queueMap
	stats  counters
	mx     engineStats // operational counters for the metrics endpoint (metrics.go)

	sessions atomic.Int64 // open sessions, for shutdown and tests
}

// Options configures an Engine.
type Options struct {
	BlockSize int              // block size of the transport; bounds message bodies
	Limits    Limits           // zero fields take DefaultLimits
	Now       func() time.Time // clock; nil means time.Now (tests inject one)
	Store     store.Store      // nil means store.MemoryStore
	Logger    *slog.Logger     // nil discards
	// LogClientData allows logging of IDs and commands. Production mode (SPEC §8) leaves it false.
	LogClientData bool
}

// New returns an Engine with the state its Store replays.
func New(o Options) (*Engine, error) {
	if o.BlockSize == 0 {
		o.BlockSize = codec.DefaultBlockSize
	}
	if !codec.ValidBlockSize(o.BlockSize) {
		return nil, fmt.Errorf("engine: block size %d is not a power of two in [%d, %d]",
			o.BlockSize, codec.MinBlockSize, codec.MaxBlockSize)
	}
	l, err := o.Limits.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Engine{
		blockSz: o.BlockSize,
		now:     o.Now,
		store:   o.Store,
		log:     o.Logger,
		debug:   o.LogClientData,
		queues:  newQueueMap(),
	}
	e.limits.Store(&l)
	e.mx.init()
	if e.now == nil {
		e.now = time.Now
	}
	if e.store == nil {
		e.store = store.MemoryStore{}
	}
	if c, ok := e.store.(store.BodyCopier); ok {
		e.lendBodies = c.CopiesBodies()
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	e.loadedAt = e.now().Unix()
	if err := e.store.Load(e.replay); err != nil {
		return nil, fmt.Errorf("engine: loading state: %w", err)
	}
	if err := e.store.Attach(e); err != nil {
		return nil, fmt.Errorf("engine: attaching the store: %w", err)
	}
	return e, nil
}

// withDefaults fills zero fields from DefaultLimits and rejects negative ones.
func (l Limits) withDefaults() (Limits, error) {
	if l.Quota == 0 {
		l.Quota = DefaultLimits.Quota
	}
	if l.MessageTTL == 0 {
		l.MessageTTL = DefaultLimits.MessageTTL
	}
	if l.SuspendedTTL == 0 {
		l.SuspendedTTL = DefaultLimits.SuspendedTTL
	}
	if l.NewQueuesPerMinute == 0 {
		l.NewQueuesPerMinute = DefaultLimits.NewQueuesPerMinute
	}
	if l.MaxStoredBytes == 0 {
		l.MaxStoredBytes = DefaultLimits.MaxStoredBytes
	}
	if l.MaxQueues == 0 {
		l.MaxQueues = DefaultLimits.MaxQueues
	}
	if l.UnsecuredTTL == 0 {
		l.UnsecuredTTL = DefaultLimits.UnsecuredTTL
	}
	l.CreatorKeys = slices.Clone(l.CreatorKeys) // nil stays nil, empty stays empty
	if slices.Contains(l.CreatorKeys, nil) {
		return l, errors.New("engine: a creator key is nil")
	}
	if l.Quota < 0 || l.MessageTTL < 0 || l.SuspendedTTL < 0 || l.NewQueuesPerMinute < 0 || l.UnsecuredTTL < 0 {
		return l, errors.New("engine: quota and TTLs must be positive")
	}
	return l, nil
}

// Limits returns the limits in force. Safe for concurrent use.
func (e *Engine) Limits() Limits { return *e.limits.Load() }

// SetLimits replaces the limits in force; zero fields take DefaultLimits.
// Safe from any goroutine (smp-server calls it from its signal goroutine on
// SIGHUP). A command that already read the limits finishes under the old
// ones. A lowered quota or cap deletes nothing: SEND (NEW) gets ERR QUOTA
// until the queue, or the relay, is below it. A lowered TTL applies at the
// next expiry sweep. A connection's NEW bucket keeps its tokens and refills
// at the new rate up to the new size.
func (e *Engine) SetLimits(l Limits) error {
	l, err := l.withDefaults()
	if err != nil {
		return err
	}
	e.limits.Store(&l)
	return nil
}

// Now returns the engine's clock reading (time.Now unless a test set one).
// Safe for concurrent use.
func (e *Engine) Now() time.Time { return e.now() }

// BlockSize returns the transport block size the engine was built for.
func (e *Engine) BlockSize() int { return e.blockSz }

// Queues returns the number of live queues. Safe for concurrent use.
func (e *Engine) Queues() int { return int(e.stats.queues.Load()) }

// replay applies one stored record at start; it runs before any session
// exists. It is idempotent, because a log compacted while commands ran holds a
// snapshot and then the records appended since it began, some of which the
// snapshot already shows (see store.Snapshotter): a queue created twice, a message
// stored twice, or a change to a queue that is already gone is skipped. A
// stored message comes with its body or with the store's ref to it.
func (e *Engine) replay(r *store.Record) error {
	if r.Kind == store.QueueCreated {
		if r.RecipientKey == nil {
			return errors.New("replay: queue without a recipient key")
		}
		if q := e.queues.get(r.RID[:]); q != nil {
			if q.rid != r.RID || q.sid != r.SID {
				return errors.New("replay: queue ID collides with another queue")
			}
			return nil
		}
		// A store may not keep the creation time (the wal does not: SPEC §8
		// lists what survives a restart, and a queue's age is not in it). The
		// load time is then the creation time: an unsecured queue lives up to
		// UnsecuredTTL past each restart, never less than the TTL after its
		// NEW. A message it holds lowers that below (MessageStored).
		created := r.Time
		if created == 0 {
			created = e.loadedAt
		}
		q := &queue{rid: r.RID, sid: r.SID, rk: r.RecipientKey, createdAt: created}
		if r.RID == r.SID || !e.queues.add(q.rid, q) {
			return errors.New("replay: queue ID collides with another queue")
		}
		if !e.queues.add(q.sid, q) {
			e.queues.remove(q.rid, q)
			return errors.New("replay: queue ID collides with another queue")
		}
		e.stats.queues.Add(1)
		return nil
	}
	q := e.queues.get(r.RID[:])
	if q == nil || q.rid != r.RID {
		return nil // deleted before the snapshot this record follows
	}
	switch r.Kind {
	case store.QueueSecured:
		q.sk = r.SenderKey
	case store.QueueSuspended:
		q.suspended, q.suspendedAt = true, r.Time
	case store.QueueBlocked:
		q.blocked = true
	case store.QueueUnblocked:
		q.blocked = false
	case store.QueueDeleted:
		e.dropMessages(q)
		e.deleteLocked(q)
		e.unlink(q)
	case store.MessageStored:
		m, err := storedMessage(r)
		if err != nil {
			return err
		}
		for i := q.msgs.head; i < len(q.msgs.buf); i++ {
			if q.msgs.buf[i].id == r.MsgID {
				return nil
			}
		}
		q.msgs.push(m)
		e.stats.addMessage(int(m.size))
		// A queue is no younger than a message it holds: this bounds the
		// age of a queue replayed without its creation time.
		q.createdAt = min(q.createdAt, m.ts)
	case store.MessageDeleted:
		if n, ok := q.msgs.removeID(r.MsgID); ok {
			e.stats.dropMessage(n)
		}
	default:
		return fmt.Errorf("replay: unknown record kind %d", r.Kind)
	}
	return nil
}

// storedMessage returns the message a MessageStored record describes, with
// its body in memory (Body) or in the store (Ref).
func storedMessage(r *store.Record) (message, error) {
	if r.Size < 0 || r.Size > codec.MaxBlockSize {
		return message{}, fmt.Errorf("replay: message of %d bytes", r.Size)
	}
	m := message{id: r.MsgID, ts: r.Time, size: uint32(r.Size)}
	switch {
	case r.Ref != 0 && r.Body != nil:
		return message{}, errors.New("replay: message with both a body and a ref")
	case r.Ref != 0:
		m.ref = r.Ref
	case len(r.Body) != r.Size:
		return message{}, fmt.Errorf("replay: message of size %d with a body of %d bytes", r.Size, len(r.Body))
	default:
		m.setBody(r.Body)
	}
	return m, nil
}

// unlink removes q's IDs from the map. The caller has marked it deleted.
func (e *Engine) unlink(q *queue) {
	e.queues.remove(q.rid, q)
	e.queues.remove(q.sid, q)
}

// newQueue creates a queue with fresh random IDs, created now, and maps both
// of them. The caller has counted it in stats.queues (reserve).
func (e *Engine) newQueue(rk *codec.VerifyKey) (*queue, error) {
	q := &queue{rk: rk, createdAt: e.now().Unix()}
	for range 8 {
		if _, err := rand.Read(q.rid[:]); err != nil {
			return nil, err
		}
		if _, err := rand.Read(q.sid[:]); err != nil {
			return nil, err
		}
		if q.rid == q.sid || !e.queues.add(q.rid, q) {
			continue
		}
		if e.queues.add(q.sid, q) {
			return q, nil
		}
		e.queues.remove(q.rid, q)
	}
	return nil, errors.New("engine: could not draw unique queue IDs")
}

// reserve adds n to c unless that would take c past max (negative: no
// limit), and reports whether it did. The check is the add itself: a caller
// that went past takes its n back, so concurrent callers on any number of
// event loops never overshoot max together (one that saw another's passing
// reservation may be refused in between, at the cap only). Stores replayed
// at start, and a max lowered live, may leave c above max; nothing is
// deleted for it.
func reserve(c *atomic.Int64, n, max int64) bool {
	if max < 0 {
		c.Add(n)
		return true
	}
	if c.Load()+n > max { // already full: refuse without writing the shared line
		return false
	}
	if c.Add(n) > max {
		c.Add(-n)
		return false
	}
	return true
}

// RunExpiry runs Expire every interval until stop is closed. It is the
// relay's one TTL sweep: the command that runs the relay starts it once,
// however many transports serve the engine (they run no sweep of their own).
// It runs on the caller's goroutine.
func (e *Engine) RunExpiry(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			e.Expire(e.now())
		}
	}
}

// Expire deletes, as of now, messages older than the message TTL, queues
// suspended for longer than the suspended TTL, and queues never secured that
// are older than the unsecured TTL. A delivered message that expires frees
// the subscriber for the next one; the subscriber of a deleted queue forgets
// it silently, as after DEL. The server calls it periodically; tests call it
// with an injected clock.
func (e *Engine) Expire(now time.Time) {
	lim := e.limits.Load()
	msgCutoff := now.Add(-lim.MessageTTL).Unix()
	suspCutoff := now.Add(-lim.SuspendedTTL).Unix()
	unsecCutoff := now.Add(-lim.UnsecuredTTL).Unix()
	e.queues.each(func(q *queue) {
		var push *Session
		var seq uint64
		q.mu.Lock()
		if q.deleted {
			q.mu.Unlock()
			return
		}
		why := -1
		switch {
		case q.suspended && q.suspendedAt <= suspCutoff:
			why = expiredSuspended
		case q.sk == nil && q.createdAt <= unsecCutoff:
			why = expiredUnsecured
		}
		if why >= 0 {
			if _, _, err := e.store.Append(store.Record{Kind: store.QueueDeleted, RID: q.rid, Refs: q.msgs.refs()}, nil); err == nil {
				sub := q.sub
				e.dropMessages(q)
				e.deleteLocked(q)
				q.mu.Unlock()
				e.unlink(q)
				e.mx.queuesExpired[why].Add(1)
				if sub != nil {
					sub.post(event{kind: evDrop, q: q})
				}
				return
			}
		}
		expired := false
		for q.msgs.len() > 0 && q.msgs.front().ts <= msgCutoff {
			m := q.msgs.front()
			if _, _, err := e.store.Append(store.Record{Kind: store.MessageDeleted, RID: q.rid, MsgID: m.id, Ref: m.ref}, nil); err != nil {
				break
			}
			e.stats.dropMessage(int(m.size))
			e.mx.expired.Add(1)
			if q.delivered {
				q.delivered = false
				expired = true
			}
			q.msgs.pop()
		}
		if expired && q.sub != nil && q.msgs.len() > 0 {
			q.delivered = true
			q.seq++
			push, seq = q.sub, q.seq
		}
		q.mu.Unlock()
		if push != nil {
			push.post(event{kind: evDeliver, q: q, seq: seq})
		}
	})
}

// dropLost deletes the i-th message of q, whose body the store has lost
// (cause wraps store.ErrBodyLost), as expiry would: it logs MessageDeleted
// with the message's ref, so the store forgets the ref and a replay does not
// bring the message back, and counts it in EngineMetrics.Lost. No reply waits
// for that record: if it is lost too, the next read finds the body lost
// again. The caller holds q.mu; an error is the store's failure to log, and
// then nothing changed.
func (e *Engine) dropLost(q *queue, i int, cause error) error {
	m := q.msgs.at(i)
	if _, _, err := e.store.Append(store.Record{Kind: store.MessageDeleted, RID: q.rid, MsgID: m.id, Ref: m.ref}, nil); err != nil {
		return fmt.Errorf("engine: deleting a message whose body is lost: %w", err)
	}
	e.stats.dropMessage(int(m.size))
	q.msgs.removeAt(i) // the caller sets delivered for the message it reads next
	n := e.mx.lost.Add(1)
	if ok, held := e.mx.lostLog.allow(e.now().UnixNano(), lostLogEvery); ok {
		// No queue or message ID (SPEC §8): the store's error locates the
		// body in its own files.
		e.log.Warn("a stored message body is lost: the message is deleted", "err", cause,
			"lost-unlogged", held, "lost-total", n)
	}
	return nil
}

// deleteLocked marks q deleted and drops its messages at once (SPEC §8). The
// caller holds q.mu, has counted the messages out with dropMessages, and
// unlinks q after releasing the lock.
func (e *Engine) deleteLocked(q *queue) {
	q.deleted = true
	q.msgs.clear()
	q.sub = nil
	q.delivered = false
	e.stats.queues.Add(-1)
}

// dropMessages takes q's stored messages out of the statistics. The caller holds q.mu.
func (e *Engine) dropMessages(q *queue) {
	for i := q.msgs.head; i < len(q.msgs.buf); i++ {
		e.stats.dropMessage(int(q.msgs.buf[i].size))
	}
}

// Snapshot implements store.Snapshotter. A message's record has its body or,
// when the store keeps it, its ref: the store reads no body back from here.
func (e *Engine) Snapshot(emit func(r *store.Record) error) error {
	var recs []store.Record
	var err error
	e.queues.each(func(q *queue) {
		if err != nil {
			return
		}
		recs = recs[:0]
		q.mu.Lock()
		if !q.deleted {
			recs = append(recs, store.Record{Kind: store.QueueCreated, RID: q.rid, SID: q.sid, RecipientKey: q.rk,
				Time: q.createdAt})
			if q.sk != nil {
				recs = append(recs, store.Record{Kind: store.QueueSecured, RID: q.rid, SenderKey: q.sk})
			}
			if q.suspended {
				recs = append(recs, store.Record{Kind: store.QueueSuspended, RID: q.rid, Time: q.suspendedAt})
			}
			if q.blocked {
				recs = append(recs, store.Record{Kind: store.QueueBlocked, RID: q.rid})
			}
			for i := q.msgs.head; i < len(q.msgs.buf); i++ {
				m := &q.msgs.buf[i]
				recs = append(recs, store.Record{Kind: store.MessageStored, RID: q.rid, MsgID: m.id, Time: m.ts,
					Size: int(m.size), Body: m.bodyBytes(), Ref: m.ref})
			}
		}
		q.mu.Unlock()
		for i := range recs {
			if err = emit(&recs[i]); err != nil {
				return
			}
		}
	})
	return err
}

// Estimated encoded sizes behind LiveBytes: IDs, keys and framing.
const (
	liveQueueBytes   = 2*codec.QueueIDSize + 96
	liveMessageBytes = codec.MsgIDSize + 8 + codec.QueueIDSize + 16
)

// LiveBytes implements store.Snapshotter.
func (e *Engine) LiveBytes() int64 {
	return e.stats.queues.Load()*liveQueueBytes + e.stats.messages.Load()*liveMessageBytes + e.stats.bodyBytes.Load()
}

// Stats are the engine's aggregate counters; no per-queue or per-client
// figure is kept (SPEC §8). Safe for concurrent use.
type Stats struct {
	Queues    int64 // live queues
	Messages  int64 // stored messages, delivered or not
	BodyBytes int64 // bytes of stored message bodies
}

// Stats returns the current counters.
func (e *Engine) Stats() Stats {
	return Stats{Queues: e.stats.queues.Load(), Messages: e.stats.messages.Load(), BodyBytes: e.stats.bodyBytes.Load()}
}

// counters are the relay-wide totals, one atomic each, shared by every
// event loop (not sharded: the caps of Limits read them on every NEW and
// SEND). They are updated with the queue lock held, during replay, or, for a
// reservation (reserve) by NEW and SEND, before the change they count.
type counters struct {
	queues    atomic.Int64 // live queues, and NEWs that reserved one
	messages  atomic.Int64 // stored messages
	bodyBytes atomic.Int64 // bytes of stored bodies, and SENDs' reservations
}

func (c *counters) addMessage(n int) {
	c.messages.Add(1)
	c.bodyBytes.Add(int64(n))
}

func (c *counters) dropMessage(n int) {
	c.messages.Add(-1)
	c.bodyBytes.Add(-int64(n))
}
