// Package vfs is the filesystem seam of everything that persists relay state:
// the write-ahead log, the disk store and the atomic file writer do all their
// file I/O through an FS, so that a test can run them over a filesystem that
// simulates a power cut (package vfs/crashfs) instead of the operating
// system's, whose page cache survives a kill -9.
//
// OS is the real filesystem. Paths are the host's (filepath), not io/fs paths.
//
// An FS and its Files are safe for concurrent use as the os package's are: a
// File's Write and Sync from one goroutine, ReadAt from any.
package vfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// File is an open file.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Closer
	// Sync makes the file's contents durable (fsync(2)).
	Sync() error
	// Truncate changes the file's size; it is durable after Sync.
	Truncate(size int64) error
	// Stat describes the file.
	Stat() (fs.FileInfo, error)
	// Name is the path the file was opened with.
	Name() string
}

// FS is a filesystem.
type FS interface {
	// OpenFile opens name as os.OpenFile does (O_RDONLY, O_WRONLY, O_RDWR,
	// O_CREATE, O_EXCL, O_TRUNC, O_APPEND). A created file's directory
	// entry is durable only after SyncDir of its directory.
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	// Remove deletes a file or an empty directory; durable after SyncDir.
	Remove(name string) error
	// Rename replaces newname with oldname atomically; durable after SyncDir
	// of the directory (both names are in one directory).
	Rename(oldname, newname string) error
	// ReadDir lists a directory, sorted by name.
	ReadDir(name string) ([]fs.DirEntry, error)
	// MkdirAll creates a directory and its parents, durably.
	MkdirAll(name string, perm fs.FileMode) error
	// Stat describes a file.
	Stat(name string) (fs.FileInfo, error)
	// SyncDir fsyncs a directory, making creations, renames and removals in
	// it durable.
	SyncDir(name string) error
	// Lock takes an exclusive lock on the file name (created if missing)
	// for this process: flock(2) on OS, so the kernel drops it when the
	// process dies. It fails with an error wrapping ErrLocked when another
	// holder has it. Closing the returned Closer releases it.
	Lock(name string) (io.Closer, error)
}

// ErrLocked is wrapped by Lock's error when the lock is held elsewhere.
var ErrLocked = errors.New("vfs: file is locked")

// OS is the operating system's filesystem.
var OS FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // *fs.PathError already names the file
	}
	return f, nil
}

func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) Rename(oldname, newname string) error         { return os.Rename(oldname, newname) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) MkdirAll(name string, perm fs.FileMode) error { return os.MkdirAll(name, perm) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }

func (osFS) SyncDir(name string) error { return syncDir(name) }

// ReadFile reads the whole file name through fsys, refusing one larger than
// limit bytes (which a caller expecting a small file would not want in
// memory).
func ReadFile(fsys FS, name string, limit int64) ([]byte, error) {
	f, err := fsys.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d expected", name, fi.Size(), limit)
	}
	b := make([]byte, fi.Size())
	if _, err := f.ReadAt(b, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	return b, nil
}

// WithFD runs fn with f's operating-system file descriptor and reports
// whether it could: not when f is not an *os.File (a test's file system,
// such as crashfs) or is closed. The descriptor is valid only inside fn.
func WithFD(f File, fn func(fd int)) bool {
	sc, ok := f.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) }) == nil
}
