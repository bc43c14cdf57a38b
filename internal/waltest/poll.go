package waltest

import (
	"net"
	"sync/atomic"
	"testing"
)

// PollSyncs plays the event loop for a log whose fsyncs go through io_uring
// (wal.Log.AttachSyncs returned nc, readable and detach): a goroutine reads
// nc and calls readable after each read, as the relay's loop does, and
// detach once nc is closed. It returns how many times it called readable.
// The goroutine stops when the test ends.
func PollSyncs(t testing.TB, nc net.Conn, readable, detach func()) *atomic.Int64 {
	t.Helper()
	var reaped atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer detach()
		buf := make([]byte, 64)
		for {
			if _, err := nc.Read(buf); err != nil {
				return
			}
			readable()
			reaped.Add(1)
		}
	}()
	t.Cleanup(func() {
		nc.Close()
		<-done
	})
	return &reaped
}
