package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// Contacts on several relays (issue 17): a Contact whose Multi is set is run
// by client.Contact (docs/contacts.md): every message goes on a queue on
// each of its relays, and is shown once, in order. smp opens the Contact for
// the length of one command; the state goes to the state file through
// ContactOptions.Save, so that the next command resumes where this one
// stopped (messages not yet stored on every relay, rotation steps).
//
// Setting one up keeps the seed's flow (SPEC §9) and smp chat's duplex
// convention, with one addition that tells the joiner which kind of contact
// it joined: the creator confirms the joiner's reply queue with multiMarker
// as the confirmation's content (a seed creator sends an empty one). A
// joiner that reads it turns its seed-shaped contact into a Multi one; the
// creator's other relays then reach it as rotation requests (QNEW with
// mirror), which make both directions use every relay. A joiner that
// offered no reply queue ('smp connect' without --reply) speaks the seed's
// format, so the creator turns its contact into a seed contact on the
// invitation's relay.

// multiMarker is the content of the creator's confirmation of the reply
// queue of a contact on several relays: the library's convention, which a
// client.Contact sends too, invisible to the relays.
const multiMarker = client.ContactConfirmation

// quietWindow is how long 'smp receive' without --follow waits for another
// message after the last one before it ends: a relay delivers a queue's
// next message as soon as the previous one is acknowledged, and the
// Contact does not say when a queue is empty.
const quietWindow = time.Second

// cliContact is a Contact opened by one command.
type cliContact struct {
	*client.Contact
	name     string
	unlock   func()
	activity chan struct{} // a message or notice came; buffered 1

	mu      sync.Mutex      // guards lastErr, shown, down
	lastErr error           // the last error a notice carried
	shown   int             // TEXT messages shown
	down    map[string]bool // relays (by address) reported down and not back up
}

// Close stops the Contact, saving its state, and lets another command
// open it.
func (cc *cliContact) Close() error {
	err := cc.Contact.Close()
	if cc.unlock != nil {
		cc.unlock()
		cc.unlock = nil
	}
	return err
}

// isDown reports whether the relay at addr was reported down since it was
// last up.
func (cc *cliContact) isDown(addr string) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.down[addr]
}

// openMulti runs name's Contact. show, when set, prints a TEXT message;
// creator signs NEW on every relay.
func (e *env) openMulti(name string, show func(client.ContactMessage), creator *client.SigningKey) (*cliContact, error) {
	if err := e.finishReply(name); err != nil {
		return nil, err
	}
	ct, err := e.contact(name)
	if err != nil {
		return nil, err
	}
	if ct.Multi == nil {
		return nil, fmt.Errorf("%s is not a contact on several relays", name)
	}
	// One Contact per contact at a time: each saves its whole state, so two
	// would undo each other's steps.
	unlock, ok, err := tryLockFile(e.st.path + "." + name + ".lock")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("another smp is running for %s (receive --follow or chat?): a contact on several relays "+
			"is used by one smp at a time; 'smp chat %s' sends and receives at once", name, name)
	}
	if ct, err = e.contact(name); err != nil { // as it is now that it is ours
		unlock()
		return nil, err
	}
	if ct.Multi == nil {
		unlock()
		return nil, fmt.Errorf("%s is not a contact on several relays", name)
	}
	cc := &cliContact{name: name, unlock: unlock, activity: make(chan struct{}, 1), down: map[string]bool{}}
	poke := func() {
		select {
		case cc.activity <- struct{}{}:
		default:
		}
	}
	kem := codec.KEMMLKEM768X25519
	for _, r := range ct.Multi.Recv {
		if r.Queue != nil {
			kem = r.Queue.EncryptionKey.Public().Type()
			break
		}
	}
	opts := client.ContactOptions{
		ConnOptions: func(client.Server) client.Options {
			o := client.Options{Timeout: e.timeout, MinBackoff: minBackoff, MaxBackoff: maxBackoff, Proxy: e.proxy}
			if creator != nil {
				o.CreatorKey = creator.Signer()
			}
			return o
		},
		KEM:      kem,
		RetryMin: 100 * time.Millisecond,
		RetryMax: maxBackoff,
		Save: func(st *client.ContactState) error {
			b, err := json.Marshal(st) // st is not kept past the return
			if err != nil {
				return err
			}
			return e.st.update(func(s *State) error {
				cur := s.Contacts[name]
				if cur == nil || cur.Multi == nil {
					return fmt.Errorf("contact %q was deleted meanwhile", name)
				}
				var cp client.ContactState
				if err := json.Unmarshal(b, &cp); err != nil {
					return err
				}
				cur.Multi = &cp
				return nil
			})
		},
		OnMessage: func(m client.ContactMessage) {
			if show != nil {
				show(m)
			}
			cc.mu.Lock()
			cc.shown++
			cc.mu.Unlock()
			poke()
		},
		OnNotice: func(n client.ContactNotice) {
			cc.mu.Lock()
			if n.Err != nil {
				cc.lastErr = n.Err
			}
			// One notice per outage: the dialer reports every failed attempt.
			wasDown := cc.down[n.Relay.Addr]
			switch n.Kind {
			case client.NoticeRelayDown:
				cc.down[n.Relay.Addr] = true
			case client.NoticeRelayUp:
				delete(cc.down, n.Relay.Addr)
			}
			cc.mu.Unlock()
			if (n.Kind == client.NoticeRelayDown && !wasDown) || (n.Kind == client.NoticeRelayUp && wasDown) ||
				(n.Kind != client.NoticeRelayDown && n.Kind != client.NoticeRelayUp) {
				e.contactNotice(name, n)
			}
			poke()
		},
	}
	c, err := client.OpenContact(ct.Multi, opts)
	if err != nil {
		unlock()
		return nil, err
	}
	cc.Contact = c
	return cc, nil
}

