package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/fakerelay"
)

// The tests in this file run the client against fakerelay, a relay that
// breaks SPEC on purpose. What must hold whatever it does: the client's
// memory stays bounded (pushes it did not ask for fail the link at once,
// the event queue is capped), no call waits past Options.Timeout, and no
// message is delivered twice without being marked Redelivered.

// hostileOptions never reconnect, so that the link's failure ends the Conn
// and its cause is c.Err().
func hostileOptions(r *fakerelay.Relay) Options {
	return Options{Fingerprint: r.Fingerprint, NoReconnect: true, PingInterval: -1, Timeout: time.Minute}
}

// flood sends ts over and over until the client goes away.
func flood(s *fakerelay.Session, ts ...[]byte) {
	for {
		if err := s.Send(ts...); err != nil {
			return
		}
	}
}

// repeat returns n copies of t.
func repeat(t []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = t
	}
	return out
}

// checkBounded checks what the Conn keeps per queue and in its event queue.
func checkBounded(t *testing.T, c *Conn) {
	t.Helper()
	c.mu.Lock()
	subs, last, held := len(c.subs), len(c.lastMsg), len(c.held)
	c.mu.Unlock()
	if last > subs || held > subs {
		t.Errorf("the Conn keeps %d lastMsg and %d held entries for %d subscribed queues", last, held, subs)
	}
	if n, limit := c.ev.waiting(), c.opts.MaxEvents+2*subs; n > limit {
		t.Errorf("%d events waiting, over the limit of %d", n, limit)
	}
}

// TestHostilePushes: a relay that pushes MSG or END the client never asked
// for — for queues it has not subscribed to, or a second MSG on a queue
// before the first was acknowledged — fails the link on the first one, with
// an error that says what the relay did, and the client keeps nothing of
// it. The floods do not stop until the client hangs up, as the review's
// relay (1M ENDs, 3M MSGs) did not.
func TestHostilePushes(t *testing.T) {
	foreign := fakerelay.RandomID()
	cases := []struct {
		name  string
		after func(s *fakerelay.Session, rid []byte) // runs once the client's NEW is answered with rid
		msgs  int                                    // messages the client may deliver before the link fails
		want  string
	}{
		{"flood of END for foreign queues", func(s *fakerelay.Session, _ []byte) {
			flood(s, repeat(codec.AppendEND(nil, foreign), 200)...)
		}, 0, "pushed END for queue"},
		{"flood of MSG for foreign queues", func(s *fakerelay.Session, _ []byte) {
			flood(s, repeat(codec.AppendMSG(nil, nil, foreign, fakerelay.RandomMsgID(), 0, []byte("x")), 100)...)
		}, 0, "pushed MSG for queue"},
		{"MSG for a queue deleted before", func(s *fakerelay.Session, rid []byte) {
			c, err := s.Next() // the DEL
			if err != nil || c.Cmd != codec.CmdDEL {
				return
			}
			s.Send(codec.AppendOK(nil, c.CorrID, c.QueueID), codec.AppendMSG(nil, nil, rid, fakerelay.RandomMsgID(), 0, nil))
		}, 0, "pushed MSG for queue"},
		{"the same MSG pushed twice", func(s *fakerelay.Session, rid []byte) {
			m := codec.AppendMSG(nil, nil, rid, fakerelay.RandomMsgID(), 0, []byte("once"))
			s.Send(m, m)
		}, 1, "second MSG"},
		{"flood of MSG on a subscribed queue", func(s *fakerelay.Session, rid []byte) {
			flood(s, codec.AppendMSG(nil, nil, rid, fakerelay.RandomMsgID(), 0, []byte("a")),
				codec.AppendMSG(nil, nil, rid, fakerelay.RandomMsgID(), 0, []byte("b")))
		}, 1, "second MSG"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
				if s.Accept() != nil {
					return
				}
				c, err := s.Next()
				if err != nil || c.Cmd != codec.CmdNEW {
					return
				}
				rid := fakerelay.RandomID()
				if s.Send(codec.AppendIDS(nil, c.CorrID, rid, fakerelay.RandomID())) == nil {
					tc.after(s, rid)
				}
			})
			ctx := guard(t)
			c := dial(t, r.Addr, hostileOptions(r))
			rk, _ := GenerateSigningKey()
			ids, err := c.NewQueue(ctx, rk.Signer())
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(tc.name, "deleted") {
				if err := c.Delete(ctx, ids.RID, rk.Signer()); err != nil {
					t.Fatal(err)
				}
			}
			msgs := 0
			for e := range c.Events() {
				checkBounded(t, c)
				if e.Kind == EventMessage {
					msgs++
				}
			}
			err = c.Err()
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("the Conn ended with %v, want a protocol violation saying %q", err, tc.want)
			}
			// The Conn drops events still queued when it closes, so fewer
			// may arrive; never more.
			if msgs > tc.msgs {
				t.Fatalf("%d messages delivered, want at most %d", msgs, tc.msgs)
			}
			checkBounded(t, c)
		})
	}
}

