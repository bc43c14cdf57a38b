package transport

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/bucket"
)

// ServerOptions configures the transport side of the relay.
type ServerOptions struct {
	Engine           *engine.Engine
	Key              *codec.KEMPrivateKey // the server transport key (SPEC §3.1)
	HandshakeTimeout time.Duration        // close a connection whose hello is not complete by then (default 10 s)
	SweepEvery       time.Duration        // how often idle sources leave the per-source table (default 1 min); the TTL sweep is the engine's (Engine.RunExpiry)
	Logger           *slog.Logger         // nil discards
	// LogClientData allows gnet's per-connection log lines (they carry addresses).
	LogClientData bool
	Limits        ConnLimits // zero fields take DefaultConnLimits
}

// Server is the gnet event-loop relay: it accepts TCP connections, runs the
// handshake, opens and seals blocks and feeds their plaintext to a Session per
// connection. Each connection is owned by one event loop: its ciphers, block
// counters and Session run only there; other loops reach it only through the
// Session's outbox and gnet's Wake.
type Server struct {
	o   ServerOptions
	e   *engine.Engine
	log *slog.Logger
	// helloPrefix is the part of the server hello before serverRandom, the
	// same for every connection; chLen is the length of a client hello for
	// this server's key (SPEC §3.2).
	helloPrefix []byte
	chLen       int
	shares      shares            // the X25519 share that goes into new hellos
	turns       [statShards]turns // paused connections per loop (turns.go), by statistics shard
	sources     sources           // per-source state (source.go)
	prefixV6    int               // ConnLimits.SourcePrefixV6, fixed when the server is made
	pool        sync.Pool         // *worker: scratch for one OnTraffic call
	closed      chan struct{}     // closed by Shutdown, or by Serve when it stops on a failure
	once        sync.Once
	done        chan struct{} // closed when ServeListener returns
	// serving is set when ServeListener is called, so that Shutdown waits for it.
	serving atomic.Bool
	conns   registry      // connection slots (taken at accept) and open connections, for MaxConns and the idle sweep
	ids     atomic.Uint64 // connection numbers, for the registry's shards
	mx      serverStats   // operational counters for the metrics endpoint (metrics.go)

	// lim is replaced whole by SetConnLimits and read without a lock by the
	// loops; limChanged tells expireLoop to re-arm its idle sweep.
	lim        atomic.Pointer[ConnLimits]
	limChanged chan struct{}
	draining   atomic.Bool // set once by Drain; read by every loop

	companions []*companion // AddCompanion's, enrolled by ServeListener; set before it
}

// companion is a descriptor some other part of the relay wants polled by an
// event loop (AddCompanion); it is the gnet context of its connection.
type companion struct {
	nc       net.Conn
	readable func() // called by the loop after it discarded what arrived
	closed   func() // called once the loop stops polling it
}

// AddCompanion has ServeListener enroll nc into an event loop, which calls
// readable, after discarding what arrived, whenever nc is readable, and
// closed once it stops polling nc (the server stopped). It lets a part of the
// relay that must not import this package be woken by the loop itself, not
// by Go's netpoller, which a loop holding a one-core relay's processor
// leaves to sysmon (the store's asynchronous fsyncs, wal.Log.AttachSyncs).
// Call it before ServeListener.
func (s *Server) AddCompanion(nc net.Conn, readable, closed func()) {
	s.companions = append(s.companions, &companion{nc: nc, readable: readable, closed: closed})
}

