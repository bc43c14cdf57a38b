//go:build linux

package uring

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFsyncThenWake: an fsync's completion carries its result, and its
// linked write reaches the wake descriptor only after it, also when the
// fsync fails.
func TestFsyncThenWake(t *testing.T) {
	r, err := New(8)
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sp[0])
	defer unix.Close(sp[1])
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("data")); err != nil {
		t.Fatal(err)
	}
	pr, pw, err := os.Pipe() // fsync of a pipe fails with EINVAL
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	if !r.FsyncThenWake(int(f.Fd()), 1, sp[0], 100) || !r.FsyncThenWake(int(pw.Fd()), 2, sp[0], 100) {
		t.Fatal("the ring took fewer than 4 entries")
	}
	if err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	got := map[uint64]int32{}
	var b [8]byte
	for woken := 0; woken < 2; {
		n, err := unix.Read(sp[1], b[:]) // blocking: both writes come
		if err != nil {
			t.Fatal(err)
		}
		woken += n
		r.Reap(func(ud uint64, res int32) {
			if ud != 100 {
				got[ud] = res
			}
		})
	}
	r.Reap(func(ud uint64, res int32) {
		if ud != 100 {
			got[ud] = res
		}
	})
	if res, ok := got[1]; !ok || res != 0 {
		t.Errorf("fsync of a file: %v (seen %v), want 0", res, ok)
	}
	if res, ok := got[2]; !ok || syscall.Errno(-res) != unix.EINVAL {
		t.Errorf("fsync of a pipe: %v (seen %v), want -EINVAL", res, ok)
	}
}
