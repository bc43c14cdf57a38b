package engine

import "github.com/smprelay/smprelay/codec"

// RecordKind names a state change the engine asks its Store to keep.
type RecordKind uint8

// The state changes of SPEC §8 that survive a restart. The values are part of
// the log's file format: never renumber them.
const (
	RecQueueCreated   RecordKind = iota + 1 // RID, SID, RecipientKey
	RecQueueSecured                         // RID, SenderKey
	RecQueueSuspended                       // RID, Time
	RecQueueDeleted                         // RID
	RecMessageStored                        // RID, MsgID, Time, Body
	RecMessageDeleted                       // RID, MsgID (acknowledged or expired)
)

// Record is one state change.
type Record struct {
	Kind         RecordKind
	RID          queueID
	SID          queueID          // RecQueueCreated
	RecipientKey *codec.VerifyKey // RecQueueCreated; VerifyKey.SPKI gives its bytes
	SenderKey    *codec.VerifyKey // RecQueueSecured
	MsgID        [codec.MsgIDSize]byte
	Time         int64  // Unix seconds: message receive time, or suspension time
	Body         []byte // RecMessageStored; immutable, the Store may keep it without copying
}

// Store keeps the engine's state across restarts. The in-memory queues are
// authoritative while the server runs; the Store is written on every change,
// read once by Load at start, and reads the live state back through a
// Snapshotter when it compacts.
//
// The engine calls Append while it holds the lock of the queue concerned, so
// the records of one queue arrive in the order the changes were made; records
// of different queues arrive from several event loops at once, so every method
// must be safe for concurrent use. A change is applied in memory only after
// Append returned nil; an error answers the command with ERR INTERNAL.
type Store interface {
	// Append logs r and returns its log sequence number. It must not block on
	// disk. The reply to the command that made the change leaves only once
	// Durable() >= lsn (fsync mode always); lsn 0 means the reply need not
	// wait. When a record with lsn > 0 becomes durable, the Store calls
	// n.NotifyDurable() from its own goroutine (n may be nil).
	Append(r Record, n Notifier) (lsn uint64, err error)
	// Durable returns the highest LSN known to be on stable storage.
	Durable() uint64
	// Load replays the stored state, oldest change first, calling apply for
	// each record. It runs once, before any session exists.
	Load(apply func(r *Record) error) error
	// Attach hands the Store the live state, which it reads when it compacts.
	// The engine calls it once, after Load.
	Attach(s Snapshotter) error
	// Close flushes and releases the Store; Append fails afterwards.
	Close() error
}

// Notifier is told that records it appended are durable. Safe from any goroutine.
type Notifier interface{ NotifyDurable() }

// Snapshotter reads the live state for compaction. Safe for concurrent use
// with commands.
type Snapshotter interface {
	// Snapshot emits records that recreate the live state: per queue a
	// RecQueueCreated, then RecQueueSecured and RecQueueSuspended when they
	// apply, then a RecMessageStored per stored message, oldest first. It
	// copies each queue's state under that queue's lock and calls emit outside
	// it. Changes made while it runs may or may not show; the Store must also
	// replay the records appended since the snapshot began, and the engine's
	// replay is idempotent so that a change seen twice is applied once.
	Snapshot(emit func(r *Record) error) error
	// LiveBytes estimates the encoded size of the live state: the figure
	// against which "the log has grown past twice its live size" (SPEC §8) is
	// measured.
	LiveBytes() int64
}

// MemoryStore keeps nothing: state lives only in the engine's memory and is
// lost on restart. Safe for concurrent use.
type MemoryStore struct{}

// Append implements Store; nothing is kept, so nothing waits.
func (MemoryStore) Append(Record, Notifier) (uint64, error) { return 0, nil }

// Durable implements Store.
func (MemoryStore) Durable() uint64 { return 0 }

// Load implements Store; there is nothing to replay.
func (MemoryStore) Load(func(*Record) error) error { return nil }

// Attach implements Store.
func (MemoryStore) Attach(Snapshotter) error { return nil }

// Close implements Store.
func (MemoryStore) Close() error { return nil }