// NewServer returns a Server for the engine and key in o.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Engine == nil || o.Key == nil {
		return nil, errors.New("transport: NewServer needs an Engine and a Key")
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Limits = o.Limits.withDefaults()
	bs := o.Engine.BlockSize()
	h := codec.ServerHello{MinVersion: codec.TransportVersion, MaxVersion: codec.TransportVersion,
		BlockSize: uint32(bs), Key: o.Key.Public().Bytes()}
	s := &Server{o: o, e: o.Engine, log: o.Logger, helloPrefix: h.AppendPrefix(nil),
		chLen: codec.ClientHelloLen(o.Key.Public()), closed: make(chan struct{}), done: make(chan struct{}),
		limChanged: make(chan struct{}, 1)}
	s.lim.Store(&o.Limits)
	s.prefixV6 = o.Limits.SourcePrefixV6
	s.pool.New = func() any {
		return &worker{parser: codec.NewParser(codec.ServerSide, bs), b: engine.NewBatch(bs), w: engine.NewWriter(bs)}
	}
	return s, nil
}

// ConnLimits returns the connection limits in force, defaults filled in.
// Safe for concurrent use.
func (s *Server) ConnLimits() ConnLimits { return *s.lim.Load() }

// SetConnLimits replaces the connection limits; zero fields take
// DefaultConnLimits. Safe from any goroutine (smp-server calls it from its
// signal goroutine on SIGHUP). Each loop sees the new limits at its next
// event. A lowered MaxConns refuses new connections until enough have
// closed; it closes none that are open.
func (s *Server) SetConnLimits(l ConnLimits) {
	l = l.withDefaults()
	s.lim.Store(&l)
	select {
	case s.limChanged <- struct{}{}:
	default: // expireLoop has one pending already: it reads the latest
	}
}

// workSlice is how much work (signature verifications, real or dummy: see
// Session.ProcessSome) a loop does for one connection before it serves the
// other connections that are ready. About half a millisecond with Ed25519
// here (less when the slice verifies as one batch): a connection that sends
// costly-to-check commands delays the others by one slice per round, not by
// everything it sent, and one whose commands fail pays more (authPenalty).
// make bench-hostile: with 16 the 8-connection flood left the honest client
// at 4.2x its baseline, with 8 at 3.1x; smaller slices would cut the batches
// of honest clients further.
const workSlice = 8

// maxDebt caps a connection's debt at what one slice of failures costs
// (workSlice failures, each charged engine's authPenalty on top of its
// verification): repaid in 16 turns.
const maxDebt = workSlice * 16

// worker is the scratch space of one OnTraffic call, taken from a pool so
// that loops running at once never share it and idle connections hold none.
type worker struct {
	parser *codec.Parser
	b      *engine.Batch // the transmissions of one connection verified together
	w      *engine.Writer
}

// Connection phases.
const (
	phaseHello int32 = iota // waiting for the client hello
	phaseOpen               // blocks flow
)

// conn is the per-connection state, owned by the connection's event loop
// (phase is also read by the handshake timer).
type conn struct {
	id    uint64 // registry shard key
	gc    gnet.Conn
	phase atomic.Int32
	last  atomic.Int64  // Unix nanoseconds of the last block received, for the idle sweep
	rate  bucket.Bucket // BlocksPerSecond
	// throttle wakes the loop when the rate bucket has a token again; made on
	// first use, so only throttled connections pay for it.
	throttle *time.Timer
	rx       codec.BlockCipher // client -> server
	tx       codec.BlockCipher // server -> client
	sess     *engine.Session
	timer    *time.Timer
	send     func([]byte) error // gc.Write as a value made once, so batches do not allocate
	mx       *connStats         // counters of the connection's loop

	// Drain states, owned by the loop: drained once the blocks that were read
	// before the drain have been processed (later ones are dropped unread);
	// finSent once every reply has left and the write side is shut.
	drained, finSent bool

	// hsCounted is set by whoever counts the handshake's outcome (the loop,
	// or the handshake timer), so that each connection counts one.
	hsCounted atomic.Bool

	// rest is the unprocessed tail of a block whose processing the work
	// slice cut short, in restBuf (made on first use); owned by the loop.
	rest, restBuf []byte
	// debt is work the connection still owes for failed authentications
	// (Session's authPenalty): it is repaid a slice per turn. Owned by the loop.
	debt int
	// turns is the paused list of the connection's loop (turns.go); paused
	// (guarded by its mutex) says c is on it; turn is set when c is woken
	// for a turn.
	turns  *turns
	paused bool
	turn   turnFlag

	// opened is set by OnOpen; the acceptor reads it to give back the slot
	// of a connection that gnet never opened.
	opened atomic.Bool

	// src is the connection's source (source.go), set at accept.
	src *source

	// random is the serverRandom of the connection's hello, and share the
	// X25519 share it carried, held until the handshake ends (SPEC §3.1).
	random [codec.RandomSize]byte
	share  *serverShare
}

