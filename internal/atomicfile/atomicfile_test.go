package atomicfile

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/internal/vfs"
	"github.com/smprelay/smprelay/internal/vfs/crashfs"
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

// TestPowerCut: a power cut before any step of WriteFS, whatever the crash
// keeps of what was not durable, leaves the old contents or the new, never
// a mix or nothing; once WriteFS has returned, the new.
func TestPowerCut(t *testing.T) {
	oldB := bytes.Repeat([]byte("old contents "), 1000) // several pages
	newB := bytes.Repeat([]byte("NEW "), 3000)
	for step := 0; ; step++ {
		base := crashfs.New()
		if err := base.MkdirAll("/d", 0o700); err != nil {
			t.Fatal(err)
		}
		if err := WriteFS(base, "/d/f", oldB, 0o600); err != nil {
			t.Fatal(err)
		}
		var crashed []*crashfs.FS
		n := 0
		fsys := crashfs.WithHook(base, func(op, name string) error {
			if n++; n == step+1 {
				for seed := range uint64(20) {
					crashed = append(crashed, base.Crash(rand.New(rand.NewPCG(seed, uint64(step)))))
				}
			}
			return nil
		})
		if err := WriteFS(fsys, "/d/f", newB, 0o600); err != nil {
			t.Fatal(err)
		}
		done := crashed == nil // every step had its crash: this one cuts after the end
		if done {
			crashed = append(crashed, base.Crash(rand.New(rand.NewPCG(1, 1))))
		}
		for i, c := range crashed {
			f, err := c.OpenFile("/d/f", os.O_RDONLY, 0)
			if err != nil {
				t.Fatalf("cut before step %d, seed %d: %v", step, i, err)
			}
			got, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, newB) && (done || !bytes.Equal(got, oldB)) {
				t.Fatalf("cut before step %d, seed %d: %d bytes that are neither the old contents nor the new", step, i, len(got))
			}
		}
		if done {
			if step < 5 {
				t.Fatalf("WriteFS took %d steps", step)
			}
			return
		}
	}
}