// contactNotice tells the user about n, in the user's terms; what the peer
// or a relay wrote goes through notef's peerText filter.
func (e *env) contactNotice(name string, n client.ContactNotice) {
	where := "relay " + n.Relay.Addr
	suffix := ""
	if n.Err != nil {
		suffix = ": " + describe(n.Err, e.timeout)
	}
	switch n.Kind {
	case client.NoticeDropped:
		var why string
		switch {
		case n.Drop == client.DropNone:
			why = "not a message of a contact on several relays"
		case n.Drop == client.DropReplay:
			why = "a replay, or out of order"
		case n.Text != "":
			why = n.Text
		default:
			why = strings.TrimPrefix(dropNotice(name, &client.RecipientQueue{}, client.Received{Drop: n.Drop}), "dropped a message ")
		}
		e.notef("%s: dropped a message (%s)%s", where, why, suffix)
	case client.NoticeMissing:
		if n.From == n.To {
			e.notef("message %d is missing: %s numbered it, and it never arrived on any relay", n.From, name)
		} else {
			e.notef("messages %d…%d are missing: %s numbered them, and they never arrived on any relay", n.From, n.To, name)
		}
	case client.NoticeRelayDown:
		e.notef("%s is down%s; the others carry the messages meanwhile", where, suffix)
	case client.NoticeRelayUp:
		e.notef("%s is back", where)
	default:
		e.notef("%s: %s%s", where, n.Text, suffix)
	}
}

// flushLive waits until every relay that is not down has stored every
// message sent so far.
func (cc *cliContact) flushLive(ctx context.Context) error {
	return cc.WaitFor(ctx, func(st client.ContactStatus) bool {
		for _, r := range st.Send {
			if (r.Status == string(client.RouteActive) || r.Status == string(client.RouteJoining)) && r.Next < st.NextSeq && !cc.isDown(r.Relay.Addr) {
				return false
			}
		}
		return true
	})
}

// ---- create ----

// createMulti makes a contact on relays: its invitation names a queue on
// the first; a queue on each of the others is offered to the peer once it
// has joined (a rotation request that waits in the contact's outbox).
func createMulti(e *env, name string, o *createOpts, relays []client.Server, kem codec.KEMType, creator *client.SigningKey, from string) error {
	c, err := e.dialCreator(relays[0], creator)
	if err != nil {
		return err
	}
	ctx, cancel := e.step()
	st, inv, err := client.CreateContact(ctx, c, kem)
	if err != nil {
		cancel()
		c.Close()
		return createRefused(err, relays[0].Addr, from)
	}
	if err = e.addContact(name, &Contact{Created: time.Now().UTC(), Multi: st}); err != nil {
		_ = st.Recv[0].Queue.Delete(ctx, c) // leave nothing on the server that no state file knows
	}
	cancel()
	c.Close()
	if err != nil {
		return err
	}
	added := 1
	if len(relays) > 1 {
		cc, err := e.openMulti(name, nil, creator)
		if err != nil {
			return err
		}
		for _, srv := range relays[1:] {
			ctx, cancel := e.step()
			err := cc.AddRelay(ctx, srv)
			cancel()
			if err != nil {
				e.notef("the contact is not on relay %s: %s", srv.Addr, describe(createRefused(err, srv.Addr, from), e.timeout))
				continue
			}
			added++
		}
		if err := cc.Close(); err != nil {
			return err
		}
	}
	if err := showInvitation(e, &inv, o); err != nil {
		return err
	}
	if !o.quietNotice {
		e.notef("created a contact for %s on %d relays; give them the invitation, then run 'smp accept %s' "+
			"(they join with 'smp chat --join' or 'smp connect --reply')", name, added, name)
	}
	return nil
}

