package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestPipelining puts 1,200 commands in flight at once on one Conn — SENDs
// that succeed, SENDs that fail and PINGs, interleaved — while a proxy holds
// every answer back, then lets the answers through and checks that each
// caller got the answer to its own command. The commands went out packed:
// far fewer blocks than commands.
func TestPipelining(t *testing.T) {
	const n = 1200
	// 1200 commands at once may leave in as many blocks when the scheduler
	// wakes the writer often, and a third of them fail (a missing queue), so
	// the relay serves this client a slice per turn: room for all of them
	// waiting (the default, 256 blocks, would cut it as a flood).
	srv := smptest.StartServer(t, "--key-type", "x25519", "--quota", "1000", "--max-inbound-blocks", "2048")
	ctx := guard(t)
	owner := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	rk, _ := GenerateSigningKey()
	ids, err := owner.NewQueue(ctx, rk.Signer())
	if err != nil {
		t.Fatal(err)
	}

	proxy := smptest.StartProxy(t, srv.Addr)
	inFlight := make(chan struct{})
	var once sync.Once
	opts := fastOptions(srv.Fingerprint)
	opts.PingInterval = -1
	opts.testPending = func(k int) {
		if k >= n {
			once.Do(func() { close(inFlight) })
		}
	}
	c := dial(t, proxy.Addr, opts)
	blocksBefore := c.Stats().Blocks
	proxy.Hold()

	missing := bytes.Repeat([]byte{0xee}, codec.QueueIDSize)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			body := fmt.Appendf(nil, "m%04d", i)
			switch i % 3 {
			case 0:
				errs[i] = c.Send(ctx, ids.SID, nil, body)
			case 1:
				errs[i] = c.Send(ctx, missing, nil, body)
			case 2:
				errs[i] = c.Ping(ctx)
			}
		})
	}
	select {
	case <-inFlight:
	case <-ctx.Done():
		t.Fatal("the commands never were all in flight")
	}
	blocks := c.Stats().Blocks - blocksBefore
	t.Log("all in flight")
	proxy.Release()
	wg.Wait()
	t.Log("all answered")

	want := map[string]bool{}
	for i, err := range errs {
		switch i % 3 {
		case 0:
			if err != nil {
				t.Fatalf("SEND %d: %v", i, err)
			}
			want[fmt.Sprintf("m%04d", i)] = true
		case 1:
			if !errors.Is(err, codec.ErrAuth) {
				t.Fatalf("SEND %d to a missing queue: %v, want ERR AUTH", i, err)
			}
		case 2:
			if err != nil {
				t.Fatalf("PING %d: %v", i, err)
			}
		}
	}
	// How many commands each wake of the writer finds depends on the
	// scheduler; that they share blocks at all shows the packing.
	if blocks >= n {
		t.Errorf("%d commands took %d blocks: ready commands are not packed", n, blocks)
	}
	t.Logf("%d commands in flight at once went out in %d blocks", n, blocks)

	// Every successful SEND stored exactly its own body.
	got := 0
	for got < len(want) {
		e := next(t, owner, EventMessage)
		if !want[string(e.Message.Body)] {
			t.Fatalf("unexpected or repeated body %q", e.Message.Body)
		}
		delete(want, string(e.Message.Body))
		if _, err := owner.Ack(ctx, ids.RID, rk.Signer()); err != nil {
			t.Fatal(err)
		}
	}
}

// rawQueue creates an unsecured queue on c and returns its IDs and key.
func rawQueue(t *testing.T, c *Conn) (QueueIDs, *SigningKey) {
	t.Helper()
	rk, _ := GenerateSigningKey()
	ids, err := c.NewQueue(guard(t), rk.Signer())
	if err != nil {
		t.Fatal(err)
	}
	return ids, rk
}

