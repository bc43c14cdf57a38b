package transport

import (
	"syscall"
	"unsafe"
)

// unacked returns the bytes written to socket fd that the peer has not yet
// acknowledged (SIOCOUTQ), or -1 when that cannot be read.
func unacked(fd int) int {
	var n int32
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TIOCOUTQ, uintptr(unsafe.Pointer(&n))); errno != 0 {
		return -1
	}
	return int(n)
}
