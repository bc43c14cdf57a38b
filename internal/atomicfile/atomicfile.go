// Package atomicfile replaces small files so that a crash or a power cut
// leaves either the old contents or the new, never a mix or nothing: the
// bytes go to a temporary file in the same directory, which is synced,
// renamed over the file, and then the directory is synced so that the
// rename itself is durable. The relay's key and fingerprint and the smp
// client's state file are written this way.
//
// Every function is safe for concurrent use on different paths; two writers
// of one path must coordinate (the last rename wins).
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with b, mode mode (the temporary file is made with it,
// so the contents are never readable with a wider mode).
func Write(path string, b []byte, mode fs.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("syncing %s after the rename: %w", filepath.Dir(path), err)
	}
	return nil
}
