package crashfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/vfs"
)

// outcome is an Outcome made of functions; a nil one keeps nothing that was
// not durable.
type outcome struct {
	dirOps func(dir string, n int) int
	size   func(name string, durable, current int64) int64
	page   func(name string, page int64) bool
}

func (o outcome) DirOps(dir string, n int) int {
	if o.dirOps == nil {
		return 0
	}
	return o.dirOps(dir, n)
}

func (o outcome) Size(name string, durable, current int64) int64 {
	if o.size == nil {
		return durable
	}
	return o.size(name, durable, current)
}

func (o outcome) Page(name string, page int64) bool { return o.page != nil && o.page(name, page) }

// loseAll is a power cut that keeps nothing un-synced; keepAll one that keeps
// everything (what a kill -9 leaves, the page cache surviving).
var (
	loseAll = outcome{}
	keepAll = outcome{
		dirOps: func(_ string, n int) int { return n },
		size:   func(_ string, _, current int64) int64 { return current },
		page:   func(string, int64) bool { return true },
	}
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, fsys vfs.FS, name string, b []byte, sync bool) {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	must(t, err)
	_, err = f.Write(b)
	must(t, err)
	if sync {
		must(t, f.Sync())
	}
	must(t, f.Close())
}

// readFile returns name's contents, or nil if it does not exist.
func readFile(t *testing.T, fsys vfs.FS, name string) []byte {
	t.Helper()
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	must(t, err)
	defer f.Close()
	b, err := io.ReadAll(f)
	must(t, err)
	if b == nil {
		b = []byte{}
	}
	return b
}

func names(t *testing.T, fsys vfs.FS, dir string) string {
	t.Helper()
	ents, err := fsys.ReadDir(dir)
	must(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return strings.Join(out, " ")
}

// TestOperations: the FS behaves as the os package does for what vfs uses.
func TestOperations(t *testing.T) {
	fsys := New()
	must(t, fsys.MkdirAll("/d/e", 0o700))
	if fi, err := fsys.Stat("/d/e"); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
		t.Fatalf("Stat of a directory: %v, %v", fi, err)
	}
	if _, err := fsys.OpenFile("/d/x/y", os.O_RDWR|os.O_CREATE, 0o600); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("create in a missing directory: %v", err)
	}
	f, err := fsys.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	must(t, err)
	if _, err := fsys.OpenFile("/d/a", os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("O_EXCL on an existing file: %v", err)
	}
	_, err = f.Write([]byte("hello world"))
	must(t, err)
	buf := make([]byte, 5)
	if n, err := f.ReadAt(buf, 6); n != 5 || err != nil || string(buf) != "world" {
		t.Fatalf("ReadAt: %d %v %q", n, err, buf)
	}
	if n, err := f.ReadAt(buf, 8); n != 3 || err != io.EOF {
		t.Fatalf("ReadAt past the end: %d %v", n, err)
	}
	must(t, f.Truncate(5))
	if fi, err := f.Stat(); err != nil || fi.Size() != 5 || fi.Mode().Perm() != 0o640 || fi.Name() != "a" {
		t.Fatalf("Stat: %v %v", fi, err)
	}
	must(t, f.Close())
	if _, err := f.Write([]byte("x")); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
	// O_APPEND writes at the end whatever was read.
	f, err = fsys.OpenFile("/d/a", os.O_RDWR|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Read(make([]byte, 2))
	must(t, err)
	_, err = f.Write([]byte("!"))
	must(t, err)
	must(t, f.Close())
	if got := readFile(t, fsys, "/d/a"); string(got) != "hello!" {
		t.Fatalf("after append: %q", got)
	}
	r, err := fsys.OpenFile("/d/a", os.O_RDONLY, 0)
	must(t, err)
	if _, err := r.Write([]byte("x")); err == nil {
		t.Fatal("Write on a read-only file succeeded")
	}
	must(t, r.Close())

	must(t, fsys.Rename("/d/a", "/d/b"))
	if got := names(t, fsys, "/d"); got != "b e" {
		t.Fatalf("after rename: %s", got)
	}
	if err := fsys.Rename("/d/b", "/d/e/b"); err == nil {
		t.Fatal("a rename across directories succeeded")
	}
	if err := fsys.Remove("/d"); err == nil {
		t.Fatal("removed a directory that is not empty")
	}
	must(t, fsys.Remove("/d/b"))
	if err := fsys.Remove("/d/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := fsys.Stat("d/e"); err != nil {
		t.Fatalf("a relative path names the same file: %v", err)
	}
}

