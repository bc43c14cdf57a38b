package wal

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/atomicfile"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

func TestRecordRoundTrip(t *testing.T) {
	body := bytes.Repeat([]byte{0xA5}, codec.MaxBody(codec.MaxBlockSize))
	tests := []struct {
		name string
		r    store.Record
	}{
		{"queue created ed25519", store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(t, 0)}},
		{"queue created rsa", store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: rsaKey(t)}},
		{"queue secured", store.Record{Kind: store.QueueSecured, RID: randID(), SenderKey: edKey(t, 1)}},
		{"queue secured rsa", store.Record{Kind: store.QueueSecured, RID: randID(), SenderKey: rsaKey(t)}},
		{"queue suspended", store.Record{Kind: store.QueueSuspended, RID: randID(), Time: 1764097639}},
		{"queue suspended negative time", store.Record{Kind: store.QueueSuspended, RID: randID(), Time: -5}},
		{"queue deleted", store.Record{Kind: store.QueueDeleted, RID: randID()}},
		{"message stored", store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 1764097640, Size: 5, Body: []byte("hello")}},
		{"message stored empty body", store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 1, Body: nil}},
		{"message stored largest body", store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 2, Size: len(body), Body: body}},
		{"message deleted", store.Record{Kind: store.MessageDeleted, RID: randID(), MsgID: randMsgID()}},
		{"queue created with time", store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), Time: 1764097641, RecipientKey: edKey(t, 0)}},
		{"message stored by ref", store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 3, Size: 7168, Ref: 1<<32 | 40}},
		{"message stored by ref empty", store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 3, Ref: ^store.BodyRef(0)}},
		{"queue blocked", store.Record{Kind: store.QueueBlocked, RID: randID()}},
		{"queue unblocked", store.Record{Kind: store.QueueUnblocked, RID: randID()}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkRecord(&tc.r, true); err != nil {
				t.Fatal(err)
			}
			b := appendRecord([]byte("prefix"), &tc.r)[len("prefix"):]
			var v recordView
			n, err := decodeRecord(append(b, "trailing"...), &v)
			if err != nil || n != len(b) {
				t.Fatalf("decode: n=%d err=%v, want n=%d", n, err, len(b))
			}
			var got store.Record
			if err := v.toRecord(&got); err != nil {
				t.Fatal(err)
			}
			if want := render(&tc.r); render(&got) != want {
				t.Fatalf("round trip:\n got %s\nwant %s", render(&got), want)
			}
			// Every strict prefix fails to decode rather than misreading.
			for i := range len(b) {
				if _, err := decodeRecord(b[:i], &v); err == nil {
					t.Fatalf("a %d-byte prefix of a %d-byte record decoded", i, len(b))
				}
			}
		})
	}
}

// TestDecodeRejectsNonCanonical: the forms the encoder never writes for a
// record do not decode either, so that each record has one encoding: a
// queue created at time 0 (kind 1 says that) and a message by ref 0 (kind 5
// says that).
func TestDecodeRejectsNonCanonical(t *testing.T) {
	queue := store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), Time: 7, RecipientKey: edKey(t, 0)}
	msg := store.Record{Kind: store.MessageStored, RID: randID(), MsgID: randMsgID(), Time: 7, Size: 9, Ref: 1<<32 | 32}
	for _, c := range []struct {
		name  string
		r     *store.Record
		field int // offset of the field to zero, after the length and kind bytes
		n     int
	}{
		{"queue created at time 0", &queue, 2 * idSize, timeSize},
		{"message stored by ref 0", &msg, idSize + msgIDSize + timeSize + sizeSize, refSize},
	} {
		b := appendRecord(nil, c.r)
		var v recordView
		if _, err := decodeRecord(b, &v); err != nil {
			t.Fatalf("%s: the record before zeroing does not decode: %v", c.name, err)
		}
		at := len(b) - recordSize(c.r) + 1 + c.field
		clear(b[at : at+c.n])
		if _, err := decodeRecord(b, &v); err == nil {
			t.Errorf("%s decoded", c.name)
		}
	}
}

func render(r *store.Record) string {
	var rk, sk []byte
	if r.RecipientKey != nil {
		rk = r.RecipientKey.SPKI()
	}
	if r.SenderKey != nil {
		sk = r.SenderKey.SPKI()
	}
	return fmt.Sprintf("kind=%d rid=%x sid=%x rk=%x sk=%x msg=%x time=%d size=%d ref=%d body=%x",
		r.Kind, r.RID, r.SID, rk, sk, r.MsgID, r.Time, r.Size, r.Ref, r.Body)
}

// TestKindBytes pins the kind bytes of the file format to the store kinds
// they mean, both ways: store.Kind may be renumbered, the file may not.
func TestKindBytes(t *testing.T) {
	want := map[store.Kind]byte{
		store.QueueCreated: 1, store.QueueSecured: 2, store.QueueSuspended: 3,
		store.QueueDeleted: 4, store.MessageStored: 5, store.MessageDeleted: 6,
		store.QueueBlocked: 9, store.QueueUnblocked: 10,
	}
	for k, b := range want {
		if got, ok := fileKind(k); !ok || got != b {
			t.Errorf("fileKind(%v) = %d, %v; want %d", k, got, ok, b)
		}
		if got, ok := storeKind(b); !ok || got != k {
			t.Errorf("storeKind(%d) = %v, %v; want %v", b, got, ok, k)
		}
	}
	for b, k := range map[byte]store.Kind{7: store.MessageStored, 8: store.QueueCreated} {
		if got, ok := storeKind(b); !ok || got != k {
			t.Errorf("storeKind(%d) = %v, %v; want %v", b, got, ok, k)
		}
	}
	for _, b := range []byte{0, 11, 255} {
		if _, ok := storeKind(b); ok {
			t.Errorf("storeKind(%d) accepted a byte no kind has", b)
		}
	}
	if _, ok := fileKind(0); ok {
		t.Error("fileKind(0) accepted a kind the log cannot store")
	}
}

