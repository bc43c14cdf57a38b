//go:build unix

package vfs

import (
	"fmt"
	"os"
)

// syncDir fsyncs a directory: without it a crash can leave a created,
// renamed or removed entry as it was before.
func syncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("syncing directory %s: %w", name, err)
	}
	return nil
}
