package wal

import (
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/store"
)

// batchKind is a mix of records to measure compression on.
type batchKind struct {
	name string
	body func() []byte
}

// Bodies as they reach the relay. Real clients pad and seal every message to
// the same size, maxBody of the block (SPEC §10): random bytes. Test clients
// and the CLI in string mode send short text.
var batchKinds = []batchKind{
	{"sealed-8192", func() []byte { return randBytes(codec.MaxBody(codec.DefaultBlockSize)) }},
	{"random-256", func() []byte { return randBytes(256) }},
	{"text-64", func() []byte { return []byte(base64.StdEncoding.EncodeToString(randBytes(48))) }},
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// realBatch encodes the records of one busy group, in the proportions a relay
// sees them: per message a store and a delete, and now and then a new queue
// and its KEY. It returns the raw payload of the records.
func realBatch(tb testing.TB, k batchKind, records int) []byte {
	var raw []byte
	rids := [][16]byte{randID()}
	for i := 0; len(raw) < targetFrameRaw && i < records; i++ {
		var r store.Record
		switch {
		case i%16 == 0:
			r = store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(tb, i)}
			rids = append(rids, r.RID)
		case i%16 == 1:
			r = store.Record{Kind: store.QueueSecured, RID: rids[len(rids)-1], SenderKey: edKey(tb, i+1)}
		case i%2 == 0:
			r = store.Record{Kind: store.MessageStored, RID: rids[i%len(rids)], MsgID: randMsgID(),
				Time: time.Now().Unix(), Body: k.body()}
			r.Size = len(r.Body)
		default:
			r = store.Record{Kind: store.MessageDeleted, RID: rids[i%len(rids)], MsgID: randMsgID()}
		}
		raw = appendRecord(raw, &r)
	}
	return raw
}

// BenchmarkCompression measures s2 and zstd on record batches: ratio
// (raw/stored), and encode and decode speed (MB/s of raw records).
func BenchmarkCompression(b *testing.B) {
	for _, k := range batchKinds {
		for _, size := range []struct {
			name    string
			records int
		}{{"group64", 64}, {"frame256K", 1 << 30}} {
			raw := realBatch(b, k, size.records)
			for _, c := range []Compression{CompressS2, CompressZstd, CompressNone} {
				enc := encoder{comp: c.frameComp()}
				enc.raw = append(enc.raw[:0], raw...)
				enc.closeFrame()
				frame := append([]byte(nil), enc.out...)
				h, _ := parseFrameHeader(frame)
				payload := frame[frameHeaderSize:]
				ratio := float64(len(raw)) / float64(len(payload))
				b.Run(fmt.Sprintf("%s/%s/%s/encode", k.name, size.name, c), func(b *testing.B) {
					b.SetBytes(int64(len(raw)))
					for b.Loop() {
						enc.out = enc.out[:0]
						enc.raw = append(enc.raw[:0], raw...)
						enc.closeFrame()
					}
					b.ReportMetric(ratio, "ratio")
					b.ReportMetric(float64(len(raw)), "raw-B/batch")
				})
				b.Run(fmt.Sprintf("%s/%s/%s/decode", k.name, size.name, c), func(b *testing.B) {
					b.SetBytes(int64(len(raw)))
					var fr frameReader
					var dst []byte
					for b.Loop() {
						var err error
						if dst, err = fr.decompress(h, payload, dst); err != nil {
							b.Fatal(err)
						}
					}
					fr.close()
					b.ReportMetric(ratio, "ratio")
				})
			}
		}
	}
}

// benchBody is the body size of BenchmarkAppend's SEND records.
var benchBody = flag.Int("wal.body", 256, "message body bytes in BenchmarkAppend")