// releaseShare gives the connection's reference to its server share back.
// Runs on the connection's loop.
func (c *conn) releaseShare() {
	if c.share != nil {
		c.share.release()
		c.share = nil
	}
}

// countHandshake counts the handshake's outcome unless one was counted.
func (c *conn) countHandshake(outcome int) {
	if c.hsCounted.CompareAndSwap(false, true) {
		c.mx.handshakes[outcome].Add(1)
	}
}

func (c *conn) write(b []byte) error {
	c.mx.blockOut.Add(uint64(len(b))) // before the write: a reply is never seen before its count
	_, err := c.gc.Write(b)
	return err
}

func (c *conn) wake() { _ = c.gc.Wake(nil) }

// wakeIn wakes the loop after d, when a throttled connection may read again.
// Runs on the loop.
func (c *conn) wakeIn(d time.Duration) {
	if c.throttle == nil {
		c.throttle = time.AfterFunc(d, c.wake)
		return
	}
	c.throttle.Reset(d)
}

func (c *conn) handshakeExpired() {
	if c.phase.Load() == phaseHello {
		c.countHandshake(hsTimeout)
		_ = c.gc.Close()
	}
}

// Serve is Listen then ServeListener.
func (s *Server) Serve(addr string, ready func(net.Addr)) error {
	ln, err := Listen(addr)
	if err != nil {
		s.serving.Store(true)
		close(s.done)
		return err
	}
	return s.ServeListener(ln, ready)
}

// ServeListener accepts connections on ln (see accept.go) and runs the event
// loops until Shutdown; it closes ln. ready is called once with ln's address
// when the server accepts connections. ServeListener returns nil after
// Shutdown, and an error when the relay stopped serving for any other reason
// (the listener failed, or a gnet loop stopped on its own), so that the
// process can exit non-zero and be restarted. It may be called once.
func (s *Server) ServeListener(ln net.Listener, ready func(net.Addr)) error {
	s.serving.Store(true)
	defer close(s.done)
	defer ln.Close()
	select {
	case <-s.closed: // Shutdown came first
		return nil
	default:
	}
	failed := make(chan error, 2)
	cli, err := gnet.NewClient(&handler{s: s},
		gnet.WithMulticore(true),
		// Go's Accept has set TCP_NODELAY on the socket already (net.TCPConn's
		// default), and the loop's descriptor is a dup of it: with TCPNoDelay
		// gnet's EnrollContext would set it again, a system call per connection.
		gnet.WithTCPNoDelay(gnet.TCPDelay),
		gnet.WithLogger(gnetLogger{log: s.log, verbose: s.o.LogClientData, failed: failed}),
	)
	if err == nil {
		err = cli.Start()
	}
	if err != nil {
		return fmt.Errorf("transport: starting the event loops: %w", err)
	}
	for _, c := range s.companions {
		if _, err := cli.EnrollContext(c.nc, c); err != nil {
			c.closed()
			s.log.Warn("a companion descriptor could not join an event loop", "err", err)
		}
	}
	a := &acceptor{s: s, ln: ln, cli: cli, mx: &s.mx.loops[0]}
	if a.reserve, err = os.Open(os.DevNull); err != nil {
		_ = cli.Stop()
		return fmt.Errorf("transport: opening the reserve descriptor: %w", err)
	}
	go s.expireLoop()
	a.startEnrollers()
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		err := a.acceptLoop()
		if a.reserve != nil {
			a.reserve.Close()
		}
		close(a.queue)
		a.workers.Wait() // each finishes the enrollment it is in
		if err != nil {
			failed <- err
		}
	}()
	if ready != nil {
		ready(ln.Addr())
	}
	select {
	case <-s.closed:
	case err = <-failed:
		s.log.Error("the relay stopped serving", "err", err)
	}
	s.once.Do(func() { close(s.closed) })
	ln.Close() // the acceptor returns once the enrollments in progress are done
	select {
	case <-acceptDone:
	case <-time.After(acceptStopWait): // a loop that died may never take it
	}
	if serr := cli.Stop(); serr != nil && err == nil {
		err = fmt.Errorf("transport: stopping the event loops: %w", serr)
	}
	return err
}

