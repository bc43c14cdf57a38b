package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errwrap"
)

// Errors of the connection. Server errors (ERR …) are returned as wrapped
// codec.Error values: test them with errors.Is(err, codec.ErrAuth).
var (
	// ErrClosed reports a command on a Conn that was closed.
	ErrClosed = errors.New("client: connection closed")
	// ErrConnLost reports a command that was in flight when its transport
	// connection broke: the server may or may not have carried it out.
	ErrConnLost = errors.New("client: connection lost")
	// ErrFingerprint reports a server whose transport key does not match the
	// pinned fingerprint (SPEC §3.1). A Conn that meets it while reconnecting
	// closes, since no retry can fix it.
	ErrFingerprint = errors.New("client: server key fingerprint mismatch")
	// ErrProtocol reports a server that broke SPEC: a block that does not
	// open, a malformed transmission, an unexpected answer.
	ErrProtocol = errors.New("client: protocol violation")
	// ErrTooLarge reports a command that does not fit in one block.
	ErrTooLarge = errors.New("client: command too large")
	// ErrCreateRefused reports a NEW the relay answered with ERR AUTH (the
	// error wraps codec.ErrAuth too): the relay takes new queues only
	// signed by one of its creator keys and Options.CreatorKey is unset or
	// not one of them, or it has closed queue creation, or
	// Options.CreatorKey is set for a relay that has no creator keys (SPEC
	// §5). The error's text says which of these fit.
	ErrCreateRefused = errors.New("client: the relay refused to create the queue")
	// ErrEventOverflow reports a Conn closed because a message, END or lost
	// subscription found the event queue full (see Options.MaxEvents).
	ErrEventOverflow = errors.New("client: event queue full: events are not read as fast as they arrive")
)

// Defaults of Options.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultPingInterval = time.Minute
	DefaultMinBackoff   = 100 * time.Millisecond
	DefaultMaxBackoff   = 30 * time.Second
	DefaultMaxEvents    = 1024
)

// Options configure a Conn. Only Fingerprint is required.
type Options struct {
	// Fingerprint pins the server's transport key: base64 SHA-256 of the
	// typed key (SPEC §2), as in invitations and the server's
	// DATA/fingerprint file. Dial and every reconnection check it.
	Fingerprint string

	// Timeout bounds each command whose context has no deadline, and each
	// dial and handshake whatever the context's deadline (the earlier of
	// the two applies). Zero means DefaultTimeout; negative means none.
	Timeout time.Duration

	// PingInterval is how often a PING checks that the server still
	// answers; a PING not answered within Timeout (or the interval, if
	// shorter) drops the connection, which is then re-established. Zero means
	// DefaultPingInterval; negative disables the keep-alive.
	PingInterval time.Duration

	// MinBackoff and MaxBackoff bound the wait between reconnection attempts,
	// which doubles from MinBackoff up to MaxBackoff (with ±25% jitter). The
	// first attempt is immediate. Zero means the defaults.
	MinBackoff, MaxBackoff time.Duration

	// NoReconnect makes a broken connection close the Conn instead.
	NoReconnect bool

	// OnEvent, when set, receives every event in order on one goroutine, and
	// Events returns nil. It may call the Conn's methods. It is not called
	// again once Close has returned, but Close does not wait for a call in
	// progress.
	OnEvent func(Event)

	// MaxEvents bounds the events waiting for the consumer, plus two for
	// each queue the Conn is subscribed to (a message, and the same one
	// again after a reconnection). Zero means DefaultMaxEvents. When the
	// queue is full, a new EventDisconnected, EventReconnectFailed or
	// EventReconnected is dropped (Err and the events that follow still show
	// the connection's state), and any other event closes the Conn with
	// ErrEventOverflow rather than lose a message or a subscription change
	// unseen. A relay cannot fill it on its own: it gets at most one message
	// per subscribed queue and command (SPEC §5), and a push for any other
	// queue fails the link.
	MaxEvents int

	// DialContext opens the TCP connection; nil means a net.Dialer. With a
	// Proxy, it is given the proxy's address alone.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Proxy, when set, is a SOCKS5 proxy (RFC 1928) that every connection,
	// reconnections included, goes through: Tor's is socks5://127.0.0.1:9050
	// (see ParseProxy). The relay's address is handed to the proxy as given,
	// a host name unresolved, so this process looks up no relay name at
	// all: the only address it dials is the proxy's (a name there, such as
	// localhost, is looked up locally). A user name and password in the URL
	// are sent to the proxy (RFC 1929); Tor puts streams with different
	// credentials on different circuits. Without a Proxy, a relay whose host
	// ends in .onion fails with ErrOnionNeedsProxy before any lookup.
	Proxy *url.URL

	// CreatorKey, when set, signs every NEW on this Conn instead of the
	// recipient key, for a relay that takes new queues only from holders of
	// one of its creator keys (SPEC §5, smp-server --creator-keys); the
	// recipient key still goes in NEW's key field. Leave it nil for a relay
	// without creator keys: such a relay refuses a NEW signed by anything
	// but its recipient key. A creator key belongs to one relay's operator,
	// so it is set per Conn, that is per relay. A refused NEW fails with an
	// error wrapping ErrCreateRefused and codec.ErrAuth. The Signer is
	// immutable, so one may be shared by Conns used from any goroutines.
	CreatorKey *codec.Signer

	// testPending, when set, is called with the number of commands in flight
	// each time one is sent; for tests.
	testPending func(n int)
}

