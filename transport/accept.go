package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"
)

// The relay accepts connections itself, on one goroutine, and enrolls each
// one it keeps into gnet's event loops, which run as a gnet.Client: an engine
// without a listener of its own. gnet's acceptor treats every accept(2) error
// but EAGAIN, EINTR and a reset as fatal: at the open-file limit (EMFILE) its
// engine stops and the relay with it, so one host opening connections could
// stop a public relay for good. Accepting here gives the relay the choice at
// the two points that matter:
//
//   - Before gnet sees a descriptor, the connection takes a slot of MaxConns
//     or is closed at once (counted as max_conns), so the limit holds however
//     fast connections arrive.
//   - When accept(2) fails for lack of descriptors (EMFILE, ENFILE), the
//     acceptor closes a reserve descriptor, accepts the waiting connection,
//     closes it (counted as fd_limit) and takes the reserve again; with no
//     reserve it backs off and retries. Either way it accepts again as soon as
//     descriptors free up, and the open connections keep being served.
//
// Other accept errors that a peer or the network can cause are retried after
// a back-off; an error that means the listener itself is broken stops the
// server, and Serve returns it so that the process exits non-zero.
//
// gnet's EnrollContext duplicates the descriptor (the duplicate joins a
// loop's poller; the accepted one is closed once the loop has opened the
// connection) and waits until the loop has opened it. So that accepting does
// not wait for busy loops, enrollWorkers goroutines enroll what the acceptor
// queues (at most enrollQueue waiting); past that the acceptor waits and new
// connections wait in the kernel's backlog. A connection being enrolled
// briefly holds two descriptors: fdReserve leaves room for them.

// Enrollment: goroutines that hand accepted connections to the loops, and
// the connections that may wait for them.
const (
	enrollWorkers = 8
	enrollQueue   = 56
)

// minSendBuffer is the least SO_SNDBUF the relay sets: a few blocks.
const minSendBuffer = 32 << 10

// Back-off of the acceptor after an accept error it cannot act on.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = 100 * time.Millisecond
)

// acceptor is the state of the accept goroutine and its enrollers. reserve
// belongs to the accept goroutine; the rest is safe for all of them.
type acceptor struct {
	s       *Server
	ln      net.Listener
	cli     *gnet.Client
	reserve *os.File        // an open descriptor given up to accept one connection at EMFILE
	sndbuf  int             // SO_SNDBUF set on the listener (capSendBuffer)
	mx      *connStats      // refusals made before any loop owns the connection (shard 0)
	queue   chan enrollment // accepted connections with a slot, for the enrollers
	workers sync.WaitGroup  // the enrollers

	exhausted atomic.Bool   // descriptors ran out; cleared by the next enrolled connection
	refused   atomic.Uint64 // connections refused while exhausted, for the log line that ends it
}

// enrollment is an accepted connection that holds a slot of MaxConns.
type enrollment struct {
	nc net.Conn
	c  *conn
}

// startEnrollers starts the goroutines that drain a.queue.
func (a *acceptor) startEnrollers() {
	a.queue = make(chan enrollment, enrollQueue)
	for range enrollWorkers {
		a.workers.Add(1)
		go func() {
			defer a.workers.Done()
			for e := range a.queue {
				a.enroll(e)
			}
		}()
	}
}

// Listen binds addr (HOST:PORT) for ServeListener. The socket has
// SO_REUSEADDR, so a relay restarted at once binds while the connections of
// the previous process are in TIME_WAIT, and no SO_REUSEPORT, so a second
// process cannot bind the same address while this one listens.
func Listen(addr string) (net.Listener, error) {
	// Go sets SO_REUSEADDR on every listening TCP socket on Unix. TCP
	// keep-alive stays off as before: the idle timeout and PING cover dead peers.
	lc := net.ListenConfig{KeepAlive: -1}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("transport: listening on %s: %w", addr, bindReason(err))
	}
	return ln, nil
}

// bindReason strips the *net.OpError around a bind error, whose text repeats
// the address, and keeps the system's reason ("address already in use").
func bindReason(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// acceptLoop runs on its own goroutine, started by ServeListener, until the
// listener is closed. A non-nil error means the listener failed; Serve returns it.
func (a *acceptor) acceptLoop() error {
	backoff := time.Duration(0)
	for {
		nc, err := a.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			switch {
			case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
				if a.shed() {
					backoff = 0
					continue
				}
			case !retryable(err):
				return fmt.Errorf("transport: accepting connections: %w", err)
			}
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			if !a.wait(backoff) {
				return nil
			}
			continue
		}
		backoff = 0
		a.admit(nc)
	}
}

// capSendBuffer caps the kernel's send buffer of new connections. It holds
// what a client has not read yet beside MaxOutbound in gnet's buffer: at half
// of MaxOutbound (Linux doubles the value), a client that does not read is
// cut near MaxOutbound, not after a further tcp_wmem (4 MiB) as well. The cap
// is set on the listener, which accepted sockets inherit it from, so the
// common case costs no system call; when a reload changes it, nc, accepted
// before the change reached the listener, gets it too. Runs on the accept
// goroutine.
func (a *acceptor) capSendBuffer(nc net.Conn, lim *ConnLimits) {
	want := max(lim.MaxOutbound/2, minSendBuffer)
	if want == a.sndbuf {
		return
	}
	if tl, ok := a.ln.(*net.TCPListener); ok {
		if rc, err := tl.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) {
				_ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, want)
			})
		}
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(want)
	}
	a.sndbuf = want
}