// ---- accept ----

// acceptMulti secures the queue of a contact's invitation with the first
// confirmation that opens (as accept does for a seed contact), then
// connects to the reply queue it offers, confirming it with multiMarker.
func acceptMulti(e *env, name string, ct *Contact, wait bool) error {
	var entry *client.ContactRecv
	for _, r := range ct.Multi.Recv {
		if r.Status == client.RecvInvited && r.Queue != nil {
			entry = r
		}
	}
	if entry == nil {
		return fmt.Errorf("the queue %s sends to is already secured", name)
	}
	q := entry.Queue
	body, aerr, err := e.confirmation(q, wait)
	if err != nil {
		return err
	}
	// An ACK that failed brings the confirmation again, which the contact
	// drops as a repeated one: record the secured queue first all the same.
	defer func() {
		if aerr != nil {
			e.notef("acknowledging the confirmation failed (%s): the relay will deliver it again, and it will be dropped", describe(aerr, e.timeout))
		}
	}()
	rinv, uerr := codec.ParseInvitationURI(string(body))
	if uerr != nil {
		// A joiner without a reply queue speaks the seed's format.
		if err := e.becomeSeed(name, q); err != nil {
			return err
		}
		e.notef("secured the queue %s sends to; they offered no queue for your answers, so this is a one-way "+
			"contact on relay %s alone ('smp receive %s')", name, q.Server.Addr, name)
		if len(body) > 0 {
			fmt.Fprintln(e.stdout, peerText(body, "  "))
		}
		return nil
	}
	// The secured queue is recorded before the reply queue is confirmed, so
	// that a relay that fails now costs a retry, not the confirmation.
	if err := e.st.update(func(s *State) error {
		cur, err := s.contact(name)
		if err != nil {
			return err
		}
		if cur.Multi == nil {
			return fmt.Errorf("contact %q changed meanwhile", name)
		}
		for _, r := range cur.Multi.Recv {
			if r.Queue != nil && string(r.Queue.RID) == string(q.RID) {
				r.Queue, r.Status = q, client.RecvActive
			}
		}
		cur.PendingReply = rinv.URI()
		return nil
	}); err != nil {
		return err
	}
	e.notef("secured the queue %s sends to: only the key in their confirmation can send to it now", name)
	return e.finishReply(name)
}

// finishReply confirms the reply queue a joiner offered, with multiMarker,
// and makes it the contact's first route; nothing when none is pending.
func (e *env) finishReply(name string) error {
	ct, err := e.contact(name)
	if err != nil || ct.PendingReply == "" {
		return err
	}
	rinv, err := codec.ParseInvitationURI(ct.PendingReply)
	if err != nil {
		return err
	}
	sq, err := client.NewSenderQueue(&rinv)
	if err != nil {
		return err
	}
	err = e.once(sq.Server, func(ctx context.Context, c *client.Conn) error { return sq.Confirm(ctx, c, []byte(multiMarker)) })
	if err != nil {
		return fmt.Errorf("confirming the queue %s offered for your answers (the next smp command for %s tries again): %w", name, name, err)
	}
	if err := e.st.update(func(s *State) error {
		cur, err := s.contact(name)
		if err != nil {
			return err
		}
		if cur.Multi == nil || cur.PendingReply == "" {
			return fmt.Errorf("contact %q changed meanwhile", name)
		}
		cur.Multi.Send = append(cur.Multi.Send, &client.ContactRoute{Queue: sq, Status: client.RouteJoining, From: 1, Next: 1})
		cur.PendingReply = ""
		return nil
	}); err != nil {
		return err
	}
	e.notef("confirmed the queue %s offered for your answers on relay %s", name, sq.Server.Addr)
	return nil
}

