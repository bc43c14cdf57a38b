//go:build !unix

package bodylog

import "github.com/smprelay/smprelay/internal/vfs"

// allocatedBytes is the file's size where blocks cannot be counted.
func allocatedBytes(_ vfs.File, size int64) int64 { return size }
