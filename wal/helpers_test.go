package wal

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/internal/waltest"
	"github.com/smprelay/smprelay/store"
)

// Keys are slow to make (RSA): a few are shared by every test.
var testKeys struct {
	once sync.Once
	ed   []*codec.VerifyKey
	rsa  *codec.VerifyKey
}

func edKey(t testing.TB, i int) *codec.VerifyKey {
	t.Helper()
	loadKeys(t)
	return testKeys.ed[i%len(testKeys.ed)]
}

func rsaKey(t testing.TB) *codec.VerifyKey {
	t.Helper()
	loadKeys(t)
	return testKeys.rsa
}

func loadKeys(t testing.TB) {
	testKeys.once.Do(func() {
		for range 4 {
			s, err := codec.GenerateSigner(codec.SigEd25519, 0)
			if err != nil {
				panic(err)
			}
			testKeys.ed = append(testKeys.ed, s.VerifyKey())
		}
		s, err := codec.GenerateSigner(codec.SigRSA, 2048)
		if err != nil {
			panic(err)
		}
		testKeys.rsa = s.VerifyKey()
	})
}

func randID() (id [16]byte) {
	_, _ = rand.Read(id[:])
	return id
}

func randMsgID() (id [8]byte) {
	_, _ = rand.Read(id[:])
	return id
}

// model is a Snapshotter and replay target that keeps state like the engine
// does (the replay is idempotent in the same way), for tests of the log on
// its own. mu plays the queue locks: a change is appended and applied under
// it, and Snapshot copies one queue at a time under it.
type model struct {
	mu     sync.Mutex
	queues map[[16]byte]*mqueue
}

type mqueue struct {
	rid, sid  [16]byte
	rk, sk    *codec.VerifyKey
	suspended bool
	susAt     int64
	blocked   bool
	msgs      []mmsg
}

type mmsg struct {
	id   [8]byte
	ts   int64
	body []byte
}

func newModel() *model { return &model{queues: make(map[[16]byte]*mqueue)} }

// apply is the model's replay; the caller holds mu (or is alone).
func (m *model) apply(r *store.Record) error {
	if r.Kind == store.QueueCreated {
		if _, ok := m.queues[r.RID]; !ok {
			m.queues[r.RID] = &mqueue{rid: r.RID, sid: r.SID, rk: r.RecipientKey}
		}
		return nil
	}
	q := m.queues[r.RID]
	if q == nil {
		return nil
	}
	switch r.Kind {
	case store.QueueSecured:
		q.sk = r.SenderKey
	case store.QueueSuspended:
		q.suspended, q.susAt = true, r.Time
	case store.QueueBlocked:
		q.blocked = true
	case store.QueueUnblocked:
		q.blocked = false
	case store.QueueDeleted:
		delete(m.queues, r.RID)
	case store.MessageStored:
		for _, msg := range q.msgs {
			if msg.id == r.MsgID {
				return nil
			}
		}
		q.msgs = append(q.msgs, mmsg{id: r.MsgID, ts: r.Time, body: r.Body})
	case store.MessageDeleted:
		q.msgs = slices.DeleteFunc(q.msgs, func(x mmsg) bool { return x.id == r.MsgID })
	default:
		return fmt.Errorf("unknown kind %d", r.Kind)
	}
	return nil
}

