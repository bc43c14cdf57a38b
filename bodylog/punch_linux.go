package bodylog

import (
	"errors"
	"io"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/smprelay/smprelay/internal/vfs"
)

// punchHole deallocates [off, off+n) of f, keeping its size: the range reads
// as zeros and its whole blocks go back to the file system (fallocate(2)
// FALLOC_FL_PUNCH_HOLE). ok is false, with no error, when f has no file
// descriptor or its file system cannot punch holes: the caller writes zeros.
func punchHole(f vfs.File, off, n int64) (ok bool, err error) {
	var perr error
	if !vfs.WithFD(f, func(fd int) {
		perr = unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	}) {
		return false, nil
	}
	if errors.Is(perr, unix.EOPNOTSUPP) || errors.Is(perr, unix.ENOSYS) {
		return false, nil
	}
	return perr == nil, perr
}

// canErase reports whether dead records of f can be erased in place.
func canErase(f vfs.File) bool {
	_, isConn := f.(syscall.Conn)
	_, isWriterAt := f.(io.WriterAt)
	return isConn || isWriterAt
}

// startWriteback asks the kernel to start writing f's dirty pages back
// (sync_file_range(2) with SYNC_FILE_RANGE_WRITE over the whole file): it
// makes nothing durable and waits for no write to finish, so a failure only
// leaves the work to the next fsync and is ignored.
func startWriteback(f vfs.File) {
	vfs.WithFD(f, func(fd int) { _ = unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE) })
}
