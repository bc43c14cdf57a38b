package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errwrap"
)

// ErrPending reports a Prepare while an earlier message of the queue is
// still pending: sending a new one first would put them out of order, and
// the recipient would drop the older one as a replay (SPEC §10).
var ErrPending = errors.New("client: an earlier message is pending")

// Outgoing is a message numbered and signed for one queue: the
// decryptedBody of SPEC §10 before sealing. A sender stores it before
// sending it and, when the SEND may not have been stored, sends it again
// unchanged, so that the recipient shows it once and in its place.
type Outgoing struct {
	Seq  uint64 `json:"seq"`
	Sig  []byte `json:"sig"`  // e2eSig
	Body []byte `json:"body"` // clientBody
	// Tried is set once a SEND of it failed in a way that may have stored
	// it: its seq can then no longer be given back.
	Tried bool `json:"tried,omitempty"`
}

// Prepare numbers msg as the queue's next message and signs it with SK: it
// advances NextSeq and makes the message Pending. Store s before sending the
// result with SendPrepared (SPEC §10: the sender stores the next seq before
// sending), and record the outcome with Sent. It fails with ErrPending while
// another message is pending.
func (s *SenderQueue) Prepare(msg []byte) (Outgoing, error) {
	if s.Pending != nil {
		return Outgoing{}, fmt.Errorf("%w: message %d", ErrPending, s.Pending.Seq)
	}
	seq := max(s.NextSeq, 1)
	if seq+1 == 0 {
		// 2^64−1 messages: the last seq would leave no next one to store.
		return Outgoing{}, fmt.Errorf("client: the queue has used up its message numbers (%d)", seq)
	}
	h, err := e2e.Sign(s.SenderKey.Signer(), s.SID, seq, msg)
	if err != nil {
		return Outgoing{}, fmt.Errorf("client: %w", err)
	}
	o := Outgoing{Seq: seq, Sig: h.Sig, Body: bytes.Clone(msg)}
	s.NextSeq = seq + 1
	p := o
	s.Pending = &p
	return o, nil
}

