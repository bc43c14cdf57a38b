package smptest

import (
	"context"
	"os"
	"testing"
	"time"
)

// Main runs a package's tests and then removes the binaries BuildServer and
// BuildCommand made; call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Guard is t's context, ending a little before the test binary's own
// deadline so that a hang fails with a message rather than a panic. It is a
// guard against hanging, not a performance limit.
func Guard(t *testing.T) context.Context {
	t.Helper()
	ctx := t.Context()
	if dl, ok := t.Deadline(); ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-5*time.Second))
		t.Cleanup(cancel)
	}
	return ctx
}