// TestSyncedSurvives: what was synced, with its directory, is found whole
// after any crash.
func TestSyncedSurvives(t *testing.T) {
	fsys := New()
	must(t, fsys.MkdirAll("/d", 0o700))
	want := bytes.Repeat([]byte("0123456789abcdef"), 1000)
	writeFile(t, fsys, "/d/f", want, true)
	must(t, fsys.SyncDir("/d"))
	// Then un-synced changes to it, and another file not synced at all.
	f, err := fsys.OpenFile("/d/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	_, err = f.Write(bytes.Repeat([]byte("Z"), 3*PageSize))
	must(t, err)
	writeFile(t, fsys, "/d/g", []byte("never synced"), false)
	for seed := range uint64(50) {
		c := fsys.Crash(rand.New(rand.NewPCG(seed, 1)))
		got := readFile(t, c, "/d/f")
		if len(got) < len(want) || !bytes.Equal(got[:len(want)], want) {
			t.Fatalf("seed %d: synced contents damaged", seed)
		}
	}
	for _, o := range []Outcome{loseAll, keepAll} {
		c := fsys.CrashWith(o)
		if got := readFile(t, c, "/d/f"); !bytes.Equal(got[:len(want)], want) {
			t.Fatal("synced contents damaged")
		}
	}
	if got := names(t, fsys.CrashWith(loseAll), "/d"); got != "f" {
		t.Fatalf("losing everything un-synced left %q", got)
	}
	if got := readFile(t, fsys.CrashWith(keepAll), "/d/g"); string(got) != "never synced" {
		t.Fatalf("keeping everything: %q", got)
	}
}

// TestPages: each dirty page has its new bytes or its old ones, by the
// outcome's choice; bytes that never existed read as zeros; the size is the
// one chosen.
func TestPages(t *testing.T) {
	fsys := New()
	old := bytes.Repeat([]byte("a"), 3*PageSize)
	writeFile(t, fsys, "/f", old, true)
	must(t, fsys.SyncDir("/"))
	f, err := fsys.OpenFile("/f", os.O_WRONLY, 0)
	must(t, err)
	if _, err := f.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read on a write-only file succeeded")
	}
	must(t, f.Truncate(int64(len(old)))) // the same size: touches no page
	must(t, f.Close())
	// Overwrite from the middle of page 0 on, and append two pages.
	g, err := fsys.OpenFile("/f", os.O_RDWR, 0)
	must(t, err)
	_, err = g.Read(make([]byte, PageSize/2))
	must(t, err)
	_, err = g.Write(bytes.Repeat([]byte("b"), 4*PageSize+PageSize/2))
	must(t, err)
	current := int64(5 * PageSize)

	keep := map[int64]bool{1: true, 3: true, 4: true} // not page 0, not page 2
	for _, size := range []int64{3 * PageSize, 4*PageSize + 100, current} {
		c := fsys.CrashWith(outcome{
			size: func(name string, durable, cur int64) int64 {
				if name != "/f" || durable != 3*PageSize || cur != current {
					t.Fatalf("Size(%s, %d, %d)", name, durable, cur)
				}
				return size
			},
			page: func(_ string, p int64) bool { return keep[p] },
		})
		got := readFile(t, c, "/f")
		if int64(len(got)) != size {
			t.Fatalf("size %d, want %d", len(got), size)
		}
		for i, b := range got {
			p := int64(i) / PageSize
			var want byte
			switch {
			case keep[p] && i >= PageSize/2:
				want = 'b'
			case !keep[p] && i < len(old):
				want = 'a'
			}
			if b != want {
				t.Fatalf("size %d: byte %d (page %d) is %q, want %q", size, i, p, b, want)
			}
		}
	}
	// A truncate since the last Sync: the old bytes come back with the old
	// size unless the page keeps its new state.
	must(t, g.Sync())
	must(t, g.Truncate(100))
	c := fsys.CrashWith(outcome{size: func(_ string, durable, _ int64) int64 { return durable }})
	if got := readFile(t, c, "/f"); int64(len(got)) != current || got[PageSize] != 'b' {
		t.Fatalf("a lost truncate: %d bytes", len(got))
	}
	if got := readFile(t, fsys.CrashWith(keepAll), "/f"); len(got) != 100 {
		t.Fatalf("a kept truncate: %d bytes", len(got))
	}
}

