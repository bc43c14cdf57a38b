package engine

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/smprelay/smprelay/codec"
)

// ServerOptions configures the transport side of the relay.
type ServerOptions struct {
	Engine           *Engine
	Key              *codec.KEMPrivateKey // the server transport key (SPEC §3.1)
	HandshakeTimeout time.Duration        // close a connection whose hello is not complete by then (default 10 s)
	ExpireEvery      time.Duration        // how often the TTL sweep runs (default 1 min)
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
	o      ServerOptions
	e      *Engine
	log    *slog.Logger
	hello  []byte    // the server hello, the same for every connection
	pool   sync.Pool // *worker: scratch for one OnTraffic call
	eng    atomic.Pointer[gnet.Engine]
	closed chan struct{}
	once   sync.Once
	conns  registry      // open connections, for MaxConns and the idle sweep
	ids    atomic.Uint64 // connection numbers, for the registry's shards
	mx     serverStats   // operational counters for the metrics endpoint (metrics.go)
}

// NewServer returns a Server for the engine and key in o.
func NewServer(o ServerOptions) (*Server, error) {
	if o.Engine == nil || o.Key == nil {
		return nil, errors.New("engine: NewServer needs an Engine and a Key")
	}
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = 10 * time.Second
	}
	if o.ExpireEvery <= 0 {
		o.ExpireEvery = time.Minute
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Limits = o.Limits.withDefaults()
	bs := o.Engine.BlockSize()
	h := codec.ServerHello{MinVersion: codec.ProtocolVersion, MaxVersion: codec.ProtocolVersion,
		BlockSize: uint32(bs), Key: o.Key.Public().Bytes()}
	s := &Server{o: o, e: o.Engine, log: o.Logger, hello: h.Append(nil), closed: make(chan struct{})}
	s.pool.New = func() any {
		return &worker{parser: codec.NewParser(codec.ServerSide, bs), w: NewWriter(bs)}
	}
	return s, nil
}

// worker is the scratch space of one OnTraffic call, taken from a pool so
// that loops running at once never share it and idle connections hold none.
type worker struct {
	parser *codec.Parser
	t      codec.Transmission
	w      *Writer
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
	last  atomic.Int64 // Unix nanoseconds of the last block received, for the idle sweep
	rate  bucket       // BlocksPerSecond
	// throttle wakes the loop when the rate bucket has a token again; made on
	// first use, so only throttled connections pay for it.
	throttle *time.Timer
	rx       codec.BlockCipher // client -> server
	tx       codec.BlockCipher // server -> client
	sess     *Session
	timer    *time.Timer
	send     func([]byte) error // gc.Write as a value made once, so batches do not allocate
	mx       *connStats         // counters of the connection's loop
	// hsCounted is set by whoever counts the handshake's outcome (the loop,
	// or the handshake timer), so that each connection counts one.
	hsCounted atomic.Bool
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

// Serve listens on addr (HOST:PORT) and runs the event loops until Shutdown.
// ready is called once with the bound address (the real port when PORT is 0)
// when the server accepts connections. Serve returns nil after Shutdown.
func (s *Server) Serve(addr string, ready func(net.Addr)) error {
	h := &handler{s: s, ready: ready}
	go s.expireLoop()
	err := gnet.Run(h, "tcp://"+addr,
		gnet.WithMulticore(true),
		gnet.WithReusePort(false),
		gnet.WithTCPNoDelay(gnet.TCPNoDelay),
		gnet.WithLogger(gnetLogger{log: s.log, verbose: s.o.LogClientData}),
	)
	s.once.Do(func() { close(s.closed) })
	if h.bootErr != nil {
		return h.bootErr
	}
	return err
}

// Shutdown stops accepting, closes every connection and makes Serve return.
// Safe from any goroutine.
func (s *Server) Shutdown(ctx context.Context) error {
	s.once.Do(func() { close(s.closed) })
	eng := s.eng.Load()
	if eng == nil {
		return nil
	}
	return eng.Stop(ctx)
}

// expireLoop runs the TTL sweep and the idle-connection sweep.
func (s *Server) expireLoop() {
	expire := time.NewTicker(s.o.ExpireEvery)
	defer expire.Stop()
	var idle <-chan time.Time
	if d := s.o.Limits.IdleTimeout; d > 0 {
		t := time.NewTicker(min(d/4, 5*time.Second))
		defer t.Stop()
		idle = t.C
	}
	for {
		select {
		case <-s.closed:
			return
		case <-expire.C:
			s.e.Expire(s.e.now())
		case now := <-idle:
			s.conns.idle(now.Add(-s.o.Limits.IdleTimeout).UnixNano(), &s.mx.idle)
		}
	}
}

// handler implements gnet.EventHandler. Its methods run on event loops; it
// has no mutable fields of its own after OnBoot.
type handler struct {
	gnet.BuiltinEventEngine
	s       *Server
	ready   func(net.Addr)
	bootErr error
}

func (h *handler) OnBoot(eng gnet.Engine) gnet.Action {
	h.s.eng.Store(&eng)
	select {
	case <-h.s.closed: // Shutdown came before the engine was up
		return gnet.Shutdown
	default:
	}
	addr, err := boundAddr(eng)
	if err != nil {
		h.bootErr = fmt.Errorf("engine: reading the bound address: %w", err)
		return gnet.Shutdown
	}
	if h.ready != nil {
		h.ready(addr)
	}
	return gnet.None
}

// boundAddr reads the listener's address from a duplicate of its descriptor,
// which gives the real port when the configured one was 0.
func boundAddr(eng gnet.Engine) (net.Addr, error) {
	fd, err := eng.Dup()
	if err != nil {
		return nil, err
	}
	defer syscall.Close(fd)
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return nil, err
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: net.IP(a.Addr[:]), Port: a.Port}, nil
	}
	return nil, fmt.Errorf("unexpected socket address %T", sa)
}