// confirmation waits for the first confirmation that opens on q and
// secures q with its key (seed steps 4–5); messages that do not open are
// acknowledged and dropped with a notice. With err nil, q is secured and
// body is the confirmation's content; ackErr is the failure of its ACK.
func (e *env) confirmation(q *client.RecipientQueue, wait bool) (body []byte, ackErr, err error) {
	c, got, err := e.subscribe(q, wait)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	if !got && !wait {
		return nil, nil, errNoConfirmation
	}
	onLink := e.linkNotice(q.Server.Addr)
	if !wait {
		onLink = stopOnLoss
	}
	for {
		m, err := e.nextMessage(c, q, wait, onLink)
		if err != nil {
			return nil, nil, err
		}
		ctx, cancel := e.step()
		env, err := q.Open(m)
		sk, ok := env.SenderKey()
		if err != nil || !ok {
			if err != nil {
				e.notef("dropped a message that does not open with the queue's key (a forged or damaged confirmation)")
			} else {
				e.notef("dropped a message that is not a confirmation")
			}
			more, aerr := q.Ack(ctx, c)
			cancel()
			if aerr != nil {
				return nil, nil, aerr
			}
			if !more && !wait {
				return nil, nil, errNoConfirmation
			}
			continue
		}
		if err := q.Secure(ctx, c, sk); err != nil {
			cancel()
			return nil, nil, err
		}
		_, aerr := q.Ack(ctx, c)
		cancel()
		return env.Body, aerr, nil
	}
}

// becomeSeed turns a contact whose joiner offered no reply queue into a
// seed contact on q, the invitation's queue, and deletes the queues on
// other relays, which no one will send to.
func (e *env) becomeSeed(name string, q *client.RecipientQueue) error {
	var others []*client.RecipientQueue
	if err := e.st.update(func(s *State) error {
		cur, err := s.contact(name)
		if err != nil {
			return err
		}
		if cur.Multi != nil {
			for _, r := range cur.Multi.Recv {
				if r.Queue != nil && string(r.Queue.RID) != string(q.RID) {
					others = append(others, r.Queue)
				}
			}
		}
		cur.Multi, cur.Recv, cur.Send = nil, q, nil
		return nil
	}); err != nil {
		return err
	}
	for _, o := range others {
		if err := e.once(o.Server, o.Delete); err != nil {
			e.notef("could not delete the unused queue on relay %s: %s", o.Server.Addr, describe(err, e.timeout))
		}
	}
	return nil
}

// joinedMulti turns the joiner's seed-shaped contact (a reply queue q it
// receives on, the creator's queue it sends to) into a contact on several
// relays, once the creator's confirmation of q carried multiMarker. Its
// numbering starts after any message sent the seed's way.
func (e *env) joinedMulti(name string, q *client.RecipientQueue) error {
	return e.st.update(func(s *State) error {
		cur, err := s.contact(name)
		if err != nil {
			return err
		}
		sq := cur.Send
		if sq == nil {
			return fmt.Errorf("contact %q has no queue to send on", name)
		}
		next := max(sq.NextSeq, 1)
		if sq.Pending != nil {
			next = max(next, sq.Pending.Seq+1)
		}
		sq.Pending = nil
		cur.Multi = &client.ContactState{Version: client.ContactVersion, NextSeq: next,
			Recv: []*client.ContactRecv{{Server: q.Server, Queue: q, Status: client.RecvActive}},
			Send: []*client.ContactRoute{{Queue: sq, Status: client.RouteJoining, From: next, Next: next}}}
		cur.Recv, cur.Send, cur.SendStatus = nil, nil, ""
		return nil
	})
}

// invitedMulti reports whether the contact's invitation queue still waits
// for the joiner's confirmation.
func invitedMulti(st *client.ContactState) bool {
	for _, r := range st.Recv {
		if r.Status == client.RecvInvited {
			return true
		}
	}
	return false
}

// ---- send ----