// TestReconnectRedelivery cuts the TCP connection while a message is
// delivered and not acknowledged: the Conn reconnects, subscribes again, and
// the server delivers the same message again; the flow then goes on.
func TestReconnectRedelivery(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	proxy := smptest.StartProxy(t, srv.Addr)
	alice := dial(t, proxy.Addr, fastOptions(srv.Fingerprint))
	ids, rk := rawQueue(t, alice)
	bob := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	for _, s := range []string{"one", "two"} {
		if err := bob.Send(ctx, ids.SID, nil, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	first := next(t, alice, EventMessage)
	if string(first.Message.Body) != "one" || first.Message.Redelivered {
		t.Fatalf("first delivery: %v", first)
	}

	proxy.Cut()
	next(t, alice, EventDisconnected)
	// A command issued while the Conn reconnects waits for the new link.
	if err := alice.Ping(ctx); err != nil {
		t.Fatalf("PING across the reconnection: %v", err)
	}
	again := next(t, alice, EventMessage, EventDisconnected)
	if string(again.Message.Body) != "one" || !bytes.Equal(again.Message.ID, first.Message.ID) || !again.Message.Redelivered {
		t.Fatalf("after reconnecting: %v (redelivered %v), want the same message again", again, again.Message.Redelivered)
	}
	next(t, alice, EventReconnected)
	if got, err := alice.Ack(ctx, ids.RID, rk.Signer()); err != nil || !got {
		t.Fatalf("ACK on the new link: %v %v", got, err)
	}
	second := next(t, alice, EventMessage)
	if string(second.Message.Body) != "two" || second.Message.Redelivered {
		t.Fatalf("after ACK: %v", second)
	}
	if got, err := alice.Ack(ctx, ids.RID, rk.Signer()); err != nil || got {
		t.Fatalf("last ACK: %v %v", got, err)
	}
	// Pushes reach the new link.
	if err := bob.Send(ctx, ids.SID, nil, []byte("three")); err != nil {
		t.Fatal(err)
	}
	if e := next(t, alice, EventMessage); string(e.Message.Body) != "three" {
		t.Fatalf("push after reconnecting: %v", e)
	}
	if s := alice.Stats(); s.Reconnects != 1 {
		t.Fatalf("stats %+v, want one reconnection", s)
	}
}

// TestServerRestart stops the server and starts it again on the same data
// directory. The Conn reconnects with backoff and subscribes again. With the
// in-memory store the queue is gone, and the loss arrives as an
// EventSubscriptionLost with ERR AUTH; with the write-ahead log the
// subscription is restored and the unacknowledged message comes again.
func TestServerRestart(t *testing.T) {
	t.Run("memory", func(t *testing.T) { serverRestart(t, "memory") })
	t.Run("wal", func(t *testing.T) { serverRestart(t, "wal") })
}

func serverRestart(t *testing.T, store string) {
	dir := t.TempDir()
	args := []string{"--key-type", "x25519", "--store", store}
	srv := smptest.StartServerIn(t, dir, args...)
	ctx := guard(t)
	proxy := smptest.StartProxy(t, srv.Addr)
	alice := dial(t, proxy.Addr, fastOptions(srv.Fingerprint))
	ids, rk := rawQueue(t, alice)
	if err := alice.Send(ctx, ids.SID, nil, []byte("before")); err != nil {
		t.Fatal(err)
	}
	first := next(t, alice, EventMessage)

	if code := srv.Stop(); code != 0 {
		t.Fatalf("smp-server exited %d", code)
	}
	next(t, alice, EventDisconnected)
	srv2 := smptest.StartServerIn(t, dir, args...)
	if srv2.Fingerprint != srv.Fingerprint {
		t.Fatal("the restarted server has another key")
	}
	proxy.SetTarget(srv2.Addr)

	var lost, again bool
	for {
		e := nextAny(t, alice)
		switch e.Kind {
		case EventDisconnected, EventReconnectFailed:
			continue // an attempt while the server was down
		case EventSubscriptionLost:
			if !bytes.Equal(e.RID, ids.RID) || !errors.Is(e.Err, codec.ErrAuth) {
				t.Fatalf("lost subscription: %v, want ERR AUTH on the queue", e)
			}
			lost = true
			continue
		case EventMessage:
			if string(e.Message.Body) != "before" || !bytes.Equal(e.Message.ID, first.Message.ID) || !e.Message.Redelivered {
				t.Fatalf("after restart: %v, want the unacknowledged message again", e)
			}
			again = true
			continue
		case EventReconnected:
		default:
			t.Fatalf("unexpected %v", e)
		}
		break
	}
	switch store {
	case "memory":
		if !lost || again || alice.Subscribed(ids.RID) {
			t.Fatalf("in-memory restart: lost %v, redelivered %v, subscribed %v; want the loss reported", lost, again, alice.Subscribed(ids.RID))
		}
	case "wal":
		if lost || !again || !alice.Subscribed(ids.RID) {
			t.Fatalf("wal restart: lost %v, redelivered %v, subscribed %v; want the queue back", lost, again, alice.Subscribed(ids.RID))
		}
		if _, err := alice.Ack(ctx, ids.RID, rk.Signer()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReconnectFailed: while the server is down, each failed attempt to
// reconnect is an event that says why and when the next one starts, within
// the backoff bounds; the Conn comes back once a server answers again.
func TestReconnectFailed(t *testing.T) {
	dir := t.TempDir()
	srv := smptest.StartServerIn(t, dir, "--key-type", "x25519")
	proxy := smptest.StartProxy(t, srv.Addr)
	opts := fastOptions(srv.Fingerprint)
	opts.MinBackoff, opts.MaxBackoff = 4*time.Millisecond, 16*time.Millisecond
	c := dial(t, proxy.Addr, opts)
	if code := srv.Stop(); code != 0 {
		t.Fatalf("smp-server exited %d", code)
	}
	next(t, c, EventDisconnected)
	// The backoff doubles from 4 ms to 16 ms, with ±25% jitter.
	for i := range 5 {
		e := next(t, c, EventReconnectFailed)
		if e.Err == nil {
			t.Fatalf("attempt %d failed without a reason", i)
		}
		want := time.Duration(min(4<<i, 16)) * time.Millisecond
		if e.Retry < want*3/4 || e.Retry > want*5/4 {
			t.Fatalf("attempt %d: retry after %v, want %v ±25%%", i, e.Retry, want)
		}
	}
	proxy.SetTarget(smptest.StartServerIn(t, dir, "--key-type", "x25519").Addr)
	next(t, c, EventReconnected, EventReconnectFailed)
	if err := c.Ping(guard(t)); err != nil {
		t.Fatal(err)
	}
}

// TestTimeouts: commands, the handshake and the keep-alive give up with
// errors instead of hanging when the server stops answering.
func TestTimeouts(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)

	t.Run("command context", func(t *testing.T) {
		proxy := smptest.StartProxy(t, srv.Addr)
		c := dial(t, proxy.Addr, fastOptions(srv.Fingerprint))
		proxy.Hold()
		defer proxy.Release()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if err := c.Ping(short); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ping on a stalled server: %v, want DeadlineExceeded", err)
		}
	})

	t.Run("Options.Timeout", func(t *testing.T) {
		proxy := smptest.StartProxy(t, srv.Addr)
		opts := fastOptions(srv.Fingerprint)
		opts.Timeout = 50 * time.Millisecond
		opts.PingInterval = -1
		c := dial(t, proxy.Addr, opts)
		proxy.Hold()
		defer proxy.Release()
		if err := c.Ping(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Ping without a deadline on a stalled server: %v, want DeadlineExceeded", err)
		}
	})

	t.Run("silent server", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				nc, err := ln.Accept()
				if err != nil {
					return
				}
				t.Cleanup(func() { nc.Close() })
			}
		}()
		opts := fastOptions(srv.Fingerprint)
		opts.Timeout = 50 * time.Millisecond
		// No deadline in the context: Options.Timeout bounds the handshake.
		if _, err := Dial(context.Background(), ln.Addr().String(), opts); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial to a server that never says hello: %v, want DeadlineExceeded", err)
		}
	})

	t.Run("keep-alive", func(t *testing.T) {
		proxy := smptest.StartProxy(t, srv.Addr)
		opts := fastOptions(srv.Fingerprint)
		opts.PingInterval = 20 * time.Millisecond
		opts.Timeout = 100 * time.Millisecond
		c := dial(t, proxy.Addr, opts)
		proxy.Hold()
		e := next(t, c, EventDisconnected)
		t.Logf("stalled link dropped: %v", e.Err)
		proxy.Release()
		next(t, c, EventReconnected, EventDisconnected, EventReconnectFailed)
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("close while waiting", func(t *testing.T) {
		proxy := smptest.StartProxy(t, srv.Addr)
		c := dial(t, proxy.Addr, fastOptions(srv.Fingerprint))
		proxy.Hold()
		defer proxy.Release()
		res := make(chan error, 1)
		go func() { res <- c.Ping(ctx) }()
		c.Close()
		if err := <-res; !errors.Is(err, ErrConnLost) && !errors.Is(err, ErrClosed) {
			t.Fatalf("Ping across Close: %v", err)
		}
		if err := c.Ping(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Ping after Close: %v, want ErrClosed", err)
		}
	})
}

func TestFingerprintPinned(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	other := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	if _, err := Dial(ctx, srv.Addr, Options{Fingerprint: other.Fingerprint}); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("Dial with another server's fingerprint: %v, want ErrFingerprint", err)
	}

	// A server that changes key under a live Conn ends it for good.
	proxy := smptest.StartProxy(t, srv.Addr)
	c := dial(t, proxy.Addr, fastOptions(srv.Fingerprint))
	proxy.SetTarget(other.Addr)
	proxy.Cut()
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the Conn kept going with another server key")
	}
	if !errors.Is(c.Err(), ErrFingerprint) {
		t.Fatalf("Err = %v, want ErrFingerprint", c.Err())
	}
}

// TestOnEvent: callback delivery, in order, with commands from the callback.
func TestOnEvent(t *testing.T) {
	srv := smptest.StartServer(t, "--key-type", "x25519")
	ctx := guard(t)
	got := make(chan string, 10)
	var c *Conn
	var rk *SigningKey
	var rid []byte
	var mu sync.Mutex
	opts := fastOptions(srv.Fingerprint)
	opts.OnEvent = func(e Event) {
		if e.Kind != EventMessage {
			return
		}
		got <- string(e.Message.Body)
		mu.Lock()
		defer mu.Unlock()
		if _, err := c.Ack(ctx, rid, rk.Signer()); err != nil {
			got <- err.Error()
		}
	}
	mu.Lock()
	c = dial(t, srv.Addr, opts)
	if c.Events() != nil {
		t.Fatal("Events() is not nil with OnEvent")
	}
	var ids QueueIDs
	ids, rk = rawQueue(t, c)
	rid = ids.RID
	mu.Unlock()
	for _, s := range []string{"a", "b", "c"} {
		if err := c.Send(ctx, ids.SID, nil, []byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"a", "b", "c"} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("got %q, want %q", s, want)
			}
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
}
