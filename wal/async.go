package wal

import (
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/smprelay/smprelay/internal/uring"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
	"golang.org/x/sys/unix"
)

// Asynchronous fsyncs (AttachSyncs). On a relay pinned to one core the
// writer's blocking fsync(2) keeps the only processor (P) in a system call
// until Go's sysmon takes it back, and the event loop, runnable meanwhile,
// waits: the core idles (docs/performance.md, "Why the relay idles"). With
// AttachSyncs the writer hands the group's fsyncs (the segment's and the
// body keeper's) to io_uring, each hard-linked to a one-byte write to a
// socket pair whose other end the caller polls in its event loop; the
// loop's readable callback reaps the completions and wakes the writer, which
// waits on a channel meanwhile and so holds no P. Durability is published
// exactly as before: once every fsync of the group has succeeded.
//
// Only large groups go to io_uring (Options.AsyncMinRecords). Each costs
// the ring's kernel workers a few wake-ups, which at a partial load, where
// the groups are small and many, come to more than the blocking fsync
// costs: with every group by io_uring a relay paced at half its peak spent
// 208 µs a message against 157 µs, its groups half the size. A small
// group also means the loop had little to do meanwhile, so holding the P
// through its fsync costs it little. The groups of a loaded relay are
// large, and there the loop no longer waits: 3–9 % more messages a second
// at the peak. Measured in docs/performance.md, "The fsyncs by io_uring".

// asyncWaitCheck is how long the writer waits for the loop to reap before
// it reaps itself: a safety net for a loop that is gone or stuck, not the
// normal path.
const asyncWaitCheck = 50 * time.Millisecond

// wakeTag is the user data of the linked writes; fsyncs carry their index.
const wakeTag = ^uint64(0)

// asyncSync is the writer's io_uring and the state the reaper shares with
// it. ring's submission side and fds belong to the writer goroutine; the
// rest is guarded by mu, which the reaper (the loop's readable callback, or
// the writer after asyncWaitCheck) holds while it reaps.
type asyncSync struct {
	ring   *uring.Ring
	wakeFD int           // the socket end the linked writes go to
	done   chan struct{} // capacity 1: every fsync of the group completed
	gone   chan struct{} // closed by detach: nobody polls the other end any more
	once   sync.Once
	timer  *time.Timer // the writer's asyncWaitCheck; writer's
	fds    []int       // the group's descriptors; writer's
	errs   []error     // their results as errors; writer's

	mu     sync.Mutex
	expect int     // fsyncs of the group in flight (0: none)
	res    []int32 // their results, by index
	seen   int     // completions reaped of them
	// When every fsync succeeded and canPublish, the reaper itself stores
	// lsn as durable and notifies waiters (published), so that the replies
	// go out from the loop at once instead of after the writer next gets
	// the processor, which on one core is when the loop runs out of work.
	log        *Log
	canPublish bool
	published  bool
	lsn        uint64
	waiters    []store.Notifier
	seenN      map[store.Notifier]struct{}
	closed     bool // Close released the ring
}

// AttachSyncs switches the writer to fsyncs by io_uring. The caller polls
// conn in an event loop and calls readable (from that loop) whenever conn
// is readable, after discarding what it read; it calls detach once it stops
// polling (the loop closes). It returns an error wrapping
// uring.ErrUnavailable when the kernel has no io_uring (or forbids it):
// the writer keeps its blocking fsyncs then. Only a log whose files and
// body keeper have descriptors uses it (otherwise each group falls back).
func (l *Log) AttachSyncs() (conn net.Conn, readable, detach func(), err error) {
	ring, err := uring.New(64)
	if err != nil {
		return nil, nil, nil, err
	}
	sp, err := socketPair()
	if err != nil {
		ring.Close()
		return nil, nil, nil, fmt.Errorf("wal: a socket pair for fsync completions: %w", err)
	}
	if err := selfTest(ring, sp); err != nil {
		ring.Close()
		unix.Close(sp[0])
		unix.Close(sp[1])
		return nil, nil, nil, err
	}
	f := os.NewFile(uintptr(sp[1]), "wal-fsync-completions")
	conn, err = net.FileConn(f) // a duplicate
	f.Close()
	if err != nil {
		ring.Close()
		unix.Close(sp[0])
		return nil, nil, nil, fmt.Errorf("wal: a conn for fsync completions: %w", err)
	}
	a := &asyncSync{
		ring: ring, wakeFD: sp[0],
		done: make(chan struct{}, 1), gone: make(chan struct{}),
		timer: time.NewTimer(time.Hour),
		log:   l, seenN: make(map[store.Notifier]struct{}),
	}
	a.timer.Stop()
	l.async.Store(a)
	return conn, a.reap, func() { a.once.Do(func() { close(a.gone) }) }, nil
}

