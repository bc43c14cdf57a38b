package wal

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"github.com/smprelay/smprelay/internal/atomicfile"
)

// Modes of what the log creates.
const (
	dirMode  = 0o700
	fileMode = 0o600
)

// File name suffixes; part of the file format.
const (
	segmentExt  = ".wal"
	snapshotExt = ".snap"
	tmpExt      = ".tmp"
	lockName    = "LOCK"
)

func segmentName(n uint64) string  { return fmt.Sprintf("%016x%s", n, segmentExt) }
func snapshotName(n uint64) string { return fmt.Sprintf("%016x%s", n, snapshotExt) }

// parseName returns the number and suffix of a log file name.
func parseName(name string) (uint64, string, bool) {
	ext := filepath.Ext(name)
	base := strings.TrimSuffix(name, ext)
	if len(base) != 16 || (ext != segmentExt && ext != snapshotExt) {
		return 0, "", false
	}
	n, err := strconv.ParseUint(base, 16, 64)
	if err != nil {
		return 0, "", false
	}
	return n, ext, true
}

// dirListing is what a log directory holds.
type dirListing struct {
	segments  []uint64 // segment numbers, ascending
	snapshots []uint64 // snapshot numbers, ascending
	tmps      []string // names of leftover temporary files
}

func listDir(dir string) (dirListing, error) {
	var l dirListing
	ents, err := os.ReadDir(dir)
	if err != nil {
		return l, err
	}
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, tmpExt) {
			l.tmps = append(l.tmps, name)
			continue
		}
		n, ext, ok := parseName(name)
		switch {
		case !ok:
		case ext == segmentExt:
			l.segments = append(l.segments, n)
		case ext == snapshotExt:
			l.snapshots = append(l.snapshots, n)
		}
	}
	sort.Slice(l.segments, func(i, j int) bool { return l.segments[i] < l.segments[j] })
	sort.Slice(l.snapshots, func(i, j int) bool { return l.snapshots[i] < l.snapshots[j] })
	return l, nil
}

// syncDir fsyncs a directory, making renames and removals in it durable.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

// segmentFile is what the writer needs of a segment: os.File, or a test's
// wrapper that fails or counts.
type segmentFile interface {
	Write(p []byte) (int, error)
	Sync() error
	Close() error
}

// openFunc opens a segment file; Log.openFile defaults to osOpen.
type openFunc func(path string, flag int, perm fs.FileMode) (segmentFile, error)

func osOpen(path string, flag int, perm fs.FileMode) (segmentFile, error) {
	return os.OpenFile(path, flag, perm)
}

// DirLock is an exclusive flock(2) on a directory's LOCK file. The kernel
// releases it when the process dies, so a crash never leaves a stale lock.
type DirLock struct {
	f *os.File // the LOCK file, open while locked
}

// LockDir creates dir (0700) if needed and locks it for this process. When
// another process (or another DirLock in this one) holds it, the error wraps
// ErrLocked and names the holder's pid.
func LockDir(dir string) (*DirLock, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("wal: creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, fileMode)
	if err != nil {
		return nil, fmt.Errorf("wal: opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		pid := "unknown"
		if b, rerr := os.ReadFile(path); rerr == nil && len(strings.TrimSpace(string(b))) > 0 {
			pid = strings.TrimSpace(string(b))
		}
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s is locked by process %s; is another smp-server running with this data directory?",
				ErrLocked, dir, pid)
		}
		return nil, fmt.Errorf("wal: locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &DirLock{f: f}, nil
}

// Unlock releases the lock. The LOCK file stays.
func (l *DirLock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the last descriptor releases the flock
	l.f = nil
	return err
}

// createFile writes a new file atomically: header (and whatever fill adds)
// to path.tmp, fsync, rename to path, fsync the directory.
func createFile(path string, contents []byte) error {
	tmp := path + tmpExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, fileMode)
	if err != nil {
		return err
	}
	if _, err := f.Write(contents); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}
