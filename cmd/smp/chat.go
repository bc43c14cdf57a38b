package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// The duplex convention of smp chat (an application convention on top of
// SMP, not part of it): the joiner's confirmation carries, as its whole
// body, the URI of a queue the joiner created for the answers. The creator
// secures its queue, then confirms the reply queue with its own sender key;
// the joiner secures that one. Since the creator secures its queue before
// confirming the reply queue, the joiner knows both are ready once it has
// accepted.

func chatFlags(fs *flag.FlagSet) func(*env, []string) error {
	co := &createOpts{relays: relaysFlag(fs), server: serverFlags(fs), creatorKey: creatorKeyFlag(fs), kem: kemFlag(fs), quietNotice: true}
	co.qr = fs.Bool("qr", false, "show the invitation as a QR code (default: when standard output is a terminal)")
	co.qrSet = func() bool {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "qr" })
		return set
	}
	co.png = fs.String("png", "", "also write the invitation as a QR code to this PNG `file`")
	co.textForm = new(bool)
	join := fs.String("join", "", "join NAME's chat with this `invitation` instead of creating one")
	return func(e *env, args []string) error { return chat(e, args[0], co, *join) }
}

func chat(e *env, name string, co *createOpts, join string) error {
	s, err := e.st.load()
	if err != nil {
		return err
	}
	ct := s.Contacts[name]
	switch {
	case ct == nil && join != "":
		inv, err := codec.ParseInvitation(join)
		if err != nil {
			return err
		}
		reply, empty := true, ""
		if err := connect(e, name, &inv, &connectOpts{message: &empty, reply: &reply, kem: co.kem}); err != nil {
			return err
		}
	case ct == nil:
		if _, err := create(e, name, co); err != nil {
			return err
		}
		e.notef("waiting for %s to join with: smp chat --join <invitation> <name>", name)
	case join != "":
		return fmt.Errorf("contact %q already exists: run 'smp chat %s' without --join", name, name)
	}

	// Secure the queue we receive on, if not done yet; for the creator this
	// also connects to the reply queue.
	if s, err = e.st.load(); err != nil {
		return err
	}
	ct = s.Contacts[name]
	if ct.Multi != nil && invitedMulti(ct.Multi) {
		e.notef("waiting for %s's confirmation", name)
		if err := accept(e, name, true, true); err != nil {
			return err
		}
		if ct, err = e.contact(name); err != nil {
			return err
		}
	}
	if ct.Multi != nil {
		if len(ct.Multi.Send) == 0 && ct.PendingReply == "" {
			return fmt.Errorf("%s's confirmation offered no queue for your answers: this is a one-way contact (use 'smp receive')", name)
		}
		return talkMulti(e, name)
	}
	if ct.Recv == nil {
		return fmt.Errorf("%s is a contact you only send to: use 'smp send'", name)
	}
	if !ct.Recv.Secured {
		e.notef("waiting for %s's confirmation", name)
		if err := accept(e, name, true, true); err != nil {
			return err
		}
		if s, err = e.st.load(); err != nil {
			return err
		}
		ct = s.Contacts[name]
		if ct.Multi != nil {
			return talkMulti(e, name) // the creator's contact is on several relays
		}
	}
	if ct.Send == nil {
		return fmt.Errorf("%s's confirmation offered no queue for your answers: this is a one-way contact (use 'smp receive')", name)
	}
	return talk(e, name, ct)
}

// talk sends each line of standard input and prints each message received,
// until standard input ends or the command is interrupted.
func talk(e *env, name string, ct *Contact) error {
	rc, err := e.dialFollow(ct.Recv.Server)
	if err != nil {
		return err
	}
	defer rc.Close()
	sc := rc
	if ct.Send.Server != ct.Recv.Server {
		if sc, err = e.dialFollow(ct.Send.Server); err != nil {
			return err
		}
		defer sc.Close()
	}
	ctx, cancel := e.step()
	_, err = ct.Recv.Subscribe(ctx, rc)
	cancel()
	if err != nil {
		return err
	}
	e.notef("chatting with %s: type a line and press Enter; end input (Ctrl-D) to stop", name)

	ctx, stop := context.WithCancel(e.ctx)
	defer stop()
	var wg sync.WaitGroup
	var out sync.Mutex
	recvErr := make(chan error, 1)
	wg.Go(func() {
		w := bufio.NewWriter(e.stdout)
		var lastDropped string
		for {
			m, err := nextMessage(ctx, rc, ct.Recv, e.linkNotice(ct.Recv.Server.Addr))
			if err != nil {
				recvErr <- err
				return
			}
			if body, ok := e.judge(name, ct.Recv, m, &lastDropped); ok {
				out.Lock()
				fmt.Fprintf(w, "%s: %s\n", name, peerText(body, strings.Repeat(" ", len(name)+2)))
				err = w.Flush()
				out.Unlock()
				if err == nil {
					err = e.shown(name, ct.Recv)
				}
				if err != nil {
					recvErr <- err
					return
				}
			}
			actx, cancel := e.step()
			_, err = ct.Recv.Ack(actx, rc)
			cancel()
			if err != nil {
				recvErr <- err
				return
			}
		}
	})

	lines := bufio.NewScanner(e.stdin)
	lines.Buffer(make([]byte, 64<<10), 64<<10)
	var sendErr error
	for sendErr == nil && lines.Scan() {
		sendErr = sendRetrying(ctx, e, sc, name, ct.Send, lines.Bytes())
	}
	if sendErr == nil {
		sendErr = lines.Err()
	}
	stop()
	wg.Wait()
	select {
	case err := <-recvErr:
		if sendErr == nil && !errors.Is(err, context.Canceled) {
			sendErr = err
		}
	default:
	}
	if errors.Is(sendErr, context.Canceled) && e.ctx.Err() == nil {
		sendErr = nil
	}
	return sendErr
}

// sendRetrying sends what is pending, then msg, each retried on ERR AUTH
// for up to --timeout with the same number and signature: right after set-up
// the other side may not have secured our queue yet.
func sendRetrying(ctx context.Context, e *env, c *client.Conn, name string, sq *client.SenderQueue, msg []byte) error {
	if err := checkLength(c, name, sq, msg); err != nil {
		return err
	}
	s, err := e.st.load()
	if err != nil {
		return err
	}
	cur, err := sameSend(s, name, sq)
	if err != nil {
		return err
	}
	if p := cur.Pending; p != nil {
		e.notef("sending message %d to %s again: an earlier send could not confirm it", p.Seq, name)
		if err := sendSettled(ctx, e, c, name, sq, *p); err != nil {
			return err
		}
	}
	o, err := e.prepare(name, sq, msg)
	if err != nil {
		return err
	}
	return sendSettled(ctx, e, c, name, sq, o)
}

// sendSettled sends o, retrying on ERR AUTH, and records the outcome.
func sendSettled(ctx context.Context, e *env, c *client.Conn, name string, sq *client.SenderQueue, o client.Outgoing) error {
	deadline := time.Now().Add(e.timeout)
	wait := 100 * time.Millisecond
	for {
		sctx, cancel := e.step()
		err := sendPrepared(sctx, c, name, sq, o)
		cancel()
		if err == nil || !errors.Is(err, codec.ErrAuth) || time.Now().Add(wait).After(deadline) {
			if serr := e.settle(name, sq, o, err); serr != nil {
				return serr
			}
			return err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return errors.Join(ctx.Err(), e.settle(name, sq, o, err))
		}
		wait = min(2*wait, 2*time.Second)
	}
}
