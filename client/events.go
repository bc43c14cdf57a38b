package client

import (
	"context"
	"encoding/base64"
	"fmt"
	"sync"
	"time"
)

// EventKind says what an Event reports.
type EventKind uint8

// Kinds of events.
const (
	// EventMessage: the server delivered a message (MSG) on queue RID, pushed
	// or in answer to Subscribe or Ack. Acknowledge it with Ack to get the
	// next one.
	EventMessage EventKind = iota + 1
	// EventEnd: another connection subscribed to queue RID (END); this Conn
	// gets nothing more from it and will not subscribe to it again.
	EventEnd
	// EventDisconnected: the transport connection broke (Err says why); the
	// Conn is reconnecting unless Options.NoReconnect is set.
	EventDisconnected
	// EventSubscriptionLost: after reconnecting, the server refused SUB for
	// queue RID (Err wraps the codec.Error, e.g. ERR AUTH when the server no
	// longer has the queue). The Conn has dropped the subscription.
	EventSubscriptionLost
	// EventReconnected: a new transport connection is up and every
	// subscription not reported lost is restored; messages that were
	// delivered and not acknowledged come again (Message.Redelivered).
	EventReconnected
	// EventReconnectFailed: an attempt to reconnect failed (Err says why,
	// e.g. a refused connection); the next starts after Retry. It comes
	// between EventDisconnected and EventReconnected, once per failed
	// attempt, so a program can tell its user the server is unreachable.
	EventReconnectFailed
)

// String returns the kind's name, for logs.
func (k EventKind) String() string {
	switch k {
	case EventMessage:
		return "message"
	case EventEnd:
		return "end"
	case EventDisconnected:
		return "disconnected"
	case EventSubscriptionLost:
		return "subscription-lost"
	case EventReconnected:
		return "reconnected"
	case EventReconnectFailed:
		return "reconnect-failed"
	}
	return fmt.Sprintf("EventKind(%d)", uint8(k))
}

// Event is something that happened on a Conn without a command of the
// caller's waiting for it. Later versions may add kinds: ignore the ones you
// do not handle.
type Event struct {
	Kind    EventKind
	RID     []byte        // EventMessage, EventEnd, EventSubscriptionLost: the queue
	Message Message       // EventMessage
	Err     error         // EventDisconnected, EventSubscriptionLost, EventReconnectFailed
	Retry   time.Duration // EventReconnectFailed: the wait before the next attempt
}

// String renders the event for logs; it does not print message bodies.
func (e Event) String() string {
	s := e.Kind.String()
	if e.RID != nil {
		s += " " + base64.StdEncoding.EncodeToString(e.RID)
	}
	if e.Kind == EventMessage {
		s += fmt.Sprintf(" id=%s %d bytes", base64.StdEncoding.EncodeToString(e.Message.ID), len(e.Message.Body))
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	if e.Kind == EventReconnectFailed {
		s += fmt.Sprintf(" (retry in %v)", e.Retry)
	}
	return s
}

// Message is a message as the server relays it (SPEC §5 MSG). Body is what
// the sender sent, still end-to-end encrypted: RecipientQueue.Open opens it.
type Message struct {
	RID         []byte    // the queue's recipient ID
	ID          []byte    // msgId, 8 bytes; the same when a message comes again
	Time        time.Time // when the server received it, whole seconds UTC
	Body        []byte    // the body as sent and stored, opaque to the server
	Redelivered bool      // this Conn delivered a message with this ID on this queue just before: the server sent it again (after a reconnection, or a repeated SUB)
}

// linkState reports the kinds that describe the connection rather than a
// queue: the ones a full event queue drops (see Options.MaxEvents).
func linkState(k EventKind) bool {
	return k == EventDisconnected || k == EventReconnectFailed || k == EventReconnected
}

// dispatcher hands events to the consumer on its own goroutine, in order,
// from a queue of bounded length, so the reader never blocks on the consumer.
type dispatcher struct {
	fn  func(Event) // callback mode
	out chan Event  // channel mode; nil with fn

	mu   sync.Mutex
	q    []Event
	n    int // events pushed and not yet handed to the consumer, q and the batch in hand
	kick chan struct{}
	done chan struct{} // closed when the goroutine ends
}

func newDispatcher(fn func(Event)) *dispatcher {
	d := &dispatcher{fn: fn, kick: make(chan struct{}, 1), done: make(chan struct{})}
	if fn == nil {
		d.out = make(chan Event)
	}
	return d
}

func (d *dispatcher) start(ctx context.Context) { go d.run(ctx) }

// push queues e unless limit events are already waiting. It reports false
// when e did not fit and is not a link-state event, which may be dropped:
// the caller then closes the Conn.
func (d *dispatcher) push(e Event, limit int) bool {
	d.mu.Lock()
	if d.n >= limit {
		d.mu.Unlock()
		return linkState(e.Kind)
	}
	d.q = append(d.q, e)
	d.n++
	d.mu.Unlock()
	select {
	case d.kick <- struct{}{}:
	default:
	}
	return true
}

// waiting returns how many events are queued; for tests.
func (d *dispatcher) waiting() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

func (d *dispatcher) run(ctx context.Context) {
	defer close(d.done)
	if d.out != nil {
		defer close(d.out)
	}
	for {
		d.mu.Lock()
		batch := d.q
		d.q = nil
		d.mu.Unlock()
		for _, e := range batch {
			if ctx.Err() != nil {
				return
			}
			if d.fn != nil {
				d.fn(e)
			} else {
				select {
				case d.out <- e:
				case <-ctx.Done():
					return
				}
			}
			d.mu.Lock()
			d.n--
			d.mu.Unlock()
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-d.kick:
		case <-ctx.Done():
			return
		}
	}
}

// wait waits for the goroutine in channel mode. In callback mode it does
// not, since Close may be called from the callback itself.
func (d *dispatcher) wait() {
	if d.fn == nil {
		<-d.done
	}
}