// Conn is a connection to one SMP server that survives network failures: see
// the package documentation for its concurrency model. All methods are safe
// for concurrent use.
type Conn struct {
	addr string
	opts Options
	corr atomic.Uint64
	// prepCorr numbers the corrIds of Prepared commands.
	prepCorr atomic.Uint64

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // link goroutines, reconnection, keep-alive

	mu        sync.Mutex
	link      *link         // nil while reconnecting
	ready     chan struct{} // closed when link is set
	closed    bool
	err       error                    // why the Conn closed
	subs      map[string]*codec.Signer // RID → RK of the queues this Conn is subscribed to
	lastMsg   map[string]string        // RID → msgId of the last message delivered; only for subs
	held      map[string]bool          // RID → a message was delivered and no ACK or SUB sent since; only for subs
	blockSize int

	ev *dispatcher

	stats struct {
		commands, blocks, reconnects atomic.Uint64
	}
}

// Dial connects to the server at addr (host:port), checks its key against
// opts.Fingerprint and completes the handshake. It does not retry: a server
// that cannot be reached now is an error. Once Dial returns, the Conn
// reconnects on its own.
func Dial(ctx context.Context, addr string, opts Options) (*Conn, error) {
	if opts.Fingerprint == "" {
		return nil, errors.New("client: Options.Fingerprint is required")
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.PingInterval == 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = DefaultMaxBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = opts.MinBackoff
	}
	if opts.MaxEvents <= 0 {
		opts.MaxEvents = DefaultMaxEvents
	}
	if opts.DialContext == nil {
		var d net.Dialer
		opts.DialContext = d.DialContext
	}
	if host, _, err := net.SplitHostPort(addr); err == nil && opts.Proxy == nil && IsOnion(host) {
		return nil, fmt.Errorf("%w (relay %s)", ErrOnionNeedsProxy, addr)
	}
	dial, err := dialer(opts.Proxy, opts.DialContext)
	if err != nil {
		return nil, err
	}
	opts.DialContext = dial
	c := &Conn{
		addr: addr, opts: opts, ready: make(chan struct{}),
		subs: make(map[string]*codec.Signer), lastMsg: make(map[string]string), held: make(map[string]bool),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.ev = newDispatcher(opts.OnEvent)

	l, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.ev.start(c.ctx)
	if err := c.install(l); err != nil {
		// The reader runs from the end of the handshake, so the link can
		// fail before it is installed: the relay hung up, or broke SPEC at
		// once (a push the client never asked for). Say which.
		c.shutdown(ErrConnLost)
		c.wg.Wait()
		c.ev.wait()
		return nil, errwrap.Wrap(fmt.Errorf("client: the link to %s failed right after the handshake", addr), err)
	}
	if opts.PingInterval > 0 {
		c.wg.Add(1)
		go c.keepAlive()
	}
	return c, nil
}

// connect dials and runs the handshake, within Options.Timeout even when
// ctx allows longer: a relay that stalls the handshake must not hold Dial
// (or a reconnection attempt) past it.
func (c *Conn) connect(ctx context.Context) (*link, error) {
	cancel := context.CancelFunc(func() {})
	if c.opts.Timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, c.opts.Timeout)
	}
	defer cancel()
	nc, err := c.opts.DialContext(ctx, "tcp", c.addr)
	if err != nil {
		return nil, errwrap.Wrap(fmt.Errorf("client: dialing %s", c.addr), err)
	}
	l, err := handshake(ctx, c, nc, c.opts.Fingerprint)
	if err != nil {
		_ = nc.Close()
		return nil, errwrap.Wrap(fmt.Errorf("client: handshake with %s", c.addr), err)
	}
	l.run()
	return l, nil
}