// SendPrepared seals o to EK and sends it signed by SK. It does not change
// s: pass its error to Sent.
func (s *SenderQueue) SendPrepared(ctx context.Context, c *Conn, o Outgoing) error {
	body, err := e2e.Seal(s.EncryptionKey, c.MaxBody(), e2e.MsgHeader{Seq: o.Seq, Sig: o.Sig}.Bytes(), o.Body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return c.Send(ctx, s.SID, s.SenderKey.Signer(), body)
}

// Sent records how sending o ended (err nil: the server stored it) and
// reports whether o is still pending, to be sent again before any new
// message. A refusal that no retry changes (see SendAgain) drops it, and
// gives its seq back when o was the last message prepared and no SEND of it
// may have been stored, so that the recipient is not told of a gap: SPEC
// §10 numbers messages 1, 2, 3 …, and a number that reached nobody can be
// used again without a recipient seeing it twice.
func (s *SenderQueue) Sent(o Outgoing, err error) (pending bool) {
	if s.Pending == nil || s.Pending.Seq != o.Seq {
		return false // settled already, e.g. by another copy of the queue
	}
	switch {
	case err == nil:
		s.Pending = nil
		return false
	case SendAgain(err):
		s.Pending.Tried = true
		return true
	}
	if !o.Tried && !s.Pending.Tried && s.NextSeq == o.Seq+1 {
		s.NextSeq = o.Seq
	}
	s.Pending = nil
	return false
}

// SendAgain reports whether a message whose SEND failed with err is to be
// sent again, unchanged (SPEC §10): when the server may have stored it (no
// answer, a lost connection, ERR INTERNAL) or may take it later (ERR QUOTA).
// Not after a refusal that says the message was not stored and no retry
// changes (ERR AUTH, SYNTAX, SIZE, PROHIBITED, UNKNOWN), nor for a message
// that does not fit.
func SendAgain(err error) bool {
	if err == nil || errors.Is(err, e2e.ErrTooLong) || errors.Is(err, ErrTooLarge) || errors.Is(err, ErrPending) {
		return false
	}
	var ce codec.Error
	if errors.As(err, &ce) {
		return ce == codec.ErrQuota || ce == codec.ErrInternal
	}
	return true
}

// SendPending sends the pending message again, if there is one, and
// records the outcome.
func (s *SenderQueue) SendPending(ctx context.Context, c *Conn) error {
	if s.Pending == nil {
		return nil
	}
	o := *s.Pending
	err := s.SendPrepared(ctx, c, o)
	s.Sent(o, err)
	if err != nil {
		return errwrap.Wrap(fmt.Errorf("client: sending message %d again", o.Seq), err)
	}
	return nil
}

// DropReason says why a recipient dropped a message (SPEC §10). Every
// dropped message is to be acknowledged, and all but DropRedelivered are
// to be reported to the user.
type DropReason uint8

// Reasons for dropping a message.
const (
	// DropNone: the message is shown.
	DropNone DropReason = iota
	// DropNotOpen: it does not open with EK, or its plaintext is not an
	// envelope.
	DropNotOpen
	// DropNoSenderKey: the queue has no sender key to verify with: it is not
	// secured, or was secured by a client that did not keep the key.
	DropNoSenderKey
	// DropLateKey: a KEY header after the confirmation that secured the
	// queue.
	DropLateKey
	// DropUnsigned: no e2eSig: an empty header, "MSG seq" alone, or any
	// header that is neither KEY nor MSG.
	DropUnsigned
	// DropInvalidSeq: a seq that is not 1 … 2^64−1 in decimal without a
	// leading zero.
	DropInvalidSeq
	// DropBadSignature: an e2eSig that is not base64 or does not verify
	// with SK over this queue, seq and body.
	DropBadSignature
	// DropReplay: a correctly signed message whose seq is not above
	// LastSeq: delivered before, or older than one shown.
	DropReplay
	// DropRedelivered: the message last shown, delivered again with the
	// same msgId because its ACK did not reach the server. SPEC §10 counts
	// it with seq ≤ lastSeq, to be dropped with a notice; it is dropped,
	// but it is no sign of a hostile relay, so acknowledge it quietly.
	DropRedelivered
)

// String names the reason, for logs.
func (r DropReason) String() string {
	switch r {
	case DropNone:
		return "none"
	case DropNotOpen:
		return "does not open"
	case DropNoSenderKey:
		return "no sender key"
	case DropLateKey:
		return "KEY after the confirmation"
	case DropUnsigned:
		return "unsigned"
	case DropInvalidSeq:
		return "invalid seq"
	case DropBadSignature:
		return "bad signature"
	case DropReplay:
		return "replay"
	case DropRedelivered:
		return "redelivered"
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Received is what Receive made of a message.
type Received struct {
	Drop DropReason // DropNone: show Body
	Err  error      // when dropped: why, wrapping ErrDropped (and the e2e error, if any)
	Seq  uint64     // the message's seq when it is shown or dropped as a replay or redelivery
	Body []byte     // clientBody, when shown
	// FirstMissing, when not 0, says messages FirstMissing … Seq−1 never
	// came: the relay withheld or lost them, or the sender's SENDs of them
	// failed.
	FirstMissing uint64
}

// Receive judges a message on a secured queue (SPEC §10). It shows the
// message (Drop is DropNone) only if it opens, its header is
// "MSG seq e2eSig", e2eSig verifies with SenderKey, and seq is above
// LastSeq; it then sets LastSeq to seq. Store q with the message before
// acknowledging it, so that a message delivered again after a crash is
// recognised. Anything else comes back with a DropReason; acknowledge it
// and say so. Receive does not touch the network.
//
// SPEC §10 lists the reasons but not their order; the first check that
// fails names it: opens, a sender key to verify with, KEY header, seq
// syntax, e2eSig present, e2eSig syntax, signature, seq above LastSeq. So a
// wrongly signed message is never called a replay, since its seq is not
// the sender's word.
func (q *RecipientQueue) Receive(m Message) Received {
	env, err := q.Open(m)
	if err != nil {
		return dropped(DropNotOpen, 0, err)
	}
	vk, err := q.senderKey()
	if err != nil {
		return dropped(DropNoSenderKey, 0, err)
	}
	if env.IsKey() {
		return dropped(DropLateKey, 0, errors.New("a KEY header after the confirmation"))
	}
	h, err := env.Signed()
	switch {
	case errors.Is(err, e2e.ErrSeq):
		return dropped(DropInvalidSeq, 0, err)
	case errors.Is(err, e2e.ErrSig):
		return dropped(DropBadSignature, 0, err)
	case err != nil:
		return dropped(DropUnsigned, 0, err)
	}
	if !e2e.Verify(vk, q.SID, h, env.Body) {
		return dropped(DropBadSignature, 0, fmt.Errorf("%w: message %d is not signed by the sender's key", e2e.ErrSig, h.Seq))
	}
	if h.Seq <= q.LastSeq {
		if h.Seq == q.LastSeq && len(q.LastMsgID) > 0 && bytes.Equal(m.ID, q.LastMsgID) {
			return dropped(DropRedelivered, h.Seq, fmt.Errorf("message %d delivered again", h.Seq))
		}
		return dropped(DropReplay, h.Seq, fmt.Errorf("message %d is a replay: %d was shown", h.Seq, q.LastSeq))
	}
	r := Received{Seq: h.Seq, Body: env.Body}
	if h.Seq > q.LastSeq+1 {
		r.FirstMissing = q.LastSeq + 1
	}
	q.LastSeq, q.LastMsgID = h.Seq, bytes.Clone(m.ID)
	return r
}

func dropped(why DropReason, seq uint64, err error) Received {
	return Received{Drop: why, Seq: seq, Err: fmt.Errorf("%w: %w", ErrDropped, err)}
}

// senderKey returns SK parsed, or why there is none to verify with.
func (q *RecipientQueue) senderKey() (*codec.VerifyKey, error) {
	switch {
	case !q.Secured:
		return nil, errors.New("the queue is not secured: accept its confirmation first")
	case q.SenderKey == nil || len(q.SID) != codec.QueueIDSize:
		return nil, errors.New("the queue was secured by a client that did not keep the sender's key and ID")
	case q.sk == nil:
		vk, err := codec.ParseVerifyKey(q.SenderKey)
		if err != nil {
			return nil, fmt.Errorf("stored sender key: %w", err)
		}
		q.sk = vk
	}
	return q.sk, nil
}
