package engine

import (
	"testing"

	"github.com/panjf2000/gnet/v2"

	"github.com/smprelay/smprelay/codec"
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
	e, _ := newTestEngine(t, Limits{})
	key, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{Engine: e, Key: key})
	if err != nil {
		t.Fatal(err)
	}
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
	// The handler still serves a healthy connection.
	c := newConn(t, e)
	wantCmd(t, c.one([]byte("\r\np\r\n\r\nPING\r\n")), codec.CmdPONG)
}
