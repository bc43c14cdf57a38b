// Package transport is the relay's network side, on gnet event loops: it
// accepts TCP connections itself (accept.go: max-conns, per-source limits,
// the open-file limit), runs the handshake of SPEC §3.2 (server shares in
// share.go), opens and seals the blocks of §3.3, and feeds each connection's
// block plaintext to an engine.Session, giving every connection a bounded
// slice of work per turn (turns.go). The engine imports no network library;
// another transport would be a sibling package using the same engine seams.
//
// Ownership: a connection (its ciphers, block counters, Session, rest of a
// cut block, debt) belongs to the event loop it was enrolled in; other loops
// reach it only through its Session's outbox and gnet's Wake. The acceptor
// goroutine owns the listener and the reserve descriptor; per-source state
// and the turn lists are shared between loops under their own mutexes; the
// counters are atomics sharded per loop. Server's exported methods say which
// are safe from other goroutines.
package transport