// acceptStopWait bounds how long ServeListener waits for the enrollers to
// finish the enrollments they are in when the server stops.
const acceptStopWait = 5 * time.Second

// Shutdown stops accepting, closes every connection and makes Serve return;
// once Serve is running it waits until Serve has returned or ctx ends. Safe
// from any goroutine but an event loop's.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() { close(s.closed) })
	if !s.serving.Load() {
		return nil
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// expireLoop runs the per-source table's sweep and the idle-connection
// sweep; it re-arms the idle sweep when SetConnLimits changes IdleTimeout.
func (s *Server) expireLoop() {
	expire := time.NewTicker(s.o.SweepEvery)
	defer expire.Stop()
	var idleT *time.Ticker
	var idle <-chan time.Time
	arm := func() {
		if idleT != nil {
			idleT.Stop()
			idleT, idle = nil, nil
		}
		if d := s.lim.Load().IdleTimeout; d > 0 {
			idleT = time.NewTicker(min(d/4, 5*time.Second))
			idle = idleT.C
		}
	}
	arm()
	defer func() {
		if idleT != nil {
			idleT.Stop()
		}
	}()
	for {
		select {
		case <-s.closed:
			return
		case <-s.limChanged:
			arm()
		case <-expire.C:
			s.sources.sweep(time.Now().Add(-sourceIdle).UnixNano())
		case now := <-idle:
			if d := s.lim.Load().IdleTimeout; d > 0 {
				s.conns.idle(now.Add(-d).UnixNano(), &s.mx.idle)
			}
		}
	}
}

// handler implements gnet.EventHandler. Its methods run on event loops; it
// has no mutable fields.
type handler struct {
	gnet.BuiltinEventEngine
	s *Server
}

func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	if _, ok := gc.Context().(*companion); ok {
		return nil, gnet.None
	}
	c, ok := gc.Context().(*conn)
	if !ok {
		return nil, gnet.Close // not from the acceptor: cannot happen
	}
	c.opened.Store(true)
	if h.s.draining.Load() {
		// Draining: no new connections. Without a context OnClose leaves
		// the count alone, so the slot the acceptor took is given back here.
		gc.SetContext(nil)
		h.s.freeSlot(c)
		return nil, gnet.Close
	}
	loop := h.s.mx.shard(gc)
	mx := &h.s.mx.loops[loop]
	c.turns = &h.s.turns[loop]
	share, err := h.s.shares.acquire(time.Now())
	if err != nil { // the system's randomness failed: no connection can be served
		h.s.log.Error("no server share for a new connection", "err", err)
		gc.SetContext(nil)
		h.s.freeSlot(c)
		return nil, gnet.Close
	}
	c.share = share
	hello := make([]byte, 0, len(h.s.helloPrefix)+codec.RandomSize+codec.ShareSize)
	hello = append(hello, h.s.helloPrefix...)
	if _, err := rand.Read(c.random[:]); err != nil {
		h.s.log.Error("no server random for a new connection", "err", err)
		c.releaseShare()
		gc.SetContext(nil)
		h.s.freeSlot(c)
		return nil, gnet.Close
	}
	hello = append(hello, c.random[:]...)
	hello = append(hello, share.pub[:]...)
	mx.accepted.Add(1)
	mx.helloOut.Add(uint64(len(hello)))
	c.gc, c.mx = gc, mx
	c.last.Store(time.Now().UnixNano())
	h.s.conns.add(c)
	c.send = c.write
	c.sess = h.s.e.NewSession(c.wake)
	c.sess.SetStatsShard(loop)
	if c.src != nil {
		c.sess.SetNewBucket(&c.src.newQ) // NEW is limited per source: reconnecting resets nothing
	}
	c.timer = time.AfterFunc(h.s.o.HandshakeTimeout, c.handshakeExpired)
	return hello, gnet.None
}

