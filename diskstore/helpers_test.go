package diskstore_test

// The harness of the disk store's tests: the engine driven at the plaintext
// level (internal/sessiontest) on a diskstore.Store, the client's view of a
// queue, and a grep of the data directory for what SPEC §8 says must be gone.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/diskstore"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/internal/uring"
	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/internal/waltest"
	"github.com/smprelay/smprelay/store"
	"github.com/smprelay/smprelay/wal"
)

// sess drives one engine Session the way a gnet loop does: Process, then
// Drain whenever the session is woken (the log wakes it when a record the
// reply waits for becomes durable).
type sess = sessiontest.Conn[*engine.Session, *engine.Writer]

type resp = sessiontest.Response

func newSess(t testing.TB, e *engine.Engine) *sess {
	w := engine.NewWriter(e.BlockSize())
	return sessiontest.NewConn(t, e.BlockSize(), e.NewSession, w, &w.Send)
}

func wantCmd(t testing.TB, r resp, cmd codec.Cmd) resp {
	t.Helper()
	return sessiontest.WantCmd(t, r, cmd)
}

// Keys are slow to make (RSA): a few are shared by every test.
var testKeys struct {
	once sync.Once
	ed   []*codec.Signer
	rsa  *codec.Signer
}

func keys(t testing.TB) {
	t.Helper()
	testKeys.once.Do(func() {
		for range 8 {
			s, err := codec.GenerateSigner(codec.SigEd25519, 0)
			if err != nil {
				panic(err)
			}
			testKeys.ed = append(testKeys.ed, s)
		}
		s, err := codec.GenerateSigner(codec.SigRSA, 2048)
		if err != nil {
			panic(err)
		}
		testKeys.rsa = s
	})
}

// edSigner returns one of the shared Ed25519 keys; freshEd a new one, for a
// key that must be unique to be grepped for.
func edSigner(t testing.TB, i int) *codec.Signer {
	keys(t)
	return testKeys.ed[i%len(testKeys.ed)]
}

func rsaSigner(t testing.TB) *codec.Signer {
	keys(t)
	return testKeys.rsa
}

func freshEd(t testing.TB) *codec.Signer { return sessiontest.Signer(t, codec.SigEd25519) }

// queue is a queue as its client knows it.
type queue struct {
	rk, sk   *codec.Signer // recipient key; sender key once KEY secured it
	rid, sid []byte
}

