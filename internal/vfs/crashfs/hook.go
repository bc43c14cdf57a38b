package crashfs

import (
	"io"
	"io/fs"

	"github.com/smprelay/smprelay/internal/vfs"
)

// A Hook is called before every operation on a filesystem wrapped by
// WithHook and on its files: op is the method ("OpenFile", "Write", "Sync",
// "SyncDir", …) and name the path concerned. An error it returns fails the
// operation, which does not happen (Close still closes). A test counts
// operations to cut the power at the n-th, and fails all after it.
type Hook func(op, name string) error

// WithHook returns fsys with h called before each operation. It is safe for
// concurrent use if h is.
func WithHook(fsys vfs.FS, h Hook) vfs.FS { return hooked{fsys, h} }

type hooked struct {
	fs vfs.FS
	h  Hook
}

func (x hooked) OpenFile(name string, flag int, perm fs.FileMode) (vfs.File, error) {
	if err := x.h("OpenFile", name); err != nil {
		return nil, err
	}
	f, err := x.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	if _, ok := f.(io.WriterAt); ok {
		return hookedWriterAt{hookedFile{f, x.h}}, nil
	}
	return hookedFile{f, x.h}, nil // no WriteAt, as the file it wraps has none
}

func (x hooked) Remove(name string) error {
	if err := x.h("Remove", name); err != nil {
		return err
	}
	return x.fs.Remove(name)
}

func (x hooked) Rename(oldname, newname string) error {
	if err := x.h("Rename", oldname); err != nil {
		return err
	}
	return x.fs.Rename(oldname, newname)
}

func (x hooked) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := x.h("ReadDir", name); err != nil {
		return nil, err
	}
	return x.fs.ReadDir(name)
}

func (x hooked) MkdirAll(name string, perm fs.FileMode) error {
	if err := x.h("MkdirAll", name); err != nil {
		return err
	}
	return x.fs.MkdirAll(name, perm)
}

func (x hooked) Stat(name string) (fs.FileInfo, error) {
	if err := x.h("Stat", name); err != nil {
		return nil, err
	}
	return x.fs.Stat(name)
}

func (x hooked) SyncDir(name string) error {
	if err := x.h("SyncDir", name); err != nil {
		return err
	}
	return x.fs.SyncDir(name)
}

func (x hooked) Lock(name string) (io.Closer, error) {
	if err := x.h("Lock", name); err != nil {
		return nil, err
	}
	return x.fs.Lock(name)
}

type hookedFile struct {
	f vfs.File
	h Hook
}

func (x hookedFile) Read(p []byte) (int, error) {
	if err := x.h("Read", x.f.Name()); err != nil {
		return 0, err
	}
	return x.f.Read(p)
}

func (x hookedFile) ReadAt(p []byte, off int64) (int, error) {
	if err := x.h("ReadAt", x.f.Name()); err != nil {
		return 0, err
	}
	return x.f.ReadAt(p, off)
}

func (x hookedFile) Write(p []byte) (int, error) {
	if err := x.h("Write", x.f.Name()); err != nil {
		return 0, err
	}
	return x.f.Write(p)
}

func (x hookedFile) Sync() error {
	if err := x.h("Sync", x.f.Name()); err != nil {
		return err
	}
	return x.f.Sync()
}

func (x hookedFile) Truncate(size int64) error {
	if err := x.h("Truncate", x.f.Name()); err != nil {
		return err
	}
	return x.f.Truncate(size)
}

func (x hookedFile) Stat() (fs.FileInfo, error) {
	if err := x.h("Stat", x.f.Name()); err != nil {
		return nil, err
	}
	return x.f.Stat()
}

func (x hookedFile) Name() string { return x.f.Name() }

func (x hookedFile) Close() error {
	herr := x.h("Close", x.f.Name())
	if err := x.f.Close(); herr == nil {
		return err
	}
	return herr
}

// hookedWriterAt is a hookedFile whose file writes at an offset (crashfs's
// and os's do): it offers WriteAt too, hooked as "WriteAt".
type hookedWriterAt struct{ hookedFile }

func (x hookedWriterAt) WriteAt(p []byte, off int64) (int, error) {
	if err := x.h("WriteAt", x.f.Name()); err != nil {
		return 0, err
	}
	return x.f.(io.WriterAt).WriteAt(p, off)
}