// BenchmarkAppend measures the log under concurrent appenders: each appender
// logs a message record and, in fsync mode always, waits until it is durable
// before the next, as a client waits for its reply. Parallelism p runs
// p×GOMAXPROCS appenders. Reported: records/s, bytes on disk per record,
// records per fsync.
func BenchmarkAppend(b *testing.B) {
	// Distinct random bodies, as sealed messages are: more than a frame's
	// worth, so compression finds no repeats.
	bodies := make([][]byte, targetFrameRaw / *benchBody + 64)
	for i := range bodies {
		bodies[i] = randBytes(*benchBody)
	}
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNever} {
		for _, par := range []int{1, 16, 128} {
			b.Run(fmt.Sprintf("%s/appenders=%d", mode, par*runtime.GOMAXPROCS(0)), func(b *testing.B) {
				l, m := openLog(b, b.TempDir(), Options{Sync: mode, Logger: discard}, true)
				rid := randID()
				m.record(b, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(b, 0)}, nil)
				if err := l.call(&request{kind: reqSync}); err != nil {
					b.Fatal(err)
				}
				base := l.Stats()
				var failed atomic.Bool
				var next atomic.Int64
				b.SetParallelism(par)
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					n := newChanNotifier()
					for pb.Next() {
						i := next.Add(1) // every record its own body, whoever appends it
						body := bodies[i%int64(len(bodies))]
						lsn, _, err := l.Append(store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: len(body), Body: body}, n)
						if err != nil {
							failed.Store(true)
							return
						}
						if lsn != 0 {
							for l.Durable() < lsn {
								<-n.c
							}
						}
					}
				})
				// What interval and never modes accepted is on disk once flushed:
				// count the time until it is written (not fsynced).
				if err := l.call(&request{kind: reqRotate}); err != nil {
					b.Fatal(err)
				}
				elapsed := time.Since(start)
				b.StopTimer()
				if failed.Load() {
					b.Fatal("Append failed")
				}
				st := l.Stats()
				recs := float64(st.Records - base.Records)
				b.ReportMetric(recs/elapsed.Seconds(), "records/s")
				b.ReportMetric(float64(st.DiskBytes-base.DiskBytes)/recs, "disk-B/record")
				b.ReportMetric(float64(st.RawBytes-base.RawBytes)/float64(st.DiskBytes-base.DiskBytes), "ratio")
				if syncs := st.Syncs - base.Syncs; mode == SyncAlways && syncs > 0 {
					b.ReportMetric(recs/float64(syncs), "records/fsync")
				}
				if err := l.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}

var discard = slog.New(slog.DiscardHandler)

// A million queues and a million stored messages (issue 3): how long a
// restart takes. Not part of make test: run it with
//
//	go test ./wal -run TestRestartMillion -wal.million -v -timeout 60m
var (
	million     = flag.Bool("wal.million", false, "run TestRestartMillion")
	millionBody = flag.Int("wal.million.body", 256, "message body bytes in TestRestartMillion")
	millionN    = flag.Int("wal.million.n", 1_000_000, "queues, and messages, in TestRestartMillion")
)

func TestRestartMillion(t *testing.T) {
	if !*million {
		t.Skip("run with -wal.million (make bench-wal does)")
	}
	n := *millionN
	dir := t.TempDir()
	if d := os.Getenv("WAL_MILLION_DIR"); d != "" {
		dir = d
	}
	lg, _ := newTestLogger(t)

	// Build the log as the relay writes it: one record per change, in
	// segments, no snapshot yet beyond the empty one.
	l, err := Open(dir, Options{Sync: SyncNever, Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	// Not attached to anything: no compaction while it is built.
	if err := l.Load(func(*store.Record) error { return nil }); err != nil {
		t.Fatal(err)
	}
	keys := make([]*codec.VerifyKey, 64)
	for i := range keys {
		s, err := codec.GenerateSigner(codec.SigEd25519, 0)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = s.VerifyKey()
	}
	bodies := make([][]byte, 4096) // distinct random bodies, as sealed messages are
	for i := range bodies {
		bodies[i] = randBytes(*millionBody)
	}
	start := time.Now()
	for i := range n {
		rid := randID()
		if _, _, err := l.Append(store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: keys[i%len(keys)]}, nil); err != nil {
			t.Fatal(err)
		}
		body := bodies[i%len(bodies)]
		if _, _, err := l.Append(store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Time: int64(i), Size: len(body), Body: body}, nil); err != nil {
			t.Fatal(err)
		}
		if i%4096 == 0 { // keep the pending slice from growing without bound
			if err := l.call(&request{kind: reqSync}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	size := dirSize(t, dir)
	t.Logf("wrote %d queues and %d messages of %d bytes in %v; log %.1f MiB", n, n, *millionBody, time.Since(start).Round(time.Millisecond), float64(size)/(1<<20))

	for round, what := range []string{"segments (no snapshot)", "snapshot"} {
		runtime.GC()
		start = time.Now()
		cpu0 := cpuTime()
		l, err = Open(dir, Options{Sync: SyncAlways, Logger: lg})
		if err != nil {
			t.Fatal(err)
		}
		e, err := engine.New(engine.Options{Store: l}) // Load, then the start-up compaction
		if err != nil {
			t.Fatal(err)
		}
		took, cpu := time.Since(start), cpuTime()-cpu0
		st := e.Stats()
		if st.Queues != int64(n) || st.Messages != int64(n) {
			t.Fatalf("restart %d: %+v", round, st)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("restart %d from %s: %v wall, %v CPU (replay and start-up compaction), %d queues, %d messages, heap %.0f MiB",
			round, what, took.Round(time.Millisecond), cpu.Round(time.Millisecond), st.Queues, st.Messages, float64(ms.HeapAlloc)/(1<<20))
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// cpuTime is the user and system CPU time the process has used: on a
// shared machine wall time also measures the neighbours.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func dirSize(t testing.TB, dir string) int64 {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range ents {
		if fi, err := e.Info(); err == nil {
			n += fi.Size()
		}
	}
	return n
}
