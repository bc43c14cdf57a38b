package main

import (
	"bufio"
	"bytes"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/smptest"
)

// TestStorageScenarios runs both storage scenarios, tiny, end to end against
// the real relay with --store wal (bodies in RAM: the store that exists
// today), and checks that every figure is filled in and consistent.
func TestStorageScenarios(t *testing.T) {
	out := t.TempDir()
	settleEveryStorage = 10 * time.Millisecond
	const msgs, body, queues, qmsgs = 2000, 1024, 2000, 1000
	var stdout, stderr bytes.Buffer
	args := []string{"--scenarios", "storage-messages,storage-queues", "--storage-store", "wal",
		"--storage-messages", "2000", "--storage-body", "1024", "--storage-queue-count", "2000", "--storage-steps", "4",
		"--storage-queue-messages", "1000", "--storage-queue-body", "64", "--storage-empty-restarts", "2",
		"--server-bin", smptest.BuildServer(t), "--out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("run exited %d\nstderr:\n%s", code, stderr.String())
	}
	rep, _, jsons := readReport(t, out)
	if rep.Crypto != nil {
		t.Error("the storage scenarios measured the crypto costs, which they do not use")
	}

	m := rep.StorageMessages
	if m == nil || m.Store != "wal" || m.Messages != msgs || m.BodyBytes != body || m.Queues != 256 {
		t.Fatalf("storage-messages: %+v", m)
	}
	checkSteps(t, "storage-messages", m.Steps, 5, func(i int, st StorageStep) (int, int, int64) {
		return 256, msgs * i / 4, int64(msgs*i/4) * body
	})
	// The wal keeps bodies in RAM: 2 MB of them must show.
	if !(m.PerMessage > 0) || m.RSSAfterFill != m.Steps[4].RSS || m.BaseRSS == 0 || m.FillSeconds <= 0 || m.FillRate <= 0 {
		t.Errorf("storage-messages figures: per message %v, RSS after fill %d, base %d, fill %v s at %v/s", m.PerMessage, m.RSSAfterFill, m.BaseRSS, m.FillSeconds, m.FillRate)
	}
	if m.DataDirBytes < msgs*body {
		t.Errorf("data directory %d bytes on disk after storing %d bytes of bodies", m.DataDirBytes, msgs*body)
	}
	e := m.Empty
	if e == nil || e.FreshSeconds <= 0 || len(e.RestartSeconds) != 2 || e.MedianSeconds <= 0 || e.RSS == 0 {
		t.Fatalf("empty relay: %+v", e)
	}
	checkRestart(t, "storage-messages", m.Restart, e)
	cr := m.ColdRead
	if cr == nil || cr.Received != msgs || cr.Events != msgs || cr.BadBodies != 0 || cr.Expected != msgs || cr.Queues != 256 ||
		cr.Seconds <= 0 || cr.Rate <= 0 || cr.RSSAfter == 0 || cr.CacheNote == "" {
		t.Fatalf("cold read: %+v", cr)
	}
	if cr.HitRate != nil && (*cr.HitRate < 0 || *cr.HitRate > 1 || cr.CacheHits+cr.CacheMisses <= 0) {
		t.Errorf("cold read cache figures: %+v", cr)
	}
	if len(m.Bounds) != 4 {
		t.Errorf("storage-messages bounds: %+v", m.Bounds)
	}

	q := rep.StorageQueues
	if q == nil || q.Queues != queues || q.Empty == nil || !reflect.DeepEqual(*q.Empty, *e) || q.Messages != qmsgs {
		t.Fatalf("storage-queues: %+v", q)
	}
	checkSteps(t, "storage-queues", q.Steps, 5, func(i int, st StorageStep) (int, int, int64) { return queues * i / 4, 0, 0 })
	checkSteps(t, "storage-queues messages", q.MessageSteps, 4, func(i int, st StorageStep) (int, int, int64) {
		return queues, qmsgs * (i + 1) / 4, int64(qmsgs*(i+1)/4) * 64
	})
	if math.IsNaN(q.PerQueue) || q.PerQueue == 0 || q.CreateSeconds <= 0 || q.FillSeconds <= 0 || len(q.Bounds) != 1 {
		t.Errorf("storage-queues figures: %+v", q)
	}
	checkRestart(t, "storage-queues", q.Restart, e)

	md, err := os.ReadFile(strings.TrimSuffix(jsons[0], ".json") + ".md")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## storage-messages (--store wal)", "## storage-queues (--store wal)", "Bounds (issue 14)",
		"RAM per stored message ≤ 64 B", "≤ 400 B beyond the cache", "Cold read after the restart", "Cache hit rate: **",
		"| storage-messages (--store wal) |", "Storage scenarios, method: "} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("Markdown lacks %q", want)
		}
	}
	if n := bytes.Count(md, []byte("- meets: ")) + bytes.Count(md, []byte("- **misses**: ")); n != 5 {
		t.Errorf("Markdown has %d meets/misses lines, want 5", n)
	}
	for _, name := range []string{"storage-rss-messages", "storage-rss-queues"} {
		f := strings.TrimSuffix(jsons[0], ".json") + "-" + name + ".svg"
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := wellFormed(b); err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
		}
		marks, _ := seriesMarks(t, string(b))
		for _, s := range []string{"VmRSS", "RssAnon", "256 MiB bound"} {
			if m, ok := marks[s]; !ok || (len(m.segments) == 0 && m.markers == 0) {
				t.Errorf("%s: series %q not drawn", filepath.Base(f), s)
			}
		}
	}
}