// withTimeout applies Options.Timeout to a context without a deadline.
func (c *Conn) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.opts.Timeout < 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.opts.Timeout)
}

// install hands l to commands. It leaves l alone and returns ErrClosed when
// the Conn is closed, or ErrConnLost wrapping why l failed when it already
// has.
func (c *Conn) install(l *link) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	l.pmu.Lock()
	dead, cause := l.dead, l.err
	l.pmu.Unlock()
	switch {
	case c.closed:
		return ErrClosed
	case dead && cause != nil && !errors.Is(cause, ErrConnLost):
		return errwrap.Wrap(ErrConnLost, cause)
	case dead:
		return ErrConnLost
	}
	c.link, l.installed = l, true
	c.blockSize = l.blockSize
	close(c.ready)
	return nil
}

// detach stops handing l to new commands; called when l fails.
func (c *Conn) detach(l *link) {
	c.mu.Lock()
	if c.link == l {
		c.link = nil
		c.ready = make(chan struct{})
	}
	c.mu.Unlock()
}

// linkGone runs when l's reader has ended: an installed link that broke is
// replaced, or ends the Conn when reconnection is off.
func (c *Conn) linkGone(l *link) {
	c.mu.Lock()
	closed, installed := c.closed, l.installed
	c.mu.Unlock()
	if closed || !installed {
		return // a link that was never installed belongs to reconnect, which retries
	}
	c.emit(Event{Kind: EventDisconnected, Err: l.err})
	if c.opts.NoReconnect {
		c.shutdown(errwrap.Wrap(ErrConnLost, l.err))
		return
	}
	c.wg.Add(1)
	go c.reconnect(errors.Is(l.err, ErrProtocol))
}

// reconnect dials until it has a new link with every subscription restored,
// waiting between attempts with exponential backoff. Each failed attempt is
// reported as an EventReconnectFailed with the wait before the next. After a
// link that broke the protocol, the first attempt waits too, so a hostile
// relay cannot keep the Conn reconnecting in a tight loop.
func (c *Conn) reconnect(afterViolation bool) {
	defer c.wg.Done()
	backoff := c.opts.MinBackoff
	next := func() time.Duration {
		d := time.Duration(float64(backoff) * (0.75 + 0.5*rand.Float64()))
		backoff = min(2*backoff, c.opts.MaxBackoff)
		return d
	}
	if afterViolation && !c.pause(next()) {
		return
	}
	for {
		err := c.reconnectOnce()
		if err == nil || c.ctx.Err() != nil {
			return
		}
		if errors.Is(err, ErrFingerprint) {
			c.shutdown(err)
			return
		}
		wait := next()
		c.emit(Event{Kind: EventReconnectFailed, Err: err, Retry: wait})
		if !c.pause(wait) {
			return
		}
	}
}

