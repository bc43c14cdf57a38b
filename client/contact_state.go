package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/codec"
)

// ContactVersion is the format of ContactState; a state of another version
// is refused by OpenContact.
const ContactVersion = 1

// RecvStatus is where one of our queues of a contact stands.
type RecvStatus string

// States of a queue we receive on (docs/contacts.md, "Rotation").
const (
	// RecvInvited: created and its invitation handed out (out of band, or in
	// a confirmation); the first confirmation that opens secures it.
	RecvInvited RecvStatus = "invited"
	// RecvCreating: to be created on Server (a rotation step interrupted
	// before NEW, or not yet run).
	RecvCreating RecvStatus = "creating"
	// RecvOffered: created, its invitation sent to the peer in a QNEW; waits
	// for the peer's QKEY.
	RecvOffered RecvStatus = "offered"
	// RecvKeyed: the peer's QKEY came with PendingKey; KEY is to be sent.
	RecvKeyed RecvStatus = "keyed"
	// RecvActive: secured, the peer sends on it.
	RecvActive RecvStatus = "active"
	// RecvEnding: the peer's QEND came: to be deleted (DEL).
	RecvEnding RecvStatus = "ending"
	// RecvLost: the relay no longer has the queue (SUB refused).
	RecvLost RecvStatus = "lost"
)

// RouteStatus is where one of the peer's queues we send to stands.
type RouteStatus string

// States of a queue we send to.
const (
	// RouteJoining: confirmed (or to be confirmed) from an invitation; a
	// SEND gets ERR AUTH until the peer secures it, and is retried.
	RouteJoining RouteStatus = "joining"
	// RouteKeyed: the peer offered it in a QNEW and we answered QKEY; we
	// send on it once its QREADY comes.
	RouteKeyed RouteStatus = "keyed"
	// RouteActive: every new message goes on it.
	RouteActive RouteStatus = "active"
	// RouteRefused: the relay answered ERR AUTH on a secured queue: it is
	// gone (deleted, suspended, or lost by the relay); nothing is sent on it.
	RouteRefused RouteStatus = "refused"
)

// ContactState is everything a client keeps about one contact between runs:
// the queues it receives on, the peer's queues it sends to, the contact's
// numbering in both directions and the messages not yet stored everywhere.
// It is plain data, JSON-serialisable (holding private keys: keep the result
// secret); OpenContact runs it. While a Contact runs, it owns the state:
// read it only through ContactOptions.Save or Contact.Status.
type ContactState struct {
	Version int             `json:"version"`
	Recv    []*ContactRecv  `json:"recv"`
	Send    []*ContactRoute `json:"send"`
	// NextSeq is the cseq of our next message (1 on a new contact).
	NextSeq uint64 `json:"nextSeq"`
	// Outbox holds our messages, oldest first, from the oldest one that a
	// route still has to store.
	Outbox []ContactMsg `json:"outbox,omitempty"`
	// Shown is the peer's last cseq handled (shown, or given up as missing).
	Shown uint64 `json:"shown"`
}

// ContactRecv is one of our queues of a contact.
type ContactRecv struct {
	Server Server          `json:"server"`          // where it is (or is to be created)
	Queue  *RecipientQueue `json:"queue,omitempty"` // nil while RecvCreating
	Status RecvStatus      `json:"status"`
	// Replaces is the RID of our queue this one takes over from, if any.
	Replaces []byte `json:"replaces,omitempty"`
	// Mirror asks the peer to move (or add) its own queue the same way.
	Mirror bool `json:"mirror,omitempty"`
	// PendingKey is the sender key of the peer's QKEY, while RecvKeyed.
	PendingKey []byte `json:"pendingKey,omitempty"`
}

// ContactRoute is one of the peer's queues we send to.
type ContactRoute struct {
	Queue  *SenderQueue `json:"queue"`
	Status RouteStatus  `json:"status"`
	// From is the first cseq it carries; Next the first not yet known to be
	// stored on it. Messages From … Next−1 are on its relay (or were
	// skipped, see Skipped).
	From uint64 `json:"from"`
	Next uint64 `json:"next"`
	// Replaces is the SID of the route this one takes over from, if any.
	Replaces []byte `json:"replaces,omitempty"`
	// Skipped counts messages never sent on it because it fell more than
	// ContactOptions.MaxBacklog behind while another route had them.
	Skipped uint64 `json:"skipped,omitempty"`
}

