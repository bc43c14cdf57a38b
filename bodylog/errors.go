package bodylog

import (
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/store"
)

// Sentinel errors; the errors the package returns wrap one of them, with the
// file and offset concerned when there is one (see PosError).
var (
	// ErrCorrupt: the bytes at a ref, or a segment's header, are not what
	// the format says: checksum mismatch, implausible size, a record of
	// another message, a segment missing from the directory. A power cut
	// leaves such bytes wherever a body had not been synced (a page of its
	// record written and not the next, a segment whose header never
	// reached the disk), in every fsync mode of the owner for the records
	// of its last, un-fsynced group; the disk itself may corrupt one. Either
	// way the body will never be read: like ErrMissing it wraps
	// store.ErrBodyLost, so the engine drops the message (and logs this
	// error) instead of answering ERR INTERNAL for its queue forever.
	ErrCorrupt = fmt.Errorf("bodylog: corrupt body log (%w)", store.ErrBodyLost)
	// ErrMissing: there is no record at a ref, only zeros: the body was
	// erased (Delete, Retain), or never reached the disk before a power
	// loss. The owner treats the message as gone.
	// It wraps store.ErrBodyLost, so the engine drops the message.
	ErrMissing = fmt.Errorf("bodylog: no body at ref (%w)", store.ErrBodyLost)
	// ErrRef: a ref this package never returns (offset not aligned or
	// inside the segment header, segment number 0).
	ErrRef = errors.New("bodylog: invalid ref")
	// ErrTooLarge: Append of a body longer than MaxBodyBytes.
	ErrTooLarge = errors.New("bodylog: body too large")
	// ErrFailed: a write or fsync of the log failed; the log accepts no
	// more bodies (no fsync is ever retried, see the package documentation).
	ErrFailed = errors.New("bodylog: log failed")
	// ErrClosed: the log was closed.
	ErrClosed = errors.New("bodylog: log closed")
	// ErrLocked: another process (or another Log in this one) holds the
	// directory.
	ErrLocked = errors.New("bodylog: directory in use")
	// ErrNoErase: the file system's files can neither punch holes nor write
	// at an offset, so dead bodies could not be erased in place.
	ErrNoErase = errors.New("bodylog: file system cannot erase in place")
)

// PosError locates an error in a file of the log.
type PosError struct {
	Err    error  // the sentinel: ErrCorrupt, ErrMissing or ErrFailed
	File   string // path of the segment (or summary) file
	Offset int64  // byte offset in the file of the record (or header) concerned
	Detail string // what is wrong there
}

func (e *PosError) Error() string {
	return fmt.Sprintf("%v: %s at offset %d: %s", e.Err, e.File, e.Offset, e.Detail)
}

func (e *PosError) Unwrap() error { return e.Err }

// posErr returns a PosError wrapping sentinel.
func posErr(sentinel error, file string, off int64, format string, args ...any) error {
	return &PosError{Err: sentinel, File: file, Offset: off, Detail: fmt.Sprintf(format, args...)}
}

// failedErr wraps an I/O error that failed the log: it matches both
// ErrFailed and the underlying error (errors.Is).
type failedErr struct {
	pos *PosError // Err is ErrFailed
	io  error     // what the operating system said
}

func (e *failedErr) Error() string   { return e.pos.Error() + ": " + e.io.Error() }
func (e *failedErr) Unwrap() []error { return []error{e.pos, e.io} }

// failAt returns an error wrapping ErrFailed and cause, located at file and off.
func failAt(file string, off int64, what string, cause error) error {
	return &failedErr{pos: &PosError{Err: ErrFailed, File: file, Offset: off, Detail: what}, io: cause}
}