// sendMulti queues msg (none with retry) on every relay of the contact and
// waits, within --timeout, until one of them has stored it; relays that
// have not get it from the next smp command that opens the contact.
func sendMulti(e *env, name string, ct *Contact, msg []byte, retry bool) error {
	if invitedMulti(ct.Multi) || (len(ct.Multi.Send) == 0 && ct.PendingReply == "") {
		return fmt.Errorf("%s has not joined yet: run 'smp accept %s' once they have", name, name)
	}
	if retry && len(ct.Multi.Outbox) == 0 {
		e.notef("no message to %s is waiting to be sent again", name)
		return nil
	}
	cc, err := e.openMulti(name, nil, nil)
	if err != nil {
		return err
	}
	defer cc.Close()
	var seq uint64
	if retry {
		seq = ct.Multi.Outbox[len(ct.Multi.Outbox)-1].Seq
		e.notef("sending %d kept messages to %s again", len(ct.Multi.Outbox), name)
	} else {
		if n := cc.MaxText(); len(msg) > n {
			return fmt.Errorf("the message has %d bytes; %s's queues carry at most %d", len(msg), name, n)
		}
		if seq, err = cc.Send(msg); err != nil {
			return err
		}
	}
	ctx, cancel := e.step()
	defer cancel()
	stored := func(st client.ContactStatus) bool {
		for _, r := range st.Send {
			if (r.Status == string(client.RouteActive) || r.Status == string(client.RouteJoining)) && r.Next > seq {
				return true
			}
		}
		return false
	}
	none := func(st client.ContactStatus) bool {
		for _, r := range st.Send {
			if r.Status == string(client.RouteActive) || r.Status == string(client.RouteJoining) {
				return false
			}
		}
		return true
	}
	err = cc.WaitFor(ctx, func(st client.ContactStatus) bool { return stored(st) || none(st) })
	st := cc.Status()
	switch {
	case err == nil && none(st) && !stored(st):
		return &explained{codec.ErrAuth, fmt.Sprintf("every relay refused the message (ERR AUTH): %s suspended or deleted their queues", name)}
	case err != nil:
		cc.mu.Lock()
		last := cc.lastErr
		cc.mu.Unlock()
		why := "no relay stored it in time"
		if last != nil {
			why = describe(last, e.timeout)
		}
		return fmt.Errorf("message %d to %s is kept (%s): the next 'smp send %s', receive or chat sends it again", seq, name, why, name)
	}
	// Give the other relays that are up the rest of the step, without
	// failing on them.
	if cc.flushLive(ctx) != nil || cc.Status().Outbox > 0 {
		for _, r := range cc.Status().Send {
			if (r.Status == string(client.RouteActive) || r.Status == string(client.RouteJoining)) && r.Next <= seq {
				e.notef("relay %s has not stored message %d yet: it is kept, and the next smp command for %s sends it there", r.Relay.Addr, seq, name)
			}
		}
	}
	return nil
}

// ---- receive ----

// receiveMulti shows the contact's messages from every relay, each once, in
// order. Without follow it ends once every relay it can reach has been
// quiet for quietWindow (or --timeout passed without any).
func receiveMulti(e *env, name string, ct *Contact, follow bool) error {
	if invitedMulti(ct.Multi) {
		return fmt.Errorf("the queue %s sends to is not secured yet: run 'smp accept %s' first", name, name)
	}
	w := bufio.NewWriter(e.stdout)
	var wmu sync.Mutex // guards w and werr: OnMessage runs on the Contact's goroutines
	var werr error
	writeErr := func() error {
		wmu.Lock()
		defer wmu.Unlock()
		return werr
	}
	cc, err := e.openMulti(name, func(m client.ContactMessage) {
		wmu.Lock()
		defer wmu.Unlock()
		fmt.Fprintln(w, peerText(m.Text, "  "))
		if err := w.Flush(); err != nil && werr == nil {
			werr = err
		}
	}, nil)
	if err != nil {
		return err
	}
	if follow {
		<-e.ctx.Done()
		cerr := cc.Close()
		return errors.Join(e.ctx.Err(), cerr, writeErr())
	}
	if err := e.waitQuiet(cc); err != nil {
		cc.Close()
		return err
	}
	if err := cc.Close(); err != nil {
		return err
	}
	if err := writeErr(); err != nil {
		return err
	}
	cc.mu.Lock()
	shown := cc.shown
	cc.mu.Unlock()
	if shown == 0 {
		e.notef("no messages from %s", name)
	}
	return nil
}