// TestDirectoryPrefix: after a crash, the directory shows a prefix of its
// operations since the last SyncDir, applied to its durable entries.
func TestDirectoryPrefix(t *testing.T) {
	fsys := New()
	must(t, fsys.MkdirAll("/d", 0o700))
	writeFile(t, fsys, "/d/old", []byte("old"), true)
	writeFile(t, fsys, "/d/gone", []byte("gone"), true)
	must(t, fsys.SyncDir("/d"))
	writeFile(t, fsys, "/d/tmp", []byte("new"), true) // op 1: create tmp
	must(t, fsys.Rename("/d/tmp", "/d/old"))          // op 2: rename over old
	must(t, fsys.Remove("/d/gone"))                   // op 3: remove gone
	want := []string{
		"gone=gone old=old",
		"gone=gone old=old tmp=new",
		"gone=gone old=new",
		"old=new",
	}
	for k, w := range want {
		c := fsys.CrashWith(outcome{dirOps: func(dir string, n int) int {
			if dir != "/d" || n != 3 {
				t.Fatalf("DirOps(%s, %d)", dir, n)
			}
			return k
		}})
		var got []string
		ents, err := c.ReadDir("/d")
		must(t, err)
		for _, e := range ents {
			got = append(got, e.Name()+"="+string(readFile(t, c, "/d/"+e.Name())))
		}
		if s := strings.Join(got, " "); s != w {
			t.Errorf("%d operations kept: %s, want %s", k, s, w)
		}
	}
	// After SyncDir every one of them is durable.
	must(t, fsys.SyncDir("/d"))
	if got := names(t, fsys.CrashWith(loseAll), "/d"); got != "old" {
		t.Fatalf("after SyncDir: %s", got)
	}
}

// TestLocks: a lock excludes a second holder until closed; a crash releases
// it; the crashed filesystem is independent of the one it came from.
func TestLocks(t *testing.T) {
	fsys := New()
	l, err := fsys.Lock("/LOCK")
	must(t, err)
	if _, err := fsys.Lock("/LOCK"); !errors.Is(err, vfs.ErrLocked) {
		t.Fatalf("second Lock: %v", err)
	}
	c := fsys.CrashWith(keepAll)
	l2, err := c.Lock("/LOCK")
	if err != nil {
		t.Fatalf("Lock after a crash: %v", err)
	}
	must(t, l.Close())
	if err := l.Close(); err == nil {
		t.Fatal("second Close of a lock succeeded")
	}
	l3, err := fsys.Lock("/LOCK")
	must(t, err)
	must(t, l3.Close())
	must(t, l2.Close())

	writeFile(t, fsys, "/after", []byte("x"), true)
	if _, err := c.Stat("/after"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a file made after the crash is in the crashed filesystem")
	}
}

