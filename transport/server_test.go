package transport

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/panjf2000/gnet/v2"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// fakeConn is the little of gnet.Conn that the handler touches when there is
// no traffic; any other method would panic on the nil embedded interface.
type fakeConn struct {
	gnet.Conn
	ctx any
}

func (f *fakeConn) Context() any         { return f.ctx }
func (f *fakeConn) SetContext(ctx any)   { f.ctx = ctx }
func (f *fakeConn) InboundBuffered() int { return 0 }

// TestPanicContained: a panic while handling one connection closes that
// connection and leaves the handler (and so every other connection) running.
func TestPanicContained(t *testing.T) {
	s := newTestServer(t, nil)
	h := &handler{s: s}
	broken := &conn{} // no Session: Drain dereferences nil
	broken.phase.Store(phaseOpen)
	fc := &fakeConn{ctx: broken}
	if action := h.OnTraffic(fc); action != gnet.Close {
		t.Fatalf("OnTraffic after a panic returned %v, want Close", action)
	}
	h.OnClose(fc, nil) // a nil timer and session panic here too; contained
	if fc.ctx != nil {
		t.Fatal("OnClose did not clear the connection state")
	}
	// The server still serves a healthy connection.
	addrs, served := make(chan net.Addr, 1), make(chan error, 1)
	go func() { served <- s.Serve("127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := smptest.Dial(ctx, (<-addrs).String(), s.o.Key.Public().Fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send(smptest.Ping("p")); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Next(ctx); err != nil || r.Cmd != codec.CmdPONG {
		t.Fatalf("PING after the contained panics: %v %v", r, err)
	}
	if err := s.Shutdown(ctx); err != nil || <-served != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}
