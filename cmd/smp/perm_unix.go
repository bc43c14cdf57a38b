//go:build unix

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// checkFolder guards the folder that holds the state file, which holds
// private keys. The file itself is always written 0600, but whoever can
// write to its folder can swap in a file of their own. The default folder
// (smp's own, in the user's configuration directory) is tightened to 0700
// when it is open to group or others and belongs to the user, since nothing
// else belongs in it; a folder the user chose (--state, SMP_STATE), such as
// the current directory, is left as it is unless other users can write to
// it, which is refused with a message that says how to fix it. A sticky
// folder (/tmp) is accepted: others cannot replace a file they do not own.
func checkFolder(dir string, own bool) error {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state folder: %w", err)
	}
	perm := fi.Mode().Perm()
	st, ok := fi.Sys().(*syscall.Stat_t)
	mine := ok && int(st.Uid) == os.Geteuid()
	if own && perm&0o077 != 0 && mine {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("state folder %s: tightening its mode %v to 0700: %w", dir, perm, err)
		}
		return nil
	}
	if perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0 {
		return fmt.Errorf("state folder %s can be written by other users (mode %v), who could replace the state file and its keys: "+
			"run 'chmod go-w %s' or choose another --state", dir, perm, dir)
	}
	if own && !mine {
		return fmt.Errorf("state folder %s belongs to another user: choose another --state", dir)
	}
	return nil
}
