// Package atomicfile replaces files so that a crash or a power cut leaves
// either the old contents or the new, never a mix or nothing: the bytes go to
// a temporary file in the same directory, which is synced, renamed over the
// file, and then the directory is synced so that the rename itself is
// durable. The relay's key and fingerprint, the smp client's state file and
// the write-ahead log's segment headers and snapshots are written this way.
//
// All I/O goes through a vfs.FS (Write uses vfs.OS), so that a test can cut
// the power in the middle of it. A temporary file is named
// ".NAME.RANDOM.tmp" (TempSuffix): a crash can leave one behind, and whoever
// owns the directory may delete such files when nothing is being written.
//
// Every function is safe for concurrent use on different paths; two writers
// of one path must coordinate (the last rename wins). A Pending is used by
// one goroutine.
package atomicfile

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"

	"github.com/smprelay/smprelay/internal/vfs"
)

// TempSuffix ends the name of every temporary file this package makes.
const TempSuffix = ".tmp"

// Write replaces path with b, mode mode, on the operating system's
// filesystem (see WriteFS).
func Write(path string, b []byte, mode fs.FileMode) error {
	return WriteFS(vfs.OS, path, b, mode)
}

// WriteFS replaces path with b, mode mode (the temporary file is made with
// it, so the contents are never readable with a wider mode).
func WriteFS(fsys vfs.FS, path string, b []byte, mode fs.FileMode) error {
	p, err := Create(fsys, path, mode)
	if err != nil {
		return err
	}
	defer p.Abort() // after Commit it does nothing
	if _, err := p.Write(b); err != nil {
		return err
	}
	return p.Commit()
}

// Pending is a replacement of a file being written: its bytes go to a
// temporary file until Commit puts it in place, or Abort deletes it.
type Pending struct {
	fsys      vfs.FS
	f         vfs.File // the temporary file; nil once closed
	path, tmp string
	dirty     bool // written since the last Sync
	done      bool // committed or aborted
}

// errDone is returned by a Pending used after Commit or Abort.
var errDone = errors.New("atomicfile: file already committed or aborted")

// Create starts replacing path (mode mode): a temporary file in path's
// directory, which the caller fills with Write and then Commits or Aborts.
func Create(fsys vfs.FS, path string, mode fs.FileMode) (*Pending, error) {
	dir, base := filepath.Split(path)
	for range 10000 {
		tmp := filepath.Join(dir, "."+base+"."+strconv.FormatUint(rand.Uint64(), 36)+TempSuffix)
		f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		// The umask may have narrowed mode; a caller asking for 0644 gets
		// 0644. vfs.File has no Chmod: only os.File needs it.
		if c, ok := f.(interface{ Chmod(fs.FileMode) error }); ok {
			if err := c.Chmod(mode); err != nil {
				f.Close()
				_ = fsys.Remove(tmp)
				return nil, err
			}
		}
		return &Pending{fsys: fsys, f: f, path: path, tmp: tmp}, nil
	}
	return nil, &fs.PathError{Op: "createtemp", Path: path, Err: fs.ErrExist}
}

// Write appends b to the new contents.
func (p *Pending) Write(b []byte) (int, error) {
	if p.done {
		return 0, errDone
	}
	p.dirty = true
	return p.f.Write(b)
}

// Sync makes the bytes written so far durable (not yet under the final
// name). Commit syncs anyway; a caller syncs early when the fsync must come
// before something else it does (the log's compaction does).
func (p *Pending) Sync() error {
	if p.done {
		return errDone
	}
	if !p.dirty {
		return nil
	}
	if err := p.f.Sync(); err != nil {
		return err
	}
	p.dirty = false
	return nil
}

// Commit syncs the temporary file, closes it, renames it over the path and
// syncs the directory. When it fails before the rename, the caller Aborts;
// once the rename is done, path has the new contents even if the directory
// sync then fails (and the error says so: the rename may not survive a
// crash).
func (p *Pending) Commit() error {
	if err := p.Sync(); err != nil {
		return err
	}
	err := p.f.Close()
	p.f = nil
	if err != nil {
		return err
	}
	if err := p.fsys.Rename(p.tmp, p.path); err != nil {
		return err
	}
	p.done = true
	return p.fsys.SyncDir(filepath.Dir(p.path))
}

// Abort closes and deletes the temporary file; path is left as it was. It
// does nothing after Commit succeeded in renaming, so that it can be
// deferred.
func (p *Pending) Abort() error {
	if p.done {
		return nil
	}
	p.done = true
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
	if err := p.fsys.Remove(p.tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
