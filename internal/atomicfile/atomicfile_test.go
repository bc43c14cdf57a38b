package atomicfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/vfs"
)

// TestWrite: the file gets the new contents and the mode asked for, an
// existing file is replaced, and no temporary file is left behind; a write
// into a directory that does not exist fails and creates nothing.
func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	for _, contents := range []string{"first", "second, longer than the first"} {
		if err := Write(path, []byte(contents), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != contents {
			t.Fatalf("read back %q (%v), want %q", got, err, contents)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v (%v), want the file alone", entries, err)
	}
	missing := filepath.Join(dir, "no", "such", "file")
	if err := Write(missing, []byte("x"), 0o600); err == nil {
		t.Fatal("writing into a missing directory succeeded")
	}
	if err := SyncDir(dir); err != nil {
		t.Fatalf("SyncDir: %v", err)
	}
}

// TestPending: the streaming form writes nothing under the final name until
// Commit; Abort leaves the old file and no temporary file; the temporary
// file's name ends in TempSuffix.
func TestPending(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snap")
	if err := Write(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, commit := range []bool{false, true} {
		p, err := Create(vfs.OS, path, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(p.tmp, TempSuffix) || filepath.Dir(p.tmp) != dir {
			t.Fatalf("temporary file %s: want it in %s, ending in %s", p.tmp, dir, TempSuffix)
		}
		for _, part := range []string{"new ", "contents"} {
			if _, err := p.Write([]byte(part)); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Sync(); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != "old" {
			t.Fatalf("before Commit the file holds %q", got)
		}
		want := "old"
		if commit {
			want = "new contents"
			if err := p.Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Abort(); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != want {
			t.Fatalf("commit %v: the file holds %q, want %q", commit, got, want)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 1 {
			t.Fatalf("commit %v: directory holds %v, want the file alone", commit, entries)
		}
		if _, err := p.Write([]byte("x")); err == nil {
			t.Fatal("Write after Commit or Abort succeeded")
		}
	}
}