func (h *handler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	defer h.contain("closing")
	if c, ok := gc.Context().(*companion); ok {
		c.closed()
		return gnet.None
	}
	if c, ok := gc.Context().(*conn); ok {
		gc.SetContext(nil)
		h.s.conns.remove(c)
		h.s.freeSlot(c)
		c.countHandshake(hsClosed) // a no-op once the handshake's outcome was counted
		c.releaseShare()
		if c.turns != nil {
			c.turns.remove(c)
		}
		c.timer.Stop()
		if c.throttle != nil {
			c.throttle.Stop()
		}
		c.sess.Close()
	}
	return gnet.None
}

// contain stops a panic in one connection's handling from taking the process
// (and every other connection) down with it. It is deferred by handlers
// whose result needs no change; OnTraffic has its own to close the connection.
func (h *handler) contain(what string) {
	if r := recover(); r != nil {
		h.s.log.Error("connection handler panicked", "while", what, "panic", fmt.Sprint(r))
	}
}

// OnTraffic handles everything that reached one connection: the client hello,
// whole blocks, and pushes from other connections (after a Wake). A panic is
// contained to this connection, which is closed.
func (h *handler) OnTraffic(gc gnet.Conn) (action gnet.Action) {
	if c, ok := gc.Context().(*companion); ok {
		_, _ = gc.Discard(-1)
		c.readable()
		return gnet.None
	}
	c, ok := gc.Context().(*conn)
	if !ok {
		return gnet.Close
	}
	defer func() {
		if r := recover(); r != nil {
			h.s.log.Error("connection handler panicked; closing the connection", "panic", fmt.Sprint(r))
			action = gnet.Close
		}
	}()
	turn := c.turn.Swap(false)
	if c.turns != nil {
		c.turns.active.Store(busy)
		defer func() { c.turns.active.Store(time.Now().UnixNano()) }()
	}
	draining := h.s.draining.Load()
	if a, open := h.s.opening(c, draining); !open {
		return a
	}
	return h.s.established(gc, c, turn, draining)
}

// opening runs the phase before blocks flow. It reports open once the
// transport is open (by this call or an earlier one); otherwise it returns
// what gnet is to do with the connection.
func (s *Server) opening(c *conn, draining bool) (_ gnet.Action, open bool) {
	if draining {
		if c.phase.Load() == phaseHello {
			return gnet.Close, false // no command was read from it: nothing to answer
		}
		if c.finSent {
			return s.lingering(c), false
		}
	}
	if c.phase.Load() == phaseHello {
		done, ok := s.handshake(c)
		if !ok {
			c.countHandshake(hsBadHello)
			return gnet.Close, false
		}
		if !done {
			return gnet.None, false
		}
	}
	return gnet.None, true
}

// traffic is what the phases of one OnTraffic call on an open connection
// share. It lives on the loop's stack, so that splitting the call into phases
// allocates nothing.
type traffic struct {
	gc     gnet.Conn
	c      *conn
	wk     *worker
	lim    *ConnLimits // loaded once, so that every phase applies the same limits
	bs     int         // the block size
	now    int64       // Unix nanoseconds, for the rate bucket and the idle sweep
	final  bool        // the drain's last pass
	budget int         // work left in the slice; negative once a batch overspent it
}