func TestCheckRecordRejects(t *testing.T) {
	for _, r := range []store.Record{
		{Kind: 0},
		{Kind: store.QueueUnblocked + 1}, // the first store kind no store knows
		{Kind: store.QueueCreated},
		{Kind: store.QueueSecured},
		{Kind: store.MessageStored, Size: 5, Body: []byte("four")},
		{Kind: store.MessageStored, Size: 4, Ref: 1},
		{Kind: store.MessageStored, Size: 4, Body: []byte("four"), Ref: 1},
	} {
		if err := checkRecord(&r, false); !errors.Is(err, ErrRecord) {
			t.Errorf("kind %d: err %v, want ErrRecord", r.Kind, err)
		}
	}
}

// workload makes n random changes through l, applied to m.
type workload struct {
	t    testing.TB
	l    *Log
	m    *model
	rng  *rand.Rand
	live [][16]byte // live queues
	n    *chanNotifier
	last uint64 // highest LSN returned
	tick int64
}

func newWorkload(t testing.TB, l *Log, m *model, seed uint64) *workload {
	return &workload{t: t, l: l, m: m, rng: rand.New(rand.NewPCG(seed, 7)), n: newChanNotifier()}
}

func (w *workload) step() {
	w.tick++
	var r store.Record
	switch k := w.rng.IntN(100); {
	case len(w.live) == 0 || k < 10:
		r = store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(w.t, w.rng.IntN(4))}
		w.live = append(w.live, r.RID)
	case k < 15:
		r = store.Record{Kind: store.QueueSecured, RID: w.pick(), SenderKey: edKey(w.t, w.rng.IntN(4))}
	case k < 18:
		r = store.Record{Kind: store.QueueSuspended, RID: w.pick(), Time: w.tick}
	case k < 22:
		i := w.rng.IntN(len(w.live))
		r = store.Record{Kind: store.QueueDeleted, RID: w.live[i]}
		w.live = append(w.live[:i], w.live[i+1:]...)
	case k < 70:
		body := make([]byte, w.rng.IntN(300))
		for i := range body {
			body[i] = byte('a' + w.rng.IntN(26))
		}
		r = store.Record{Kind: store.MessageStored, RID: w.pick(), MsgID: randMsgID(), Time: w.tick, Size: len(body), Body: body}
	default:
		rid := w.pick()
		w.m.mu.Lock()
		q := w.m.queues[rid]
		var id [8]byte
		ok := q != nil && len(q.msgs) > 0
		if ok {
			id = q.msgs[0].id
		}
		w.m.mu.Unlock()
		if !ok {
			return
		}
		r = store.Record{Kind: store.MessageDeleted, RID: rid, MsgID: id}
	}
	if lsn := w.m.record(w.t, w.l, r, w.n); lsn > w.last {
		w.last = lsn
	}
}

func (w *workload) pick() [16]byte { return w.live[w.rng.IntN(len(w.live))] }

func (w *workload) run(n int) {
	for range n {
		w.step()
	}
}

