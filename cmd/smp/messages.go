package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// Messages are numbered and signed (SPEC §10). The sender's next number and
// the message in flight (Pending) are written to the state file before the
// SEND, so that a message whose SEND may not have been stored — no answer, a
// lost connection, ERR QUOTA, a crash — is sent again unchanged, before any
// new one, by the next send or chat. The recipient's last number shown is
// written before the ACK.

// prepare numbers and signs msg as the next message to name, on the queue
// as it is in the state file now, and stores it as pending.
func (e *env) prepare(name string, sq *client.SenderQueue, msg []byte) (client.Outgoing, error) {
	var o client.Outgoing
	err := e.st.update(func(s *State) error {
		cur, err := sameSend(s, name, sq)
		if err != nil {
			return err
		}
		if o, err = cur.Prepare(msg); errors.Is(err, client.ErrPending) {
			return fmt.Errorf("another smp left message %d to %s pending: run 'smp send --retry %s' first", cur.Pending.Seq, name, name)
		}
		return err
	})
	return o, err
}

// sameSend returns the queue the user sends to name on, as stored, if it is
// still sq's.
func sameSend(s *State, name string, sq *client.SenderQueue) (*client.SenderQueue, error) {
	ct, err := s.contact(name)
	if err != nil {
		return nil, err
	}
	if ct.Send == nil || string(ct.Send.SID) != string(sq.SID) {
		return nil, fmt.Errorf("the queue you send to %s on was replaced meanwhile", name)
	}
	return ct.Send, nil
}

// settle records how sending o ended: a stored message is no longer
// pending and shows that the owner secured the queue; ERR AUTH after that
// shows they suspended or deleted it. A message kept pending is announced.
func (e *env) settle(name string, sq *client.SenderQueue, o client.Outgoing, sendErr error) error {
	var pending bool
	err := e.st.update(func(s *State) error {
		cur, err := sameSend(s, name, sq)
		if err != nil {
			return nil // nothing left to record on
		}
		pending = cur.Sent(o, sendErr)
		ct := s.Contacts[name]
		switch {
		case sendErr == nil:
			ct.SendStatus = sendSecured
		case errors.Is(sendErr, codec.ErrAuth) && ct.SendStatus == sendSecured:
			ct.SendStatus = sendRefused
		}
		return nil
	})
	if pending {
		e.notef("message %d to %s is kept: the next 'smp send %s' or chat sends it again first ('smp send --retry %s' sends only it)",
			o.Seq, name, name, name)
	}
	return err
}

// sendPrepared sends o and explains a refusal in the user's terms; the
// caller settles the outcome.
func sendPrepared(ctx context.Context, c *client.Conn, name string, sq *client.SenderQueue, o client.Outgoing) error {
	err := sq.SendPrepared(ctx, c, o)
	switch {
	case errors.Is(err, codec.ErrAuth):
		return &explained{err, fmt.Sprintf("the server refused the message (ERR AUTH): %s has not accepted your confirmation yet, "+
			"or suspended or deleted the queue", name)}
	case errors.Is(err, codec.ErrQuota):
		return &explained{err, fmt.Sprintf("the server refused the message (ERR QUOTA): %s's queue is full (or the relay's storage is) "+
			"until they receive the messages waiting there; try again later", name)}
	}
	return err
}

// sendPending sends the message an earlier run left pending, if any, and
// settles it.
func (e *env) sendPending(ctx context.Context, c *client.Conn, name string, sq *client.SenderQueue) error {
	s, err := e.st.load()
	if err != nil {
		return err
	}
	cur, err := sameSend(s, name, sq)
	if err != nil || cur.Pending == nil {
		return err
	}
	o := *cur.Pending
	e.notef("sending message %d to %s again: an earlier send could not confirm it", o.Seq, name)
	err = sendPrepared(ctx, c, name, sq, o)
	if serr := e.settle(name, sq, o, err); serr != nil {
		return serr
	}
	return err
}