// pause waits for d, or reports false when the Conn closes first.
func (c *Conn) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// reconnectOnce dials, subscribes again and installs the new link.
func (c *Conn) reconnectOnce() error {
	l, err := c.connect(c.ctx)
	if err != nil {
		return err
	}
	lost, err := c.resubscribe(l)
	if err != nil {
		l.fail(err)
		return err
	}
	if err := c.install(l); err != nil {
		l.fail(err)
		return err
	}
	c.stats.reconnects.Add(1)
	for _, e := range lost {
		c.emit(e)
	}
	c.emit(Event{Kind: EventReconnected})
	return nil
}

// resubscribe sends SUB, all at once, for every queue the Conn was
// subscribed to, before l takes other commands: an ACK must not reach the
// server before the SUB that makes this connection the subscriber. Queues the
// server refuses come back as EventSubscriptionLost events.
func (c *Conn) resubscribe(l *link) ([]Event, error) {
	c.mu.Lock()
	type sub struct {
		rid string
		rk  *codec.Signer
	}
	subs := make([]sub, 0, len(c.subs))
	for rid, rk := range c.subs {
		subs = append(subs, sub{rid, rk})
	}
	c.mu.Unlock()

	ctx, cancel := c.withTimeout(c.ctx)
	defer cancel()
	calls := make([]*call, len(subs))
	for i, s := range subs {
		cl, err := l.start(request{cmd: codec.CmdSUB, qid: []byte(s.rid), signer: s.rk}, c.nextCorr())
		if err != nil {
			return nil, err
		}
		calls[i] = cl
	}
	var lost []Event
	for i, cl := range calls {
		r, err := l.wait(ctx, cl)
		if err != nil {
			return nil, errwrap.Wrap(errors.New("client: subscribing again"), err)
		}
		if r.cmd == codec.CmdERR {
			lost = append(lost, Event{Kind: EventSubscriptionLost, RID: []byte(subs[i].rid),
				Err: fmt.Errorf("client: SUB after reconnecting: %w", r.errType)})
		}
	}
	return lost, nil
}

// keepAlive sends a PING every PingInterval and drops a link that does not
// answer in time, so that a dead path is noticed and replaced.
func (c *Conn) keepAlive() {
	defer c.wg.Done()
	t := time.NewTicker(c.opts.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.ctx.Done():
			return
		}
		c.mu.Lock()
		l := c.link
		c.mu.Unlock()
		if l == nil {
			continue
		}
		limit := c.opts.PingInterval
		if c.opts.Timeout > 0 && c.opts.Timeout < limit {
			limit = c.opts.Timeout
		}
		ctx, cancel := context.WithTimeout(c.ctx, limit)
		cl, err := l.start(request{cmd: codec.CmdPING}, c.nextCorr())
		if err == nil {
			_, err = l.wait(ctx, cl)
		}
		cancel()
		if err != nil && errors.Is(err, context.DeadlineExceeded) {
			l.fail(fmt.Errorf("keep-alive: no PONG within %v", limit))
		}
	}
}

// shutdown closes the Conn with err, once.
func (c *Conn) shutdown(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed, c.err = true, err
	l := c.link
	c.link = nil
	c.mu.Unlock()
	c.cancel()
	if l != nil {
		l.fail(err)
	}
}

// Close closes the connection and waits for its goroutines. Commands in
// flight fail with ErrConnLost, later ones with ErrClosed; the Events
// channel is closed. Close is safe to call more than once and from any
// goroutine, including OnEvent.
func (c *Conn) Close() error {
	c.shutdown(ErrClosed)
	c.wg.Wait()
	c.ev.wait()
	return nil
}

// Err returns why the Conn closed: ErrClosed after Close, or the error that
// ended it (a fingerprint mismatch while reconnecting, or a lost connection
// with NoReconnect). It is nil while the Conn is open. Safe for concurrent
// use.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Done returns a channel that is closed when the Conn closes. Safe for
// concurrent use.
func (c *Conn) Done() <-chan struct{} { return c.ctx.Done() }

// Addr returns the server address given to Dial. Safe for concurrent use.
func (c *Conn) Addr() string { return c.addr }

