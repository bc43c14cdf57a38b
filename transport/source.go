package transport

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/internal/bucket"
)

// A source is where connections come from, as far as per-source limits are
// concerned: an IPv4 address, or an IPv6 address cut to a prefix (/64 by
// default: one host or one home network is usually given a whole /64, so
// counting addresses within it would let it multiply its share). Clients
// behind one NAT share their source's limits: that is the price of bounding
// what one host can take. The relay keeps a source's state while it has
// connections open and for sourceIdle after, so reconnecting resets nothing.

// sourceIdle is how long a source without connections keeps its state: long
// enough for its NEW bucket (a minute's worth) to refill, so that forgetting
// it gives nothing back.
const sourceIdle = 2 * time.Minute

// source is the state of one source. conns and last are atomic; each bucket
// has its own mutex, since connections of one source run on every loop.
type source struct {
	conns atomic.Int32  // open connections (slots taken at accept)
	last  atomic.Int64  // Unix nanoseconds of the last connection's close or accept
	hs    bucket.Shared // handshakes per second (ConnLimits.HandshakesPerSource)
	newQ  bucket.Shared // NEW per minute (Limits.NewQueuesPerMinute)
}

// handshakeBurst is how many handshakes a source may start at once: a tenth
// of its rate per second (at least one), so that a flood meets the rate from
// its first second instead of a second's worth at once; with RSA keys a
// second's worth at once (about a millisecond each) stalls a loop for 100 ms.
func handshakeBurst(rate int) int { return max(1, rate/10) }

// sourceKey maps a peer address to its source: the IPv4 address (an
// IPv4-mapped IPv6 address counts as IPv4) or the IPv6 address masked to
// prefixV6 bits.
func sourceKey(a net.Addr, prefixV6 int) netip.Addr {
	var ip netip.Addr
	switch t := a.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(t.IP)
	default:
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			ip = ap.Addr()
		}
	}
	ip = ip.Unmap()
	if ip.Is6() {
		if p, err := ip.Prefix(prefixV6); err == nil {
			return p.Addr()
		}
	}
	return ip
}

// sources holds the state of every source seen recently, in shards so that
// accepts and closes on different loops rarely wait on each other. Entries
// are made by the acceptor and removed by the sweep (expireLoop).
type sources struct {
	shards [64]struct {
		mu sync.Mutex
		m  map[netip.Addr]*source
	}
}

func (t *sources) shard(k netip.Addr) *struct {
	mu sync.Mutex
	m  map[netip.Addr]*source
} {
	b := k.As16()
	h := uint32(2166136261)
	for _, c := range b {
		h = (h ^ uint32(c)) * 16777619
	}
	return &t.shards[h%uint32(len(t.shards))]
}

// admit counts a new connection from k, unless k already has maxConns open
// (maxConns <= 0: no limit); it returns k's state, made if absent. The count
// is taken under the shard lock, so the sweep never forgets a source that is
// being given a connection. Safe for concurrent use.
func (t *sources) admit(k netip.Addr, now int64, maxConns int) (*source, bool) {
	sh := t.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.m == nil {
		sh.m = make(map[netip.Addr]*source)
	}
	s := sh.m[k]
	if s == nil {
		s = &source{}
		sh.m[k] = s
	}
	s.last.Store(now)
	if maxConns > 0 && int(s.conns.Load()) >= maxConns {
		return s, false
	}
	s.conns.Add(1)
	return s, true
}

// release counts a connection of s as closed. Safe for concurrent use.
func (s *source) release(now int64) {
	s.last.Store(now)
	s.conns.Add(-1)
}

// sweep forgets the sources that have had no connection since before cutoff
// (Unix nanoseconds). Safe for concurrent use.
func (t *sources) sweep(cutoff int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, s := range sh.m {
			if s.conns.Load() == 0 && s.last.Load() < cutoff {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}

// len returns how many sources are held, for metrics. Safe for concurrent use.
func (t *sources) len() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