// TestRandomReplays: a seed gives the same crash, and every outcome of
// random crashes is one the model allows (checked against keepAll and
// loseAll page by page).
func TestRandomReplays(t *testing.T) {
	fsys := New()
	rng := rand.New(rand.NewPCG(3, 3))
	contents := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte('a' + rng.IntN(26))
		}
		return b
	}
	writeFile(t, fsys, "/f", contents(5*PageSize+7), true)
	must(t, fsys.SyncDir("/"))
	f, err := fsys.OpenFile("/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	for range 5 {
		_, err := f.Write(contents(rng.IntN(3 * PageSize)))
		must(t, err)
	}
	oldB := readFile(t, fsys.CrashWith(loseAll), "/f")
	newB := readFile(t, fsys.CrashWith(keepAll), "/f")
	seen := map[string]bool{}
	for seed := range uint64(100) {
		a := readFile(t, fsys.Crash(rand.New(rand.NewPCG(seed, 9))), "/f")
		b := readFile(t, fsys.Crash(rand.New(rand.NewPCG(seed, 9))), "/f")
		if !bytes.Equal(a, b) {
			t.Fatalf("seed %d: two crashes differ", seed)
		}
		if len(a) < len(oldB) || len(a) > len(newB) {
			t.Fatalf("seed %d: size %d outside [%d, %d]", seed, len(a), len(oldB), len(newB))
		}
		var pattern []byte
		for p := 0; p*PageSize < len(a); p++ {
			page := a[p*PageSize : min((p+1)*PageSize, len(a))]
			isOld := bytes.Equal(page, pad(oldB, p, len(page)))
			isNew := bytes.Equal(page, newB[p*PageSize:p*PageSize+len(page)])
			switch {
			case isNew && isOld:
				pattern = append(pattern, '=')
			case isNew:
				pattern = append(pattern, 'N')
			case isOld:
				pattern = append(pattern, 'o')
			default:
				t.Fatalf("seed %d: page %d is neither old nor new", seed, p)
			}
		}
		seen[fmt.Sprint(len(a), string(pattern))] = true
	}
	if len(seen) < 20 {
		t.Fatalf("100 seeds gave %d outcomes: %v", len(seen), slices.Sorted(maps.Keys(seen)))
	}
}

// pad is page p of b, n bytes, zero past b's end.
func pad(b []byte, p, n int) []byte {
	out := make([]byte, n)
	if p*PageSize < len(b) {
		copy(out, b[p*PageSize:])
	}
	return out
}

// TestHook: the hook sees every operation and its error stops it.
func TestHook(t *testing.T) {
	fsys := New()
	var ops []string
	stop := errors.New("power is off")
	off := false
	h := WithHook(fsys, func(op, name string) error {
		ops = append(ops, op+" "+name)
		if off {
			return stop
		}
		return nil
	})
	writeFile(t, h, "/f", []byte("x"), true)
	must(t, h.SyncDir("/"))
	off = true
	if err := h.Rename("/f", "/g"); !errors.Is(err, stop) {
		t.Fatalf("Rename with the power off: %v", err)
	}
	if _, err := fsys.Stat("/f"); err != nil {
		t.Fatal("the stopped Rename happened")
	}
	want := "OpenFile /f|Write /f|Sync /f|Close /f|SyncDir /|Rename /f"
	if got := strings.Join(ops, "|"); got != want {
		t.Fatalf("operations %s, want %s", got, want)
	}
}

