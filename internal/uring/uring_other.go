//go:build !linux

package uring

import "errors"

// ErrUnavailable: io_uring is Linux's; elsewhere callers use blocking calls.
var ErrUnavailable = errors.New("uring: io_uring unavailable")

// Ring is never made outside Linux.
type Ring struct{}

// New always fails outside Linux.
func New(uint32) (*Ring, error) { return nil, ErrUnavailable }

func (*Ring) Close() error                                { return nil }
func (*Ring) Entries() int                                { return 0 }
func (*Ring) FsyncThenWake(int, uint64, int, uint64) bool { return false }
func (*Ring) Submit() error                               { return ErrUnavailable }
func (*Ring) Wait() error                                 { return ErrUnavailable }
func (*Ring) Reap(func(uint64, int32))                    {}