// TestReplayRestoresState: what a log holds after any mix of changes, sync
// modes, compressions and segment sizes replays to the same state, with and
// without compaction in between.
func TestReplayRestoresState(t *testing.T) {
	tests := []struct {
		name string
		o    Options
	}{
		{"always s2", Options{Sync: SyncAlways}},
		{"always zstd", Options{Sync: SyncAlways, Compression: CompressZstd}},
		{"always none", Options{Sync: SyncAlways, Compression: CompressNone}},
		{"interval", Options{Sync: SyncInterval}},
		{"never small segments", Options{Sync: SyncNever, SegmentBytes: 2048}},
		{"always small segments zstd", Options{Sync: SyncAlways, SegmentBytes: 4096, Compression: CompressZstd}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := fastDir(t)
			l, m := openLog(t, dir, tc.o, true)
			w := newWorkload(t, l, m, uint64(i))
			w.run(300)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			want := m.dump()
			got, err := reload(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.dump() != want {
				t.Fatalf("replayed state differs:\n got %s\nwant %s", got.dump(), want)
			}
			// Again after a start-up compaction and more changes.
			l, m = openLog(t, dir, tc.o, true)
			if m.dump() != want {
				t.Fatal("second open: state differs")
			}
			w.l, w.m = l, m
			w.run(300)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got, err = reload(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.dump() != m.dump() {
				t.Fatalf("after compaction and more changes, replayed state differs")
			}
		})
	}
}

// TestBlockReplay: the operator's block (kinds 9 and 10) survives a replay
// and the start-up compaction, which writes a blocked queue's block into the
// snapshot (and an unblocked queue's nothing).
func TestBlockReplay(t *testing.T) {
	dir := fastDir(t)
	l, m := openLog(t, dir, Options{Sync: SyncAlways}, true)
	blocked, unblocked, plain := randID(), randID(), randID()
	for i, rid := range [][16]byte{blocked, unblocked, plain} {
		m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, i)}, nil)
		m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Time: 5, Size: 2, Body: []byte("hi")}, nil)
	}
	m.record(t, l, store.Record{Kind: store.QueueBlocked, RID: blocked}, nil)
	m.record(t, l, store.Record{Kind: store.QueueBlocked, RID: unblocked}, nil)
	m.record(t, l, store.Record{Kind: store.QueueUnblocked, RID: unblocked}, nil)
	want := m.dump()
	if strings.Count(want, " blocked") != 1 {
		t.Fatalf("the model holds %d blocked queues, want 1:\n%s", strings.Count(want, " blocked"), want)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"replay", "after the start-up compaction"} {
		l, m = openLog(t, dir, Options{Sync: SyncAlways}, true) // compacts at Attach
		if got := m.dump(); got != want {
			t.Fatalf("%s: state differs:\n got %s\nwant %s", when, got, want)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// lastGroupLog builds a log whose last segment holds a few groups, the last
// of which has the records of last, and returns the directory, the model of
// the state before the last group, and the segment's path.
func lastGroupLog(t *testing.T, last func(w *workload)) (dir string, before string, seg string) {
	dir = fastDir(t)
	lg, _ := newTestLogger(t)
	l, m, cur := openFailing(t, dir, Options{Sync: SyncAlways, Logger: lg}, true)
	w := newWorkload(t, l, m, 42)
	for range 5 { // a few groups: each is waited for, so each is its own group
		w.run(4)
		waitDurable(t, l, w.n, w.last)
	}
	// Hold the writer inside an fsync, so that everything last appends
	// meanwhile forms one group.
	f := cur()
	hold, entered := make(chan struct{}), make(chan struct{}, 1)
	f.set(func(f *failFile) { f.hold, f.entered = hold, entered })
	w.step()
	<-entered
	f.set(func(f *failFile) { f.hold = nil })
	before = m.dump()
	last(w)
	close(hold)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ls, err := listDir(vfs.OS, dir)
	if err != nil {
		t.Fatal(err)
	}
	seg = filepath.Join(dir, segmentName(ls.segments[len(ls.segments)-1]))
	return dir, before, seg
}

// TestTornTail cuts the last segment at every byte offset of its last group
// (and at a sample of offsets of a group of several frames): recovery keeps
// exactly the groups before it, truncates the file there and says how many
// bytes it dropped.
func TestTornTail(t *testing.T) {
	tests := []struct {
		name string
		last func(w *workload)
		step int64 // test every step-th offset (1: every one)
	}{
		{"small group", func(w *workload) { w.run(3) }, 1},
		{"group of several frames", func(w *workload) {
			// Big incompressible bodies fill more than one batch frame.
			w.m.mu.Lock()
			rid := w.live[0]
			w.m.mu.Unlock()
			body := make([]byte, 60<<10)
			for i := range 6 {
				_, _ = rand.NewChaCha8([32]byte{byte(i)}).Read(body)
				w.m.record(w.t, w.l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Time: 9, Size: len(body), Body: bytes.Clone(body)}, nil)
			}
		}, 997},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir, before, seg := lastGroupLog(t, tc.last)
			frames := scanFrames(t, seg)
			// The last group runs from the end of the second-to-last commit to the end of the file.
			var groupAt int64 = fileHeaderSize
			for _, f := range frames[:len(frames)-1] {
				if f.typ == frameCommit {
					groupAt = f.end
				}
			}
			nframes := 0
			for _, f := range frames {
				if f.off >= groupAt && f.typ == frameBatch {
					nframes++
				}
			}
			if tc.step > 1 && nframes < 2 {
				t.Fatalf("the last group has %d batch frames, want several", nframes)
			}
			full, err := os.ReadFile(seg)
			if err != nil {
				t.Fatal(err)
			}
			cuts := []int64{}
			for cut := groupAt; cut < int64(len(full)); cut += tc.step {
				cuts = append(cuts, cut)
			}
			for _, f := range frames { // every frame boundary and its neighbours
				if f.off > groupAt {
					cuts = append(cuts, f.off-1, f.off, f.off+1)
				}
			}
			cuts = append(cuts, int64(len(full))-1)
			for _, cut := range cuts {
				if err := os.WriteFile(seg, full[:cut], fileMode); err != nil {
					t.Fatal(err)
				}
				lg, tl := newTestLogger(t)
				l, err := Open(dir, Options{Logger: lg})
				if err != nil {
					t.Fatal(err)
				}
				m := newModel()
				err = l.Load(m.apply)
				l.Close()
				if err != nil {
					t.Fatalf("cut at %d: %v", cut, err)
				}
				if m.dump() != before {
					t.Fatalf("cut at %d (group at %d..%d): state is not the one before the last group", cut, groupAt, len(full))
				}
				fi, err := os.Stat(seg)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Size() != groupAt {
					t.Fatalf("cut at %d: segment is %d bytes after recovery, want %d", cut, fi.Size(), groupAt)
				}
				if cut > groupAt {
					line := tl.find("torn tail")
					if want := fmt.Sprintf("bytes-dropped=%d", cut-groupAt); !strings.Contains(line, want) {
						t.Fatalf("cut at %d: log line %q does not say %s", cut, line, want)
					}
				}
			}
			// A power cut may also keep any of the group's later 4 KiB pages
			// without its first: a stray valid frame then follows the
			// damage, but no complete group, and the tail is still torn.
			firstPage, lastPage := groupAt/4096, (int64(len(full))-1)/4096
			rng := rand.New(rand.NewPCG(uint64(len(full)), 1))
			for i := range 16 {
				b := bytes.Clone(full)
				for p := firstPage; p <= lastPage; p++ {
					lost := p == firstPage || (i > 0 && rng.IntN(2) == 0)
					if lost {
						clear(b[max(p*4096, groupAt):min((p+1)*4096, int64(len(b)))])
					}
				}
				if err := os.WriteFile(seg, b, fileMode); err != nil {
					t.Fatal(err)
				}
				m, err := reload(t, dir)
				if err != nil {
					t.Fatalf("pages %d..%d, pattern %d: %v", firstPage, lastPage, i, err)
				}
				if fi, err := os.Stat(seg); err != nil || fi.Size() != groupAt || m.dump() != before {
					t.Fatalf("pattern %d: the torn group was not cut off whole", i)
				}
			}
			// And the whole file replays the whole state.
			if err := os.WriteFile(seg, full, fileMode); err != nil {
				t.Fatal(err)
			}
			m, err := reload(t, dir)
			if err != nil || m.dump() == before {
				t.Fatalf("uncut log: err %v, or the last group is missing", err)
			}
		})
	}
}

