package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/codec"
)

// Queue rotation (docs/contacts.md). Moving our queue X on relay A to relay
// C, asking the peer to do the same (mirror):
//
//	we:   NEW on C → Y (RecvCreating → RecvOffered); send QNEW(X.SID, 1, URI of Y)
//	peer: route to Y (RouteKeyed); send QKEY(Y.SID, SK); mirror: its own X' on A → Y' on C
//	we:   KEY on Y with SK (RecvKeyed → RecvActive); send QREADY(Y.SID)
//	peer: Y carries every later message (RouteActive); stop sending on X; send QEND(X.SID)
//	we:   DEL X once every message before QEND is handled (RecvEnding → removed)
//
// Every step is a contact message, so it travels on whichever queues are
// alive, is authenticated by e2eSig, and is acted on once, in the peer's
// order. Each state is stored, and a Contact opened on it resumes the
// network step that was due (resumeLocked).

// Switch moves our queue on relay from to relay to and asks the peer to
// move its queue on from the same way, so that neither direction uses from
// once both are done (watch Status). It returns once the new queue exists
// and the request is queued; from may be unreachable.
func (s *Contact) Switch(ctx context.Context, from, to Server) error {
	s.mu.Lock()
	var old *ContactRecv
	for _, q := range s.st.Recv {
		if q.Server == from && q.Queue != nil && (q.Status == RecvActive || q.Status == RecvLost) {
			old = q
		}
		if q.Server == to && q.Status != RecvEnding && q.Status != RecvLost {
			s.mu.Unlock()
			return fmt.Errorf("client: contact: already has a queue on %s", to.Addr)
		}
	}
	if old == nil {
		s.mu.Unlock()
		return fmt.Errorf("client: contact: no queue in use on %s", from.Addr)
	}
	n := &ContactRecv{Server: to, Status: RecvCreating, Replaces: old.Queue.RID, Mirror: true}
	s.st.Recv = append(s.st.Recv, n)
	s.relayLocked(to)
	s.mu.Unlock()
	return s.create(ctx, n)
}

// AddRelay adds a queue on relay to in each direction: ours now, and the
// peer's when it handles the request.
func (s *Contact) AddRelay(ctx context.Context, to Server) error {
	s.mu.Lock()
	for _, q := range s.st.Recv {
		if q.Server == to && q.Status != RecvEnding && q.Status != RecvLost {
			s.mu.Unlock()
			return fmt.Errorf("client: contact: already has a queue on %s", to.Addr)
		}
	}
	n := &ContactRecv{Server: to, Status: RecvCreating, Mirror: true}
	s.st.Recv = append(s.st.Recv, n)
	s.relayLocked(to)
	s.mu.Unlock()
	return s.create(ctx, n)
}

// resumeLocked starts the network step due for a queue in a stored state.
func (s *Contact) resumeLocked(q *ContactRecv) {
	if s.busy[q] || s.closed {
		return
	}
	switch q.Status {
	case RecvCreating:
		s.busy[q] = true
		s.wg.Go(func() {
			if err := s.create(s.ctx, q); err != nil && s.ctx.Err() == nil {
				s.mu.Lock()
				s.notice(ContactNotice{Kind: NoticeError, Relay: q.Server, Text: "creating a queue", Err: err})
				s.mu.Unlock()
			}
		})
	case RecvKeyed:
		s.busy[q] = true
		s.wg.Go(func() { s.secure(q) })
	case RecvEnding:
		s.busy[q] = true
		s.wg.Go(func() { s.remove(q) })
	}
}

// create makes the queue of a RecvCreating entry and offers it to the peer
// in a QNEW. It waits for the relay within ctx; on failure the entry is
// dropped.
func (s *Contact) create(ctx context.Context, q *ContactRecv) error {
	s.mu.Lock()
	r := s.relayLocked(q.Server)
	s.mu.Unlock()
	rq, err := func() (*RecipientQueue, error) {
		c, err := s.get(ctx, r)
		if err != nil {
			return nil, err
		}
		return CreateQueue(ctx, c, s.opts.KEM)
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, q)
	if err != nil && s.ctx.Err() != nil {
		// Closing: the entry stays RecvCreating, to be resumed by the next
		// run (a NEW whose answer was lost leaves a queue on the relay that
		// no state names; it holds nothing).
		return fmt.Errorf("client: contact: creating a queue on %s: %w", q.Server.Addr, err)
	}
	if err != nil {
		s.st.removeRecv(q)
		_ = s.saveLocked()
		s.changedLocked()
		return fmt.Errorf("client: contact: creating a queue on %s: %w", q.Server.Addr, err)
	}
	inv, err := rq.Invitation()
	if err != nil {
		s.st.removeRecv(q)
		return err
	}
	var replaced []byte
	if old := s.st.recvByRID(q.Replaces); old != nil {
		replaced = old.Queue.SID
	}
	q.Queue, q.Status = rq, RecvOffered
	if _, err := s.enqueueLocked(KindQNew, qnewPayload(replaced, q.Mirror, inv.URI())); err != nil {
		// Not saved: the new queue is forgotten, and left to the relay.
		s.st.removeRecv(q)
		return err
	}
	s.notice(ContactNotice{Kind: NoticeQueueAdded, Relay: q.Server, Text: "offered a new queue to the peer"})
	return nil
}

