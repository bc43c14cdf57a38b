//go:build !linux

package bodylog

import (
	"io"

	"github.com/smprelay/smprelay/internal/vfs"
)

// punchHole is fallocate(2)'s on Linux; elsewhere erasure writes zeros.
func punchHole(vfs.File, int64, int64) (bool, error) { return false, nil }

// canErase reports whether dead records of f can be erased in place.
func canErase(f vfs.File) bool {
	_, ok := f.(io.WriterAt)
	return ok
}

// startWriteback is sync_file_range(2)'s hint on Linux; elsewhere the next
// fsync does all the writing.
func startWriteback(vfs.File) {}