// TestCorruption: damage that a torn write cannot explain is an error naming
// the file and offset, never a silent loss; damage that a torn write of the
// last group explains, even with a valid frame after it, is cut off.
func TestCorruption(t *testing.T) {
	type damage func(t *testing.T, dir string) (file string, off int64)
	edit := func(path string, fn func(b []byte)) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fn(b)
		if err := os.WriteFile(path, b, fileMode); err != nil {
			t.Fatal(err)
		}
	}
	flip := func(path string, off int64) { edit(path, func(b []byte) { b[off] ^= 0x40 }) }
	zero := func(path string, f frameSpan) { edit(path, func(b []byte) { clear(b[f.off:f.end]) }) }
	segments := func(t *testing.T, dir string) []string {
		ls, err := listDir(vfs.OS, dir)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range ls.segments {
			out = append(out, filepath.Join(dir, segmentName(s)))
		}
		return out
	}
	lastSegment := func(t *testing.T, dir string) string {
		segs := segments(t, dir)
		return segs[len(segs)-1]
	}
	tests := []struct {
		name   string
		damage damage
		want   string // in the error; "" for a torn tail: Load cuts the file at the offset returned
	}{
		{"first frame of the last segment, valid frames after it", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			seg := segs[len(segs)-1]
			fr := scanFrames(t, seg)
			flip(seg, fr[0].off+frameHeaderSize+2)
			return seg, fr[0].off
		}, "checksum"},
		{"length field in the middle of the last segment", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			seg := segs[len(segs)-1]
			fr := scanFrames(t, seg)
			mid := fr[len(fr)/2]
			flip(seg, mid.off+2) // claims a huge frame
			return seg, mid.off
		}, "valid frame follows"},
		{"batch frame of the next-to-last group zeroed, a complete group after it", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			seg := segs[len(segs)-1]
			fr := scanFrames(t, seg)
			zero(seg, fr[len(fr)-4]) // the last groups are a batch frame and a commit each
			return seg, fr[len(fr)-4].off
		}, "unknown frame type 0, yet a valid frame follows at offset"},
		{"batch frame of the last group zeroed, its commit frame intact", func(t *testing.T, dir string) (string, int64) {
			// What a power cut leaves when the group's later page reached
			// the disk and its first did not: no complete group follows.
			segs := segments(t, dir)
			seg := segs[len(segs)-1]
			fr := scanFrames(t, seg)
			zero(seg, fr[len(fr)-2])
			return seg, fr[len(fr)-2].off
		}, ""},
		{"last frame of an earlier segment", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			seg := segs[0]
			fr := scanFrames(t, seg)
			last := fr[len(fr)-1]
			flip(seg, last.end-1)
			return seg, last.off
		}, "not the last segment"},
		{"truncated earlier segment", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			seg := segs[0]
			fr := scanFrames(t, seg)
			last := fr[len(fr)-1]
			if err := os.Truncate(seg, last.end-3); err != nil {
				t.Fatal(err)
			}
			return seg, last.off
		}, "not the last segment"},
		{"segment header", func(t *testing.T, dir string) (string, int64) {
			seg := segments(t, dir)[1]
			flip(seg, 13)
			return seg, 0
		}, "header"},
		{"missing segment", func(t *testing.T, dir string) (string, int64) {
			segs := segments(t, dir)
			if err := os.Remove(segs[1]); err != nil {
				t.Fatal(err)
			}
			return segs[2], 0
		}, "missing"},
		{"snapshot frame", func(t *testing.T, dir string) (string, int64) {
			ls, _ := listDir(vfs.OS, dir)
			snap := filepath.Join(dir, snapshotName(ls.snapshots[len(ls.snapshots)-1]))
			fr := scanFrames(t, snap)
			flip(snap, fr[0].off+frameHeaderSize)
			return snap, fr[0].off
		}, "checksum"},
		{"truncated snapshot", func(t *testing.T, dir string) (string, int64) {
			ls, _ := listDir(vfs.OS, dir)
			snap := filepath.Join(dir, snapshotName(ls.snapshots[len(ls.snapshots)-1]))
			fr := scanFrames(t, snap)
			last := fr[len(fr)-1]
			if err := os.Truncate(snap, last.off); err != nil {
				t.Fatal(err)
			}
			return snap, last.off
		}, "without its commit"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := fastDir(t)
			l, m := openLog(t, dir, Options{Sync: SyncAlways, SegmentBytes: 4096}, true)
			w := newWorkload(t, l, m, uint64(100+i))
			for range 40 {
				w.run(5)
				waitDurable(t, l, w.n, w.last)
			}
			// A snapshot with contents, then segments after it.
			if err := l.Compact(); err != nil {
				t.Fatal(err)
			}
			for range 40 {
				w.run(5)
				waitDurable(t, l, w.n, w.last)
			}
			// A segment of its own for the tail's three small groups (about
			// 90 bytes each, far from SegmentBytes): had the last groups
			// above filled a segment, the writer would rotate after them at
			// any moment, and the last segment could hold fewer groups than
			// the rows need, or none.
			if err := l.call(&request{kind: reqRotate}); err != nil {
				t.Fatal(err)
			}
			var tails []store.Record
			for range 3 {
				r := store.Record{Kind: store.MessageStored, RID: w.pick(), MsgID: randMsgID(), Size: 4, Body: []byte("tail")}
				tails = append(tails, r)
				lsn := m.record(t, l, r, w.n)
				waitDurable(t, l, w.n, lsn)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if n := len(scanFrames(t, lastSegment(t, dir))); n != 6 {
				t.Fatalf("the last segment holds %d frames, want the tail's 3 groups", n)
			}
			if n := len(segments(t, dir)); n < 3 {
				t.Fatalf("want at least 3 segments, have %d", n)
			}
			file, off := tc.damage(t, dir)
			got, err := reload(t, dir)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Load of a torn tail: %v", err)
				}
				if fi, err := os.Stat(file); err != nil || fi.Size() != off {
					t.Fatalf("after Load the segment is %v bytes (%v), want %d", fi.Size(), err, off)
				}
				has := func(r store.Record) bool {
					q := got.queues[r.RID]
					return q != nil && slices.ContainsFunc(q.msgs, func(m mmsg) bool { return m.id == r.MsgID })
				}
				if !has(tails[1]) || has(tails[2]) {
					t.Fatal("want the groups before the torn one replayed, and the torn one dropped")
				}
				return
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load: %v, want ErrCorrupt", err)
			}
			var pe *PosError
			if !errors.As(err, &pe) || pe.File != file || pe.Offset != off {
				t.Fatalf("error %v: want file %s offset %d", err, file, off)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Base(file)) {
				t.Fatalf("error %q does not say %q and name the file", err, tc.want)
			}
		})
	}
}

