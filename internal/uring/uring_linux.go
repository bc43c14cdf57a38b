//go:build linux

// Package uring is the part of Linux's io_uring the relay uses: fsyncs that
// the kernel carries out in its own workers, each followed (hard-linked) by
// a one-byte write to a descriptor, so that whoever polls that descriptor
// learns of the completion. It exists so that no goroutine of a relay pinned
// to one core has to wait in a blocking fsync(2) while it holds the only
// processor (docs/performance.md, "Why the relay idles").
//
// A Ring has one submitter (Submit) and one reaper (Reap) at a time; they
// may be different goroutines: the submission queue belongs to the
// submitter, the completion queue to the reaper.
//
// Layouts are the kernel's (include/uapi/linux/io_uring.h):
//
//	io_uring_params  120 bytes: sq_entries u32, cq_entries u32, flags u32,
//	                 sq_thread_cpu u32, sq_thread_idle u32, features u32,
//	                 wq_fd u32, resv [3]u32, sq_off [10]u32, cq_off [10]u32
//	io_sqring_offsets head, tail, ring_mask, ring_entries, flags, dropped,
//	                 array, resv1 (u32 each), user_addr u64
//	io_cqring_offsets head, tail, ring_mask, ring_entries, overflow, cqes,
//	                 flags, resv1 (u32 each), user_addr u64
//	sqe              64 bytes: opcode u8, flags u8, ioprio u16, fd i32,
//	                 off u64, addr u64, len u32, op_flags u32, user_data u64,
//	                 buf_index u16, personality u16, splice_fd_in i32,
//	                 addr3 u64, pad u64
//	cqe              16 bytes: user_data u64, res i32, flags u32
package uring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	opFsync = 3  // IORING_OP_FSYNC
	opWrite = 23 // IORING_OP_WRITE

	sqeHardlink = 1 << 3 // IOSQE_IO_HARDLINK: the next sqe runs after this one, whatever its result

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32
	cqOff                                                                  [10]uint32
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFDIn  int32
	addr3       uint64
	pad         uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// Ring is one io_uring instance with its mappings.
type Ring struct {
	fd      int
	sqMem   []byte
	cqMem   []byte // == sqMem when single
	single  bool   // IORING_FEAT_SINGLE_MMAP: one mapping for both rings
	sqeMem  []byte
	sqHead  *uint32
	sqTail  *uint32
	sqMask  uint32
	sqArray unsafe.Pointer
	sqes    unsafe.Pointer
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    unsafe.Pointer
	entries uint32
	queued  uint32 // sqes prepared since the last Submit; submitter's
	wake    [1]byte
}

// ErrUnavailable wraps why a Ring could not be made (an old kernel,
// kernel.io_uring_disabled, a seccomp filter): the caller falls back to
// blocking system calls.
var ErrUnavailable = errors.New("uring: io_uring unavailable")

// New makes a ring of entries submission slots (a power of two).
func New(entries uint32) (*Ring, error) {
	var p params
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %w", ErrUnavailable, errno)
	}
	r := &Ring{fd: int(fd), entries: p.sqEntries, wake: [1]byte{1}}
	sqSize := int(p.sqOff[6] + p.sqEntries*4)
	cqSize := int(p.cqOff[5] + p.cqEntries*uint32(unsafe.Sizeof(cqe{})))
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	if r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w: mapping the submission ring: %w", ErrUnavailable, err)
	}
	r.cqMem, r.single = r.sqMem, single
	if !single {
		if r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
			r.Close()
			return nil, fmt.Errorf("%w: mapping the completion ring: %w", ErrUnavailable, err)
		}
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		r.Close()
		return nil, fmt.Errorf("%w: mapping the submission entries: %w", ErrUnavailable, err)
	}
	sq := unsafe.Pointer(&r.sqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff[0]))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff[1]))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff[2]))
	r.sqArray = unsafe.Add(sq, p.sqOff[6])
	r.sqes = unsafe.Pointer(&r.sqeMem[0])
	cq := unsafe.Pointer(&r.cqMem[0])
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff[0]))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff[1]))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff[2]))
	r.cqes = unsafe.Add(cq, p.cqOff[5])
	return r, nil
}

// Close unmaps the rings and closes the ring's descriptor. Operations in
// flight complete in the kernel.
func (r *Ring) Close() error {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
	}
	if r.cqMem != nil && !r.single {
		_ = unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		_ = unix.Munmap(r.sqMem)
	}
	r.sqeMem, r.cqMem, r.sqMem = nil, nil, nil
	return unix.Close(r.fd)
}

// Entries is how many sqes fit in one Submit.
func (r *Ring) Entries() int { return int(r.entries) }

// FsyncThenWake queues an fsync of fd with userData, hard-linked to a
// one-byte write to wakeFD (userData wakeData) that runs once the fsync
// has completed, failed or not. Submit hands the queued entries to the
// kernel. It reports false when the submission ring is full.
func (r *Ring) FsyncThenWake(fd int, userData uint64, wakeFD int, wakeData uint64) bool {
	if r.queued+2 > r.entries-(atomic.LoadUint32(r.sqTail)-atomic.LoadUint32(r.sqHead)) {
		return false
	}
	r.put(sqe{opcode: opFsync, flags: sqeHardlink, fd: int32(fd), userData: userData})
	r.put(sqe{opcode: opWrite, fd: int32(wakeFD), addr: uint64(uintptr(unsafe.Pointer(&r.wake[0]))), len: 1, off: ^uint64(0), userData: wakeData})
	return true
}

func (r *Ring) put(e sqe) {
	tail := atomic.LoadUint32(r.sqTail) + r.queued
	i := tail & r.sqMask
	*(*sqe)(unsafe.Add(r.sqes, uintptr(i)*unsafe.Sizeof(sqe{}))) = e
	*(*uint32)(unsafe.Add(r.sqArray, uintptr(i)*4)) = i
	r.queued++
}

// Submit hands the queued entries to the kernel without waiting for them.
func (r *Ring) Submit() error {
	n := r.queued
	if n == 0 {
		return nil
	}
	atomic.StoreUint32(r.sqTail, atomic.LoadUint32(r.sqTail)+n)
	r.queued = 0
	for n > 0 {
		done, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), 0, 0, 0, 0)
		if errno == unix.EINTR || errno == unix.EAGAIN {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("uring: io_uring_enter: %w", errno)
		}
		n -= uint32(done)
	}
	return nil
}

// Wait blocks until at least one completion is ready (for a reaper that
// has no poller to tell it).
func (r *Ring) Wait() error {
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, 1, 1 /* IORING_ENTER_GETEVENTS */, 0, 0)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return fmt.Errorf("uring: io_uring_enter: %w", errno)
		}
		return nil
	}
}

// Reap calls f for every completion ready, in order, and frees their slots.
func (r *Ring) Reap(f func(userData uint64, res int32)) {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		c := *(*cqe)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*unsafe.Sizeof(cqe{})))
		f(c.userData, c.res)
	}
	atomic.StoreUint32(r.cqHead, head)
}
