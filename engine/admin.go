package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/smprelay/smprelay/store"
)

// The operator's actions on one queue (issue 16's admin interface):
// Block, Unblock and Delete, by the queue's RID or SID. They are called
// from smp-server's admin goroutine, never from an event loop, and are safe
// from any goroutine: each takes the queue's lock as a command does, appends
// its records under it (lock order: queue, then store), and tells the
// subscriber's loop through its outbox, as DEL and expiry do.
//
// A blocked queue answers ERR AUTH to every command of both sides (SEND from
// its sender; SUB, KEY, ACK, OFF and DEL from its recipient) after the one
// signature verification every command pays (SPEC §7): the check is made
// where a deleted or suspended queue is refused, so a blocked queue costs
// and answers what a missing one does and tells a client nothing more.

// ErrNoQueue is returned by Block, Unblock and Delete for an ID that names
// no live queue.
var ErrNoQueue = errors.New("engine: no such queue")

// ErrNotDurable is returned when an admin action's records were appended but
// did not become durable within durableWait (a store that failed, or one
// stalled on its disk). The change is applied in memory.
var ErrNotDurable = errors.New("engine: the change is applied but not yet durable")

// durableWait bounds how long an admin action waits for its records to
// reach the disk before it answers.
const durableWait = 30 * time.Second

// BlockResult says what Block did.
type BlockResult struct {
	WasBlocked bool // the queue was blocked already
	Dropped    int  // messages deleted because dropMessages was asked
}

// Block blocks the queue that id (a RID or a SID) names: every later command
// of either side gets ERR AUTH, and its subscription ends silently (the
// subscriber forgets it, as after a DEL by another connection; no END, which
// would tell the recipient something a missing queue does not). Its messages
// are kept, or deleted when dropMessages is true (each with its
// MessageDeleted record, as an ACK would). Blocking a blocked queue changes
// nothing but, with dropMessages, drops its messages. The block survives a
// restart (store.QueueBlocked). It returns once the records are durable.
func (e *Engine) Block(id []byte, dropMessages bool) (BlockResult, error) {
	q := e.queues.get(id)
	if q == nil {
		return BlockResult{}, ErrNoQueue
	}
	w := newDurableWaiter()
	var res BlockResult
	var lsn uint64
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return res, ErrNoQueue
	}
	res.WasBlocked = q.blocked
	if dropMessages {
		for q.msgs.len() > 0 {
			m := q.msgs.front()
			n, _, err := e.store.Append(store.Record{Kind: store.MessageDeleted, RID: q.rid, MsgID: m.id, Ref: m.ref}, w)
			if err != nil {
				q.mu.Unlock()
				return res, fmt.Errorf("engine: dropping the messages of a blocked queue: %w", err)
			}
			lsn = max(lsn, n)
			e.stats.dropMessage(int(m.size))
			q.msgs.pop()
			res.Dropped++
		}
		q.delivered = false
	}
	if !q.blocked {
		n, _, err := e.store.Append(store.Record{Kind: store.QueueBlocked, RID: q.rid}, w)
		if err != nil {
			q.mu.Unlock()
			return res, fmt.Errorf("engine: logging the block: %w", err)
		}
		lsn = max(lsn, n)
		q.blocked = true
	}
	sub := q.sub
	q.sub, q.delivered = nil, false
	q.seq++ // a push already posted is stale
	q.mu.Unlock()
	if sub != nil {
		sub.post(event{kind: evDrop, q: q})
	}
	return res, e.waitDurable(w, lsn)
}

// Unblock lifts Block: the queue's commands work again, its kept messages
// are delivered on the recipient's next SUB. Unblocking a queue that is not
// blocked changes nothing. It returns once the record is durable.
func (e *Engine) Unblock(id []byte) (wasBlocked bool, err error) {
	q := e.queues.get(id)
	if q == nil {
		return false, ErrNoQueue
	}
	w := newDurableWaiter()
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return false, ErrNoQueue
	}
	if !q.blocked {
		q.mu.Unlock()
		return false, nil
	}
	lsn, _, err := e.store.Append(store.Record{Kind: store.QueueUnblocked, RID: q.rid}, w)
	if err != nil {
		q.mu.Unlock()
		return true, fmt.Errorf("engine: logging the unblock: %w", err)
	}
	q.blocked = false
	q.mu.Unlock()
	return true, e.waitDurable(w, lsn)
}

// Delete deletes the queue that id names, with its messages, as its
// recipient's DEL does (SPEC §5), blocked or not; its subscriber forgets it
// silently. It returns the number of messages deleted, once the record is
// durable.
func (e *Engine) Delete(id []byte) (messages int, err error) {
	q := e.queues.get(id)
	if q == nil {
		return 0, ErrNoQueue
	}
	w := newDurableWaiter()
	q.mu.Lock()
	if q.deleted {
		q.mu.Unlock()
		return 0, ErrNoQueue
	}
	lsn, _, err := e.store.Append(store.Record{Kind: store.QueueDeleted, RID: q.rid, Refs: q.msgs.refs()}, w)
	if err != nil {
		q.mu.Unlock()
		return 0, fmt.Errorf("engine: logging the deletion: %w", err)
	}
	messages = q.msgs.len()
	sub := q.sub
	e.dropMessages(q)
	e.deleteLocked(q)
	q.mu.Unlock()
	e.unlink(q)
	if sub != nil {
		sub.post(event{kind: evDrop, q: q})
	}
	return messages, e.waitDurable(w, lsn)
}

// durableWaiter is the store.Notifier of one admin action: the store signals
// it when records become durable, and waitDurable re-reads Durable.
type durableWaiter chan struct{}

func newDurableWaiter() durableWaiter { return make(durableWaiter, 1) }

// NotifyDurable implements store.Notifier; it never blocks.
func (w durableWaiter) NotifyDurable() {
	select {
	case w <- struct{}{}:
	default:
	}
}

// waitDurable waits until the store has made lsn durable (0: nothing to
// wait for), at most durableWait.
func (e *Engine) waitDurable(w durableWaiter, lsn uint64) error {
	if lsn == 0 {
		return nil
	}
	t := time.NewTimer(durableWait)
	defer t.Stop()
	for e.store.Durable() < lsn {
		select {
		case <-w:
		case <-t.C:
			return ErrNotDurable
		}
	}
	return nil
}
