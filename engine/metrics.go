package engine

import (
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/metric"
)

// Operational counters (issue 7). They are aggregates only: nothing is kept
// per queue or per client (SPEC §8). The hot path updates them with plain
// atomic adds on counters that one event loop owns, so loops do not bounce a
// shared cache line between cores; readers (the metrics exporter) sum the
// shards at scrape time through Engine.Metrics and Server.Metrics.

// StatShards is how many counter shards there are: shard 0 for sessions that
// run outside a transport (tests, tools), then one per event loop (a
// transport's loops beyond StatShards-1 share shards, still correctly, only
// less cheaply). See Session.SetStatsShard.
const StatShards = 16

const statShards = StatShards

// CommandLabels names the commands counted by EngineMetrics.Commands: the
// client commands of SPEC §5, then "other" for a transmission whose command
// did not parse or is not a client command.
var CommandLabels = [numCmdLabels]string{"NEW", "SUB", "KEY", "ACK", "OFF", "DEL", "SEND", "PING", "other"}

// ResultLabels names the results counted by EngineMetrics.Commands: "ok" for
// any reply but ERR, else the SPEC §6 error name in lower case (every SYNTAX n
// is "syntax").
var ResultLabels = [numResults]string{"ok", "syntax", "unknown", "prohibited", "size", "auth", "quota", "internal"}

// QuotaLabels names the limits counted by EngineMetrics.Quota, each the
// option that sets it with '_' for '-': a command they refuse gets ERR QUOTA.
var QuotaLabels = [numQuotaLabels]string{"quota", "max_stored_bytes", "max_queues", "new_queues_per_minute"}

// Indexes into QuotaLabels.
const (
	quotaQueue          = iota // SEND to a queue holding Limits.Quota messages
	quotaMaxStoredBytes        // SEND past Limits.MaxStoredBytes
	quotaMaxQueues             // NEW past Limits.MaxQueues
	quotaNewRate               // NEW past Limits.NewQueuesPerMinute
	numQuotaLabels
)

// ExpiredQueueLabels names the reasons counted by EngineMetrics.QueuesExpired.
var ExpiredQueueLabels = [numExpiredQueueLabels]string{"suspended", "unsecured"}

// Indexes into ExpiredQueueLabels.
const (
	expiredSuspended = iota // suspended (OFF) for longer than Limits.SuspendedTTL
	expiredUnsecured        // never secured (KEY), older than Limits.UnsecuredTTL
	numExpiredQueueLabels
)

const (
	numCmdLabels = 9
	numResults   = 8
)

// cmdLabel maps a command to its index in CommandLabels.
func cmdLabel(c codec.Cmd) int {
	if c >= codec.CmdNEW && c <= codec.CmdPING {
		return int(c - codec.CmdNEW) // codec orders them as CommandLabels does
	}
	return numCmdLabels - 1
}

// resultLabel maps a reply's error to its index in ResultLabels.
func resultLabel(e codec.Error) int {
	switch e {
	case codec.ErrNone:
		return 0
	case codec.ErrUnknown:
		return 2
	case codec.ErrProhibited:
		return 3
	case codec.ErrSize:
		return 4
	case codec.ErrAuth:
		return 5
	case codec.ErrQuota:
		return 6
	case codec.ErrInternal:
		return 7
	}
	return 1 // the SYNTAX family
}

// DeliveryLayout is the bucket layout of EngineMetrics.Delivery, in
// nanoseconds: doubling from 50 µs to about 13 s (a subscriber that is
// online), then a long tail for messages that waited for their recipient to
// come back: 1 min, 10 min, 1 h, 6 h, 1 day, 1 week.
var DeliveryLayout = metric.Layout{Base: int64(50 * time.Microsecond), Exp: 19, Tail: []int64{
	int64(time.Minute), int64(10 * time.Minute), int64(time.Hour), int64(6 * time.Hour),
	int64(24 * time.Hour), int64(7 * 24 * time.Hour),
}}

// loopStats are the engine counters of one event loop, written by the
// sessions that loop runs. Shard 0 is written by sessions made outside a
// Server, from whichever goroutines drive them: every field is atomic, so
// that is correct, only not free of contention.
type loopStats struct {
	_        metric.Pad
	cmds     [numCmdLabels][numResults]atomic.Uint64
	quota    [numQuotaLabels]atomic.Uint64 // commands refused with ERR QUOTA, by the limit that refused them
	delivery metric.Histogram              // SEND stored → MSG written, nanoseconds
}

