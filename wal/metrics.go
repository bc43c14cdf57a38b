package wal

import (
	"time"

	"github.com/smprelay/smprelay/internal/metric"
)

// FsyncLayout is the bucket layout of Metrics.Fsync, in nanoseconds:
// doubling from 10 µs to about 5 s.
var FsyncLayout = metric.Layout{Base: int64(10 * time.Microsecond), Exp: 20}

// BatchLayout is the bucket layout of Metrics.Batch, in records: 1, 2, 4, …
// 16384 records per group.
var BatchLayout = metric.Layout{Base: 1, Exp: 15}

// logStats are the histograms behind Metrics. The writer goroutine alone
// observes them, so no other core writes their cache lines.
type logStats struct {
	fsync metric.Histogram // segment fsync latency, nanoseconds
	batch metric.Histogram // records per group written
}

func (m *logStats) init() {
	m.fsync.Init(&FsyncLayout)
	m.batch.Init(&BatchLayout)
}

// Metrics is a snapshot of the log's counters for the metrics endpoint.
type Metrics struct {
	Stats
	Fsync  metric.Snapshot // latency of each segment fsync, nanoseconds
	Batch  metric.Snapshot // records in each group written (one write each)
	Failed bool            // a write or fsync failed: every change is refused until a restart
}

// Metrics returns a snapshot of the log's counters. Safe for concurrent use;
// it allocates, so it is for scrapes, not hot paths.
func (l *Log) Metrics() Metrics {
	m := Metrics{Stats: l.Stats()}
	m.Fsync, m.Batch = l.Histograms()
	l.mu.Lock()
	m.Failed = l.failErr != nil
	l.mu.Unlock()
	return m
}

// Histograms returns snapshots of the fsync latency (nanoseconds, FsyncLayout)
// and records-per-group (BatchLayout) histograms: what a metrics endpoint
// needs beyond StoreStats, through a method that names no type of this
// package. Safe for concurrent use; it allocates.
func (l *Log) Histograms() (fsync, batch metric.Snapshot) {
	l.mx.fsync.AddTo(&fsync)
	l.mx.batch.AddTo(&batch)
	return fsync, batch
}