// checkSteps checks that steps has n readings, each at the queues, messages
// and bytes want gives for its index, all with an RSS.
func checkSteps(t *testing.T, name string, steps []StorageStep, n int, want func(int, StorageStep) (int, int, int64)) {
	t.Helper()
	if len(steps) != n {
		t.Fatalf("%s: %d steps, want %d: %+v", name, len(steps), n, steps)
	}
	for i, st := range steps {
		qs, ms, bs := want(i, st)
		if st.Queues != qs || st.Messages != ms || st.StoredBytes != bs || st.RSS == 0 || st.RSSAnon == 0 || st.RSSAnon > st.RSS || st.SettleSeconds <= 0 {
			t.Errorf("%s step %d: %+v; want %d queues, %d messages, %d bytes, an RSS", name, i, st, qs, ms, bs)
		}
		if st.HeapInuse == 0 {
			t.Errorf("%s step %d: no Go heap figure from the metrics endpoint", name, i)
		}
	}
}

// checkRestart checks a restart's figures against the empty relay's.
func checkRestart(t *testing.T, name string, rs *StorageRestart, e *EmptyStart) {
	t.Helper()
	if rs == nil || rs.StartSeconds <= 0 || rs.StopSeconds <= 0 || rs.RSS == 0 || rs.EmptySeconds != e.MedianSeconds ||
		math.Abs(rs.LimitSeconds-(3*e.MedianSeconds+0.5)) > 1e-9 || math.Abs(rs.Ratio-rs.StartSeconds/e.MedianSeconds) > 1e-9 {
		t.Errorf("%s restart: %+v (empty %+v)", name, rs, e)
	}
}

func TestStorageHelpers(t *testing.T) {
	steps := []StorageStep{{Messages: 0, RSS: 5000}, {Messages: 100, RSS: 11000}, {Messages: 200, RSS: 12000}, {Messages: 300, RSS: 13000}}
	if got := stepSlope(steps, func(s StorageStep) int { return s.Messages }); math.Abs(got-10) > 1e-9 {
		t.Errorf("slope = %v, want 10: the first step, before any message, is left out", got)
	}
	if got := stepSlope(steps[:2], func(s StorageStep) int { return s.Messages }); math.Abs(got-60) > 1e-9 {
		t.Errorf("slope of one step = %v, want 60 against the step before it", got)
	}
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median = %v", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median = %v", got)
	}
	text := `# HELP smp_store_cache_hits_total Hits.
# TYPE smp_store_cache_hits_total counter
smp_store_cache_hits_total 12
smp_store_cache_misses_total 3
smp_commands_total{command="SEND",result="ok"} 5
smp_commands_total{command="ACK",result="ok"} 7
smp_build_info{version="v1 (x} y)",key_type="x25519"} 1
go_memstats_heap_inuse_bytes 4.194304e+06
`
	m, err := parseMetrics(bufio.NewScanner(strings.NewReader(text)))
	if err != nil {
		t.Fatal(err)
	}
	if m["smp_commands_total"] != 12 || m["smp_build_info"] != 1 || m["go_memstats_heap_inuse_bytes"] != 4194304 {
		t.Errorf("parsed %v", m)
	}
	c, err := findCacheCounters(m)
	if err != nil || c.hits != 12 || c.misses != 3 {
		t.Errorf("cache counters %+v, %v", c, err)
	}
	c, err = findCacheCounters(map[string]float64{"smp_disk_cache_hits_total": 1, "smp_disk_cache_misses_total": 2})
	if err != nil || c.hits != 1 || c.misses != 2 {
		t.Errorf("cache counters under another prefix: %+v, %v", c, err)
	}
	if _, err := findCacheCounters(map[string]float64{"smp_queues": 1}); err == nil {
		t.Error("no cache counters, no error")
	}
	if got := metricsAddrIn("smp-server: metrics on 127.0.0.1:4242\nsmp-server: listening on 127.0.0.1:5\n"); got != "127.0.0.1:4242" {
		t.Errorf("metrics address %q", got)
	}
}

func TestStorageBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--storage-messages", "0"},
		{"--storage-body", "9000"},
		{"--storage-queue-body", "0"},
		{"--storage-steps", "0"},
		{"--storage-inflight", "0"},
		{"--storage-conns", "1", "--storage-inflight", "129"},
		{"--storage-empty-restarts", "0"},
		{"--storage-queue-messages", "-1"},
		{"--storage-store", ""},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "bench: ") {
			t.Errorf("%q: exit %d, stderr %q; want 2 and a message", args, code, stderr.String())
		}
	}
}