// accept handles the first message on a queue whose invitation was handed
// out: a confirmation that opens secures it (SPEC §9 steps 4–5). On the
// side that created the contact, the confirmation carries the URI of the
// peer's queue for the other direction, which becomes our first route.
func (s *Contact) accept(r *relayLink, q *ContactRecv, m Message) {
	c, err := s.get(s.ctx, r)
	var info []byte
	cp := *q.Queue
	if err == nil {
		info, err = cp.Accept(s.ctx, c, m)
	}
	var acks []ackReq
	defer func() { s.ack(acks) }()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, q)
	early, ok := s.early[q]
	delete(s.early, q)
	if err != nil {
		if s.ctx.Err() == nil {
			s.notice(ContactNotice{Kind: NoticeDropped, Relay: r.srv, Drop: DropNotOpen, Text: "waiting for the confirmation", Err: err})
		}
		if ok {
			acks = s.messageLocked(r, q, early)
		}
		return
	}
	*q.Queue = cp
	q.Status = RecvActive
	if len(s.st.Send) == 0 {
		if inv, err := codec.ParseInvitationURI(string(info)); err == nil {
			if sq, err := NewSenderQueue(&inv); err == nil {
				rt := &ContactRoute{Queue: sq, Status: RouteJoining, From: 1, Next: 1}
				s.st.Send = append(s.st.Send, rt)
				s.startRouteLocked(rt)
			}
		}
	}
	_ = s.saveLocked()
	s.notice(ContactNotice{Kind: NoticeQueueAdded, Relay: r.srv, Text: "secured with the peer's confirmation"})
	if ok {
		acks = s.messageLocked(r, q, early)
	}
	s.changedLocked()
}

// qnewLocked: the peer offers a queue. We answer with the sender key we
// will sign with; the peer secures the queue with it and says QREADY.
func (s *Contact) qnewLocked(p []byte) error {
	replaced, mirror, uri, err := parseQNew(p)
	if err != nil {
		return err
	}
	inv, err := codec.ParseInvitationURI(uri)
	if err != nil {
		return fmt.Errorf("%w: QNEW invitation: %w", ErrContactBody, err)
	}
	if s.st.routeBySID(inv.SenderID) != nil {
		return nil
	}
	sq, err := NewSenderQueue(&inv)
	if err != nil {
		return err
	}
	sq.Confirmed = true // its key goes in QKEY, not in a confirmation on the queue
	rt := &ContactRoute{Queue: sq, Status: RouteKeyed, Replaces: replaced}
	s.st.Send = append(s.st.Send, rt)
	s.relayLocked(sq.Server)
	if _, err := s.enqueueLocked(KindQKey, qkeyPayload(sq.SID, sq.SenderKey.PublicSPKI())); err != nil {
		s.st.removeRoute(rt)
		return err
	}
	if !mirror {
		return nil
	}
	to := sq.Server
	for _, q := range s.st.Recv {
		if q.Server == to && q.Status != RecvEnding && q.Status != RecvLost {
			return nil // we have a queue there already
		}
	}
	n := &ContactRecv{Server: to, Status: RecvCreating}
	if replaced != nil {
		old := s.st.routeBySID(replaced)
		if old == nil {
			return nil
		}
		var mine *ContactRecv
		for _, q := range s.st.Recv {
			if q.Server == old.Queue.Server && q.Queue != nil && (q.Status == RecvActive || q.Status == RecvLost) {
				mine = q
			}
		}
		if mine == nil {
			return nil
		}
		n.Replaces = mine.Queue.RID
	}
	s.st.Recv = append(s.st.Recv, n)
	s.resumeLocked(n)
	return s.saveLocked()
}

// qkeyLocked: the peer's sender key for a queue we offered. KEY it.
func (s *Contact) qkeyLocked(p []byte) error {
	sid, spki, err := parseQKey(p)
	if err != nil {
		return err
	}
	q := s.st.recvBySID(sid)
	if q == nil || q.Status != RecvOffered {
		return nil // a step already done
	}
	if _, err := codec.ParseVerifyKey(spki); err != nil {
		return fmt.Errorf("%w: QKEY sender key: %w", ErrContactBody, err)
	}
	q.Status, q.PendingKey = RecvKeyed, spki
	s.resumeLocked(q)
	return nil
}