// established runs one turn of an open connection: it answers the blocks
// already read, within the connection's work slice, leaves the rest for a
// later turn, and sends the replies and pushes. turn says the loop woke the
// connection for a turn (turns.go).
func (s *Server) established(gc gnet.Conn, c *conn, turn, draining bool) gnet.Action {
	t := traffic{gc: gc, c: c, wk: s.pool.Get().(*worker)}
	t.wk.w.Seal, t.wk.w.Send = &c.tx, c.send
	if c.phase.Load() == phaseOpen && c.tx.Next() == 0 {
		t.wk.w.Welcome()
	}
	t.bs = s.e.BlockSize()
	t.lim = s.lim.Load()
	t.now = time.Now().UnixNano()
	if c.drained {
		// Read after the drain began: dropped unanswered, and never stored.
		_, _ = gc.Discard(gc.InboundBuffered())
	}
	// The drain's last pass answers every whole block already read, at any
	// rate and in one go.
	t.final = draining && !c.drained
	t.budget = c.slice(t.final)
	action := t.readBlocks()
	t.owe()
	action = t.schedule(action, turn)
	if t.final {
		c.drained = true
		_, _ = gc.Discard(gc.InboundBuffered()) // a partial block: never answered
	}
	action = t.flush(action)
	action = t.shutWrite(action)
	t.wk.w.Seal, t.wk.w.Send = nil, nil
	s.pool.Put(t.wk)
	return action
}

// slice returns the work the connection may do this turn. A connection in
// debt (failed authentications, Session's authPenalty) repays it a slice per
// turn before it is served again; the drain's last pass has no limit.
func (c *conn) slice(final bool) int {
	switch {
	case final:
		return math.MaxInt
	case c.debt >= workSlice:
		c.debt -= workSlice
		return 0
	}
	budget := workSlice - c.debt
	c.debt = 0
	return budget
}

// readBlocks goes on with the block the last slice cut short, then opens
// whole blocks from gnet's buffer and processes their transmissions while
// the budget lasts and the rate bucket has tokens. It returns gnet.Close
// when the connection must go: a block fails authentication, or it floods
// far beyond the rate.
func (t *traffic) readBlocks() gnet.Action {
	c, gc, wk, bs := t.c, t.gc, t.wk, t.bs
	if len(c.rest) > 0 {
		n := c.sess.ProcessBatched(c.rest, wk.parser, wk.b, wk.w, &t.budget)
		c.rest = c.rest[n:]
		if !codec.More(c.rest) {
			c.rest = c.rest[:0]
		}
	}
	for t.budget > 0 && len(c.rest) == 0 && gc.InboundBuffered() >= bs {
		if ok, wait := c.rate.Take(t.lim.BlocksPerSecond, t.now); !ok && !t.final {
			if gc.InboundBuffered() > t.lim.MaxInboundBlocks*bs {
				c.mx.rejected[rejFlood].Add(1)
				return gnet.Close // flooding far beyond the rate
			}
			c.wakeIn(wait)
			return gnet.None
		}
		c.last.Store(t.now)
		c.mx.blocksIn.Add(1) // the loop's own counter: no line shared with other loops
		blk, err := gc.Peek(bs)
		if err != nil {
			return gnet.Close
		}
		plain, err := c.rx.Open(blk)
		if err != nil {
			// A block that fails authentication ends the connection with no reply (SPEC §3.3).
			return gnet.Close
		}
		if n := c.sess.ProcessBatched(plain, wk.parser, wk.b, wk.w, &t.budget); codec.More(plain[n:]) {
			// Cut short by the slice: the rest waits in the connection's own
			// buffer, since gnet's may hold a copy of the block, not the block.
			if c.restBuf == nil {
				c.restBuf = make([]byte, 0, bs)
			}
			c.rest = append(c.restBuf[:0], plain[n:]...)
		}
		_, _ = gc.Discard(bs)
	}
	return gnet.None
}

