//go:build !unix

package vfs

import (
	"errors"
	"io"
)

func (osFS) Lock(name string) (io.Closer, error) {
	return nil, errors.New("vfs: file locks need a unix system")
}
