package engine

import "github.com/smprelay/smprelay/codec"

// RecordKind names a state change the engine asks its Store to keep.
type RecordKind uint8

// The state changes of SPEC §8 that survive a restart.
const (
	RecQueueCreated   RecordKind = iota + 1 // RID, SID, RecipientKey
	RecQueueSecured                         // RID, SenderKey
	RecQueueSuspended                       // RID, Time
	RecQueueDeleted                         // RID
	RecMessageStored                        // RID, MsgID, Time, Body
	RecMessageDeleted                       // RID, MsgID (acknowledged or expired)
)

// Record is one state change. The engine passes it by value (so it stays on the event loop's stack)
// and the Store must copy what it keeps before returning.
type Record struct {
	Kind         RecordKind
	RID          queueID
	SID          queueID          // RecQueueCreated
	RecipientKey *codec.VerifyKey // RecQueueCreated
	SenderKey    *codec.VerifyKey // RecQueueSecured
	MsgID        [codec.MsgIDSize]byte
	Time         int64  // Unix seconds: message receive time, or suspension time
	Body         []byte // RecMessageStored
}

// Store keeps the engine's state across restarts. The in-memory queues are
// authoritative while the server runs; the Store is written on every change
// and read once, by Load, at start.
//
// The engine calls Append while it holds the lock of the queue concerned, so
// the records of one queue arrive in the order the changes were made; records
// of different queues arrive from several event loops at once, so Append must
// be safe for concurrent use. A change is applied in memory only after Append
// returned nil; an error answers the command with ERR INTERNAL.
//
// Append must not block on disk: a write-ahead log hands the record to its
// writer goroutine. Durability before the reply (fsync mode always) is the
// log's concern, signalled through the commit hook the log adds to this
// interface; the in-memory store is durable at once.
type Store interface {
	Append(r Record) error
	// Load replays the stored state, oldest change first, calling apply for
	// each record.
	Load(apply func(r *Record) error) error
	Close() error
}

// MemoryStore keeps nothing: state lives only in the engine's memory and is
// lost on restart. Safe for concurrent use.
type MemoryStore struct{}

// Append implements Store.
func (MemoryStore) Append(Record) error { return nil }

// Load implements Store; there is nothing to replay.
func (MemoryStore) Load(func(*Record) error) error { return nil }

// Close implements Store.
func (MemoryStore) Close() error { return nil }
