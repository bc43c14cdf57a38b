// Package engine is the relay: the queue store, the command semantics of
// SPEC §5 (subscriptions, one-at-a-time delivery, OFF, DEL, quota, expiry)
// and the timing-safe authentication of §7. It imports no network library:
// a transport (package transport, on gnet) runs the encrypted block
// transport of §3, owns the connections and feeds each one's block
// plaintext to a Session, through the exported seams only (NewSession,
// Session.ProcessBatched/Drain/Close/SetStatsShard/SetNewBucket/Holding,
// Writer, Engine.Now/BlockSize/Metrics). The TTL sweep is the engine's own
// (Engine.RunExpiry, started once by the command that runs the relay), so a
// second transport beside the first would add no second sweep.
//
// Layers, from the transport in:
//
//	Session (session.go) one connection's protocol state: commands in, responses out
//	Engine (engine.go)   the queues, shared by all sessions; expiry
//	Writer (writer.go)   packs responses into blocks and blocks into one write
//	store.Store          persistence of state changes (package store, which
//	                     imports only codec): store.MemoryStore keeps none,
//	                     package wal keeps them in a log
//
// A stored message (queue.go) holds its body, or the ref a store returned
// when it keeps the body itself, and its size in both cases. Delivery reads a
// ref back with store.ReadBody into the Writer's scratch; a body the store
// has lost (store.ErrBodyLost) deletes its message and delivery goes on with
// the next one, while any other read error leaves the message in place. Every
// deletion names the refs it frees (MessageDeleted.Ref, QueueDeleted.Refs).
//
// Ownership and locking:
//
//   - A Session and its subscriptions set belong to the goroutine (a
//     transport's event loop) that runs its connection; only it touches them.
//     So does the Writer it writes to, scratch included (one worker's at a
//     time).
//   - The queue map is split into shards, each with its own mutex; each queue
//     has its own mutex for its mutable fields. A shard lock, a queue lock and
//     a Session's outbox lock are never held together. Lock order: a queue lock, then the store's own
//     locks: the engine calls Store.Append and Store.ReadBody with the queue's
//     lock held (records of a queue reach the store in order, and a ref is
//     read before the deletion that frees it can be appended), and a store
//     never calls back into the engine holding a lock. No lock is held during
//     a signature verification or a socket write.
//   - A message's fields are set by the SEND (or replay) that stores it, under
//     the queue lock, and never change afterwards except stored (see message).
//   - A SEND whose message must be pushed to a subscriber on another connection
//     posts an event to that Session's outbox (a mutex-guarded slice) and wakes
//     its loop with gnet's Conn.Wake; the subscriber's loop then encodes and
//     seals the MSG itself, so every byte a connection sends is produced on its
//     own loop, in block-counter order.
//   - Operational counters (metrics.go) are atomics sharded per event loop: a
//     connection and its Session count only into their loop's padded shard,
//     and Engine.Metrics and Server.Metrics sum the shards for a scrape.
//     They are aggregates only (SPEC §8): nothing per queue or per client.
//
// Hot-path invariants: no goroutine per connection, no allocation per block or
// per transmission except the copy of a stored message body (and, off the hot
// path, a DEL's list of the refs it frees when the store keeps bodies),
// signature keys parsed once at NEW or KEY, and every ERR AUTH costs one
// signature check, except NEW on a relay with creator keys (SPEC §5), which
// costs one per key whatever it says (creatorAuth). The relay-wide caps cost
// an atomic load and add on the counters SEND and NEW update anyway; who may
// create (Limits.NewQueuesClosed, CreatorKeys) costs NEW one atomic load.
package engine