// TestUnsyncedMarker: a run in fsync mode interval or never keeps UNSYNCED
// while it is open. With it, damage in the last segment is a torn tail even
// with complete groups after it (they may have been written after the last
// fsync, and reached the disk before the damaged one); without it, that is
// corruption. A run in mode always removes it once the tail is repaired.
func TestUnsyncedMarker(t *testing.T) {
	dir := fastDir(t)
	marker := filepath.Join(dir, unsyncedName)
	l, m := openLog(t, dir, Options{Sync: SyncNever}, true)
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("a log open in mode never has no %s: %v", unsyncedName, err)
	}
	rid := randID()
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	var ids [][8]byte
	for range 4 {
		ids = append(ids, randMsgID())
		m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: ids[len(ids)-1], Size: 1, Body: []byte("m")}, nil)
		if err := l.call(&request{kind: reqSync}); err != nil { // one group each
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is still there after a clean Close (%v)", unsyncedName, err)
	}
	ls, err := listDir(vfs.OS, dir)
	if err != nil {
		t.Fatal(err)
	}
	seg := filepath.Join(dir, segmentName(ls.segments[len(ls.segments)-1]))
	fr := scanFrames(t, seg)
	damaged := fr[len(fr)-4] // the batch frame of the third of the four message groups
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	clear(b[damaged.off:damaged.end])
	if err := os.WriteFile(seg, b, fileMode); err != nil {
		t.Fatal(err)
	}

	if _, err := reload(t, dir); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "complete group") {
		t.Fatalf("without %s: %v, want corruption", unsyncedName, err)
	}
	if err := os.WriteFile(marker, nil, fileMode); err != nil { // as a run in mode never that crashed leaves it
		t.Fatal(err)
	}
	lg, tl := newTestLogger(t)
	l, got := openLog(t, dir, Options{Sync: SyncAlways, Logger: lg}, false)
	defer l.Close()
	if fi, err := os.Stat(seg); err != nil || fi.Size() != damaged.off {
		t.Fatalf("the segment was not cut at the damage (offset %d): %v %v", damaged.off, fi.Size(), err)
	}
	if line := tl.find("torn tail"); !strings.Contains(line, "complete-group-dropped-at=") {
		t.Fatalf("the log does not say a complete group went: %q", line)
	}
	if q := got.queues[rid]; q == nil || len(q.msgs) != 2 || q.msgs[0].id != ids[0] || q.msgs[1].id != ids[1] {
		t.Fatal("want the two groups before the damage replayed, and nothing after")
	}
	if _, err := os.Stat(marker); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a log open in mode always kept %s (%v)", unsyncedName, err)
	}
}

// TestGroupCommit: records appended while an fsync is in flight are written
// and synced together by the next one, and each waiter is told once.
func TestGroupCommit(t *testing.T) {
	dir := t.TempDir()
	l, _, cur := openFailing(t, dir, Options{Sync: SyncAlways}, false)
	defer l.Close()
	f := cur()
	hold, entered := make(chan struct{}), make(chan struct{}, 4)
	f.set(func(f *failFile) { f.hold, f.entered = hold, entered })

	first := newChanNotifier()
	rid := randID()
	lsn1, _, err := l.Append(store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, first)
	if err != nil || lsn1 == 0 {
		t.Fatalf("Append: %d, %v", lsn1, err)
	}
	<-entered // the writer is inside the fsync of the first record
	if l.Durable() >= lsn1 {
		t.Fatal("durable before the fsync returned")
	}
	const appenders, each = 8, 25
	ns := make([]*chanNotifier, appenders)
	var wg sync.WaitGroup
	var maxLSN sync.Map
	for i := range appenders {
		ns[i] = newChanNotifier()
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for range each {
				lsn, _, err := l.Append(store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: 1, Body: []byte("x")}, ns[i])
				if err != nil {
					t.Error(err)
					return
				}
				last = lsn
			}
			maxLSN.Store(i, last)
		}()
	}
	wg.Wait()
	f.set(func(f *failFile) { f.hold = nil })
	close(hold)
	waitDurable(t, l, first, lsn1)
	for i := range appenders {
		v, _ := maxLSN.Load(i)
		waitDurable(t, l, ns[i], v.(uint64))
	}
	if err := l.call(&request{kind: reqSync}); err != nil { // the writer is past its notifications
		t.Fatal(err)
	}
	for i := range appenders {
		if got := ns[i].count.Load(); got != 1 {
			t.Errorf("appender %d: notified %d times for one group, want once", i, got)
		}
	}
	st := l.Stats()
	if st.Records != 1+appenders*each || st.Groups != 2 || st.Syncs != 2 {
		t.Fatalf("stats %+v: want %d records in 2 groups with 2 fsyncs", st, 1+appenders*each)
	}
	f.set(func(f *failFile) {
		if f.syncs != 2 {
			t.Errorf("segment fsynced %d times, want 2", f.syncs)
		}
	})
}

