package transport

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ConnLimits bound what one client can make the relay hold or do, so that a
// hostile or broken client costs the server a bounded amount and everyone
// else keeps being served.
type ConnLimits struct {
	// MaxConns caps open connections; one more is closed at accept, before
	// any event loop sees it. 0 means the open-file limit less fdReserve.
	MaxConns int
	// IdleTimeout closes a connection from which no block arrived for this
	// long (clients keep alive with PING). 0 disables it. Default 10 min.
	IdleTimeout time.Duration
	// MaxOutbound caps the bytes waiting to be sent to one client; a client
	// that does not read (e.g. a subscriber that never reads while others
	// keep sending) is disconnected past it. Default 1 MiB.
	MaxOutbound int
	// BlocksPerSecond caps the blocks read from one connection per second
	// (with a burst of as many); blocks beyond it wait in the connection's
	// buffer, and a client that piles up more than MaxInboundBlocks waiting
	// blocks is disconnected. Default 4000.
	BlocksPerSecond int
	// MaxInboundBlocks caps the blocks buffered for a connection waiting past
	// its rate or for its turn of work; past it the connection is closed as a
	// flood. Default 256.
	MaxInboundBlocks int
	// MaxConnsPerSource caps the open connections of one source (source.go);
	// one more is closed at accept. Default 256; < 0 means no limit.
	MaxConnsPerSource int
	// HandshakesPerSource caps the connections one source may open per
	// second (each costs the relay a handshake), with a burst of a tenth;
	// one more is closed at accept. Default 100; < 0 means no limit.
	HandshakesPerSource int
	// SourcePrefixV6 is the prefix length that makes IPv6 addresses one
	// source. Default 64; set when the server is made (changing it live would
	// split or merge sources that hold connections).
	SourcePrefixV6 int
}

// DefaultConnLimits are the defaults named in the field comments.
var DefaultConnLimits = ConnLimits{
	IdleTimeout: 10 * time.Minute, MaxOutbound: 1 << 20, BlocksPerSecond: 4000, MaxInboundBlocks: 256,
	MaxConnsPerSource: 256, HandshakesPerSource: 100, SourcePrefixV6: 64,
}

// fdReserve is kept back from the open-file limit for the log, the listener,
// the metrics endpoint, the process's own files, the acceptor's reserve
// descriptor, and the connections waiting for or in enrollment, which hold
// a second descriptor for a moment (accept.go).
const fdReserve = 64 + enrollQueue + enrollWorkers

// maxAutoConns caps the automatic MaxConns when the open-file limit is huge.
const maxAutoConns = 1 << 20

// AutoMaxConns is the MaxConns that 0 stands for: the process's open-file
// limit (its soft limit, which Go raises to the hard one at start) less
// fdReserve, at most maxAutoConns. limit is that open-file limit, and ok is
// false when it could not be read. Safe for concurrent use.
func AutoMaxConns() (n int, limit uint64, ok bool) {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) != nil {
		return maxAutoConns, 0, false
	}
	n = maxAutoConns
	if r.Cur > fdReserve && r.Cur-fdReserve < uint64(n) {
		n = int(r.Cur - fdReserve)
	}
	return n, r.Cur, true
}

// withDefaults fills zero fields; IdleTimeout < 0 means none.
func (l ConnLimits) withDefaults() ConnLimits {
	d := DefaultConnLimits
	if l.MaxConns <= 0 {
		l.MaxConns, _, _ = AutoMaxConns()
	}
	if l.IdleTimeout == 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.MaxOutbound <= 0 {
		l.MaxOutbound = d.MaxOutbound
	}
	if l.BlocksPerSecond <= 0 {
		l.BlocksPerSecond = d.BlocksPerSecond
	}
	if l.MaxInboundBlocks <= 0 {
		l.MaxInboundBlocks = d.MaxInboundBlocks
	}
	if l.MaxConnsPerSource == 0 {
		l.MaxConnsPerSource = d.MaxConnsPerSource
	}
	if l.HandshakesPerSource == 0 {
		l.HandshakesPerSource = d.HandshakesPerSource
	}
	if l.SourcePrefixV6 <= 0 || l.SourcePrefixV6 > 128 {
		l.SourcePrefixV6 = d.SourcePrefixV6
	}
	return l
}

// registry holds every open connection for the idle sweep, in shards so that
// loops accepting and closing at once rarely wait on each other.
type registry struct {
	open   atomic.Int64
	shards [64]struct {
		mu sync.Mutex
		m  map[*conn]struct{}
	}
}

func (r *registry) shard(c *conn) *struct {
	mu sync.Mutex
	m  map[*conn]struct{}
} {
	return &r.shards[c.id%uint64(len(r.shards))]
}

func (r *registry) add(c *conn) {
	s := r.shard(c)
	s.mu.Lock()
	if s.m == nil {
		s.m = make(map[*conn]struct{})
	}
	s.m[c] = struct{}{}
	s.mu.Unlock()
}

func (r *registry) remove(c *conn) {
	s := r.shard(c)
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// each calls f for every open connection, outside the shard locks.
func (r *registry) each(f func(c *conn)) {
	var all []*conn
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for c := range s.m {
			all = append(all, c)
		}
		s.mu.Unlock()
	}
	for _, c := range all {
		f(c)
	}
}

// idle closes every open connection whose last block came before cutoff
// (Unix nanoseconds), counting each in closed first, so that a client that
// sees the close can read the count. Close is safe from this goroutine (gnet
// queues it to the connection's loop).
func (r *registry) idle(cutoff int64, closed *atomic.Uint64) {
	var stale []*conn
	for i := range r.shards {
		s := &r.shards[i]
		s.mu.Lock()
		for c := range s.m {
			if c.phase.Load() == phaseOpen && c.last.Load() < cutoff {
				stale = append(stale, c)
			}
		}
		s.mu.Unlock()
	}
	for _, c := range stale {
		closed.Add(1)
		_ = c.gc.Close()
	}
}