// CreateContact starts a contact as the side that hands out the invitation
// (out of band, SPEC §9): a queue on c's relay. Give the invitation to the
// peer, who calls JoinContact; then run the state with OpenContact, which
// secures the queue with the peer's confirmation and confirms the queue the
// peer offers in it for the other direction.
func CreateContact(ctx context.Context, c *Conn, kem codec.KEMType) (*ContactState, codec.Invitation, error) {
	q, err := CreateQueue(ctx, c, kem)
	if err != nil {
		return nil, codec.Invitation{}, err
	}
	inv, err := q.Invitation()
	if err != nil {
		return nil, codec.Invitation{}, errors.Join(err, q.Delete(ctx, c))
	}
	st := &ContactState{Version: ContactVersion, NextSeq: 1,
		Recv: []*ContactRecv{{Server: q.Server, Queue: q, Status: RecvInvited}}}
	return st, inv, nil
}

// JoinContact joins a contact from the peer's invitation: it creates our
// queue for the other direction on reply's relay (which may be the
// invitation's, c) and sends the confirmation on c, carrying that queue's
// URI (the duplex convention of smp chat). Run the result with OpenContact.
func JoinContact(ctx context.Context, inv *codec.Invitation, c, reply *Conn, kem codec.KEMType) (*ContactState, error) {
	if c.Addr() != inv.Addr() || c.Fingerprint() != inv.ServerKeyHash {
		return nil, fmt.Errorf("client: joining: the connection is to %s, the invitation names %s", c.Addr(), inv.Addr())
	}
	sq, err := NewSenderQueue(inv)
	if err != nil {
		return nil, err
	}
	rq, err := CreateQueue(ctx, reply, kem)
	if err != nil {
		return nil, err
	}
	rinv, err := rq.Invitation()
	if err == nil {
		err = sq.Confirm(ctx, c, []byte(rinv.URI()))
	}
	if err != nil {
		return nil, errors.Join(err, rq.Delete(ctx, reply))
	}
	return &ContactState{
		Version: ContactVersion, NextSeq: 1,
		Recv: []*ContactRecv{{Server: rq.Server, Queue: rq, Status: RecvInvited}},
		Send: []*ContactRoute{{Queue: sq, Status: RouteJoining, From: 1, Next: 1}},
	}, nil
}

// check reports a state that OpenContact cannot run.
func (st *ContactState) check() error {
	if st.Version != ContactVersion {
		return fmt.Errorf("client: contact state version %d, this client reads %d", st.Version, ContactVersion)
	}
	for _, r := range st.Recv {
		if r == nil || (r.Queue == nil && r.Status != RecvCreating) {
			return errors.New("client: contact state: a receive queue without its keys")
		}
	}
	for _, r := range st.Send {
		if r == nil || r.Queue == nil {
			return errors.New("client: contact state: a send queue without its keys")
		}
	}
	for i := 1; i < len(st.Outbox); i++ {
		if st.Outbox[i].Seq != st.Outbox[i-1].Seq+1 {
			return errors.New("client: contact state: outbox out of order")
		}
	}
	if n := len(st.Outbox); n > 0 && st.Outbox[n-1].Seq >= max(st.NextSeq, 1) {
		return errors.New("client: contact state: an outbox message at or above the next seq")
	}
	return nil
}

func (st *ContactState) recvByRID(rid []byte) *ContactRecv {
	for _, r := range st.Recv {
		if r.Queue != nil && bytes.Equal(r.Queue.RID, rid) {
			return r
		}
	}
	return nil
}

func (st *ContactState) recvBySID(sid []byte) *ContactRecv {
	for _, r := range st.Recv {
		if r.Queue != nil && bytes.Equal(r.Queue.SID, sid) {
			return r
		}
	}
	return nil
}

func (st *ContactState) routeBySID(sid []byte) *ContactRoute {
	for _, r := range st.Send {
		if bytes.Equal(r.Queue.SID, sid) {
			return r
		}
	}
	return nil
}

func (st *ContactState) removeRecv(r *ContactRecv) {
	for i, x := range st.Recv {
		if x == r {
			st.Recv = append(st.Recv[:i], st.Recv[i+1:]...)
			return
		}
	}
}

func (st *ContactState) removeRoute(r *ContactRoute) {
	for i, x := range st.Send {
		if x == r {
			st.Send = append(st.Send[:i], st.Send[i+1:]...)
			return
		}
	}
}

// carries reports whether a route takes new messages.
func (r *ContactRoute) carries() bool { return r.Status == RouteActive || r.Status == RouteJoining }

// receiving reports whether the peer may send on a queue.
func (r *ContactRecv) receiving() bool { return r.Status == RecvActive || r.Status == RecvEnding }