// TestGroupCommitConcurrent: many appenders that each wait for their record
// share fsyncs.
func TestGroupCommitConcurrent(t *testing.T) {
	l, m := openLog(t, t.TempDir(), Options{Sync: SyncAlways}, true)
	defer l.Close()
	rid := randID()
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	base := l.Stats()
	const appenders, each = 32, 20
	var wg sync.WaitGroup
	for range appenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := newChanNotifier()
			for range each {
				lsn, _, err := l.Append(store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: 1, Body: []byte("y")}, n)
				if err != nil {
					t.Error(err)
					return
				}
				waitDurable(t, l, n, lsn) // like a client waiting for its reply
			}
		}()
	}
	wg.Wait()
	st := l.Stats()
	records, syncs := st.Records-base.Records, st.Syncs-base.Syncs
	t.Logf("%d records, %d fsyncs (%.1f records per fsync)", records, syncs, float64(records)/float64(syncs))
	if records < appenders*each || syncs >= records/2 {
		t.Fatalf("%d records took %d fsyncs: group commit is not sharing them", records, syncs)
	}
}

// TestFailedLog: after a write or fsync error every Append fails with
// ErrFailed, Durable stops, nobody waiting is told, and Close reports it.
func TestFailedLog(t *testing.T) {
	tests := []struct {
		name   string
		inject func(f *failFile)
	}{
		{"write", func(f *failFile) { f.failWrite = errInjected }},
		{"fsync", func(f *failFile) { f.failSync = errInjected }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			lg, tl := newTestLogger(t)
			l, m, cur := openFailing(t, dir, Options{Sync: SyncAlways, Logger: lg}, false)
			n := newChanNotifier()
			rid := randID()
			lsn := m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, n)
			waitDurable(t, l, n, lsn)
			if err := l.call(&request{kind: reqSync}); err != nil { // the writer is past its notifications
				t.Fatal(err)
			}
			durable := l.Durable()
			for len(n.c) > 0 { // drain: nothing more may come
				<-n.c
			}

			cur().set(tc.inject)
			lsn, _, err := l.Append(store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Size: 4, Body: []byte("lost")}, n)
			if err != nil {
				t.Fatalf("the first Append after the fault is accepted (the writer has not met it yet): %v", err)
			}
			// Close flushes: the writer meets the fault at the latest there.
			err = l.Close()
			if !errors.Is(err, ErrFailed) || !strings.Contains(err.Error(), errInjected.Error()) {
				t.Fatalf("Close: %v, want ErrFailed wrapping the injected error", err)
			}
			if l.Durable() != durable || l.Durable() >= lsn {
				t.Fatalf("durable moved to %d after the fault (was %d)", l.Durable(), durable)
			}
			if len(n.c) != 0 {
				t.Fatal("a waiter was told its record is durable after the fault")
			}
			if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted, RID: rid}, nil); !errors.Is(err, ErrFailed) {
				t.Fatalf("Append after the fault: %v, want ErrFailed", err)
			}
			if tl.find("the log failed") == "" {
				t.Fatal("the failure was not logged")
			}
			// What was durable before the fault is still there.
			got, err := reload(t, dir)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := got.queues[rid]; !ok {
				t.Fatal("the queue made durable before the fault is gone")
			}
		})
	}
}

// TestFailedLogRefusesAtOnce: once the writer met the fault, Append refuses
// without waiting for Close.
func TestFailedLogRefusesAtOnce(t *testing.T) {
	dir := t.TempDir()
	l, _, cur := openFailing(t, dir, Options{Sync: SyncAlways}, false)
	defer l.Close()
	f := cur()
	entered := make(chan struct{}, 1)
	hold := make(chan struct{})
	f.set(func(f *failFile) { f.failSync, f.hold, f.entered = errInjected, hold, entered })
	if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted, RID: randID()}, nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	close(hold) // the fsync now fails; the writer fails the log, then takes the next kick
	// A second Append wakes the writer; a third must see the failure once the
	// writer has processed the second: Sync the two with a request.
	_, _, _ = l.Append(store.Record{Kind: store.QueueDeleted, RID: randID()}, nil)
	if err := l.call(&request{kind: reqSync}); !errors.Is(err, ErrFailed) {
		t.Fatalf("sync request after the fault: %v", err)
	}
	if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted, RID: randID()}, nil); !errors.Is(err, ErrFailed) {
		t.Fatalf("Append: %v, want ErrFailed", err)
	}
	if l.Durable() != 0 {
		t.Fatalf("durable %d after a failed first fsync", l.Durable())
	}
}

