// Package crashfs is a vfs.FS held in memory that can simulate a power cut:
// Crash returns the filesystem as the machine would find it after losing
// power at that instant, so that a test can check what a writer made
// durable and what recovery does with everything else.
//
// The model, per file and per directory:
//
//   - A file has durable contents (as of its last Sync) and current ones.
//     Every Write, WriteAt and Truncate since the last Sync marks the 4 KiB pages
//     (PageSize) it touched as dirty. After a crash the file is found with
//     its durable size, its current size or any size between (a torn size
//     update), and each dirty page independently holds its new bytes or its
//     old ones; a byte that had none (past the durable size in an old page,
//     past the current size in a new one) reads as zero, as a hole does.
//     Synced bytes are never damaged.
//   - A directory has durable entries (as of its last SyncDir) and the
//     creations, renames and removals made in it since, in order. After a
//     crash a prefix of those operations, of any length, has happened and the
//     rest has not: a metadata journal commits in order (ext4, xfs), so a
//     rename not followed by SyncDir may or may not survive, but never a
//     later operation without an earlier one of the same directory.
//     Directories are independent of each other and of file data: a file
//     created and synced but whose directory was not may be gone.
//   - MkdirAll is durable at once: it syncs each directory it adds an entry
//     to, as vfs.FS promises. Rename keeps both names in one directory (vfs's
//     contract); across directories it fails.
//   - A crash releases every Lock. The FS it is taken from is left as it was
//     (its open Files keep working on it), so a crash can be taken while
//     writers are running: it sees each operation whole, before or after.
//
// Paths are the host's (filepath); the FS has a single root, so "a/b" and
// "/a/b" name the same file. An FS and its Files are safe for concurrent use:
// one mutex serialises every operation.
package crashfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/smprelay/smprelay/internal/vfs"
)

// PageSize is the unit in which un-synced file data survives a crash or not.
const PageSize = 4096

// Errors of operations the model refuses; fs.ErrNotExist, fs.ErrExist and
// fs.ErrClosed are used where the os package would.
var (
	errNotDir    = errors.New("not a directory")
	errIsDir     = errors.New("is a directory")
	errNotEmpty  = errors.New("directory not empty")
	errCrossDir  = errors.New("crashfs: rename across directories")
	errReadOnly  = errors.New("file not open for writing")
	errWriteOnly = errors.New("file not open for reading")
	// errAppendWriteAt: os.File refuses WriteAt on a file opened O_APPEND too.
	errAppendWriteAt = errors.New("WriteAt on a file opened with O_APPEND")
)

// FS is a filesystem in memory. The zero value is not usable; call New.
type FS struct {
	mu    sync.Mutex
	root  *node
	locks map[string]bool // cleaned paths of the files locked
}

var (
	_ vfs.FS      = (*FS)(nil)
	_ io.WriterAt = (*file)(nil) // what a body log needs to erase in place
)

// node is a file or a directory.
type node struct {
	dir  bool
	mode fs.FileMode // permission bits

	// A directory: its entries now, as of its last SyncDir, and the
	// operations in between, in order.
	entries map[string]*node
	durable map[string]*node
	ops     []dirOp

	// A file: its contents now and as of its last Sync, and the pages
	// touched in between.
	data   []byte
	synced []byte
	dirty  map[int64]bool
}

// dirOp is a change to a directory's entries.
type dirOp struct {
	name string // created, removed, or renamed from
	to   string // renamed to ("" for a create or a remove)
	n    *node  // created or renamed (nil for a remove)
}

func newDir(mode fs.FileMode) *node {
	return &node{dir: true, mode: mode, entries: map[string]*node{}, durable: map[string]*node{}}
}

// New returns an empty filesystem: a root directory, durable.
func New() *FS {
	return &FS{root: newDir(0o755), locks: map[string]bool{}}
}

