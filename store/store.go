// Package store is the contract between the engine and whatever keeps its
// state across restarts: the records the engine appends, the Store interface,
// the optional capabilities a Store may add (compaction, statistics), and
// MemoryStore, the Store that keeps nothing.
//
// It imports only codec, so stores (wal, the disk store) and the engine depend
// on it and never on each other. The Kind values here are the engine's names
// for state changes, not a file format: each store owns its own on-disk
// numbering.
//
// # Bodies
//
// A Store either leaves message bodies in the engine's memory, or keeps them
// itself (on disk, behind a cache). It says which per stored message: Append
// of a MessageStored record returns a non-zero BodyRef when the store keeps
// the body; the engine then drops its copy and reads the body back with
// ReadBody when it delivers the message. Load and Snapshot carry the same
// choice: a MessageStored record has either Body (in memory) or Ref (in the
// store), and Size in both cases.
//
// Deletions name the refs that die, so that a store which keeps bodies can
// free them without an index of its own: a MessageDeleted record carries the
// message's Ref, a QueueDeleted record the Refs of all the queue's stored
// messages. Once that record is appended the engine never reads those refs
// again.
//
// A store that no longer has a body it gave a ref for (its metadata survived
// a power cut and the body did not, in a mode that does not fsync every
// change) says so with an error wrapping ErrBodyLost: the engine then deletes
// that message, as if expired, and delivers the next one.
package store

import "github.com/smprelay/smprelay/codec"

// QueueID is a RID or SID.
type QueueID = [codec.QueueIDSize]byte

// MsgID is a message ID, unique within its queue.
type MsgID = [codec.MsgIDSize]byte

// Kind names a state change the engine asks its Store to keep.
type Kind uint8

// The state changes of SPEC §8 that survive a restart. The values are the
// engine's names only; a store maps them to its own file format.
const (
	QueueCreated   Kind = iota + 1 // RID, SID, RecipientKey, Time (creation; 0 when unknown)
	QueueSecured                   // RID, SenderKey
	QueueSuspended                 // RID, Time
	QueueDeleted                   // RID, Refs (DEL, or expired)
	MessageStored                  // RID, MsgID, Time, Size, and Body or Ref
	MessageDeleted                 // RID, MsgID, Ref (acknowledged, expired or lost)
	// Appended after the kinds above, which keep their values.
	QueueBlocked   // RID: the operator blocked the queue (smp-server admin block)
	QueueUnblocked // RID: the operator lifted the block
)

// String names the kind for logs and errors.
func (k Kind) String() string {
	switch k {
	case QueueCreated:
		return "queue created"
	case QueueSecured:
		return "queue secured"
	case QueueSuspended:
		return "queue suspended"
	case QueueDeleted:
		return "queue deleted"
	case MessageStored:
		return "message stored"
	case MessageDeleted:
		return "message deleted"
	case QueueBlocked:
		return "queue blocked"
	case QueueUnblocked:
		return "queue unblocked"
	}
	return "unknown kind"
}

// BodyRef locates a message body that a Store keeps; its meaning is the
// store's. 0 means "the body is in memory, in Record.Body".
type BodyRef uint64

// Record is one state change. Every field is immutable once the record is
// handed over, so a Store may keep references to Body, Refs and the keys.
type Record struct {
	Kind         Kind             // which change; says which fields below are set
	RID          QueueID          // the queue changed, by its recipient ID
	SID          QueueID          // QueueCreated
	RecipientKey *codec.VerifyKey // QueueCreated; VerifyKey.SPKI gives its bytes
	SenderKey    *codec.VerifyKey // QueueSecured
	MsgID        MsgID            // MessageStored, MessageDeleted
	// Time is Unix seconds: a message's receive time (MessageStored), a
	// queue's suspension time (QueueSuspended) or creation time
	// (QueueCreated, for the unsecured-queue TTL; a store that does not keep
	// it replays 0, and the engine then counts the queue's age from the load).
	Time int64
	Size int    // MessageStored: the body's length, whether Body is set or not
	Body []byte // MessageStored with Ref 0; nil when the store keeps the body
	// Ref is where the store keeps the message's body: in MessageStored
	// records of Load and Snapshot, and in the message's MessageDeleted,
	// whose ref dies with it. 0: the body is in memory (Body), and for every
	// other kind. Append of a MessageStored is always given 0 and returns
	// the ref.
	Ref BodyRef
	// Refs are, for QueueDeleted, the refs of the queue's stored messages,
	// which all die with it, in the queue's order; nil when it held none by
	// ref. The store may keep the slice.
	Refs []BodyRef
}

