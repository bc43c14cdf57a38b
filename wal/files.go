package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/smprelay/smprelay/internal/atomicfile"
	"github.com/smprelay/smprelay/internal/vfs"
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
	tmpExt      = ".tmp" // atomicfile.TempSuffix: how its temporary files end
	lockName    = "LOCK"
	// unsyncedName marks a log whose last run may have left more than one
	// group un-fsynced (fsync mode interval or never): see repairTail.
	unsyncedName = "UNSYNCED"
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
	unsynced  bool     // the UNSYNCED marker is there
}

func listDir(fsys vfs.FS, dir string) (dirListing, error) {
	var l dirListing
	ents, err := fsys.ReadDir(dir)
	if err != nil {
		return l, err
	}
	for _, e := range ents {
		name := e.Name()
		if name == unsyncedName {
			l.unsynced = true
			continue
		}
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

// DirLock is an exclusive lock on a directory's LOCK file (vfs.FS.Lock:
// flock(2) on the OS). The kernel releases it when the process dies, so a
// crash never leaves a stale lock.
type DirLock struct {
	c io.Closer // the lock, held until closed
}

// LockDir creates dir (0700) if needed and locks it for this process. When
// another process (or another DirLock in this one) holds it, the error wraps
// ErrLocked (and vfs.ErrLocked) and names the holder's pid.
func LockDir(dir string) (*DirLock, error) { return lockDir(vfs.OS, dir) }

// lockDir is LockDir on fsys.
func lockDir(fsys vfs.FS, dir string) (*DirLock, error) {
	if err := fsys.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("wal: creating %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockName)
	c, err := fsys.Lock(path)
	if errors.Is(err, vfs.ErrLocked) {
		return nil, &lockedError{dir: dir, pid: readPid(fsys, path), cause: err}
	}
	if err != nil {
		return nil, fmt.Errorf("wal: %w", err) // the error names the file
	}
	// Only the message of a later lockedError reads the pid: a failure to
	// write it costs nothing else, and it is never fsynced.
	if f, err := fsys.OpenFile(path, os.O_WRONLY, fileMode); err == nil {
		if f.Truncate(0) == nil {
			_, _ = f.Write([]byte(strconv.Itoa(os.Getpid()) + "\n"))
		}
		f.Close()
	}
	return &DirLock{c: c}, nil
}

// readPid returns what the LOCK file at path says about its holder.
func readPid(fsys vfs.FS, path string) string {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 64))
	if pid := strings.TrimSpace(string(b)); err == nil && pid != "" {
		return pid
	}
	return "unknown"
}

// lockedError is LockDir's error when the directory is in use: it matches
// ErrLocked and the vfs.ErrLocked it comes from.
type lockedError struct {
	dir, pid string
	cause    error // from vfs.FS.Lock; wraps vfs.ErrLocked
}

func (e *lockedError) Error() string {
	return fmt.Sprintf("%v: %s is locked by process %s; is another smp-server running with this data directory?",
		ErrLocked, e.dir, e.pid)
}

func (e *lockedError) Unwrap() []error { return []error{ErrLocked, e.cause} }

// Unlock releases the lock. The LOCK file stays.
func (l *DirLock) Unlock() error {
	if l == nil || l.c == nil {
		return nil
	}
	err := l.c.Close()
	l.c = nil
	return err
}

// createSegment creates segment num, whose first record will be LSN lsn, as
// a whole header under its final name (atomicfile: temp, fsync, rename,
// fsync the directory).
func (l *Log) createSegment(num, lsn uint64) error {
	path := filepath.Join(l.dir, segmentName(num))
	return atomicfile.WriteFS(l.fs, path, appendFileHeader(nil, kindSegment, num, lsn), fileMode)
}