// TestCompactionRemovesDeletedData: after compaction no byte of a deleted
// message or a deleted queue is left in the directory, compressed or not
// (SPEC §8); before it, they were there.
func TestCompactionRemovesDeletedData(t *testing.T) {
	for _, c := range []Compression{CompressS2, CompressZstd, CompressNone} {
		t.Run(c.String(), func(t *testing.T) {
			dir := t.TempDir()
			l, m := openLog(t, dir, Options{Sync: SyncAlways, Compression: c}, true)
			keep, gone := randID(), randID()
			keepSID, goneSID := randID(), randID()
			secret := []byte("SECRET-acknowledged-body-7f3e9c")
			kept := []byte("still-stored-body-1a2b")
			acked := randMsgID()
			recs := []store.Record{
				{Kind: store.QueueCreated, RID: keep, SID: keepSID, RecipientKey: edKey(t, 0)},
				{Kind: store.QueueCreated, RID: gone, SID: goneSID, RecipientKey: edKey(t, 1)},
				{Kind: store.MessageStored, RID: gone, MsgID: randMsgID(), Time: 1, Size: 20, Body: []byte("in-the-deleted-queue")},
				{Kind: store.MessageStored, RID: keep, MsgID: acked, Time: 2, Size: len(secret), Body: secret},
				{Kind: store.MessageStored, RID: keep, MsgID: randMsgID(), Time: 3, Size: len(kept), Body: kept},
				{Kind: store.MessageDeleted, RID: keep, MsgID: acked},
				{Kind: store.QueueDeleted, RID: gone},
			}
			n := newChanNotifier()
			var last uint64
			for _, r := range recs {
				last = m.record(t, l, r, n)
			}
			waitDurable(t, l, n, last)
			before := plainContents(t, dir)
			for _, s := range [][]byte{secret, gone[:], goneSID[:], []byte("in-the-deleted-queue")} {
				if !bytes.Contains(before, s) {
					t.Fatalf("before compaction %q is not on disk: the grep below would prove nothing", s)
				}
			}
			if err := l.Compact(); err != nil {
				t.Fatal(err)
			}
			after := plainContents(t, dir)
			for _, s := range [][]byte{secret, gone[:], goneSID[:], []byte("in-the-deleted-queue")} {
				if bytes.Contains(after, s) {
					t.Errorf("after compaction %q is still on disk", s)
				}
			}
			for _, s := range [][]byte{kept, keep[:], keepSID[:]} {
				if !bytes.Contains(after, s) {
					t.Errorf("after compaction live data %q is missing", s)
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := reload(t, dir)
			if err != nil || got.dump() != m.dump() {
				t.Fatalf("after compaction: err %v or the state differs", err)
			}
		})
	}
}

// TestStartupCompaction: opening a log compacts it at once, so data deleted
// before a restart is gone from the disk once the log is open again.
func TestStartupCompaction(t *testing.T) {
	dir := t.TempDir()
	l, m := openLog(t, dir, Options{Sync: SyncNever}, true)
	rid := randID()
	body := []byte("deleted-before-the-restart")
	id := randMsgID()
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: id, Size: len(body), Body: body}, nil)
	m.record(t, l, store.Record{Kind: store.MessageDeleted, RID: rid, MsgID: id}, nil)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(plainContents(t, dir), body) {
		t.Fatal("the body is not in the log before the restart")
	}
	l, _ = openLog(t, dir, Options{}, true)
	defer l.Close()
	if bytes.Contains(plainContents(t, dir), body) {
		t.Fatal("the deleted body is still on disk after the start-up compaction")
	}
	if st := l.Stats(); st.Compactions != 1 {
		t.Fatalf("compactions %d, want 1", st.Compactions)
	}
}

// TestCompactionUnderLoad: compactions that run while changes keep coming
// (the fuzzy snapshot) lose nothing and resurrect nothing.
func TestCompactionUnderLoad(t *testing.T) {
	dir := fastDir(t)
	l, m := openLog(t, dir, Options{Sync: SyncAlways, SegmentBytes: 16 << 10}, true)
	const workers = 4
	var wg sync.WaitGroup
	done := make(chan struct{})
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w := newWorkload(t, l, m, uint64(1000+i))
			for range 40 {
				w.run(10)
				waitDurable(t, l, w.n, w.last) // like clients waiting for replies
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	compactions := 0
	for running := true; running || compactions < 5; compactions++ {
		if err := l.Compact(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-done:
			running = false
		default:
		}
	}
	t.Logf("%d compactions while %d workers made changes", compactions, workers)
	want := m.dump()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := reload(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.dump() != want {
		t.Fatal("state replayed after compactions under load differs from the live state")
	}
}

// TestBackgroundCompaction: the writer starts a compaction once the log is
// past twice the live state and the floor, and the log shrinks.
func TestBackgroundCompaction(t *testing.T) {
	dir := t.TempDir()
	lg, tl := newTestLogger(t)
	const floor = 64 << 10
	l, m := openLog(t, dir, Options{Sync: SyncNever, CompactMinBytes: floor, Logger: lg}, true)
	defer l.Close()
	rid := randID()
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	body := bytes.Repeat([]byte("z"), 1000)
	// Store and delete: the live state stays tiny while the log grows to
	// three times the floor. The writer asks for a compaction after the
	// write that takes the log past the floor.
	for range 3 * floor / len(body) {
		id := randMsgID()
		m.record(t, l, store.Record{Kind: store.MessageStored, RID: rid, MsgID: id, Size: len(body), Body: body}, nil)
		m.record(t, l, store.Record{Kind: store.MessageDeleted, RID: rid, MsgID: id}, nil)
	}
	// The start-up compaction logged once; the background one logs when its
	// old files are gone.
	if line := tl.waitFor("wal: compacted", 2, "compaction failed"); line != "" {
		t.Fatalf("the background compaction failed: %s", line)
	}
	// The segment the start-up compaction began is gone, and the log holds
	// less than was written.
	if _, err := os.Stat(filepath.Join(dir, segmentName(2))); !os.IsNotExist(err) {
		t.Fatalf("segment 2 still exists after a background compaction (%v)", err)
	}
	if st := l.Stats(); uint64(st.LogBytes) >= st.RawBytes || st.Compactions < 2 {
		t.Fatalf("stats %+v: want two compactions, and fewer log bytes than were written", st)
	}
}

func TestModesAndLSNs(t *testing.T) {
	for _, mode := range []SyncMode{SyncAlways, SyncInterval, SyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			l, m := openLog(t, t.TempDir(), Options{Sync: mode}, true)
			syncs := l.Stats().Syncs
			lsn := m.record(t, l, store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(t, 0)}, newChanNotifier())
			if (mode == SyncAlways) != (lsn != 0) {
				t.Fatalf("mode %s returned LSN %d", mode, lsn)
			}
			if err := l.call(&request{kind: reqRotate}); err != nil { // a barrier: the record is written
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			if mode == SyncNever && l.Stats().Syncs-syncs > 2 {
				t.Fatalf("never mode fsynced %d times for one record", l.Stats().Syncs-syncs)
			}
			if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted}, nil); !errors.Is(err, ErrClosed) {
				t.Fatalf("Append after Close: %v", err)
			}
		})
	}
	if _, err := ParseSyncMode("sometimes"); err == nil {
		t.Fatal("ParseSyncMode accepted nonsense")
	}
}

