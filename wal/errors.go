package wal

import (
	"errors"
	"fmt"
)

// Sentinel errors; the errors the package returns wrap one of them, with the
// file and offset concerned when there is one.
var (
	// ErrCorrupt: a file of the log does not hold what the format says, in a
	// place where a torn write cannot explain it. The log does not open.
	ErrCorrupt = errors.New("wal: corrupt log")
	// ErrFailed: a write or fsync of the log failed; the log accepts no more
	// records (see the package documentation on fsync errors).
	ErrFailed = errors.New("wal: log failed")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("wal: log closed")
	// ErrLocked: another process (or another Log in this one) holds the directory.
	ErrLocked = errors.New("wal: directory in use")
	// ErrNotLoaded: Append or Attach before Load.
	ErrNotLoaded = errors.New("wal: log not loaded")
	// ErrRecord: a record the engine handed to Append cannot be encoded.
	ErrRecord = errors.New("wal: invalid record")
)

// errNoRefs answers ReadBody: the log keeps bodies in its records and gives
// out no refs to read them by.
var errNoRefs = errors.New("wal: the log gives out no body refs")

// PosError locates an error in a file of the log.
type PosError struct {
	Err    error  // the sentinel: ErrCorrupt or ErrFailed
	File   string // path of the file
	Offset int64  // byte offset in the file of the frame (or header) concerned
	Detail string // what is wrong there
}

func (e *PosError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d: %s", e.Err, e.File, e.Offset, e.Detail)
}

func (e *PosError) Unwrap() error { return e.Err }

// corruptAt returns an ErrCorrupt PosError.
func corruptAt(file string, off int64, format string, args ...any) error {
	return &PosError{Err: ErrCorrupt, File: file, Offset: off, Detail: fmt.Sprintf(format, args...)}
}

// Heads of errors whose causes already carry the wal: prefix (errwrap keeps
// it once).
var (
	errStartupCompaction = errors.New("wal: start-up compaction")
	errWritingSnapshot   = errors.New("wal: writing snapshot")
)

// ErrBodiesElsewhere: the log names message bodies kept in a body store
// (the disk store's), and this Log was opened without one.
var ErrBodiesElsewhere = errors.New("wal: the log keeps message bodies in a body store: open it with the disk store (smp-server start --store disk)")
