//go:build unix

package atomicfile

import "os"

// SyncDir fsyncs a directory, making renames and removals in it durable:
// without it a crash can leave the entry pointing at the old file, or at none.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