// engineStats are the Engine's operational counters beside Engine.stats.
type engineStats struct {
	epoch   time.Time // monotonic origin of message.stored
	loops   [statShards]loopStats
	expired atomic.Uint64 // messages deleted by the message TTL; written by Expire
	// lost counts messages deleted because the store lost their bodies
	// (store.ErrBodyLost); written by any loop, rarely (after a power cut).
	lost    atomic.Uint64
	lostLog rateLimit // the warning for lost bodies, at most one line per lostLogEvery
	// queuesExpired counts queues deleted by Expire, by ExpiredQueueLabels;
	// written by Expire.
	queuesExpired [numExpiredQueueLabels]atomic.Uint64
	// fullLog holds back the warnings that a relay-wide cap refused a
	// command (quotaMaxStoredBytes, quotaMaxQueues) to one per fullLogEvery.
	fullLog [numQuotaLabels]rateLimit
}

// lostLogEvery is how often a lost body may be logged: after a power cut a
// whole range of bodies may be gone, and a line for each would drown the log.
const lostLogEvery = 10 * time.Second

// fullLogEvery is how often a relay-wide cap's refusals may be logged: the
// operator learns the relay is full, and a flood of refusals adds no line.
const fullLogEvery = time.Minute

// rateLimit lets an event through at most once per period and counts the
// others. Safe for concurrent use; lock-free.
type rateLimit struct {
	next atomic.Int64  // Unix nanoseconds before which no event passes; 0 at first
	held atomic.Uint64 // events held back since the last one that passed
}

// allow reports whether an event at now (Unix nanoseconds) passes, at most
// one per period, and if it does, how many were held back since the last one
// that passed.
func (r *rateLimit) allow(now int64, period time.Duration) (ok bool, held uint64) {
	next := r.next.Load()
	if now < next || !r.next.CompareAndSwap(next, now+int64(period)) {
		r.held.Add(1)
		return false, 0
	}
	return true, r.held.Swap(0)
}

func (m *engineStats) init() {
	m.epoch = time.Now()
	for i := range m.loops {
		m.loops[i].delivery.Init(&DeliveryLayout)
	}
}

// mono is the monotonic time of a store, for the delivery latency: never 0,
// which marks a message with no store time (replayed from the log, or
// already observed).
func (m *engineStats) mono() int64 { return int64(time.Since(m.epoch)) + 1 }

// observeDelivery counts the first write of a message as a MSG. The caller
// holds q.mu and has copied *f (the message at the head of q's fifo); the
// store time is cleared in the fifo so a redelivery is not counted again.
func (s *Session) observeDelivery(f *message) {
	if f.stored == 0 {
		return
	}
	s.mx.delivery.Observe(s.e.mx.mono() - f.stored)
	f.stored = 0
}

// countCommand counts one handled transmission with the result its reply
// carried (s.res, set by fail). Runs on the session's loop.
func (s *Session) countCommand(t *codec.Transmission) {
	s.mx.cmds[cmdLabel(t.Cmd)][resultLabel(s.res)].Add(1)
}

// EngineMetrics is a snapshot of the engine's aggregate counters.
type EngineMetrics struct {
	Queues    int64 // live queues
	Messages  int64 // stored messages, delivered or not
	BodyBytes int64 // bytes of stored message bodies
	// Commands counts handled transmissions by CommandLabels × ResultLabels.
	Commands [numCmdLabels][numResults]uint64
	Expired  uint64 // messages deleted by the message TTL
	Lost     uint64 // messages deleted because the store lost their bodies (store.ErrBodyLost)
	// Quota counts commands refused with ERR QUOTA, by QuotaLabels.
	Quota [numQuotaLabels]uint64
	// QueuesExpired counts queues deleted by expiry, by ExpiredQueueLabels.
	QueuesExpired [numExpiredQueueLabels]uint64
	// Delivery is the time from a SEND storing a message to the message being
	// written as MSG to its subscriber's block, in nanoseconds; only the
	// first write of a message stored by this process is counted (messages
	// replayed from the log have no store time). A MSG that answers an ACK
	// is counted when written, before the ACK's own record is durable
	// (fsync always holds that reply until then); a pushed MSG never waits.
	Delivery metric.Snapshot
}

// Metrics returns a snapshot of the engine's counters. Safe for concurrent
// use; it allocates, so it is for scrapes, not hot paths.
func (e *Engine) Metrics() EngineMetrics {
	m := EngineMetrics{
		Queues: e.stats.queues.Load(), Messages: e.stats.messages.Load(), BodyBytes: e.stats.bodyBytes.Load(),
		Expired: e.mx.expired.Load(), Lost: e.mx.lost.Load(),
	}
	for i := range e.mx.queuesExpired {
		m.QueuesExpired[i] = e.mx.queuesExpired[i].Load()
	}
	for i := range e.mx.loops {
		l := &e.mx.loops[i]
		for c := range l.cmds {
			for r := range l.cmds[c] {
				m.Commands[c][r] += l.cmds[c][r].Load()
			}
		}
		for r := range l.quota {
			m.Quota[r] += l.quota[r].Load()
		}
		l.delivery.AddTo(&m.Delivery)
	}
	return m
}