// checkLength refuses a message longer than the queue carries on c.
func checkLength(c *client.Conn, name string, sq *client.SenderQueue, msg []byte) error {
	if max, err := sq.MaxMessage(c); err == nil && len(msg) > max {
		return fmt.Errorf("the message has %d bytes; %s's queue carries at most %d (its key is %v and the relay's blocks are %d bytes)",
			len(msg), name, max, sq.EncryptionKey.Type(), c.BlockSize())
	}
	return nil
}

// sendMessage sends what is pending, then msg as the next message.
func (e *env) sendMessage(ctx context.Context, c *client.Conn, name string, sq *client.SenderQueue, msg []byte) error {
	if err := checkLength(c, name, sq, msg); err != nil {
		return err
	}
	if err := e.sendPending(ctx, c, name, sq); err != nil {
		return fmt.Errorf("%w; the new message was not sent", err)
	}
	o, err := e.prepare(name, sq, msg)
	if err != nil {
		return err
	}
	err = sendPrepared(ctx, c, name, sq, o)
	if serr := e.settle(name, sq, o, err); serr != nil {
		return serr
	}
	return err
}

// shown records that q's message LastSeq was shown, before it is
// acknowledged (SPEC §10), unless the queue was replaced meanwhile.
func (e *env) shown(name string, q *client.RecipientQueue) error {
	return e.st.update(func(s *State) error {
		ct := s.Contacts[name]
		if ct == nil || ct.Recv == nil || string(ct.Recv.RID) != string(q.RID) {
			return nil
		}
		ct.Recv.LastSeq, ct.Recv.LastMsgID = q.LastSeq, q.LastMsgID
		return nil
	})
}

// judge runs Receive on m and tells the user about a gap before it or why
// it was dropped. It returns the body to show (ok) after storing the new
// last seq; the caller then acknowledges m whatever came of it.
// lastDropped quiets the notice for a dropped message delivered again.
func (e *env) judge(name string, q *client.RecipientQueue, m client.Message, lastDropped *string) (body []byte, ok bool) {
	r := q.Receive(m)
	switch r.Drop {
	case client.DropNone:
		switch {
		case r.FirstMissing == 0:
		case r.FirstMissing == r.Seq-1:
			e.notef("message %d is missing: %s numbered it, and it never arrived", r.FirstMissing, name)
		case r.FirstMissing > 0:
			e.notef("messages %d…%d are missing: %s numbered them, and they never arrived", r.FirstMissing, r.Seq-1, name)
		}
		return r.Body, true
	case client.DropRedelivered:
		return nil, false
	}
	if !(m.Redelivered && *lastDropped == string(m.ID)) {
		e.notef("%s", dropNotice(name, q, r))
	}
	*lastDropped = string(m.ID)
	return nil, false
}

// dropNotice says why a message was dropped, in the user's terms.
func dropNotice(name string, q *client.RecipientQueue, r client.Received) string {
	switch r.Drop {
	case client.DropNotOpen:
		return "dropped a message that does not open with the queue's key"
	case client.DropNoSenderKey:
		return fmt.Sprintf("dropped a message: this queue was secured by an older smp, which did not keep %s's key, "+
			"so no message on it can be verified; ask %s for a new invitation", name, name)
	case client.DropLateKey:
		return "dropped a repeated confirmation: the queue is already secured"
	case client.DropUnsigned:
		return fmt.Sprintf("dropped a message that is not signed: not from %s, or from an older smp", name)
	case client.DropInvalidSeq:
		return fmt.Sprintf("dropped a message with an invalid number: not from %s", name)
	case client.DropBadSignature:
		return fmt.Sprintf("dropped a message whose signature is not %s's: forged or damaged", name)
	case client.DropReplay:
		return fmt.Sprintf("dropped message %d: a replay, or out of order (message %d was shown already)", r.Seq, q.LastSeq)
	}
	return fmt.Sprintf("dropped a message (%v)", r.Drop)
}
