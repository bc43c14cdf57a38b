package transport

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Turns: how a loop shares its time among connections that have more work
// than one slice (workSlice). gnet runs a Wake as a task after the loop's
// I/O events, but it runs up to 256 queued tasks before it looks at I/O
// again, and a Wake made from a Wake's own handler lands in the same batch:
// a connection that woke itself after each slice would get up to 256 slices
// in a row while the loop's other connections waited. So a connection whose
// slice ran out does not wake itself: it waits in its loop's list of paused
// connections, and gets its next slice
//
//   - at its own next read event (a client that keeps sending), or
//   - when another connection of the loop is handled for an event of its
//     own and leaves budget over (one paused connection is woken per such
//     event, so light traffic is never more than one slice behind), or
//   - from the loop's turn timer, when the loop has handled no event for
//     turnDelay (a busy loop gives turns through its events; the timer must
//     not add turns of its own to the task batch).
//
// A turn given by a wake is marked, so that it does not hand a turn on in
// turn: the chain that would fill gnet's task batch never starts.

// turnDelay is how long a loop's paused connections wait for a turn when
// the loop has no other event to give them one.
const turnDelay = 200 * time.Microsecond

// turns is the list of paused connections of one loop (or of the loops that
// share its statistics shard). mu guards the list and the timer; the list
// is short: only connections with more than a slice of work are on it.
type turns struct {
	mu     sync.Mutex
	paused []*conn
	armed  bool
	timer  *time.Timer
	// active is when the loop's last handler call ended, in Unix
	// nanoseconds, or busy while one runs: the timer gives a turn only to an
	// idle loop, since a busy one gives turns through its events and a turn
	// from the timer would queue behind, and ahead of, everything else.
	active atomic.Int64
}

// pause puts c on the list, once, and arms the turn timer. Runs on c's loop.
func (t *turns) pause(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.paused {
		c.paused = true
		t.paused = append(t.paused, c)
	}
	if !t.armed {
		t.armed = true
		if t.timer == nil {
			t.timer = time.AfterFunc(turnDelay, t.tick)
		} else {
			t.timer.Reset(turnDelay)
		}
	}
}

// next takes the first paused connection other than except off the list.
func (t *turns) next(except *conn) *conn {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i, c := range t.paused {
		if c == except {
			continue
		}
		t.paused = append(t.paused[:i], t.paused[i+1:]...)
		c.paused = false
		return c
	}
	return nil
}

// remove takes c off the list if it is on it. Runs on c's loop.
func (t *turns) remove(c *conn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !c.paused {
		return
	}
	for i, p := range t.paused {
		if p == c {
			t.paused = append(t.paused[:i], t.paused[i+1:]...)
			break
		}
	}
	c.paused = false
}

// give wakes one paused connection other than except for a turn. Safe from
// any goroutine.
func (t *turns) give(except *conn) {
	if c := t.next(except); c != nil {
		c.turn.Store(true)
		c.wake()
	}
}

// tick gives a turn when the loop had no event to give one, and re-arms
// while connections remain paused. Runs on the timer's goroutine.
func (t *turns) tick() {
	var c *conn
	if a := t.active.Load(); a != busy && time.Now().UnixNano()-a >= int64(turnDelay) {
		c = t.next(nil) // the loop is idle: nothing else will give a turn
	}
	t.mu.Lock()
	t.armed = len(t.paused) > 0
	if t.armed {
		t.timer.Reset(turnDelay)
	}
	t.mu.Unlock()
	if c != nil {
		c.turn.Store(true)
		c.wake()
	}
}

// busy is turns.active while a handler runs.
const busy = math.MaxInt64

// turnFlag marks a handler call made for a turn (see turns).
type turnFlag = atomic.Bool