// secure sends KEY for a RecvKeyed queue, retrying while its relay is
// down, then tells the peer QREADY.
func (s *Contact) secure(q *ContactRecv) {
	s.mu.Lock()
	r := s.relayLocked(q.Server)
	cp := *q.Queue
	key := q.PendingKey
	s.mu.Unlock()
	wait := s.opts.RetryMin
	for {
		c, err := s.get(s.ctx, r)
		if err != nil {
			return
		}
		err = cp.Secure(s.ctx, c, key)
		if err == nil {
			break
		}
		s.mu.Lock()
		s.notice(ContactNotice{Kind: NoticeError, Relay: q.Server, Text: "securing a new queue", Err: err})
		s.mu.Unlock()
		if errors.Is(err, codec.ErrAuth) {
			// Secured already (a KEY whose answer was lost) or gone: the
			// relay's word is final; a secured queue works, a gone one is
			// reported lost when subscribed.
			cp.Secured, cp.SenderKey, cp.LastSeq, cp.LastMsgID = true, key, 0, nil
			break
		}
		if !s.pause(wait) {
			return
		}
		wait = min(2*wait, s.opts.RetryMax)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, q)
	if q.Status != RecvKeyed {
		return
	}
	*q.Queue = cp
	q.Status, q.PendingKey = RecvActive, nil
	if _, err := s.enqueueLocked(KindQReady, []byte(sidText(q.Queue.SID))); err != nil {
		s.notice(ContactNotice{Kind: NoticeError, Relay: q.Server, Text: "telling the peer a queue is ready", Err: err})
	}
	s.changedLocked()
}

// qreadyLocked: a queue we answered QKEY for is secured. Send every later
// message on it; stop sending on the queue it replaces, and say so.
func (s *Contact) qreadyLocked(p []byte) error {
	sid, err := parseSID(p)
	if err != nil {
		return err
	}
	rt := s.st.routeBySID(sid)
	if rt == nil || rt.Status != RouteKeyed {
		return nil
	}
	rt.Status, rt.From, rt.Next = RouteActive, s.st.NextSeq, s.st.NextSeq
	rt.Queue.NextSeq = rt.Next
	s.startRouteLocked(rt)
	s.notice(ContactNotice{Kind: NoticeQueueAdded, Relay: rt.Queue.Server, Text: "sending on the peer's new queue"})
	if rt.Replaces != nil {
		if old := s.st.routeBySID(rt.Replaces); old != nil {
			s.st.removeRoute(old)
			delete(s.workers, old)
			s.notice(ContactNotice{Kind: NoticeQueueRemoved, Relay: old.Queue.Server, Text: "stopped sending on the peer's old queue"})
		}
		if _, err := s.enqueueLocked(KindQEnd, []byte(sidText(rt.Replaces))); err != nil {
			return err
		}
	}
	return s.saveLocked()
}

// qendLocked: the peer sends nothing more on one of our queues. Every
// message it sent before is handled (this one comes after them in the
// peer's order), so what is left on the queue is copies: delete it.
func (s *Contact) qendLocked(p []byte) error {
	sid, err := parseSID(p)
	if err != nil {
		return err
	}
	q := s.st.recvBySID(sid)
	if q == nil || q.Status == RecvEnding {
		return nil
	}
	if q.Status == RecvLost {
		s.dropRecvLocked(q, "lost by its relay")
		return nil
	}
	q.Status = RecvEnding
	delete(s.heads, q)
	s.resumeLocked(q)
	return nil
}

// remove deletes an ending queue (DEL). A relay that cannot be reached
// within the Conn's timeout keeps the queue: it is dropped from the
// contact anyway, with a notice naming it.
func (s *Contact) remove(q *ContactRecv) {
	s.mu.Lock()
	r := s.relayLocked(q.Server)
	s.mu.Unlock()
	timeout := DefaultTimeout
	if s.opts.ConnOptions != nil {
		if t := s.opts.ConnOptions(q.Server).Timeout; t > 0 {
			timeout = t
		}
	}
	ctx, cancel := context.WithTimeout(s.ctx, timeout)
	defer cancel()
	c, err := s.get(ctx, r)
	if err == nil {
		err = q.Queue.Delete(ctx, c)
	}
	if errors.Is(err, codec.ErrAuth) {
		err = nil // gone already
	}
	if s.ctx.Err() != nil {
		return // closing: resumed on the next open
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.busy, q)
	why := "deleted"
	if err != nil {
		why = "its relay is unreachable: left there undeleted"
		s.notice(ContactNotice{Kind: NoticeError, Relay: q.Server, Text: "deleting an old queue", Err: err})
	}
	s.dropRecvLocked(q, why)
}

func (s *Contact) dropRecvLocked(q *ContactRecv, why string) {
	s.st.removeRecv(q)
	delete(s.heads, q)
	_ = s.saveLocked()
	s.notice(ContactNotice{Kind: NoticeQueueRemoved, Relay: q.Server, Text: "old queue " + why})
	s.changedLocked()
}