// TestIntervalModeSyncs: in mode interval, with nobody asking, the
// ticker's fsync makes an appended record durable.
func TestIntervalModeSyncs(t *testing.T) {
	l, m, cur := openFailing(t, t.TempDir(), Options{Sync: SyncInterval, SyncInterval: 5 * time.Millisecond}, true)
	defer l.Close()
	f := cur()
	hold, entered := make(chan struct{}), make(chan struct{}, 1)
	f.set(func(f *failFile) { f.hold, f.entered = hold, entered })
	lsn := m.record(t, l, store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	if lsn != 0 {
		t.Fatalf("interval mode returned LSN %d", lsn)
	}
	// The writer fsyncs only when the segment has been written since the
	// last fsync; nothing else fsyncs here (no rotation, no compaction).
	<-entered
	f.set(func(f *failFile) { f.hold = nil })
	close(hold)
	if err := l.call(&request{kind: reqSync}); err != nil { // a barrier: the writer is past that fsync
		t.Fatal(err)
	}
	if l.Durable() < 1 {
		t.Fatalf("durable %d after the ticker's fsync", l.Durable())
	}
	f.set(func(f *failFile) {
		if f.syncs != 1 {
			t.Errorf("%d fsyncs, want the ticker's alone (the barrier found nothing to sync)", f.syncs)
		}
	})
}

func TestAppendBeforeLoad(t *testing.T) {
	l, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted}, nil); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Append before Load: %v", err)
	}
	if err := l.Attach(newModel()); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Attach before Load: %v", err)
	}
}

// TestLockAndModes: a second Open of a directory in use fails clearly; files
// are 0600 and directories 0700.
func TestLockAndModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wal")
	l, m := openLog(t, dir, Options{}, true)
	m.record(t, l, store.Record{Kind: store.QueueCreated, RID: randID(), SID: randID(), RecipientKey: edKey(t, 0)}, nil)
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrLocked) || !errors.Is(err, vfs.ErrLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second Open: %v, want ErrLocked (and vfs.ErrLocked) naming pid %d", err, os.Getpid())
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != dirMode {
		t.Fatalf("directory mode %v (%v), want %v", fi.Mode().Perm(), err, os.FileMode(dirMode))
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || fi.Mode().Perm() != fileMode {
			t.Errorf("%s: mode %v, want %v", e.Name(), fi.Mode().Perm(), os.FileMode(fileMode))
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l2, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	l2.Close()
}

// TestTempSuffix: Load deletes the temporary files atomicfile leaves behind.
func TestTempSuffix(t *testing.T) {
	if tmpExt != atomicfile.TempSuffix {
		t.Fatalf("leftover temporary files end in %q, atomicfile makes them end in %q", tmpExt, atomicfile.TempSuffix)
	}
}

// TestReplayProgress: a replay logs how far it got (percentage, records/s).
func TestReplayProgress(t *testing.T) {
	dir := fastDir(t)
	l, m := openLog(t, dir, Options{Sync: SyncNever}, true)
	newWorkload(t, l, m, 5).run(200)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	defer func(d time.Duration) { progressEvery = d }(progressEvery)
	progressEvery = 0 // every group
	lg, tl := newTestLogger(t)
	l, err := Open(dir, Options{Logger: lg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Load(newModel().apply); err != nil {
		t.Fatal(err)
	}
	line := tl.find("replaying the log")
	for _, want := range []string{"percent=", "records=", "records-per-sec="} {
		if !strings.Contains(line, want) {
			t.Fatalf("progress line %q lacks %s", line, want)
		}
	}
	if done := tl.find("log replayed"); !strings.Contains(done, "records=") {
		t.Fatalf("no summary line: %q", done)
	}
}

// TestApplyError: an error from the engine's apply stops Load and names the
// file and offset of the record's frame.
func TestApplyError(t *testing.T) {
	dir := fastDir(t)
	l, m := openLog(t, dir, Options{Sync: SyncNever}, true)
	newWorkload(t, l, m, 9).run(100)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	boom := errors.New("engine says no")
	n := 0
	err = l.Load(func(r *store.Record) error {
		if n++; n == 50 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), segmentExt) || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("Load: %v, want the apply error with file and offset", err)
	}
	if _, _, err := l.Append(store.Record{Kind: store.QueueDeleted}, nil); !errors.Is(err, ErrNotLoaded) {
		t.Fatalf("Append after a failed Load: %v", err)
	}
}

// TestBodiesStayInTheLog: the log keeps every body in its record, so Append
// gives no ref, ReadBody refuses, and a message comes back with its body and
// size.
func TestBodiesStayInTheLog(t *testing.T) {
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{Sync: SyncNever}, true)
	rid := randID()
	q := store.Record{Kind: store.QueueCreated, RID: rid, SID: randID(), RecipientKey: edKey(t, 0)}
	if _, ref, err := l.Append(q, nil); err != nil || ref != 0 {
		t.Fatalf("Append queue: ref %d, err %v", ref, err)
	}
	r := store.Record{Kind: store.MessageStored, RID: rid, MsgID: randMsgID(), Time: 5, Size: 4, Body: []byte("body")}
	if _, ref, err := l.Append(r, nil); err != nil || ref != 0 {
		t.Fatalf("Append message: ref %d, err %v, want ref 0", ref, err)
	}
	if _, err := l.ReadBody(rid, r.MsgID, 1, nil); err == nil {
		t.Fatal("ReadBody succeeded on a log that gives out no refs")
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var got []store.Record
	l2, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if err := l2.Load(func(r *store.Record) error { got = append(got, *r); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || render(&got[1]) != render(&r) {
		t.Fatalf("replayed %d records, last %s; want 2, last %s", len(got), render(&got[len(got)-1]), render(&r))
	}
}
