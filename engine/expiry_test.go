package engine

import (
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/sessiontest"
)

// TestRunExpiry: the engine's own sweep deletes an expired message without
// any transport, and returns once stop is closed.
func TestRunExpiry(t *testing.T) {
	clk := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	e, err := New(Options{BlockSize: testBlock, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	q := newQueue(t, e, codec.SigEd25519)
	wantCmd(t, newConn(t, e).One(tx(t, nil, "s", q.sid, codec.CmdSEND, nil, []byte("old"))), codec.CmdOK)
	clk.Advance(DefaultLimits.MessageTTL + time.Second)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		e.RunExpiry(time.Millisecond, stop)
	}()
	for e.Stats().Messages != 0 { // each tick sweeps; the test's deadline bounds the wait
		select {
		case <-done:
			t.Fatal("RunExpiry returned before stop")
		case <-time.After(time.Millisecond):
		}
	}
	close(stop)
	<-done
}