// Fingerprint returns the pinned fingerprint of the server key. Safe for
// concurrent use.
func (c *Conn) Fingerprint() string { return c.opts.Fingerprint }

// BlockSize returns the block size of the last connection. Safe for
// concurrent use.
func (c *Conn) BlockSize() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.blockSize
}

// MaxBody returns the largest SEND body the server takes: BlockSize − 1024
// (SPEC §4). Safe for concurrent use.
func (c *Conn) MaxBody() int { return codec.MaxBody(c.BlockSize()) }

// Stats counts what a Conn did.
type Stats struct {
	Commands   uint64 // commands sent, keep-alive PINGs and re-subscriptions included
	Blocks     uint64 // client → server blocks written
	Reconnects uint64 // successful reconnections
}

// Stats returns counters since Dial. Safe for concurrent use.
func (c *Conn) Stats() Stats {
	return Stats{
		Commands: c.stats.commands.Load(), Blocks: c.stats.blocks.Load(), Reconnects: c.stats.reconnects.Load(),
	}
}

func (c *Conn) notePending(n int) {
	c.stats.commands.Add(1)
	if c.opts.testPending != nil {
		c.opts.testPending(n)
	}
}

func (c *Conn) noteBlocks(n int) { c.stats.blocks.Add(uint64(n)) }

// nextCorr returns a fresh corrId: a counter in base 36, unique for the
// life of the Conn, so an answer can never match a command on another link.
func (c *Conn) nextCorr() string {
	return strconv.FormatUint(c.corr.Add(1), 36)
}

// current returns the installed link, waiting for one while reconnecting.
func (c *Conn) current(ctx context.Context) (*link, error) {
	for {
		c.mu.Lock()
		l, ready, closed, err := c.link, c.ready, c.closed, c.err
		c.mu.Unlock()
		if closed {
			if errors.Is(err, ErrClosed) {
				return nil, ErrClosed
			}
			return nil, errwrap.Wrap(ErrClosed, err)
		}
		if l != nil {
			return l, nil
		}
		select {
		case <-ready:
		case <-c.ctx.Done():
		case <-ctx.Done():
			return nil, fmt.Errorf("client: waiting for a connection to %s: %w", c.addr, ctx.Err())
		}
	}
}

// do sends req and waits for its answer. A server ERR comes back as a
// reply, not an error; callers turn it into one.
func (c *Conn) do(ctx context.Context, req request) (reply, error) {
	return c.roundTrip(ctx, req.cmd, func(l *link) (*call, error) { return l.start(req, c.nextCorr()) })
}

// roundTrip queues a command of kind cmd on the current link with start and
// waits for its reply, waiting for a new link while the Conn reconnects.
func (c *Conn) roundTrip(ctx context.Context, cmd codec.Cmd, start func(l *link) (*call, error)) (reply, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	for {
		l, err := c.current(ctx)
		if err != nil {
			return reply{}, err
		}
		cl, err := start(l)
		if errors.Is(err, errLinkDown) {
			continue // not sent: wait for the next link
		}
		if err != nil {
			return reply{}, err
		}
		r, err := l.wait(ctx, cl)
		if err != nil {
			return reply{}, errwrap.Wrap(fmt.Errorf("client: %v", cmd), err)
		}
		return r, nil
	}
}

// account keeps the subscription set in step with successful answers; it
// runs on the reader before the caller sees the answer.
func (c *Conn) account(cl *call, r *reply) {
	switch {
	case cl.req.cmd == codec.CmdNEW && r.cmd == codec.CmdIDS:
		c.addSub(r.rid, cl.req.signer)
	case cl.req.cmd == codec.CmdSUB && (r.cmd == codec.CmdOK || r.cmd == codec.CmdMSG):
		c.addSub(cl.req.qid, cl.req.signer)
	case cl.req.cmd == codec.CmdSUB && r.cmd == codec.CmdERR,
		cl.req.cmd == codec.CmdDEL && r.cmd == codec.CmdOK:
		c.dropSub(cl.req.qid)
	}
}