// TestHostileAnswers: an answer that names the command's corrId but another
// queue, or is of a kind the command cannot get (SPEC §5), fails the call
// and the link with ErrProtocol, and delivers nothing.
func TestHostileAnswers(t *testing.T) {
	other := fakerelay.RandomID()
	cases := []struct {
		name   string
		answer func(c fakerelay.Command) []byte
		call   func(ctx context.Context, c *Conn, rid []byte, rk *SigningKey) error
	}{
		{"SUB answered with a MSG for another queue", func(c fakerelay.Command) []byte {
			return codec.AppendMSG(nil, c.CorrID, other, fakerelay.RandomMsgID(), 0, []byte("not yours"))
		}, func(ctx context.Context, c *Conn, rid []byte, rk *SigningKey) error {
			_, err := c.Subscribe(ctx, rid, rk.Signer())
			return err
		}},
		{"ACK answered with OK for another queue", func(c fakerelay.Command) []byte {
			return codec.AppendOK(nil, c.CorrID, other)
		}, func(ctx context.Context, c *Conn, rid []byte, rk *SigningKey) error {
			_, err := c.Ack(ctx, rid, rk.Signer())
			return err
		}},
		{"SEND answered with a MSG", func(c fakerelay.Command) []byte {
			return codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, nil)
		}, func(ctx context.Context, c *Conn, rid []byte, _ *SigningKey) error {
			return c.Send(ctx, rid, nil, []byte("x"))
		}},
		{"PING answered with IDS", func(c fakerelay.Command) []byte {
			return codec.AppendIDS(nil, c.CorrID, other, other)
		}, func(ctx context.Context, c *Conn, _ []byte, _ *SigningKey) error {
			return c.Ping(ctx)
		}},
		{"DEL answered with an empty queue ID", func(c fakerelay.Command) []byte {
			return codec.AppendOK(nil, c.CorrID, nil)
		}, func(ctx context.Context, c *Conn, rid []byte, rk *SigningKey) error {
			return c.Delete(ctx, rid, rk.Signer())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
				if s.Accept() == nil {
					s.Serve(func(c fakerelay.Command) [][]byte { return [][]byte{tc.answer(c)} })
				}
			})
			c := dial(t, r.Addr, hostileOptions(r))
			rk, _ := GenerateSigningKey()
			err := tc.call(guard(t), c, fakerelay.RandomID(), rk)
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("call returned %v, want ErrProtocol", err)
			}
			for e := range c.Events() {
				if e.Kind == EventMessage {
					t.Fatalf("delivered %v", e)
				}
			}
			if !errors.Is(c.Err(), ErrProtocol) {
				t.Fatalf("the Conn ended with %v, want ErrProtocol", c.Err())
			}
			checkBounded(t, c)
		})
	}
}