// waitQuiet waits until every relay of the contact is connected (or
// --timeout has passed: the others are reported down), then until no
// message or notice has come for quietWindow and the outbox is sent.
func (e *env) waitQuiet(cc *cliContact) error {
	ctx, cancel := e.step()
	var err error
	for err == nil {
		ready := true
		for _, r := range cc.Status().Recv {
			if !r.Up && r.Status != string(client.RecvLost) && !cc.isDown(r.Relay.Addr) {
				ready = false
			}
		}
		if ready {
			break
		}
		select {
		case <-cc.activity: // every relay's connection or failure pokes it
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	cancel()
	if e.ctx.Err() != nil {
		return e.ctx.Err()
	}
	up := false
	for _, r := range cc.Status().Recv {
		up = up || r.Up
	}
	if err != nil && !up {
		return fmt.Errorf("none of %s's relays could be reached: %w", cc.name, err)
	}
	t := time.NewTimer(quietWindow)
	defer t.Stop()
	for {
		select {
		case <-cc.activity:
			t.Reset(quietWindow)
		case <-t.C:
			st := cc.Status()
			if st.Outbox == 0 {
				return nil
			}
			// Control messages (rotation) wait to be sent: give the relays
			// that are up one more step, without failing on them.
			ctx, cancel := e.step()
			_ = cc.flushLive(ctx)
			cancel()
			return nil
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
	}
}

// ---- chat ----

// talkMulti sends each line of standard input on every relay of the
// contact and prints each message received, until standard input ends or
// the command is interrupted; then it waits, within --timeout, for the
// relays to store what was sent.
func talkMulti(e *env, name string) error {
	var out sync.Mutex
	w := bufio.NewWriter(e.stdout)
	indent := strings.Repeat(" ", len(name)+2)
	cc, err := e.openMulti(name, func(m client.ContactMessage) {
		out.Lock()
		fmt.Fprintf(w, "%s: %s\n", name, peerText(m.Text, indent))
		_ = w.Flush()
		out.Unlock()
	}, nil)
	if err != nil {
		return err
	}
	defer cc.Close()
	n := 0
	for _, r := range cc.Status().Send {
		if r.Status == string(client.RouteActive) || r.Status == string(client.RouteJoining) {
			n++
		}
	}
	e.notef("chatting with %s, sending on %d relays: type a line and press Enter; end input (Ctrl-D) to stop", name, n)
	lines := bufio.NewScanner(e.stdin)
	lines.Buffer(make([]byte, 64<<10), 64<<10)
	type line struct {
		b   []byte
		err error
	}
	in := make(chan line)
	go func() { // ends at the end of standard input; a blocked read is left to the exit
		for lines.Scan() {
			in <- line{b: append([]byte(nil), lines.Bytes()...)}
		}
		in <- line{err: lines.Err()}
		close(in)
	}()
	for {
		var l line
		select {
		case l = <-in:
		case <-e.ctx.Done():
			return e.ctx.Err()
		}
		if l.b == nil {
			if l.err != nil && !errors.Is(l.err, io.EOF) {
				return l.err
			}
			break
		}
		if n := cc.MaxText(); len(l.b) > n {
			e.notef("not sent: the line has %d bytes; %s's queues carry at most %d", len(l.b), name, n)
			continue
		}
		if _, err := cc.SendWait(e.ctx, l.b); err != nil {
			return err
		}
	}
	ctx, cancel := e.step()
	defer cancel()
	if err := cc.Flush(ctx); err != nil && e.ctx.Err() == nil {
		e.notef("some messages are not on every relay yet: they are kept, and the next smp command for %s sends them", name)
	}
	return nil
}

// ---- switch ----

func switchFlags(fs *flag.FlagSet) func(*env, []string) error {
	from := fs.String("from", "", "the contact's relay to leave, `HOST:PORT` (as 'smp list' shows it)")
	to := fs.String("to", "", "the relay to move to: smp://FINGERPRINT@HOST:PORT, or HOST:PORT of one in $SMP_RELAYS")
	creatorKey := creatorKeyFlag(fs)
	return func(e *env, args []string) error {
		creator, _, err := creatorKey()
		if err != nil {
			return err
		}
		return runSwitch(e, args[0], *from, *to, creator)
	}
}

// runSwitch moves the contact's queue on one relay to another: a new queue
// there, offered to the peer, who moves its own the same way; the old ones
// are deleted once both sides have switched (docs/contacts.md, Rotation).
func runSwitch(e *env, name, fromArg, toArg string, creator *client.SigningKey) error {
	if fromArg == "" || toArg == "" {
		return errors.New("give both --from HOST:PORT and --to RELAY")
	}
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi == nil {
		return fmt.Errorf("%s is a contact on one relay, made before relay lists or without one: only a contact created "+
			"with a relay list (SMP_RELAYS or --relays) can switch relays", name)
	}
	var from client.Server
	for _, r := range ct.Multi.Recv {
		if r.Server.Addr == fromArg || relayText(r.Server) == fromArg {
			from = r.Server
		}
	}
	if from.Addr == "" {
		return fmt.Errorf("%s has no queue on relay %s (see 'smp list')", name, fromArg)
	}
	conf, err := configuredRelays()
	if err != nil {
		return err
	}
	to, err := lookupRelay(toArg, conf)
	if err != nil {
		return fmt.Errorf("--to: %w", err)
	}
	cc, err := e.openMulti(name, nil, creator)
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := e.step()
	defer cancel()
	if err := cc.Switch(ctx, from, to); err != nil {
		return err
	}
	if err := cc.flushLive(ctx); err != nil {
		e.notef("the request is kept: %s's relays have not stored it yet; the next smp command for %s sends it", name, name)
		return nil
	}
	e.notef("asked %s to move from relay %s to %s: the move completes as you and they run smp (receive, chat); "+
		"'smp list' shows where it stands", name, from.Addr, to.Addr)
	return nil
}

// ---- suspend, delete, list ----

// suspendMulti suspends every queue the contact receives on.
func suspendMulti(e *env, name string, ct *Contact) error {
	var errs []error
	for _, r := range ct.Multi.Recv {
		if r.Queue == nil {
			continue
		}
		q := r.Queue
		if err := e.once(q.Server, q.Suspend); err != nil {
			errs = append(errs, fmt.Errorf("relay %s: %w", q.Server.Addr, err))
			continue
		}
		e.notef("suspended the queue %s sends to on relay %s", name, q.Server.Addr)
	}
	if err := e.st.update(func(s *State) error {
		cur, err := s.contact(name)
		if err != nil || cur.Multi == nil {
			return err
		}
		for _, r := range cur.Multi.Recv {
			for _, o := range ct.Multi.Recv {
				if r.Queue != nil && o.Queue != nil && string(r.Queue.RID) == string(o.Queue.RID) {
					r.Queue.Suspended = o.Queue.Suspended
				}
			}
		}
		return nil
	}); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		e.notef("the servers refuse %s's messages now", name)
	}
	return errors.Join(errs...)
}

// deleteMulti deletes every queue the contact receives on; one that its
// relay no longer has, or that cannot be reached, is reported and forgotten.
func deleteMulti(e *env, name string, ct *Contact) error {
	for _, r := range ct.Multi.Recv {
		if r.Queue == nil {
			continue
		}
		q := r.Queue
		switch err := e.once(q.Server, q.Delete); {
		case errors.Is(err, codec.ErrAuth):
			e.notef("relay %s no longer has the queue %s sent to", q.Server.Addr, name)
		case err != nil:
			e.notef("could not delete the queue %s sends to on relay %s (%s): it is left there", name, q.Server.Addr, describe(err, e.timeout))
		default:
			e.notef("deleted the queue %s sends to on relay %s, with its messages", name, q.Server.Addr)
		}
	}
	return nil
}

// listMulti writes one line per queue of a contact on several relays.
func listMulti(w io.Writer, name string, st *client.ContactState) {
	for _, r := range st.Recv {
		status, key := string(r.Status), "-"
		if q := r.Queue; q != nil {
			key = q.EncryptionKey.Public().Type().String()
			if q.Suspended {
				status += ", suspended"
			}
		}
		fmt.Fprintf(w, "%s\treceive\t%s\t%s\t%s\n", name, status, key, r.Server.Addr)
	}
	for _, r := range st.Send {
		status := string(r.Status)
		if k := max(r.Next, r.From); (r.Status == client.RouteActive || r.Status == client.RouteJoining) && st.NextSeq > k {
			status += fmt.Sprintf(", kept to send: %d", min(st.NextSeq-k, uint64(len(st.Outbox))))
		}
		if r.Skipped > 0 {
			status += fmt.Sprintf(", %d skipped", r.Skipped)
		}
		fmt.Fprintf(w, "%s\tsend\t%s\t%v\t%s\n", name, status, r.Queue.EncryptionKey.Type(), r.Queue.Server.Addr)
	}
}
