// Package netctx ties a net.Conn's deadlines to a context, for the client
// library and the test client alike.
package netctx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// Do runs f with nc's deadline following ctx: its deadline, and an immediate
// one when ctx is cancelled while f runs. A timeout caused by ctx is reported
// as ctx's error. Safe to call from any goroutine that owns nc's I/O for f.
func Do(ctx context.Context, nc net.Conn, f func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	dl, _ := ctx.Deadline() // zero: no deadline
	if err := nc.SetDeadline(dl); err != nil {
		return err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = nc.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := f()
	if !stop() {
		<-fired
	}
	_ = nc.SetDeadline(time.Time{})
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// The socket's deadline can pass a moment before ctx notices.
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("%w (%v)", cerr, err)
		}
		if !dl.IsZero() && !time.Now().Before(dl) {
			return fmt.Errorf("%w (%v)", context.DeadlineExceeded, err)
		}
	}
	return err
}