// newQueue creates a queue from r (which NEW subscribes to it).
func newQueue(t testing.TB, r *sess, rk *codec.Signer, corr string) *queue {
	t.Helper()
	ids := wantCmd(t, r.Call(corr, smptest.Cmd(rk, corr, nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.CmdIDS)
	return &queue{rk: rk, rid: ids.RID, sid: ids.SID}
}

// secure sends KEY with sk from r.
func (q *queue) secure(t testing.TB, r *sess, sk *codec.Signer, corr string) {
	t.Helper()
	wantCmd(t, r.Call(corr, smptest.Cmd(q.rk, corr, q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.CmdOK)
	q.sk = sk
}

// sendTx is a SEND of body to q, signed when q is secured.
func (q *queue) sendTx(corr string, body []byte) []byte {
	return smptest.Cmd(q.sk, corr, q.sid, codec.CmdSEND, nil, body)
}

// send sends body to q from s and expects OK.
func (q *queue) send(t testing.TB, s *sess, corr string, body []byte) {
	t.Helper()
	wantCmd(t, s.Call(corr, q.sendTx(corr, body)), codec.CmdOK)
}

// recipient commands: SUB, ACK, OFF, DEL.
func (q *queue) cmd(corr string, c codec.Cmd) []byte {
	return smptest.Cmd(q.rk, corr, q.rid, c, nil, nil)
}

// randBytes returns n bytes from rng: high entropy, so that a grep for them
// (or for 24 bytes of them) finds nothing by chance.
func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(b[i:], w[:])
	}
	return b
}

// testLogger sends a store's log lines to t.Log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// createdTimes returns each queue's creation time as the engine's snapshot
// gives it.
func createdTimes(t testing.TB, e *engine.Engine) map[[16]byte]int64 {
	t.Helper()
	out := map[[16]byte]int64{}
	if err := e.Snapshot(func(r *store.Record) error {
		if r.Kind == store.QueueCreated {
			out[r.RID] = r.Time
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// startEngine opens the disk store in data and an engine on it.
func startEngine(t testing.TB, data string, o diskstore.Options, eo engine.Options) (*engine.Engine, *diskstore.Store) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	s, err := diskstore.Open(data, o)
	if err != nil {
		t.Fatalf("diskstore.Open: %v", err)
	}
	eo.Store = s
	e, err := engine.New(eo)
	if err != nil {
		s.Close()
		t.Fatalf("engine.New on the disk store: %v", err)
	}
	return e, s
}

// asyncSyncs is how a test runs the log's fsyncs.
type asyncSyncs int

const (
	noAsyncSyncs  asyncSyncs = iota // blocking, by the writer
	asyncPolled                     // by io_uring, reaped by a goroutine that plays the event loop
	asyncUnpolled                   // by io_uring, nobody polls: the writer reaps them itself
)

func (a asyncSyncs) String() string {
	return [...]string{"blocking", "polled", "unpolled"}[a]
}

// attachSyncs switches s to fsyncs by io_uring as a says, and returns how
// many times the playing loop reaped. It skips the test where the kernel
// has no io_uring. The goroutine stops when the test ends.
func attachSyncs(t testing.TB, s *diskstore.Store, a asyncSyncs) *atomic.Int64 {
	t.Helper()
	var reaped atomic.Int64
	if a == noAsyncSyncs {
		return &reaped
	}
	nc, readable, detach, err := s.AttachSyncs()
	if errors.Is(err, uring.ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if a == asyncUnpolled {
		detach()
		nc.Close()
		return &reaped
	}
	return waltest.PollSyncs(t, nc, readable, detach)
}

// syncModes are the log's fsync modes, each test runs in all of them.
var syncModes = []wal.SyncMode{wal.SyncAlways, wal.SyncInterval, wal.SyncNever}

// disk is every file of a data directory: its bytes, and for the log's
// files also their frames decompressed (internal/waltest).
type disk map[string][]byte

func readDisk(t testing.TB, fsys vfs.FS, data string) disk {
	t.Helper()
	files, err := waltest.Contents(fsys, data)
	if err != nil {
		t.Fatalf("reading the data directory: %v", err)
	}
	return files
}

// find returns the path of a file that holds needle, or "".
func (d disk) find(needle []byte) string {
	for _, path := range slices.Sorted(maps.Keys(d)) {
		if bytes.Contains(d[path], needle) {
			return path
		}
	}
	return ""
}

// windowSize is the length of the pieces of a body the grep looks for: any
// run of windowSize+7 bytes of a body, wherever it sits in a file, holds one
// of the body's windows that start at a multiple of 8.
const windowSize = 24

// traces is what must be gone from the disk: whole byte strings (IDs, keys,
// short bodies) and every 8-aligned window of the longer bodies.
type traces struct {
	exact   map[string]string           // needle → what it is
	windows map[[windowSize]byte]string // window → the body it is from
}

func newTraces() *traces {
	return &traces{exact: map[string]string{}, windows: map[[windowSize]byte]string{}}
}

// add looks for b whole (when it is long enough not to match by chance).
func (tr *traces) add(what string, b []byte) {
	if len(b) >= 16 {
		tr.exact[string(b)] = what
	}
}

// addBody looks for body whole and for each of its 8-aligned windows, so
// that a piece of it (a record half erased, a page of it left behind) shows.
func (tr *traces) addBody(what string, body []byte) {
	tr.add(what, body)
	for i := 0; i+windowSize <= len(body); i += 8 {
		w := [windowSize]byte(body[i : i+windowSize])
		if binary.LittleEndian.Uint64(w[:]) != 0 {
			tr.windows[w] = what
		}
	}
}

func (tr *traces) len() int { return len(tr.exact) + len(tr.windows) }

// find returns the first trace found in d, where, and at which offset;
// what is "" when there is none.
func (tr *traces) find(d disk) (what, path string, off int) {
	for _, path := range slices.Sorted(maps.Keys(d)) {
		b := d[path]
		for needle, w := range tr.exact {
			if i := bytes.Index(b, []byte(needle)); i >= 0 {
				return w, path, i
			}
		}
		if len(tr.windows) == 0 {
			continue
		}
		for i := 0; i+windowSize <= len(b); i++ {
			if binary.LittleEndian.Uint64(b[i:]) == 0 {
				continue // erased space and holes: most of a body segment
			}
			if w, ok := tr.windows[[windowSize]byte(b[i:i+windowSize])]; ok {
				return w, path, i
			}
		}
	}
	return "", "", 0
}

// assertGone fails the test if any trace is in d.
func assertGone(t testing.TB, d disk, tr *traces) {
	t.Helper()
	if what, path, off := tr.find(d); what != "" {
		t.Fatalf("%s is still on disk: in %s at offset %d", what, path, off)
	}
}

// assertPresent fails the test unless each of needles (what → bytes) is in
// d, so that the search of assertGone is known to work.
func assertPresent(t testing.TB, d disk, needles map[string][]byte) {
	t.Helper()
	for _, what := range slices.Sorted(maps.Keys(needles)) {
		if d.find(needles[what]) == "" {
			t.Fatalf("%s is on no file of the data directory", what)
		}
	}
}

// fixedClock is a clock that moves only when the test advances it.
func fixedClock() *sessiontest.Clock {
	return sessiontest.NewClock(time.Unix(1764097639, 0), 0)
}
