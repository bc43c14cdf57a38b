package wal

import (
	"errors"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/uring"
	"github.com/smprelay/smprelay/internal/waltest"
	"github.com/smprelay/smprelay/store"
)

// TestAsyncSyncsOnlyLargeGroups checks that, with io_uring attached, an
// fsync covering fewer than AsyncMinRecords records blocks the writer and
// one covering as many goes through the ring, and that both leave every
// record durable. The interval mode with an interval no test reaches makes
// Close's fsync the only one, covering every record appended.
func TestAsyncSyncsOnlyLargeGroups(t *testing.T) {
	dir := t.TempDir()
	o := Options{Sync: SyncInterval, SyncInterval: time.Hour, AsyncMinRecords: 4}
	var rids [][16]byte
	for _, tc := range []struct {
		records int
		async   uint64 // fsyncs by the ring
	}{
		{records: 3, async: 0},
		{records: 4, async: 1},
		{records: 9, async: 1},
	} {
		l, _ := openLog(t, dir, o, false)
		nc, readable, detach, err := l.AttachSyncs()
		if errors.Is(err, uring.ErrUnavailable) {
			l.Close()
			t.Skip(err)
		}
		if err != nil {
			l.Close()
			t.Fatal(err)
		}
		reaped := waltest.PollSyncs(t, nc, readable, detach)
		for range tc.records {
			rid := randID()
			rids = append(rids, rid)
			if _, _, err := l.Append(store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		st := l.Stats()
		if st.Syncs != 1 || st.AsyncSyncs != tc.async {
			t.Errorf("%d records: %d fsyncs, %d by io_uring; want 1, %d", tc.records, st.Syncs, st.AsyncSyncs, tc.async)
		}
		if tc.async > 0 && reaped.Load() == 0 {
			t.Errorf("%d records: fsynced by io_uring, and the loop never reaped", tc.records)
		}
		if st.Durable != uint64(len(rids)) { // LSNs count records from the log's start
			t.Errorf("%d records: durable up to LSN %d, the last is %d", tc.records, st.Durable, len(rids))
		}
	}
	m, err := reload(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, rid := range rids {
		if m.queues[rid] == nil {
			t.Fatalf("queue %x lost", rid)
		}
	}
}