// TestWriteAt: WriteAt writes in place without moving the offset, grows the
// file with zeros across a gap, dirties exactly the pages it touches (a
// crash keeps each of them new or old, the rest as synced), and is refused on
// a file opened O_APPEND, as os.File refuses it. The hook passes it through
// as "WriteAt", and offers it only on files that have it.
func TestWriteAt(t *testing.T) {
	fsys := New()
	old := bytes.Repeat([]byte("a"), 3*PageSize)
	writeFile(t, fsys, "/f", old, true)
	must(t, fsys.SyncDir("/"))
	f, err := fsys.OpenFile("/f", os.O_RDWR, 0)
	must(t, err)
	wa := f.(io.WriterAt)
	// Across the boundary of pages 0 and 1; then past the end, leaving a gap
	// (page 3 partly, page 4) before page 5.
	if n, err := wa.WriteAt([]byte("bb"), PageSize-1); n != 2 || err != nil {
		t.Fatalf("WriteAt: %d %v", n, err)
	}
	if n, err := wa.WriteAt([]byte("cc"), 5*PageSize); n != 2 || err != nil {
		t.Fatalf("WriteAt past the end: %d %v", n, err)
	}
	if n, err := wa.WriteAt(nil, 9*PageSize); n != 0 || err != nil {
		t.Fatalf("WriteAt of nothing: %d %v", n, err)
	}
	if _, err := wa.WriteAt([]byte("x"), -1); err == nil {
		t.Fatal("WriteAt at a negative offset succeeded")
	}
	// The offset did not move: Write and Read start at 0.
	_, err = f.Write([]byte("d"))
	must(t, err)
	buf := make([]byte, 1)
	if _, err := f.Read(buf); err != nil || buf[0] != 'a' {
		t.Fatalf("Read after WriteAt and a 1-byte Write: %q %v", buf, err)
	}
	size := int64(5*PageSize + 2)
	want := func(keep func(p int64) bool) []byte {
		b := make([]byte, size)
		copy(b, old)
		for p := int64(0); p*PageSize < size; p++ {
			if keep(p) {
				lo, hi := p*PageSize, min((p+1)*PageSize, size)
				clear(b[lo:hi])
				if lo < int64(len(old)) {
					copy(b[lo:hi], old[lo:min(hi, int64(len(old)))])
				}
				switch p {
				case 0:
					b[0], b[PageSize-1] = 'd', 'b'
				case 1:
					b[PageSize] = 'b'
				case 5:
					b[5*PageSize], b[5*PageSize+1] = 'c', 'c'
				}
			}
		}
		return b
	}
	dirty := map[int64]bool{0: true, 1: true, 3: true, 4: true, 5: true} // page 2 was not touched
	for _, keep := range []map[int64]bool{{}, {0: true}, {1: true, 4: true}, {0: true, 1: true, 3: true, 4: true, 5: true}} {
		var asked []int64
		c := fsys.CrashWith(outcome{
			size: func(_ string, _, cur int64) int64 { return cur },
			page: func(_ string, p int64) bool { asked = append(asked, p); return keep[p] },
		})
		for _, p := range asked {
			if !dirty[p] {
				t.Fatalf("page %d is dirty, but no write touched it", p)
			}
		}
		if len(asked) != len(dirty) {
			t.Fatalf("dirty pages %v, want %v", asked, slices.Sorted(maps.Keys(dirty)))
		}
		if got := readFile(t, c, "/f"); !bytes.Equal(got, want(func(p int64) bool { return keep[p] })) {
			t.Fatalf("keeping pages %v: the crashed file differs from the model", keep)
		}
	}
	must(t, f.Sync())
	if got := readFile(t, fsys.CrashWith(loseAll), "/f"); !bytes.Equal(got, want(func(int64) bool { return true })) {
		t.Fatal("after Sync the writes are not durable")
	}
	must(t, f.Close())
	if _, err := wa.WriteAt([]byte("x"), 0); !errors.Is(err, fs.ErrClosed) {
		t.Fatalf("WriteAt after Close: %v", err)
	}
	a, err := fsys.OpenFile("/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	if _, err := a.(io.WriterAt).WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("WriteAt on an O_APPEND file succeeded")
	}
	must(t, a.Close())
	r, err := fsys.OpenFile("/f", os.O_RDONLY, 0)
	must(t, err)
	if _, err := r.(io.WriterAt).WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("WriteAt on a read-only file succeeded")
	}
	must(t, r.Close())

	// Through the hook.
	var ops []string
	h := WithHook(fsys, func(op, name string) error { ops = append(ops, op+" "+name); return nil })
	hf, err := h.OpenFile("/f", os.O_RDWR, 0)
	must(t, err)
	hw, ok := hf.(io.WriterAt)
	if !ok {
		t.Fatal("a hooked crashfs file has no WriteAt")
	}
	_, err = hw.WriteAt([]byte("e"), 1)
	must(t, err)
	must(t, hf.Close())
	if got := strings.Join(ops, "|"); got != "OpenFile /f|WriteAt /f|Close /f" {
		t.Fatalf("operations %s", got)
	}
	if got := readFile(t, fsys, "/f"); got[1] != 'e' {
		t.Fatalf("the hooked WriteAt wrote %q", got[:2])
	}
	pf, err := WithHook(noWriteAtFS{fsys}, func(string, string) error { return nil }).OpenFile("/f", os.O_RDWR, 0)
	must(t, err)
	if _, ok := pf.(io.WriterAt); ok {
		t.Fatal("a hooked file offers WriteAt over a file without it")
	}
	must(t, pf.Close())
}

// noWriteAtFS is an FS whose files have only vfs.File's methods.
type noWriteAtFS struct{ vfs.FS }

func (x noWriteAtFS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	f, err := x.FS.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return struct{ vfs.File }{f}, nil
}
