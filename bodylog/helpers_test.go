package bodylog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/store"
)

// never is an EraseInterval long enough that the eraser goroutine never
// runs during a test: tests apply Deletes with Erase or eraseDue.
const never = 24 * time.Hour

// openT opens a log in dir for a test; zero options get test defaults (no
// eraser ticks, no cache).
func openT(t testing.TB, dir string, o Options) *Log {
	t.Helper()
	if o.EraseInterval == 0 {
		o.EraseInterval = never
	}
	l, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return l
}

// msg is a stored body with its IDs and ref.
type msg struct {
	rid  store.QueueID
	id   store.MsgID
	body []byte
	ref  store.BodyRef
}

// newMsg makes a message whose IDs and body are random (so they can be
// looked for in the files), of n bytes.
func newMsg(r *rand.Rand, n int) *msg {
	m := &msg{body: make([]byte, n)}
	fill(r, m.rid[:])
	fill(r, m.id[:])
	fill(r, m.body)
	return m
}

func fill(r *rand.Rand, b []byte) {
	for i := range b {
		b[i] = byte(r.Uint32())
	}
}

// appendSynced appends ms in order, then Syncs: their records are durable.
func appendSynced(t testing.TB, l *Log, ms ...*msg) {
	t.Helper()
	for _, m := range ms {
		appendT(t, l, m)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
}

// appendT appends m and records its ref.
func appendT(t testing.TB, l *Log, m *msg) {
	t.Helper()
	ref, err := l.Append(m.rid, m.id, m.body)
	if err != nil {
		t.Fatalf("Append: %v", err)
	}
	m.ref = ref
}

// readT reads m back and checks it.
func readT(t testing.TB, l *Log, m *msg) {
	t.Helper()
	got, err := l.Read(m.rid, m.id, m.ref, nil)
	if err != nil {
		t.Fatalf("Read %#x: %v", uint64(m.ref), err)
	}
	if !bytes.Equal(got, m.body) {
		t.Fatalf("Read %#x: %d bytes differ from the %d appended", uint64(m.ref), len(got), len(m.body))
	}
}

// refsOf returns the refs of ms.
func refsOf(ms []*msg) []store.BodyRef {
	refs := make([]store.BodyRef, len(ms))
	for i, m := range ms {
		refs[i] = m.ref
	}
	return refs
}

// abandon simulates a crash (kill -9) of a log: the eraser stops, the files
// and the lock are closed, and nothing else happens: no flush of the append
// buffer, no erasure, no sync, no summary.
func (l *Log) abandon() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	l.setCache(nil)
	l.closeFiles()
	l.lock.Close()
}

// dirFiles reads every file of dir.
func dirFiles(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// grepDir returns the file of dir that contains needle, or "".
func grepDir(files map[string][]byte, needle []byte) string {
	for path, b := range files {
		if bytes.Contains(b, needle) {
			return path
		}
	}
	return ""
}

// assertGone fails if any trace of m — its body, a 24-byte window of it, or
// its queue and message IDs as the record header lays them out — is in a
// file of dir.
func assertGone(t testing.TB, files map[string][]byte, m *msg) {
	t.Helper()
	needles := [][]byte{append(m.rid[:len(m.rid):len(m.rid)], m.id[:]...)}
	if len(m.body) >= 16 { // shorter ones match by chance
		needles = append(needles, m.body)
		for i := 0; i+24 <= len(m.body); i += 997 { // windows: a partial erasure shows
			needles = append(needles, m.body[i:i+24])
		}
	}
	for _, n := range needles {
		if f := grepDir(files, n); f != "" {
			t.Fatalf("a deleted message (ref %#x, %d bytes) is still in %s", uint64(m.ref), len(m.body), f)
		}
	}
}

// assertPresent fails unless m's body is in a file of dir (so assertGone's
// search is known to work).
func assertPresent(t testing.TB, files map[string][]byte, m *msg) {
	t.Helper()
	if len(m.body) >= 16 && grepDir(files, m.body) == "" {
		t.Fatalf("a live message (ref %#x) is in no file", uint64(m.ref))
	}
}

// putU32 writes v at off in the file at path.
func putU32(t testing.TB, path string, off int64, v uint32) {
	t.Helper()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	writeAt(t, path, off, b[:])
}

func writeAt(t testing.TB, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// plainFS is vfs.OS whose files are only what vfs.File promises: no file
// descriptor, no WriteAt. Open must refuse it (ErrNoErase).
type plainFS struct{ vfs.FS }

type plainFile struct{ vfs.File }

func (p plainFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := p.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return plainFile{f}, nil
}

// faultFS is vfs.OS whose segment files write at an offset but have no file
// descriptor (so erasure writes zeros, as on a file system without holes),
// and whose Sync fails once failSync is set.
type faultFS struct {
	vfs.FS
	failSync atomic.Bool // the test sets it before the Sync it means to fail
}

type faultFile struct {
	vfs.File
	fs *faultFS
}

func (p *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := p.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return faultFile{f, p}, nil
}

func (f faultFile) WriteAt(b []byte, off int64) (int, error) {
	return f.File.(io.WriterAt).WriteAt(b, off)
}

var errInjected = errors.New("injected fsync failure")

func (f faultFile) Sync() error {
	if f.fs.failSync.Load() {
		return errInjected
	}
	return f.File.Sync()
}

func osFS() vfs.FS { return vfs.OS }