// owe keeps what the turn overspent (failed authentications cost more than
// the slice held) as the connection's debt.
func (t *traffic) owe() {
	if t.budget < 0 && !t.final {
		// Capped: a client whose commands fail for a while (its contact
		// deleted the queue) waits a few turns, not minutes of them; a
		// flood still gets about one failure per turn.
		t.c.debt = min(-t.budget, maxDebt)
	}
}

// schedule decides when the connection is served next: a connection that
// used up its slice with work left waits for a turn, and one that came for a
// light event of its own gives a paused connection of the loop a turn.
func (t *traffic) schedule(action gnet.Action, turn bool) gnet.Action {
	c, gc := t.c, t.gc
	switch {
	case t.budget <= 0 && action == gnet.None && (len(c.rest) > 0 || gc.InboundBuffered() >= t.bs):
		if gc.InboundBuffered() > t.lim.MaxInboundBlocks*t.bs {
			c.mx.rejected[rejFlood].Add(1)
			return gnet.Close // sending far more work than its share
		}
		// The slice is used up: the rest waits for a turn (turns.go).
		c.turns.pause(c)
	case !turn && t.budget > 0:
		// A light event of this connection's own: one paused connection of
		// the loop gets a turn after it.
		c.turns.give(c)
	}
	return action
}

// flush seals and writes the replies and the pushes waiting in the session's
// outbox, and closes a connection whose client does not read what it is sent.
func (t *traffic) flush(action gnet.Action) gnet.Action {
	t.c.sess.Drain(t.wk.w)
	if err := t.wk.w.Finish(); err != nil || t.gc.OutboundBuffered() > t.lim.MaxOutbound {
		// The client does not read what it is sent: drop it rather than grow.
		if err == nil && action != gnet.Close { // not already closing for another reason
			t.c.mx.rejected[rejOutbound].Add(1)
		}
		return gnet.Close
	}
	return action
}

// shutWrite ends a drained connection's write side once every reply is with
// the kernel, and from then on the connection lingers (see lingering).
func (t *traffic) shutWrite(action gnet.Action) gnet.Action {
	c, gc := t.c, t.gc
	if c.drained && action == gnet.None && !c.sess.Holding() && gc.OutboundBuffered() == 0 {
		// Every reply is with the kernel: send FIN after them, so the client
		// reads them all and then EOF, and wait (lingering) for it to close.
		if syscall.Shutdown(gc.Fd(), syscall.SHUT_WR) != nil {
			action = gnet.Close
		}
		c.finSent = true
	}
	return action
}

// lingering handles a drained connection whose write side is shut: what the
// client sends is dropped, and the connection closes once the client has
// acknowledged every byte sent to it (then closing cannot lose a reply, even
// if unread input makes the kernel answer with a reset) or when the client
// closes its side (gnet sees EOF).
func (s *Server) lingering(c *conn) gnet.Action {
	_, _ = c.gc.Discard(c.gc.InboundBuffered())
	if unacked(c.gc.Fd()) == 0 {
		return gnet.Close
	}
	return gnet.None
}

// Draining reports whether Drain has begun. Safe for concurrent use.
func (s *Server) Draining() bool { return s.draining.Load() }

// drainPoll is how often Drain wakes the open connections: gnet reports no
// "written" or "acknowledged" event, so each connection checks its own.
const drainPoll = 10 * time.Millisecond

// Drain shuts the server down without losing a reply: new connections are
// closed at once; each open one processes every whole block it had already
// read, drops what arrives later unread, sends every reply (a reply held for
// the log leaves once its record is durable), shuts its write side, and
// closes once the client has acknowledged everything or closed. When ctx
// ends first the remaining connections are closed as they are and Drain
// returns an error saying how many. Then the event loops stop and Serve
// returns. Safe from any goroutine; the store must stay open until Serve has
// returned.
func (s *Server) Drain(ctx context.Context) error {
	s.draining.Store(true)
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	var err error
wait:
	for s.conns.open.Load() > 0 {
		s.conns.each(func(c *conn) { c.wake() })
		select {
		case <-ctx.Done():
			err = fmt.Errorf("transport: drain cut short with %d connections open: %w", s.conns.open.Load(), ctx.Err())
			break wait
		case <-s.closed: // Serve has returned
			break wait
		case <-tick.C:
		}
	}
	if serr := s.Shutdown(context.WithoutCancel(ctx)); serr != nil && err == nil {
		err = serr
	}
	return err
}