// split cleans name into its components below the root.
func split(name string) []string {
	var out []string
	for _, c := range strings.Split(filepath.ToSlash(filepath.Clean(name)), "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

// walk returns the directory holding name's last component, that
// component, and the node it names (nil when there is none). The root has
// no parent: dir is nil and base "".
func (fsys *FS) walk(op, name string) (dir *node, base string, n *node, err error) {
	cs := split(name)
	if len(cs) == 0 {
		return nil, "", fsys.root, nil
	}
	dir = fsys.root
	for _, c := range cs[:len(cs)-1] {
		next := dir.entries[c]
		switch {
		case next == nil:
			return nil, "", nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		case !next.dir:
			return nil, "", nil, &fs.PathError{Op: op, Path: name, Err: errNotDir}
		}
		dir = next
	}
	base = cs[len(cs)-1]
	return dir, base, dir.entries[base], nil
}

// record applies a change to dir's entries and remembers it as pending.
func (d *node) record(op dirOp) {
	switch {
	case op.to != "":
		d.entries[op.to] = d.entries[op.name]
		delete(d.entries, op.name)
	case op.n != nil:
		d.entries[op.name] = op.n
	default:
		delete(d.entries, op.name)
	}
	d.ops = append(d.ops, op)
}

// syncDir makes d's entries durable.
func (d *node) syncDir() {
	d.durable = maps.Clone(d.entries)
	d.ops = nil
}

// touch marks the pages of [from, to) dirty.
func (n *node) touch(from, to int64) {
	if from >= to {
		return
	}
	if n.dirty == nil {
		n.dirty = map[int64]bool{}
	}
	for p := from / PageSize; p <= (to-1)/PageSize; p++ {
		n.dirty[p] = true
	}
}

// resize sets a file's current size, zero-filling growth.
func (n *node) resize(size int64) {
	old := int64(len(n.data))
	n.grow(size)
	n.data = n.data[:size]
	n.touch(min(old, size), max(old, size))
}

// grow extends a file's current contents with zeros to size, if shorter.
func (n *node) grow(size int64) {
	if old := int64(len(n.data)); size > old {
		n.data = slices.Grow(n.data, int(size-old))[:size]
		clear(n.data[old:]) // the capacity may hold bytes a truncate cut off
	}
}

// sync makes a file's current contents durable, copying only the dirty
// pages: the others are the same in both.
func (n *node) sync() {
	size := len(n.data)
	if len(n.synced) >= size {
		n.synced = n.synced[:size]
	} else {
		n.synced = append(n.synced, n.data[len(n.synced):]...)
	}
	for p := range n.dirty {
		lo := int(p * PageSize)
		if lo < size {
			copy(n.synced[lo:], n.data[lo:min(lo+PageSize, size)])
		}
	}
	n.dirty = nil
}

// OpenFile opens name as os.OpenFile does. The mode of a created file is
// perm exactly (there is no umask).
func (fsys *FS) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return fsys.openLocked(name, flag, perm)
}

func (fsys *FS) openLocked(name string, flag int, perm fs.FileMode) (*file, error) {
	dir, base, n, err := fsys.walk("open", name)
	if err != nil {
		return nil, err
	}
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	switch {
	case n == nil && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case n == nil:
		n = &node{mode: perm.Perm()}
		dir.record(dirOp{name: base, n: n})
	case flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case n.dir:
		return nil, &fs.PathError{Op: "open", Path: name, Err: errIsDir}
	}
	if writable && flag&os.O_TRUNC != 0 {
		n.resize(0)
	}
	return &file{fsys: fsys, n: n, name: name, flag: flag}, nil
}

// Remove deletes a file or an empty directory; durable after SyncDir.
func (fsys *FS) Remove(name string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	dir, base, n, err := fsys.walk("remove", name)
	switch {
	case err != nil:
		return err
	case n == nil:
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	case dir == nil:
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrPermission}
	case n.dir && len(n.entries) > 0:
		return &fs.PathError{Op: "remove", Path: name, Err: errNotEmpty}
	}
	dir.record(dirOp{name: base})
	return nil
}

// Rename replaces newname with oldname; both must be in one directory.
func (fsys *FS) Rename(oldname, newname string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	odir, obase, on, err := fsys.walk("rename", oldname)
	if err != nil {
		return err
	}
	ndir, nbase, nn, err := fsys.walk("rename", newname)
	if err != nil {
		return err
	}
	lerr := func(e error) error { return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: e} }
	switch {
	case on == nil:
		return lerr(fs.ErrNotExist)
	case odir == nil || ndir == nil:
		return lerr(fs.ErrPermission)
	case odir != ndir:
		return lerr(errCrossDir)
	case on == nn:
		return nil
	case nn != nil && nn.dir:
		return lerr(errIsDir)
	case nn != nil && on.dir:
		return lerr(errNotDir)
	}
	odir.record(dirOp{name: obase, to: nbase, n: on})
	return nil
}

