//go:build unix

package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateFolder: smp's own state folder is tightened to 0700; a folder
// the user chose is left alone unless other users can write to it, which is
// refused with the fix named. Each case goes through store.update, so the
// write (and the folder's sync) runs too.
func TestStateFolder(t *testing.T) {
	cases := []struct {
		name     string
		mode     fs.FileMode
		own      bool
		wantMode fs.FileMode
		wantErr  string
	}{
		{"own 0755 tightened", 0o755, true, 0o700, ""},
		{"own 0770 tightened", 0o770, true, 0o700, ""},
		{"own 0700 kept", 0o700, true, 0o700, ""},
		{"chosen 0755 kept", 0o755, false, 0o755, ""},
		{"chosen sticky 1777 kept", 0o777 | fs.ModeSticky, false, 0o777, ""},
		{"chosen 0775 refused", 0o775, false, 0o775, "chmod go-w"},
		{"chosen 0757 refused", 0o757, false, 0o757, "chmod go-w"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "smp")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tc.mode); err != nil {
				t.Fatal(err)
			}
			st := store{path: filepath.Join(dir, "state.json"), own: tc.own}
			err := st.update(func(s *State) error { s.Contacts["x"] = &Contact{}; return nil })
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("update: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("update: %v, want an error saying %q", err, tc.wantErr)
			}
			fi, err := os.Stat(dir)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tc.wantMode {
				t.Fatalf("folder mode %v, want %v", fi.Mode().Perm(), tc.wantMode)
			}
			if _, err := os.Stat(st.path); (err == nil) != (tc.wantErr == "") {
				t.Fatalf("state file: %v", err)
			}
		})
	}
}