// admit gives nc a slot of MaxConns and queues it for an enroller, or
// closes it. Runs on the accept goroutine.
func (a *acceptor) admit(nc net.Conn) {
	s := a.s
	if s.draining.Load() {
		_ = nc.Close() // draining: no new connections
		return
	}
	lim := s.lim.Load()
	if s.conns.open.Add(1) > int64(lim.MaxConns) {
		s.conns.open.Add(-1)
		a.mx.rejected[rejMaxConns].Add(1)
		_ = nc.Close()
		return
	}
	now := time.Now().UnixNano()
	src, ok := s.sources.admit(sourceKey(nc.RemoteAddr(), s.prefixV6), now, lim.MaxConnsPerSource)
	if !ok {
		s.conns.open.Add(-1)
		a.mx.rejected[rejPerSource].Add(1)
		_ = nc.Close()
		return
	}
	a.capSendBuffer(nc, lim)
	c := &conn{id: s.ids.Add(1), src: src}
	if lim.HandshakesPerSource > 0 && !src.hs.Take(lim.HandshakesPerSource, handshakeBurst(lim.HandshakesPerSource), time.Second, now) {
		s.freeSlot(c)
		a.mx.rejected[rejHandshakeRate].Add(1)
		_ = nc.Close()
		return
	}
	select { // waits while enrollQueue connections wait
	case a.queue <- enrollment{nc: nc, c: c}:
	case <-s.closed:
		s.freeSlot(c)
		_ = nc.Close()
	}
}

// freeSlot gives back the MaxConns slot and the source count of c. Safe for
// concurrent use; called once per connection that took a slot.
func (s *Server) freeSlot(c *conn) {
	s.conns.open.Add(-1)
	if c.src != nil {
		c.src.release(time.Now().UnixNano())
	}
}

// enroll hands a connection to a loop, or gives its slot back. Runs on an
// enroller.
func (a *acceptor) enroll(e enrollment) {
	s := a.s
	select {
	case <-s.closed:
		s.freeSlot(e.c)
		_ = e.nc.Close()
		return
	default:
	}
	// EnrollContext closes nc in every case; on success the loop has run
	// OnOpen (or failed to poll the duplicate, which it then closed).
	_, err := a.cli.EnrollContext(e.nc, e.c)
	if err == nil && e.c.opened.Load() {
		if a.exhausted.CompareAndSwap(true, false) {
			s.log.Info("accepting connections again", "refused", a.refused.Swap(0))
		}
		return // OnClose gives the slot back
	}
	s.freeSlot(e.c)
	if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
		a.exhaust() // no descriptor left for the duplicate
		a.mx.rejected[rejFDLimit].Add(1)
		a.refused.Add(1)
	}
}

// exhaust logs, once until the next normal accept, that descriptors ran out.
func (a *acceptor) exhaust() {
	if !a.exhausted.CompareAndSwap(false, true) {
		return
	}
	var r syscall.Rlimit
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	a.s.log.Warn("the open-file limit is reached: refusing new connections until descriptors free up",
		"limit", r.Cur, "open", a.s.conns.open.Load(), "max-conns", a.s.lim.Load().MaxConns)
}

// shed accepts one waiting connection with the reserve descriptor and closes
// it at once, then takes the reserve back. It reports false when there was no
// reserve to give up or nothing was accepted with it.
func (a *acceptor) shed() bool {
	a.exhaust()
	if a.reserve == nil {
		a.reserve, _ = os.Open(os.DevNull)
		return false
	}
	_ = a.reserve.Close()
	a.reserve = nil
	nc, err := a.ln.Accept()
	if err == nil {
		_ = nc.Close()
		a.mx.rejected[rejFDLimit].Add(1)
		a.refused.Add(1)
	}
	a.reserve, _ = os.Open(os.DevNull) // nil when descriptors are still short: retried at the next shed
	return err == nil
}

// wait sleeps for d, or until the server shuts down (then it returns false).
func (a *acceptor) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-a.s.closed:
		return false
	case <-t.C:
		return true
	}
}

// retryable reports whether an accept error is the network's or a peer's and
// the listener is still good (accept(2): Linux passes pending network errors
// of the new socket on; ENOBUFS and ENOMEM are memory pressure; EPERM is a
// firewall rule).
func retryable(err error) bool {
	for _, e := range []syscall.Errno{syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN,
		syscall.ENOBUFS, syscall.ENOMEM, syscall.EPERM, syscall.EPROTO, syscall.ENOPROTOOPT, syscall.ENETDOWN,
		syscall.ENONET, syscall.EHOSTDOWN, syscall.EHOSTUNREACH, syscall.EOPNOTSUPP, syscall.ENETUNREACH,
		syscall.ETIMEDOUT} {
		if errors.Is(err, e) {
			return true
		}
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