// ReadDir lists a directory, sorted by name.
func (fsys *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	_, _, d, err := fsys.walk("readdir", name)
	switch {
	case err != nil:
		return nil, err
	case d == nil:
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: fs.ErrNotExist}
	case !d.dir:
		return nil, &fs.PathError{Op: "readdir", Path: name, Err: errNotDir}
	}
	out := make([]fs.DirEntry, 0, len(d.entries))
	for _, c := range slices.Sorted(maps.Keys(d.entries)) {
		out = append(out, fs.FileInfoToDirEntry(d.entries[c].info(c)))
	}
	return out, nil
}

// MkdirAll creates a directory and its parents, each durably.
func (fsys *FS) MkdirAll(name string, perm fs.FileMode) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	d := fsys.root
	for _, c := range split(name) {
		next := d.entries[c]
		if next == nil {
			next = newDir(perm.Perm())
			d.record(dirOp{name: c, n: next})
			d.syncDir()
		} else if !next.dir {
			return &fs.PathError{Op: "mkdir", Path: name, Err: errNotDir}
		}
		d = next
	}
	return nil
}

// Stat describes a file.
func (fsys *FS) Stat(name string) (fs.FileInfo, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	_, base, n, err := fsys.walk("stat", name)
	switch {
	case err != nil:
		return nil, err
	case n == nil:
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	if base == "" {
		base = string(filepath.Separator)
	}
	return n.info(base), nil
}

// SyncDir makes the creations, renames and removals in a directory durable.
func (fsys *FS) SyncDir(name string) error {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	_, _, d, err := fsys.walk("syncdir", name)
	switch {
	case err != nil:
		return err
	case d == nil:
		return &fs.PathError{Op: "syncdir", Path: name, Err: fs.ErrNotExist}
	case !d.dir:
		return &fs.PathError{Op: "syncdir", Path: name, Err: errNotDir}
	}
	d.syncDir()
	return nil
}

// Lock takes the lock on name, creating the file (0600) if it is missing.
func (fsys *FS) Lock(name string) (io.Closer, error) {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	if _, err := fsys.openLocked(name, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, err
	}
	key := filepath.Join(split(name)...)
	if fsys.locks[key] {
		return nil, fmt.Errorf("%w: %s", vfs.ErrLocked, name)
	}
	fsys.locks[key] = true
	return &lock{fsys: fsys, key: key}, nil
}

type lock struct {
	fsys *FS
	key  string
	done bool // guarded by fsys.mu
}

func (l *lock) Close() error {
	l.fsys.mu.Lock()
	defer l.fsys.mu.Unlock()
	if l.done {
		return fs.ErrClosed
	}
	l.done = true
	delete(l.fsys.locks, l.key)
	return nil
}

// An Outcome decides what a crash keeps of what was not durable. Crash uses
// a random one; a test that needs one case passes its own to CrashWith.
// Paths are those of the crashed filesystem, with a leading separator.
type Outcome interface {
	// DirOps is how many of the n operations on directory dir since its
	// last SyncDir happened (the first ones): 0 to n.
	DirOps(dir string, n int) int
	// Size is the size file name is found with, between its durable and
	// current sizes (both included); called only when they differ.
	Size(name string, durable, current int64) int64
	// Page reports whether dirty page page of file name holds its new bytes.
	Page(name string, page int64) bool
}

// Random is the Outcome of Crash: every choice uniform (a third each for the
// durable size, the current one and one between), drawn from rng in an order
// fixed by the filesystem's contents, so that a seed replays a crash.
func Random(rng *rand.Rand) Outcome { return random{rng} }

type random struct{ rng *rand.Rand }

func (r random) DirOps(_ string, n int) int { return r.rng.IntN(n + 1) }

func (r random) Size(_ string, durable, current int64) int64 {
	switch r.rng.IntN(3) {
	case 0:
		return durable
	case 1:
		return current
	}
	lo, hi := min(durable, current), max(durable, current)
	return lo + r.rng.Int64N(hi-lo+1)
}

func (r random) Page(string, int64) bool { return r.rng.IntN(2) == 0 }

// Crash returns the filesystem as a power cut now would leave it, with the
// choices the model leaves open drawn from rng.
func (fsys *FS) Crash(rng *rand.Rand) *FS { return fsys.CrashWith(Random(rng)) }

// CrashWith returns the filesystem as a power cut now would leave it, with
// the choices the model leaves open made by o. Everything in the result is
// durable and no lock is held; fsys itself does not change.
func (fsys *FS) CrashWith(o Outcome) *FS {
	fsys.mu.Lock()
	defer fsys.mu.Unlock()
	return &FS{root: crashDir(fsys.root, string(filepath.Separator), o), locks: map[string]bool{}}
}

// crashDir is what survives of directory d at path.
func crashDir(d *node, path string, o Outcome) *node {
	entries := maps.Clone(d.durable)
	k := len(d.ops)
	if k > 0 {
		k = min(max(o.DirOps(path, k), 0), k)
	}
	for _, op := range d.ops[:k] {
		switch {
		case op.to != "":
			delete(entries, op.name)
			entries[op.to] = op.n
		case op.n != nil:
			entries[op.name] = op.n
		default:
			delete(entries, op.name)
		}
	}
	out := newDir(d.mode)
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		c, p := entries[name], filepath.Join(path, name)
		if c.dir {
			out.entries[name] = crashDir(c, p, o)
		} else {
			out.entries[name] = crashFile(c, p, o)
		}
	}
	out.syncDir()
	return out
}

