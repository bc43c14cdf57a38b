package transport

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
)

// testEngine is an engine with the memory store and the default block size.
func testEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.New(engine.Options{BlockSize: codec.DefaultBlockSize})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newTestServer(t *testing.T, log *slog.Logger) *Server {
	t.Helper()
	e := testEngine(t)
	key, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{Engine: e, Key: key, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// failingListener accepts nothing: Accept returns err until Close.
type failingListener struct {
	net.Listener // the real one, for Addr and Close
	err          error
	calls        int
}

func (f *failingListener) Accept() (net.Conn, error) {
	f.calls++
	if f.calls > 3 {
		return nil, f.err
	}
	return nil, syscall.ECONNABORTED // retried
}

// TestServeListenerFails: a listener error that is not the network's or a
// peer's ends Serve with an error (the process then exits non-zero), while
// errors a peer can cause are retried.
func TestServeListenerFails(t *testing.T) {
	var logs bytes.Buffer
	s := newTestServer(t, slog.New(slog.NewTextHandler(&logs, nil)))
	real, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &failingListener{Listener: real, err: syscall.EBADF}
	err = s.ServeListener(fl, nil)
	if !errors.Is(err, syscall.EBADF) {
		t.Fatalf("ServeListener = %v, want the listener's error", err)
	}
	if fl.calls != 4 {
		t.Fatalf("Accept called %d times, want 3 retried errors and the fatal one", fl.calls)
	}
	if !strings.Contains(logs.String(), "the relay stopped serving") {
		t.Fatalf("no log line for the failure:\n%s", logs.String())
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown after Serve returned: %v", err)
	}
}

// TestServeShutdown: Serve returns nil after Shutdown, which waits for it.
func TestServeShutdown(t *testing.T) {
	s := newTestServer(t, nil)
	addrs := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() { served <- s.Serve("127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	a := <-addrs
	nc, err := net.Dial("tcp", a.String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Read(make([]byte, 1)); err != nil {
		t.Fatalf("reading the server hello: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case <-s.done: // closed by ServeListener as it returns
	default:
		t.Fatal("Shutdown returned before Serve had finished")
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve after Shutdown = %v, want nil", err)
	}
}

// TestGnetLoggerFailure: a loop's exit line is reported as a failure, and
// production mode keeps an error's reason with addresses redacted.
func TestGnetLoggerFailure(t *testing.T) {
	var logs bytes.Buffer
	failed := make(chan error, 1)
	l := gnetLogger{log: slog.New(slog.NewTextHandler(&logs, nil)), failed: failed}
	l.Errorf("event-loop(%d) is exiting due to error: %v", 1, errors.New("epoll_wait: bad file descriptor"))
	select {
	case err := <-failed:
		if !strings.Contains(err.Error(), "bad file descriptor") {
			t.Fatalf("failure %q lost the reason", err)
		}
	default:
		t.Fatal("a loop's exit was not reported")
	}
	l.Warnf("write to %v failed: %v", "10.1.2.3:5223", errors.New("dial tcp [2001:db8::1]:443: refused"))
	out := logs.String()
	if !strings.Contains(out, "bad file descriptor") || !strings.Contains(out, "refused") {
		t.Fatalf("reasons dropped:\n%s", out)
	}
	if strings.Contains(out, "10.1.2.3") || strings.Contains(out, "2001:db8") || strings.Contains(out, "%v") {
		t.Fatalf("address kept or format unfilled in production mode:\n%s", out)
	}
}

// TestShareRetired: a share that is current when its minute is up is
// retired, and its key dropped, even when no connection comes to replace it;
// a key still held by a handshake is dropped when that handshake ends.
func TestShareRetired(t *testing.T) {
	var s shares
	now := time.Now()
	sh, err := s.acquire(now)
	if err != nil {
		t.Fatal(err)
	}
	s.expire(sh) // what the timer does at the end of the minute
	if s.current.Load() != nil {
		t.Fatal("an expired share is still current")
	}
	if sh.priv == nil {
		t.Fatal("the key was dropped while a handshake held it")
	}
	sh.release()
	if sh.priv != nil || sh.acquire() {
		t.Fatal("the key outlived the last handshake it was sent in")
	}
	next, err := s.acquire(now)
	if err != nil || next == sh {
		t.Fatalf("after expiry acquire gave %p (%v), want a new share", next, err)
	}
	next.release()
}

// TestAcceptedNoDelay: the loops' descriptors have TCP_NODELAY (set by Go's
// Accept on the socket they duplicate; gnet is told not to set it again), so
// a reply is not held back by Nagle's algorithm.
func TestAcceptedNoDelay(t *testing.T) {
	s := newTestServer(t, nil)
	addrs := make(chan net.Addr, 1)
	served := make(chan error, 1)
	go func() { served <- s.Serve("127.0.0.1:0", func(a net.Addr) { addrs <- a }) }()
	defer func() {
		_ = s.Shutdown(context.Background())
		<-served
	}()
	nc, err := net.Dial("tcp", (<-addrs).String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Read(make([]byte, 1)); err != nil {
		t.Fatalf("reading the server hello: %v", err)
	}
	n := 0
	s.conns.each(func(c *conn) {
		n++
		v, err := syscall.GetsockoptInt(c.gc.Fd(), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
		if err != nil || v == 0 {
			t.Errorf("TCP_NODELAY of the loop's descriptor = %d, %v; want on", v, err)
		}
	})
	if n != 1 {
		t.Fatalf("%d connections open, want 1", n)
	}
}