// handshake reads the client hello (SPEC §3.2). It reports done once the
// transport is open, and !ok when the connection must close without a reply
// (the same way for every cause).
func (s *Server) handshake(c *conn) (done, ok bool) {
	hdr, err := c.gc.Peek(2)
	if err != nil {
		return false, true
	}
	if 2+int(binary.BigEndian.Uint16(hdr))+codec.ShareSize != s.chLen {
		c.releaseShare()
		return false, false // not the sealed size of this server's key type
	}
	ch, err := c.gc.Peek(s.chLen)
	if err != nil {
		return false, true
	}
	if c.share == nil {
		return false, false
	}
	keys, err := codec.ServerHandshake(s.o.Key, c.share.priv, uint32(s.e.BlockSize()), &c.random, ch,
		s.helloPrefix, c.random[:], c.share.pub[:])
	c.releaseShare()
	if err != nil {
		return false, false
	}
	_, _ = c.gc.Discard(s.chLen)
	c.mx.helloIn.Add(uint64(s.chLen))
	err = errors.Join(c.rx.Init(keys.C2SKey, keys.C2SNonce), c.tx.Init(keys.S2CKey, keys.S2CNonce))
	keys.Clear()
	if err != nil {
		return false, false
	}
	if !c.phase.CompareAndSwap(phaseHello, phaseOpen) {
		return false, false
	}
	c.timer.Stop()
	c.countHandshake(hsOK)
	return true, true
}

// gnetLogger routes gnet's own log lines into slog. gnet's debug and info
// lines can name connections, so in production mode (SPEC §8) they are
// dropped; warnings and errors keep their reason, with any address in it
// replaced (redactAddrs). A loop that stops on an error is reported on failed,
// so that Serve returns and the relay exits non-zero.
type gnetLogger struct {
	log     *slog.Logger
	verbose bool
	failed  chan<- error
}

func (l gnetLogger) Debugf(format string, args ...any) {
	if l.verbose {
		l.log.Debug(fmt.Sprintf(format, args...), "from", "gnet")
	}
}

func (l gnetLogger) Infof(format string, args ...any) {
	if l.verbose {
		l.log.Info(fmt.Sprintf(format, args...), "from", "gnet")
	}
}

func (l gnetLogger) Warnf(format string, args ...any) {
	l.log.Warn(l.text(format, args), "from", "gnet")
}

func (l gnetLogger) Errorf(format string, args ...any) {
	msg := l.text(format, args)
	l.log.Error(msg, "from", "gnet")
	// gnet's loops log this line when their poller fails, then stop.
	if l.failed != nil && strings.Contains(format, "is exiting due to error") {
		select {
		case l.failed <- fmt.Errorf("transport: gnet: %s", msg):
		default:
		}
	}
}

func (l gnetLogger) Fatalf(format string, args ...any) {
	l.Errorf(format, args...)
}

func (l gnetLogger) text(format string, args []any) string {
	msg := fmt.Sprintf(format, args...)
	if l.verbose {
		return msg
	}
	return redactAddrs(msg)
}

// addrPattern matches IPv4 addresses and IPv6 addresses (with an optional
// port), which gnet's error texts may carry from the system's errors.
var addrPattern = regexp.MustCompile(`\[?\b(?:\d{1,3}\.){3}\d{1,3}\b\]?(?::\d+)?|\[?\b[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b\]?(?::\d+)?`)

// redactAddrs replaces every address in s (SPEC §8: production logs carry no
// client address).
func redactAddrs(s string) string {
	return addrPattern.ReplaceAllString(s, "<addr>")
}