// Store keeps the engine's state across restarts. The in-memory queue index
// is authoritative while the server runs; the Store is written on every
// change, read once by Load at start, and reads the live state back through a
// Snapshotter when it compacts.
//
// The engine calls Append while it holds the lock of the queue concerned, so
// the records of one queue arrive in the order the changes were made; records
// of different queues arrive from several event loops at once, so every method
// must be safe for concurrent use. Lock order: queue lock, then the store's
// own locks; a Store never calls back into the engine while holding a lock the
// engine might wait for. A change is applied in memory only after Append
// returned nil; an error answers the command with ERR INTERNAL.
type Store interface {
	// Append logs r and returns its log sequence number. It must not block on
	// disk I/O for durability (group commit does that). The reply to the
	// command that made the change leaves only once Durable() >= lsn; lsn 0
	// means the reply need not wait. When a record with lsn > 0 becomes
	// durable, the Store calls n.NotifyDurable() from its own goroutine (n may
	// be nil).
	//
	// For a MessageStored record (Body set, Ref 0) the Store may keep the
	// body itself and return a non-zero ref: the engine then keeps only the
	// ref and Size, and reads the body with ReadBody. ref is 0 for every other
	// kind.
	Append(r Record, n Notifier) (lsn uint64, ref BodyRef, err error)
	// ReadBody appends to dst the body of message id of queue rid that Append,
	// Load or Snapshot gave as ref, and returns the extended slice. It may
	// block on disk; the engine calls it with the queue's lock held, so it
	// must not wait for anything the engine holds. It is never called with
	// ref 0, nor for a message after its MessageDeleted or QueueDeleted record.
	// An error wrapping ErrBodyLost says the body is gone for good (the
	// engine deletes the message); any other error, that this read failed
	// (the engine answers ERR INTERNAL and keeps the message).
	ReadBody(rid QueueID, id MsgID, ref BodyRef, dst []byte) ([]byte, error)
	// Durable returns the highest LSN known to be on stable storage.
	Durable() uint64
	// Load replays the stored state, oldest change first, calling apply for
	// each record. It runs once, before any session exists. apply must not
	// keep r: it copies what it needs (Body and the keys may be kept).
	Load(apply func(r *Record) error) error
	// Attach hands the Store the live state, which it reads when it compacts.
	// The engine calls it once, after Load.
	Attach(s Snapshotter) error
	// Close flushes and releases the Store; Append fails afterwards.
	Close() error
}

// BodyCopier is implemented by a Store whose Append copies the Body of a
// MessageStored record before it returns and keeps no reference to it, when
// CopiesBodies reports true (the disk store: its body log copies the body
// into its append buffer). The engine then lends Append the transmission's
// own bytes, valid only for the call, instead of allocating a copy per SEND;
// if such an Append returns ref 0 anyway, the engine copies the body then.
type BodyCopier interface {
	CopiesBodies() bool
}

// Notifier is told that records it appended are durable. Safe from any goroutine.
type Notifier interface{ NotifyDurable() }

// Snapshotter reads the live state for compaction. Safe for concurrent use
// with commands.
type Snapshotter interface {
	// Snapshot emits records that recreate the live state: per queue a
	// QueueCreated (with its creation Time), then QueueSecured, QueueSuspended
	// and QueueBlocked when they apply, then
	// a MessageStored per stored message, oldest first, with Body or Ref as
	// the engine holds it. It copies each queue's state under that queue's
	// lock and calls emit outside it. Changes made while it runs may or may
	// not show; the Store must also replay the records appended since the
	// snapshot began, and the engine's replay is idempotent so that a change
	// seen twice is applied once.
	Snapshot(emit func(r *Record) error) error
	// LiveBytes estimates the encoded size of the live state: the figure
	// against which "the log has grown past twice its live size" (SPEC §8) is
	// measured.
	LiveBytes() int64
}

// Compactor is a Store that can rewrite its files now (an operator's request
// or a test's), beyond its own background compaction.
type Compactor interface {
	Compact() error
}

// Stats are a persistent store's counters for metrics. Every field is
// cumulative since Open except those marked "now".
type Stats struct {
	Records     uint64 // records written
	Groups      uint64 // write groups (one write and, in fsync mode always, one fsync each)
	Syncs       uint64 // fsyncs of data files
	RawBytes    uint64 // record bytes written, before compression
	DiskBytes   uint64 // bytes written to files, framing included
	LogBytes    int64  // now: logical size of the state on disk
	Compactions uint64 // compactions completed, start-up included
	Durable     uint64 // now: highest durable LSN
	BodyBytes   int64  // now: bytes of bodies the store keeps itself (0 when the engine holds them)
	BodyFiles   int    // now: files holding those bodies
	CacheHits   uint64 // body reads answered from the store's cache
	CacheMisses uint64 // body reads that went to disk
	CacheBytes  int64  // now: bytes the body cache holds
	CacheMax    int64  // now: the body cache's bound (0: no cache)
	Failed      bool   // now: a write or fsync failed, and the store refuses every change until a restart
}

// StatsReporter is a Store with counters for the metrics endpoint.
type StatsReporter interface {
	StoreStats() Stats
}

// MemoryStore keeps nothing: state lives only in the engine's memory and is
// lost on restart. Safe for concurrent use.
type MemoryStore struct{}

// Append implements Store; nothing is kept, so nothing waits.
func (MemoryStore) Append(Record, Notifier) (uint64, BodyRef, error) { return 0, 0, nil }

// ReadBody implements Store; MemoryStore never returns a ref, so it is never called.
func (MemoryStore) ReadBody(QueueID, MsgID, BodyRef, []byte) ([]byte, error) {
	return nil, errNoBodies
}

// Durable implements Store.
func (MemoryStore) Durable() uint64 { return 0 }

// Load implements Store; there is nothing to replay.
func (MemoryStore) Load(func(*Record) error) error { return nil }

// Attach implements Store.
func (MemoryStore) Attach(Snapshotter) error { return nil }

// Close implements Store.
func (MemoryStore) Close() error { return nil }