func (c *Conn) addSub(rid []byte, rk *codec.Signer) {
	c.mu.Lock()
	c.subs[string(rid)] = rk
	c.mu.Unlock()
}

func (c *Conn) dropSub(rid []byte) {
	c.mu.Lock()
	delete(c.subs, string(rid))
	delete(c.lastMsg, string(rid))
	delete(c.held, string(rid))
	c.mu.Unlock()
}

// release notes that an ACK or SUB for rid is about to be sent: the server
// may deliver the queue's next message (SPEC §5). Called before the
// command is queued, so it happens before any answer or push it allows.
func (c *Conn) release(cmd codec.Cmd, rid []byte) {
	if cmd != codec.CmdACK && cmd != codec.CmdSUB {
		return
	}
	c.mu.Lock()
	delete(c.held, string(rid))
	c.mu.Unlock()
}

// admitPush checks a MSG or END the server sent on its own (empty corrId)
// for queue rid on l: the Conn must be subscribed to rid, or have a SUB for
// it in flight on l, and a MSG must not come while one delivered before
// awaits ACK (SPEC §5: one message at a time per queue). Anything else is a
// relay that tries to make the client hold what it never asked for.
func (c *Conn) admitPush(l *link, cmd codec.Cmd, rid []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[string(rid)]
	if !ok && !l.subPending(rid) {
		return fmt.Errorf("%w: the relay pushed %v for queue %s, which this client has not subscribed to",
			ErrProtocol, cmd, base64.StdEncoding.EncodeToString(rid))
	}
	if cmd == codec.CmdMSG && c.held[string(rid)] {
		return fmt.Errorf("%w: the relay pushed a second MSG for queue %s before the first was acknowledged",
			ErrProtocol, base64.StdEncoding.EncodeToString(rid))
	}
	return nil
}

// lateMessage reports whether a MSG answering a command whose caller gave
// up is to be delivered: the queue is subscribed and holds no message
// awaiting ACK.
func (c *Conn) lateMessage(rid []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[string(rid)]
	return ok && !c.held[string(rid)]
}

// Subscribed reports whether the Conn is subscribed to the queue rid: it
// created it or subscribed to it, and has had no END, DEL or failed
// re-subscription for it since. Safe for concurrent use.
func (c *Conn) Subscribed(rid []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.subs[string(rid)]
	return ok
}

// deliver turns a MSG into an event; called by the reader.
func (c *Conn) deliver(t *codec.Transmission) {
	m := Message{RID: bytes.Clone(t.QueueID), ID: bytes.Clone(t.MsgID), Body: bytes.Clone(t.Body)}
	if ts, err := time.Parse(time.RFC3339, string(t.Time)); err == nil {
		m.Time = ts
	}
	c.mu.Lock()
	m.Redelivered = c.lastMsg[string(m.RID)] == string(m.ID)
	c.lastMsg[string(m.RID)] = string(m.ID)
	c.held[string(m.RID)] = true
	c.mu.Unlock()
	c.emit(Event{Kind: EventMessage, RID: m.RID, Message: m})
}

// ended handles an END: another connection took the subscription.
func (c *Conn) ended(rid []byte) {
	c.dropSub(rid)
	c.emit(Event{Kind: EventEnd, RID: bytes.Clone(rid)})
}

// emit queues e for the consumer, closing the Conn when e does not fit
// (Options.MaxEvents).
func (c *Conn) emit(e Event) {
	c.mu.Lock()
	limit := c.opts.MaxEvents + 2*len(c.subs)
	c.mu.Unlock()
	if !c.ev.push(e, limit) {
		c.shutdown(fmt.Errorf("%w (%d waiting when a %v event came)", ErrEventOverflow, limit, e.Kind))
	}
}

// Events returns the channel on which events arrive, in order; it is closed
// when the Conn closes. It returns nil when Options.OnEvent is set. Events
// wait in a queue until received, so a consumer that is slow for a while does
// not stall the connection; the queue is bounded (Options.MaxEvents). Safe
// for concurrent use.
func (c *Conn) Events() <-chan Event { return c.ev.out }
