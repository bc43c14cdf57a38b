//go:build unix

package bodylog

import (
	"syscall"

	"github.com/smprelay/smprelay/internal/vfs"
)

// allocatedBytes is what f occupies on disk: its allocated blocks when the
// file system says (holes do not count), else size.
func allocatedBytes(f vfs.File, size int64) int64 {
	fi, err := f.Stat()
	if err != nil {
		return size
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return size
}