func (h *handler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	loop := h.s.mx.shard(gc)
	mx := &h.s.mx.loops[loop]
	if h.s.conns.open.Add(1) > int64(h.s.o.Limits.MaxConns) {
		h.s.conns.open.Add(-1)
		mx.rejected[rejMaxConns].Add(1)
		return nil, gnet.Close // no context: OnClose leaves the count alone
	}
	mx.accepted.Add(1)
	mx.helloOut.Add(uint64(len(h.s.hello)))
	c := &conn{gc: gc, id: h.s.ids.Add(1), mx: mx}
	c.last.Store(time.Now().UnixNano())
	h.s.conns.add(c)
	c.send = c.write
	c.sess = h.s.e.NewSession(c.wake)
	c.sess.mx = &h.s.e.mx.loops[loop]
	c.timer = time.AfterFunc(h.s.o.HandshakeTimeout, c.handshakeExpired)
	gc.SetContext(c)
	return h.s.hello, gnet.None
}

func (h *handler) OnClose(gc gnet.Conn, _ error) gnet.Action {
	defer h.contain("closing")
	if c, ok := gc.Context().(*conn); ok {
		gc.SetContext(nil)
		h.s.conns.remove(c)
		h.s.conns.open.Add(-1)
		c.countHandshake(hsClosed) // a no-op once the handshake's outcome was counted
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
	if c.phase.Load() == phaseHello {
		done, ok := h.s.handshake(c)
		if !ok {
			c.countHandshake(hsBadHello)
			return gnet.Close
		}
		if !done {
			return gnet.None
		}
	}
	wk := h.s.pool.Get().(*worker)
	wk.w.Seal, wk.w.Send = &c.tx, c.send
	if c.phase.Load() == phaseOpen && c.tx.Next() == 0 {
		wk.w.welcome()
	}
	bs := h.s.e.blockSz
	lim := &h.s.o.Limits
	now := time.Now().UnixNano()
	for gc.InboundBuffered() >= bs {
		if ok, wait := c.rate.take(lim.BlocksPerSecond, now); !ok {
			if gc.InboundBuffered() > lim.MaxInboundBlocks*bs {
				action = gnet.Close // flooding far beyond the rate
				c.mx.rejected[rejFlood].Add(1)
			} else {
				c.wakeIn(wait)
			}
			break
		}
		c.last.Store(now)
		c.mx.blocksIn.Add(1) // the loop's own counter: no line shared with other loops
		blk, err := gc.Peek(bs)
		if err != nil {
			action = gnet.Close
			break
		}
		plain, err := c.rx.Open(blk)
		if err != nil {
			// A block that fails authentication ends the connection with no reply (SPEC §3.3).
			action = gnet.Close
			break
		}
		c.sess.Process(plain, wk.parser, &wk.t, wk.w)
		_, _ = gc.Discard(bs)
	}
	c.sess.Drain(wk.w)
	if err := wk.w.Finish(); err != nil || gc.OutboundBuffered() > lim.MaxOutbound {
		// The client does not read what it is sent: drop it rather than grow.
		if err == nil && action != gnet.Close { // not already closing for another reason
			c.mx.rejected[rejOutbound].Add(1)
		}
		action = gnet.Close
	}
	wk.w.Seal, wk.w.Send = nil, nil
	wk.t = codec.Transmission{}
	h.s.pool.Put(wk)
	return action
}

// handshake reads the client hello (SPEC §3.2). It reports done once the
// transport is open, and !ok when the connection must close without a reply.
func (s *Server) handshake(c *conn) (done, ok bool) {
	hdr, err := c.gc.Peek(2)
	if err != nil {
		return false, true
	}
	n := int(binary.BigEndian.Uint16(hdr))
	if n == 0 || n > codec.MaxSealedHello {
		return false, false
	}
	buf, err := c.gc.Peek(2 + n)
	if err != nil {
		return false, true
	}
	h, err := codec.OpenClientHello(s.o.Key, buf[2:])
	if err != nil || h.Version != codec.ProtocolVersion || int(h.BlockSize) != s.e.blockSz {
		return false, false
	}
	_, _ = c.gc.Discard(2 + n)
	c.mx.helloIn.Add(uint64(2 + n))
	if c.rx.Init(h.C2SKey, h.C2SNonce) != nil || c.tx.Init(h.S2CKey, h.S2CNonce) != nil {
		return false, false
	}
	if !c.phase.CompareAndSwap(phaseHello, phaseOpen) {
		return false, false
	}
	c.timer.Stop()
	c.countHandshake(hsOK)
	return true, true
}

// welcome writes the welcome block: the first server block holds "SMP/1" CRLF
// and padding only (SPEC §3.3).
func (w *Writer) welcome() {
	w.flushBlock()
	w.buf = append(w.buf, codec.Welcome...)
	w.flushBlock()
}

// gnetLogger routes gnet's own log lines into slog. gnet's lines can name
// connections, so in production mode (SPEC §8) debug and info lines are
// dropped and warnings and errors keep their format string only, without the
// arguments that could carry an address.
type gnetLogger struct {
	log     *slog.Logger
	verbose bool
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
	l.log.Error(l.text(format, args), "from", "gnet")
}

func (l gnetLogger) Fatalf(format string, args ...any) {
	l.log.Error(l.text(format, args), "from", "gnet")
}

func (l gnetLogger) text(format string, args []any) string {
	if l.verbose {
		return fmt.Sprintf(format, args...)
	}
	return format
}
