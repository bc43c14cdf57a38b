package wal

import (
	"testing"

	"github.com/smprelay/smprelay/store"
)

// TestLayouts: the histogram layouts are valid (Init would refuse them) and
// cover what they promise.
func TestLayouts(t *testing.T) {
	if !FsyncLayout.Valid() || !BatchLayout.Valid() {
		t.Fatal("invalid layout")
	}
	if b := FsyncLayout.Bounds(); b[len(b)-1] < 5e9 {
		t.Errorf("fsync buckets end at %d ns, want at least 5 s", b[len(b)-1])
	}
	if b := BatchLayout.Bounds(); b[0] != 1 || b[len(b)-1] < 16384 {
		t.Errorf("batch buckets %v: want 1 … 16384", b)
	}
}

// TestMetrics: each group written is one batch observation of its record
// count, each segment fsync one latency observation, bytes and compactions
// match Stats, and a failed fsync shows as Failed.
func TestMetrics(t *testing.T) {
	l, m, cur := openFailing(t, t.TempDir(), Options{Sync: SyncAlways}, true)
	defer l.Close()
	f := cur()
	hold, entered := make(chan struct{}), make(chan struct{}, 4)
	f.set(func(f *failFile) { f.hold, f.entered = hold, entered })

	n := newChanNotifier()
	rid := randID()
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, n)
	<-entered // the writer is inside the first group's fsync: the next 5 records form one group
	var last uint64
	for range 5 {
		last = m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: 1, Body: []byte("x")}, n)
	}
	f.set(func(f *failFile) { f.hold = nil })
	close(hold)
	waitDurable(t, l, n, last)

	got := l.Metrics()
	if got.Batch.Count() != 2 || got.Batch.Counts[0] != 1 || got.Batch.Counts[3] != 1 || got.Batch.Sum != 6 {
		t.Errorf("batch histogram %v (sum %v): want one group of 1 and one of 5 (bucket ≤8)", got.Batch.Counts, got.Batch.Sum)
	}
	if got.Fsync.Count() != got.Syncs || got.Syncs < 2 {
		t.Errorf("%d fsync observations for %d fsyncs, want one each and at least 2", got.Fsync.Count(), got.Syncs)
	}
	if got.Fsync.Sum <= 0 {
		t.Errorf("fsync latency sum %v ns, want > 0", got.Fsync.Sum)
	}
	if st := l.Stats(); got.DiskBytes != st.DiskBytes || got.DiskBytes == 0 || got.Compactions != 1 {
		t.Errorf("metrics %d bytes, %d compactions; stats %d bytes; want equal, > 0, and the start-up compaction",
			got.DiskBytes, got.Compactions, st.DiskBytes)
	}
	if got.Failed {
		t.Fatal("Failed before any fault")
	}
	if ss := l.StoreStats(); ss.DiskBytes != got.DiskBytes || ss.Records != got.Records || ss.Syncs != got.Syncs ||
		ss.Compactions != got.Compactions || ss.Durable != got.Durable || ss.BodyBytes != 0 || ss.Failed {
		t.Errorf("StoreStats %+v disagrees with Metrics %+v", ss, got.Stats)
	}

	cur().set(func(f *failFile) { f.failSync = errInjected })
	lsn := m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: 1, Body: []byte("y")}, n)
	if err := l.call(&request{kind: reqSync}); err == nil { // the writer has met the fault once this returns
		t.Fatalf("a sync after an injected fsync error succeeded (record %d)", lsn)
	}
	if !l.Metrics().Failed || !l.StoreStats().Failed {
		t.Fatal("Failed is false after an fsync error")
	}
}