// TestHostileRedelivery: a relay that answers SUB with the message it
// delivered before (what SPEC §5 asks after a reconnection) gets it
// delivered again marked Redelivered, so an application shows it once.
func TestHostileRedelivery(t *testing.T) {
	msgID := fakerelay.RandomMsgID()
	r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
		if s.Accept() == nil {
			s.Serve(func(c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, []byte("same"))}
				}
				return fakerelay.Answer(c)
			})
		}
	})
	ctx := guard(t)
	c := dial(t, r.Addr, hostileOptions(r))
	rk, _ := GenerateSigningKey()
	rid := fakerelay.RandomID()
	for i, want := range []bool{false, true, true} {
		if got, err := c.Subscribe(ctx, rid, rk.Signer()); err != nil || !got {
			t.Fatalf("SUB %d: %v %v", i, got, err)
		}
		if e := next(t, c, EventMessage); e.Message.Redelivered != want {
			t.Fatalf("delivery %d: Redelivered %v, want %v", i, e.Message.Redelivered, want)
		}
	}
	checkBounded(t, c)
}

// TestHostileStall: a relay that stalls — says nothing, sends its hello but
// no welcome, or trickles its bytes slowly — makes Dial return with a
// timeout error within Options.Timeout, even though the context given to
// Dial allows far longer.
func TestHostileStall(t *testing.T) {
	cases := []struct {
		name  string
		relay fakerelay.Handler
	}{
		{"no hello", func(ctx context.Context, s *fakerelay.Session) {
			s.Next()
		}},
		{"no welcome", func(ctx context.Context, s *fakerelay.Session) {
			if s.Handshake() == nil {
				s.Next()
			}
		}},
		{"a byte every 20ms", func(ctx context.Context, s *fakerelay.Session) {
			s.Trickle, s.Gap = true, 20*time.Millisecond
			s.Accept()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fakerelay.Start(t, tc.relay)
			opts := hostileOptions(r)
			opts.Timeout = 100 * time.Millisecond
			c, err := Dial(guard(t), r.Addr, opts)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Dial: %v, want a timeout error", err)
			}
		})
	}
}

// TestHostileTrickle: a relay that writes one byte at a time is served
// correctly when it is quick, and a command it answers too slowly returns
// with a timeout error within Options.Timeout.
func TestHostileTrickle(t *testing.T) {
	cases := []struct {
		name    string
		gap     time.Duration
		timeout time.Duration
		ok      bool
	}{
		{"fast", 0, time.Minute, true},
		{"slow", 20 * time.Millisecond, 100 * time.Millisecond, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
				s.Trickle = true
				if s.Accept() == nil {
					s.Gap = tc.gap
					s.Serve(fakerelay.Answer)
				}
			})
			opts := hostileOptions(r)
			opts.Timeout = time.Minute
			c := dial(t, r.Addr, opts)
			ctx, cancel := context.WithTimeout(guard(t), tc.timeout)
			defer cancel()
			err := c.Ping(ctx)
			switch {
			case tc.ok && err != nil:
				t.Fatalf("PING: %v", err)
			case !tc.ok && !errors.Is(err, context.DeadlineExceeded):
				t.Fatalf("PING: %v, want a timeout error", err)
			}
		})
	}
}

// TestEventOverflow: events nobody reads fill the queue up to
// Options.MaxEvents plus two per subscribed queue; then the next message
// closes the Conn with ErrEventOverflow instead of growing the queue.
func TestEventOverflow(t *testing.T) {
	r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
		if s.Accept() == nil {
			s.Serve(func(c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, nil)}
				}
				return fakerelay.Answer(c)
			})
		}
	})
	opts := hostileOptions(r)
	opts.MaxEvents = 4
	c := dial(t, r.Addr, opts)
	ctx := guard(t)
	rk, _ := GenerateSigningKey()
	rid := fakerelay.RandomID()
	limit := opts.MaxEvents + 2 // one subscribed queue
	for i := range limit {
		if _, err := c.Subscribe(ctx, rid, rk.Signer()); err != nil {
			t.Fatalf("SUB %d: %v", i, err)
		}
	}
	if n := c.ev.waiting(); n != limit {
		t.Fatalf("%d events waiting, want %d", n, limit)
	}
	c.Subscribe(ctx, rid, rk.Signer())
	<-c.Done()
	if !errors.Is(c.Err(), ErrEventOverflow) {
		t.Fatalf("the Conn ended with %v, want ErrEventOverflow", c.Err())
	}
}