func (m *model) Snapshot(emit func(*store.Record) error) error {
	m.mu.Lock()
	ids := make([][16]byte, 0, len(m.queues))
	for id := range m.queues {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var recs []store.Record
	for _, id := range ids {
		recs = recs[:0]
		m.mu.Lock()
		if q := m.queues[id]; q != nil {
			recs = append(recs, store.Record{Kind: store.QueueCreated, RID: q.rid, SID: q.sid, RecipientKey: q.rk})
			if q.sk != nil {
				recs = append(recs, store.Record{Kind: store.QueueSecured, RID: q.rid, SenderKey: q.sk})
			}
			if q.suspended {
				recs = append(recs, store.Record{Kind: store.QueueSuspended, RID: q.rid, Time: q.susAt})
			}
			if q.blocked {
				recs = append(recs, store.Record{Kind: store.QueueBlocked, RID: q.rid})
			}
			for _, msg := range q.msgs {
				recs = append(recs, store.Record{Kind: store.MessageStored, RID: q.rid, MsgID: msg.id, Time: msg.ts, Size: len(msg.body), Body: msg.body})
			}
		}
		m.mu.Unlock()
		for i := range recs {
			if err := emit(&recs[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *model) LiveBytes() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	var n int64
	for _, q := range m.queues {
		n += 128
		for _, msg := range q.msgs {
			n += 48 + int64(len(msg.body))
		}
	}
	return n
}

// dump renders the state canonically (queues by RID; messages in order).
func (m *model) dump() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var lines []string
	for _, q := range m.queues {
		var b strings.Builder
		fmt.Fprintf(&b, "queue %x sid %x rk %x", q.rid, q.sid, q.rk.SPKI())
		if q.sk != nil {
			fmt.Fprintf(&b, " sk %x", q.sk.SPKI())
		}
		if q.suspended {
			fmt.Fprintf(&b, " suspended@%d", q.susAt)
		}
		if q.blocked {
			b.WriteString(" blocked")
		}
		for _, msg := range q.msgs {
			fmt.Fprintf(&b, "\n  msg %x @%d %q", msg.id, msg.ts, msg.body)
		}
		lines = append(lines, b.String())
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// record appends r to l and applies it to m under m.mu, as the engine does.
func (m *model) record(t testing.TB, l *Log, r store.Record, n store.Notifier) uint64 {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	lsn, _, err := l.Append(r, n)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := m.apply(&r); err != nil {
		t.Fatal(err)
	}
	return lsn
}

// testLogger sends the log's lines to t.Log and, when lines is not nil,
// also collects them.
type testLogger struct {
	t       testing.TB
	mu      sync.Mutex
	lines   []string
	changed *sync.Cond // on mu: broadcast at every line
}

func (tl *testLogger) Write(p []byte) (int, error) {
	tl.mu.Lock()
	tl.lines = append(tl.lines, string(p))
	tl.changed.Broadcast()
	tl.mu.Unlock()
	tl.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func (tl *testLogger) find(sub string) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for _, l := range tl.lines {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}

// count returns how many lines hold sub; the caller holds mu.
func (tl *testLogger) count(sub string) int {
	n := 0
	for _, l := range tl.lines {
		if strings.Contains(l, sub) {
			n++
		}
	}
	return n
}

// waitFor blocks until n lines hold sub, or a line holds fail (then it
// returns that line).
func (tl *testLogger) waitFor(sub string, n int, fail string) string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	for tl.count(sub) < n {
		for _, l := range tl.lines {
			if strings.Contains(l, fail) {
				return l
			}
		}
		tl.changed.Wait()
	}
	return ""
}

func newTestLogger(t testing.TB) (*slog.Logger, *testLogger) {
	tl := &testLogger{t: t}
	tl.changed = sync.NewCond(&tl.mu)
	return slog.New(slog.NewTextHandler(tl, &slog.HandlerOptions{Level: slog.LevelDebug})), tl
}

// openLog opens and loads the log in dir into a fresh model, attaching it
// unless attach is false.
func openLog(t testing.TB, dir string, o Options, attach bool) (*Log, *model) {
	t.Helper()
	if o.Logger == nil {
		o.Logger, _ = newTestLogger(t)
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	m := newModel()
	if err := l.Load(m.apply); err != nil {
		l.Close()
		t.Fatalf("Load: %v", err)
	}
	if attach {
		if err := l.Attach(m); err != nil {
			l.Close()
			t.Fatalf("Attach: %v", err)
		}
	}
	return l, m
}

// reload opens the log in dir, replays it into a fresh model and closes it
// again without compacting, so the files stay as they were.
func reload(t testing.TB, dir string) (*model, error) {
	t.Helper()
	lg, _ := newTestLogger(t)
	l, err := Open(dir, Options{Logger: lg})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	m := newModel()
	return m, l.Load(m.apply)
}

// chanNotifier counts notifications and signals each on a channel.
type chanNotifier struct {
	c     chan struct{}
	count atomic.Int64
}

func newChanNotifier() *chanNotifier { return &chanNotifier{c: make(chan struct{}, 1<<16)} }

func (n *chanNotifier) NotifyDurable() {
	n.count.Add(1)
	n.c <- struct{}{}
}

// waitDurable waits until l.Durable() >= lsn, using n's notifications.
func waitDurable(t testing.TB, l *Log, n *chanNotifier, lsn uint64) {
	t.Helper()
	for l.Durable() < lsn {
		<-n.c
	}
}

// fastDir is a temporary directory on tmpfs when the machine has one
// (/dev/shm), else t.TempDir(). Tests that reopen a log hundreds of times use
// it: every recovery that cuts a torn tail fsyncs, and a busy disk makes
// that slow. The semantics are the same on either.
func fastDir(t testing.TB) string {
	t.Helper()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		if dir, err := os.MkdirTemp("/dev/shm", "waltest-"); err == nil {
			t.Cleanup(func() { os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// frameSpan is one frame found in a file by scanFrames.
type frameSpan struct {
	off, end int64
	typ      uint8
}

// scanFrames lists the frames of a whole, valid file.
func scanFrames(t testing.TB, path string) []frameSpan {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []frameSpan
	for off := int64(fileHeaderSize); off < int64(len(b)); {
		if !validFrameAt(b[off:]) {
			t.Fatalf("%s: no valid frame at %d", path, off)
		}
		h, _ := parseFrameHeader(b[off:])
		end := off + frameHeaderSize + int64(h.length)
		out = append(out, frameSpan{off: off, end: end, typ: h.typ})
		off = end
	}
	return out
}

// plainContents returns every byte the log directory holds as a reader would
// see it: each file's bytes as stored, followed by the decompressed payload
// of each of its frames (internal/waltest, which decodes the files from
// doc.go on its own). A grep of it finds data whether or not compression hid
// it.
func plainContents(t testing.TB, dir string) []byte {
	t.Helper()
	files, err := waltest.Contents(vfs.OS, dir)
	if err != nil {
		t.Fatal(err)
	}
	var all []byte
	for _, path := range slices.Sorted(maps.Keys(files)) {
		all = append(all, files[path]...)
	}
	return all
}

// failFile is a segment file whose writes or fsyncs fail on demand and whose
// fsyncs can be held, for tests of failure and group commit.
type failFile struct {
	vfs.File
	mu        sync.Mutex
	failWrite error         // returned by Write when set
	failSync  error         // returned by Sync when set
	syncs     int           // Sync calls
	hold      chan struct{} // when set, Sync signals entered and waits on it
	entered   chan struct{}
}

func (f *failFile) Write(p []byte) (int, error) {
	f.mu.Lock()
	err := f.failWrite
	f.mu.Unlock()
	if err != nil {
		n, _ := f.File.Write(p[:len(p)/2]) // a torn write
		return n, err
	}
	return f.File.Write(p)
}

func (f *failFile) Sync() error {
	f.mu.Lock()
	f.syncs++
	err, hold, entered := f.failSync, f.hold, f.entered
	f.mu.Unlock()
	if hold != nil {
		entered <- struct{}{}
		<-hold
	}
	if err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *failFile) set(fn func(f *failFile)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

// failFS is a filesystem whose files opened for appending (the log's
// segments) are failFiles; the latest one is returned by cur.
type failFS struct {
	vfs.FS
	mu     sync.Mutex
	latest *failFile
}

func (fsys *failFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := fsys.FS.OpenFile(name, flag, perm)
	if err != nil || flag&os.O_APPEND == 0 {
		return f, err
	}
	ff := &failFile{File: f}
	fsys.mu.Lock()
	fsys.latest = ff
	fsys.mu.Unlock()
	return ff, nil
}

func (fsys *failFS) cur() *failFile {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.latest
}

// openFailing opens the log in dir like openLog, with its segments opened as
// failFiles (the latest one is returned by cur). The caller closes the log.
func openFailing(t testing.TB, dir string, o Options, attach bool) (l *Log, m *model, cur func() *failFile) {
	t.Helper()
	fsys := &failFS{FS: vfs.OS}
	o.FS = fsys
	l, m = openLog(t, dir, o, attach)
	return l, m, fsys.cur
}

var errInjected = errors.New("injected I/O error")