// socketPair makes a non-blocking, close-on-exec Unix socket pair. The
// flags are set after socketpair(2), not in its type (SOCK_CLOEXEC and
// SOCK_NONBLOCK are Linux's), so that the package builds elsewhere too;
// syscall.ForkLock keeps a concurrent fork from inheriting the pair before
// close-on-exec is set, as package net does where it must.
func socketPair() ([2]int, error) {
	syscall.ForkLock.RLock()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(sp[0])
		unix.CloseOnExec(sp[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return sp, err
	}
	for _, fd := range sp {
		if err := unix.SetNonblock(fd, true); err != nil {
			unix.Close(sp[0])
			unix.Close(sp[1])
			return sp, err
		}
	}
	return sp, nil
}

// selfTest submits one fsync-then-wake (of the socket, which fails) and
// checks that the linked write ran and its byte arrived: a kernel without
// IORING_OP_WRITE (before 5.6) or hard links (5.5) would otherwise leave
// every group to the writer's asyncWaitCheck.
func selfTest(ring *uring.Ring, sp [2]int) error {
	ring.FsyncThenWake(sp[0], 0, sp[0], wakeTag)
	if err := ring.Submit(); err != nil {
		return fmt.Errorf("%w: %w", uring.ErrUnavailable, err)
	}
	wrote := int32(0)
	for seen := 0; seen < 2; {
		if err := ring.Wait(); err != nil {
			return fmt.Errorf("%w: %w", uring.ErrUnavailable, err)
		}
		ring.Reap(func(ud uint64, res int32) {
			seen++
			if ud == wakeTag {
				wrote = res
			}
		})
	}
	var b [1]byte
	if n, err := unix.Read(sp[1], b[:]); wrote != 1 || n != 1 || err != nil {
		return fmt.Errorf("%w: the linked write did not arrive (result %d)", uring.ErrUnavailable, wrote)
	}
	return nil
}

// reap takes the ready completions and wakes the writer once the group's
// fsyncs are all in.
func (a *asyncSync) reap() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return // the ring is unmapped: a late wake-up after Close
	}
	a.ring.Reap(func(ud uint64, res int32) {
		if ud == wakeTag || int(ud) >= len(a.res) {
			return
		}
		a.res[ud] = res
		a.seen++
	})
	if a.expect > 0 && a.seen == a.expect {
		a.expect, a.seen = 0, 0
		if a.canPublish && !slices.ContainsFunc(a.res, func(r int32) bool { return r < 0 }) {
			a.log.durable.Store(a.lsn)
			for _, n := range a.waiters {
				if _, dup := a.seenN[n]; dup {
					continue
				}
				a.seenN[n] = struct{}{}
				n.NotifyDurable()
			}
			clear(a.seenN)
			a.published = true
		}
		select {
		case a.done <- struct{}{}:
		default:
		}
	}
	a.mu.Unlock()
}

// close releases the ring and the writer's end; after the writer stopped.
func (a *asyncSync) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	a.ring.Close()
	unix.Close(a.wakeFD)
}

// errNoDescriptor: a file without a descriptor; the writer syncs blocking.
var errNoDescriptor = errors.New("wal: no descriptor")

// syncAsync fsyncs the segment and the bodies through a. It returns
// errNoDescriptor, having done nothing, when one of them has no
// descriptor; otherwise what sync's blocking path would return before
// failing the log.
func (l *Log) syncAsync(a *asyncSync) error {
	walFD := -1
	if !vfs.WithFD(l.w.f, func(fd int) { walFD = fd }) {
		return errNoDescriptor
	}
	a.fds = a.fds[:0]
	var finish func([]error) error
	publish := true // the reaper may publish the group as durable
	if b := l.opts.Bodies; b != nil {
		pb, ok := b.(interface {
			PrepareSync() ([]int, func([]error) error, bool, bool, error)
		})
		if !ok {
			return errNoDescriptor
		}
		fds, fin, dirAfter, ok, err := pb.PrepareSync()
		if !ok {
			return errNoDescriptor
		}
		if err != nil {
			return fmt.Errorf("syncing message bodies: %w", err)
		}
		a.fds, finish = append(a.fds, fds...), fin
		publish = !dirAfter
	}
	nb := len(a.fds)
	a.fds = append(a.fds, walFD)
	a.errs = append(a.errs[:0], make([]error, len(a.fds))...)
	errs := a.errs
	if 2*len(a.fds) > a.ring.Entries() {
		// More sealed body segments than the ring takes at once (never
		// at the relay's segment sizes): blocking, as without the ring.
		for i, fd := range a.fds {
			if err := unix.Fsync(fd); err != nil {
				errs[i] = err
			}
		}
	} else {
		a.mu.Lock()
		a.res = append(a.res[:0], make([]int32, len(a.fds))...) // no allocation once grown
		a.expect, a.seen = len(a.fds), 0
		a.canPublish, a.published = publish, false
		a.lsn, a.waiters = l.w.written, l.w.groupWaiters
		a.mu.Unlock()
		for i, fd := range a.fds {
			a.ring.FsyncThenWake(fd, uint64(i), a.wakeFD, wakeTag)
		}
		if err := a.ring.Submit(); err != nil {
			// Nothing was queued in the kernel for certain: fail as an fsync would.
			for i := range errs {
				errs[i] = err
			}
		} else {
			a.wait()
			a.mu.Lock()
			for i, r := range a.res {
				if r < 0 {
					errs[i] = syscall.Errno(-r)
				}
			}
			l.w.notified = a.published
			a.waiters = nil
			a.mu.Unlock()
		}
	}
	var err error
	if finish != nil {
		if berr := finish(errs[:nb]); berr != nil {
			err = fmt.Errorf("syncing message bodies: %w", berr)
		}
	}
	if werr := errs[nb]; werr != nil && err == nil {
		err = &os.PathError{Op: "sync", Path: l.w.path, Err: werr}
	}
	return err
}

// wait returns once the group's fsyncs have completed: when the loop's reap
// says so, or after the writer reaped them itself because the loop is gone
// or slow.
func (a *asyncSync) wait() {
	a.timer.Reset(asyncWaitCheck)
	defer a.timer.Stop()
	for {
		select {
		case <-a.done:
			return
		case <-a.timer.C:
			a.timer.Reset(asyncWaitCheck)
		case <-a.gone:
			_ = a.ring.Wait() // nobody else reaps: blocking is all there is
		}
		a.reap()
		select {
		case <-a.done:
			return
		default:
		}
	}
}