// TestDispatcherFull: the policy of a full event queue, kind by kind.
func TestDispatcherFull(t *testing.T) {
	cases := []struct {
		kind EventKind
		fits bool // push reports true: dropped quietly, or queued
	}{
		{EventMessage, false},
		{EventEnd, false},
		{EventSubscriptionLost, false},
		{EventDisconnected, true},
		{EventReconnectFailed, true},
		{EventReconnected, true},
	}
	for _, tc := range cases {
		t.Run(tc.kind.String(), func(t *testing.T) {
			d := newDispatcher(nil)
			if !d.push(Event{Kind: EventMessage}, 1) {
				t.Fatal("the first event did not fit")
			}
			if got := d.push(Event{Kind: tc.kind}, 1); got != tc.fits {
				t.Fatalf("push on a full queue: %v, want %v", got, tc.fits)
			}
			if n := d.waiting(); n != 1 {
				t.Fatalf("%d events waiting, want 1", n)
			}
		})
	}
}

// TestHostileReconnect: a link that failed on a foreign push is replaced
// (after a backoff wait, not at once), and EventDisconnected says why.
//
// The first link's relay pushes the foreign END behind its answer to the
// client's first command, not as soon as the welcome is out: the link's
// reader runs from the end of the handshake, so a push right after the
// welcome may fail the link before Dial has installed it, and then Dial
// itself fails (saying why) and there is nothing to reconnect.
func TestHostileReconnect(t *testing.T) {
	r := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
		if s.Accept() != nil {
			return
		}
		first := s.Seq == 1
		s.Serve(func(c fakerelay.Command) [][]byte {
			ts := fakerelay.Answer(c)
			if first {
				first = false
				ts = append(ts, codec.AppendEND(nil, fakerelay.RandomID()))
			}
			return ts
		})
	})
	c := dial(t, r.Addr, fastOptions(r.Fingerprint))
	if err := c.Ping(guard(t)); err != nil {
		t.Fatalf("PING on the first link, answered before the foreign END: %v", err)
	}
	e := next(t, c, EventDisconnected)
	if !errors.Is(e.Err, ErrProtocol) || !strings.Contains(e.Err.Error(), "not subscribed") {
		t.Fatalf("disconnected: %v, want the foreign END named", e.Err)
	}
	next(t, c, EventReconnected)
	if err := c.Ping(guard(t)); err != nil {
		t.Fatal(err)
	}
}

// TestInstallFailedLink: a link that failed between the handshake and its
// installation (Dial's, or a reconnection's) is refused with why it failed,
// so that Dial and EventReconnectFailed name a relay's protocol violation
// instead of calling it a lost connection.
func TestInstallFailedLink(t *testing.T) {
	violation := fmt.Errorf("%w: the relay pushed END for a queue this client has not subscribed to", ErrProtocol)
	for _, tc := range []struct {
		name   string
		closed bool
		cause  error
		want   []error
	}{
		{"protocol violation", false, violation, []error{ErrConnLost, ErrProtocol}},
		{"relay hung up", false, fmt.Errorf("reading: %w", io.EOF), []error{ErrConnLost, io.EOF}},
		{"failed without a cause", false, ErrConnLost, []error{ErrConnLost}},
		{"Conn closed", true, nil, []error{ErrClosed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Conn{ready: make(chan struct{}), closed: tc.closed}
			l := &link{c: c, dead: tc.cause != nil, err: tc.cause}
			err := c.install(l)
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("install: %v, want it to wrap %v", err, w)
				}
			}
			if c.link != nil || l.installed {
				t.Error("the failed link was installed")
			}
		})
	}
}
