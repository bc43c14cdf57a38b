package transport

import (
	"sync"
	"sync/atomic"

	"github.com/panjf2000/gnet/v2"

	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/metric"
)

// Operational counters of the transport (issue 7), aggregates only (SPEC §8):
// each event loop counts into its own padded shard, and Server.Metrics sums
// the shards at scrape time.

// statShards is how many counter shards there are: shard 0 for what the
// acceptor counts before a loop owns the connection, then one per gnet event
// loop (loops beyond statShards-1 share shards, still correctly, only less
// cheaply). It is also the engine's shard count (engine.StatShards), so a
// connection's Session counts into the shard of the same number.
const statShards = engine.StatShards

// RejectLabels names the reasons counted by ServerMetrics.Rejected: the
// connection limits of ConnLimits that refuse or drop a connection, and the
// open-file limit of the process.
var RejectLabels = [numRejects]string{"max_conns", "idle", "outbound", "flood", "fd_limit", "per_source", "handshake_rate"}

const (
	rejMaxConns      = iota // MaxConns reached at accept
	rejIdle                 // IdleTimeout: no block for too long
	rejOutbound             // MaxOutbound: the client does not read
	rejFlood                // MaxInboundBlocks: far beyond BlocksPerSecond
	rejFDLimit              // no descriptor left to accept or register it (accept.go)
	rejPerSource            // MaxConnsPerSource reached at accept
	rejHandshakeRate        // HandshakesPerSource: the source opens connections too fast
	numRejects
)

// HandshakeLabels names the outcomes counted by ServerMetrics.Handshakes
// (SPEC §3.2): the transport opened; the hello did not open or did not fit;
// the handshake timeout closed the connection; the client went away first.
var HandshakeLabels = [numOutcomes]string{"ok", "bad_hello", "timeout", "closed"}

const (
	hsOK = iota
	hsBadHello
	hsTimeout
	hsClosed
	numOutcomes
)

// connStats are the transport counters of one event loop, written by that
// loop (the handshake timer, on its own goroutine, adds a timeout now and
// then: every field is atomic).
type connStats struct {
	_          metric.Pad
	accepted   atomic.Uint64
	rejected   [numRejects]atomic.Uint64 // outbound, flood; the accept-time reasons in shard 0 (the acceptor); idle in serverStats
	handshakes [numOutcomes]atomic.Uint64
	blocksIn   atomic.Uint64 // whole blocks read
	helloIn    atomic.Uint64 // bytes of client hellos read
	blockOut   atomic.Uint64 // bytes of blocks written (whole blocks)
	helloOut   atomic.Uint64 // bytes of server hellos written
}

// serverStats are the Server's operational counters.
type serverStats struct {
	loops   [statShards]connStats
	idle    atomic.Uint64 // connections closed by the idle sweep; written by expireLoop
	loopIDs sync.Map      // gnet.EventLoop → shard index; written once per loop
	nextID  atomic.Uint32
}

// shard returns the index of the counters of the loop that runs gc. Called
// at accept: a lock-free map read once the loop has been seen.
func (m *serverStats) shard(gc gnet.Conn) int {
	el := gc.EventLoop()
	if el == nil {
		return 0
	}
	if i, ok := m.loopIDs.Load(el); ok {
		return i.(int)
	}
	i, _ := m.loopIDs.LoadOrStore(el, 1+int(m.nextID.Add(1)-1)%(statShards-1))
	return i.(int)
}

// ServerMetrics is a snapshot of the transport's aggregate counters.
type ServerMetrics struct {
	KEM        string // the transport key's kind (SPEC §2), which every handshake uses
	Open       int64  // connections open now
	Sources    int64  // sources held for per-source limits (source.go)
	Accepted   uint64 // connections accepted (below MaxConns)
	Rejected   [numRejects]uint64
	Handshakes [numOutcomes]uint64
	BlocksIn   uint64 // whole blocks read
	BlocksOut  uint64 // blocks written
	BytesIn    uint64 // bytes read: client hellos and whole blocks
	BytesOut   uint64 // bytes written: server hellos and blocks
}

// Metrics returns a snapshot of the server's counters. Safe for concurrent use.
func (s *Server) Metrics() ServerMetrics {
	m := ServerMetrics{KEM: s.o.Key.Public().Type().String(), Open: s.conns.open.Load(), Sources: int64(s.sources.len())}
	var blockOut uint64
	for i := range s.mx.loops {
		l := &s.mx.loops[i]
		m.Accepted += l.accepted.Load()
		for r := range l.rejected {
			m.Rejected[r] += l.rejected[r].Load()
		}
		for o := range l.handshakes {
			m.Handshakes[o] += l.handshakes[o].Load()
		}
		m.BlocksIn += l.blocksIn.Load()
		m.BytesIn += l.helloIn.Load()
		blockOut += l.blockOut.Load()
		m.BytesOut += l.helloOut.Load()
	}
	m.Rejected[rejIdle] += s.mx.idle.Load()
	bs := uint64(s.e.BlockSize())
	m.BytesIn += m.BlocksIn * bs
	m.BlocksOut = blockOut / bs
	m.BytesOut += blockOut
	return m
}
