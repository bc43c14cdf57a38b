// Package metric holds the lock-free histograms that the relay's hot paths
// update (engine, wal). It exports nothing to the network and imports no
// metrics library: cmd/smp-server reads snapshots at scrape time and turns
// them into Prometheus metrics, so that an observation is a few atomic adds,
// with no allocation, map lookup or lock.
//
// A Histogram has a fixed bucket Layout and may be observed from any
// goroutine; the packages that use it give each writer (an event loop, the
// log's writer goroutine) its own Histogram so that observers do not share
// cache lines, and merge the snapshots.
package metric

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// MaxBuckets is the most bounded buckets a Layout may have; one more counts
// the values above every bound.
const MaxBuckets = 32

// Layout is a histogram's bucket bounds, in the histogram's integer unit
// (nanoseconds, records): Exp buckets doubling from Base (upper bounds Base,
// 2·Base, 4·Base, …), then the Tail bounds, then +Inf. Bounds are inclusive,
// as Prometheus's "le" is. A Layout is immutable once in use.
type Layout struct {
	Base int64   // upper bound of the first bucket, > 0
	Exp  int     // how many doubling buckets, ≥ 1
	Tail []int64 // increasing bounds above Base·2^(Exp-1)
}

// Bounds returns the upper bounds of the bounded buckets.
func (l *Layout) Bounds() []int64 {
	b := make([]int64, 0, l.Exp+len(l.Tail))
	for i := range l.Exp {
		b = append(b, l.Base<<i)
	}
	return append(b, l.Tail...)
}

// Valid reports whether l fits a Histogram and its bounds increase.
func (l *Layout) Valid() bool {
	if l.Base <= 0 || l.Exp < 1 || l.Exp+len(l.Tail) > MaxBuckets || l.Base > math.MaxInt64>>(l.Exp-1) {
		return false
	}
	last := l.Base << (l.Exp - 1)
	for _, t := range l.Tail {
		if t <= last {
			return false
		}
		last = t
	}
	return true
}

// index returns the bucket v falls in: the first whose bound is ≥ v.
func (l *Layout) index(v int64) int {
	if v <= l.Base {
		return 0
	}
	// v in (Base·2^(i-1), Base·2^i] ⇔ (v-1)/Base in [2^(i-1), 2^i) ⇔ bit length i.
	if i := bits.Len64(uint64(v-1) / uint64(l.Base)); i < l.Exp {
		return i
	}
	for j, t := range l.Tail {
		if v <= t {
			return l.Exp + j
		}
	}
	return l.Exp + len(l.Tail)
}

// Histogram counts observations in the buckets of its Layout. The zero value
// is not ready: call Init first. Observe and Snapshot are safe from any
// goroutine; a Snapshot taken during Observe calls may show a count without
// its sum, or the other way round, never a torn number.
type Histogram struct {
	l      *Layout
	counts [MaxBuckets + 1]atomic.Uint64
	sum    atomic.Uint64 // float64 bits: a float so that a long tail of large values cannot overflow it
}

// Init sets h's layout; it panics on an invalid Layout (a programming error:
// layouts are package constants). Call it before h is shared.
func (h *Histogram) Init(l *Layout) {
	if !l.Valid() {
		panic("metric: invalid histogram layout")
	}
	h.l = l
}

// Observe counts v. Values below zero count as zero.
func (h *Histogram) Observe(v int64) {
	v = max(v, 0)
	h.counts[h.l.index(v)].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+float64(v))) {
			return
		}
	}
}

// Snapshot is a histogram's state: per-bucket (not cumulative) counts.
type Snapshot struct {
	Bounds []int64  // inclusive upper bounds of the bounded buckets
	Counts []uint64 // len(Bounds)+1 counts; the last is for values above every bound
	Sum    float64  // sum of the observed values
}

// AddTo adds h's counts to s, which must be empty or hold snapshots of
// histograms with the same Layout.
func (h *Histogram) AddTo(s *Snapshot) {
	if s.Bounds == nil {
		s.Bounds = h.l.Bounds()
		s.Counts = make([]uint64, len(s.Bounds)+1)
	}
	for i := range s.Counts {
		s.Counts[i] += h.counts[i].Load()
	}
	s.Sum += math.Float64frombits(h.sum.Load())
}

// Count returns the number of observations.
func (s *Snapshot) Count() uint64 {
	var n uint64
	for _, c := range s.Counts {
		n += c
	}
	return n
}

// Pad keeps what follows it off the cache lines of what precedes it (two
// lines: x86 prefetches them in pairs). Per-writer counter shards start with one.
type Pad [128]byte