// crashFile is what survives of file n at path.
func crashFile(n *node, path string, o Outcome) *node {
	durable, current := int64(len(n.synced)), int64(len(n.data))
	size := durable
	if durable != current {
		size = min(max(o.Size(path, durable, current), min(durable, current)), max(durable, current))
	}
	b := make([]byte, size)
	copy(b, n.synced)
	for _, p := range slices.Sorted(maps.Keys(n.dirty)) {
		lo := p * PageSize
		if lo >= size || !o.Page(path, p) {
			continue
		}
		hi := min(lo+PageSize, size)
		clear(b[lo:hi])
		if lo < current {
			copy(b[lo:hi], n.data[lo:min(hi, current)])
		}
	}
	return &node{mode: n.mode, data: b, synced: slices.Clone(b)}
}

// info describes n under the name name.
func (n *node) info(name string) fs.FileInfo {
	fi := fileInfo{name: name, mode: n.mode, size: int64(len(n.data))}
	if n.dir {
		fi.mode |= fs.ModeDir
		fi.size = 0
	}
	return fi
}

type fileInfo struct {
	name string
	size int64
	mode fs.FileMode
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi fileInfo) Sys() any           { return nil }

// file is an open file: a node, an offset and what the open allowed.
type file struct {
	fsys   *FS
	n      *node
	name   string
	flag   int
	off    int64 // for Read and Write; guarded by fsys.mu
	closed bool  // guarded by fsys.mu
}

// check returns the error for an operation on f, or nil; fsys.mu is held.
func (f *file) check(op string, write bool) error {
	switch {
	case f.closed:
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	case write && f.flag&(os.O_WRONLY|os.O_RDWR) == 0:
		return &fs.PathError{Op: op, Path: f.name, Err: errReadOnly}
	case !write && f.flag&os.O_WRONLY != 0:
		return &fs.PathError{Op: op, Path: f.name, Err: errWriteOnly}
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if f.off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[f.off:])
	f.off += int64(n)
	return n, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.n.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.n.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Write(p []byte) (int, error) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		f.off = int64(len(f.n.data))
	}
	old, end := int64(len(f.n.data)), f.off+int64(len(p))
	f.n.grow(end)
	copy(f.n.data[f.off:], p)
	f.n.touch(min(f.off, old), end)
	f.off = end
	return len(p), nil
}

// WriteAt writes p at off without moving the file offset, as pwrite(2):
// growth zero-fills any gap, and every page it touches (the gap's included)
// is dirty. Like os.File, it refuses a file opened with O_APPEND.
func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if err := f.check("writeat", true); err != nil {
		return 0, err
	}
	if f.flag&os.O_APPEND != 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: errAppendWriteAt}
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: fs.ErrInvalid}
	}
	if len(p) == 0 {
		return 0, nil // pwrite(2) of nothing changes nothing, the size included
	}
	old, end := int64(len(f.n.data)), off+int64(len(p))
	f.n.grow(end)
	copy(f.n.data[off:], p)
	f.n.touch(min(off, old), end)
	return len(p), nil
}

func (f *file) Sync() error {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "sync", Path: f.name, Err: fs.ErrClosed}
	}
	f.n.sync()
	return nil
}

func (f *file) Truncate(size int64) error {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrInvalid}
	}
	f.n.resize(size)
	return nil
}

func (f *file) Stat() (fs.FileInfo, error) {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	return f.n.info(filepath.Base(f.name)), nil
}

func (f *file) Name() string { return f.name }

func (f *file) Close() error {
	f.fsys.mu.Lock()
	defer f.fsys.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	return nil
}
