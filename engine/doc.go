// Package engine is the relay: the queue store, the command semantics of
// SPEC §5 (subscriptions, one-at-a-time delivery, OFF, DEL, quota, expiry)
// and the timing-safe authentication of §7. It imports no network library:
// a transport (package transport, on gnet) runs the encrypted block
// transport of §3, owns the connections and feeds each one's block
// plaintext to a Session, through the exported seams only (NewSession,
// Session.ProcessBatched/Drain/Close/SetStatsShard/SetNewBucket/Holding,
// Writer, Engine.Expire/Now/BlockSize/Metrics).
//
// Layers, from the transport in:
//
//	Session (session.go) one connection's protocol state: commands in, responses out
//	Engine (engine.go)   the queues, shared by all sessions; expiry
//	Writer (writer.go)   packs responses into blocks and blocks into one write
//	Store (store.go)     persistence of state changes; MemoryStore keeps none
//
// Ownership and locking:
//
//   - A Session and its subscriptions set belong to the goroutine (a
//     transport's event loop) that runs its connection; only it touches them.
//   - The queue map is split into shards, each with its own mutex; each queue
//     has its own mutex for its mutable fields. No code holds two of these locks
//     at once, so there is no lock order to get wrong, and no lock is held
//     during a signature verification or a socket write.
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
// per transmission except the copy of a stored message body, signature keys
// parsed once at NEW or KEY, and every ERR AUTH costs one signature check.
package engine
