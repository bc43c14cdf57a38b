package client

import (
	"context"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/codec"
)

// QueueIDs are the two IDs of a new queue (SPEC §5 IDS).
type QueueIDs struct {
	RID []byte // recipient ID: for SUB, KEY, ACK, OFF, DEL
	SID []byte // sender ID: for SEND; goes into the invitation
}

// answer checks r against the answers SPEC §5 allows for cmd and turns ERR
// into an error wrapping the codec.Error.
func answer(cmd codec.Cmd, r reply, allowed ...codec.Cmd) error {
	if r.cmd == codec.CmdERR {
		return fmt.Errorf("client: %v: %w", cmd, r.errType)
	}
	for _, a := range allowed {
		if r.cmd == a {
			return nil
		}
	}
	return fmt.Errorf("%w: %v answered with %v", ErrProtocol, cmd, r.cmd)
}

// NewQueue creates a queue whose recipient key is rk (NEW, signed by rk, or
// by Options.CreatorKey when set). The Conn is then subscribed to it. ERR
// AUTH comes back as an error wrapping ErrCreateRefused and codec.ErrAuth.
// Safe for concurrent use.
func (c *Conn) NewQueue(ctx context.Context, rk *codec.Signer) (QueueIDs, error) {
	signer := rk
	if c.opts.CreatorKey != nil {
		signer = c.opts.CreatorKey
	}
	r, err := c.do(ctx, request{cmd: codec.CmdNEW, signer: signer, key: rk.PublicSPKI()})
	if err != nil {
		return QueueIDs{}, err
	}
	if r.cmd == codec.CmdERR && errors.Is(r.errType, codec.ErrAuth) {
		why := "it takes new queues only signed by one of its creator keys (set Options.CreatorKey), or creation is closed"
		if c.opts.CreatorKey != nil {
			why = "Options.CreatorKey is not one of its creator keys, or it has none (then leave Options.CreatorKey unset), " +
				"or creation is closed"
		}
		return QueueIDs{}, fmt.Errorf("%w: %v: %w: %s", ErrCreateRefused, codec.CmdNEW, r.errType, why)
	}
	if err := answer(codec.CmdNEW, r, codec.CmdIDS); err != nil {
		return QueueIDs{}, err
	}
	return QueueIDs{RID: r.rid, SID: r.sid}, nil
}

// Subscribe makes this Conn the subscriber of queue rid (SUB, signed by
// rk). gotMsg reports whether the server answered with a message; it is
// delivered as an EventMessage before Subscribe returns. The Conn subscribes
// again after every reconnection. Safe for concurrent use.
func (c *Conn) Subscribe(ctx context.Context, rid []byte, rk *codec.Signer) (gotMsg bool, err error) {
	r, err := c.do(ctx, request{cmd: codec.CmdSUB, qid: rid, signer: rk})
	if err != nil {
		return false, err
	}
	if err := answer(codec.CmdSUB, r, codec.CmdOK, codec.CmdMSG); err != nil {
		return false, err
	}
	return r.cmd == codec.CmdMSG, nil
}

// Ack acknowledges the message last delivered on queue rid (ACK, signed by
// rk), so the server deletes it. gotMsg reports whether the server answered
// with the next message, delivered as an EventMessage before Ack returns.
// Safe for concurrent use.
func (c *Conn) Ack(ctx context.Context, rid []byte, rk *codec.Signer) (gotMsg bool, err error) {
	r, err := c.do(ctx, request{cmd: codec.CmdACK, qid: rid, signer: rk})
	if err != nil {
		return false, err
	}
	if err := answer(codec.CmdACK, r, codec.CmdOK, codec.CmdMSG); err != nil {
		return false, err
	}
	return r.cmd == codec.CmdMSG, nil
}

// Secure sets the sender key of queue rid (KEY, signed by rk): from then on
// the server takes only SENDs signed by that key. senderKey is SPKI DER, as
// carried by the sender's confirmation. Safe for concurrent use.
func (c *Conn) Secure(ctx context.Context, rid []byte, rk *codec.Signer, senderKey []byte) error {
	r, err := c.do(ctx, request{cmd: codec.CmdKEY, qid: rid, signer: rk, key: senderKey})
	if err != nil {
		return err
	}
	return answer(codec.CmdKEY, r, codec.CmdOK)
}

// Suspend suspends queue rid (OFF, signed by rk): SEND and KEY fail from
// then on, while SUB, ACK and DEL still work. Safe for concurrent use.
func (c *Conn) Suspend(ctx context.Context, rid []byte, rk *codec.Signer) error {
	r, err := c.do(ctx, request{cmd: codec.CmdOFF, qid: rid, signer: rk})
	if err != nil {
		return err
	}
	return answer(codec.CmdOFF, r, codec.CmdOK)
}

// Delete deletes queue rid and its messages (DEL, signed by rk). Safe for
// concurrent use.
func (c *Conn) Delete(ctx context.Context, rid []byte, rk *codec.Signer) error {
	r, err := c.do(ctx, request{cmd: codec.CmdDEL, qid: rid, signer: rk})
	if err != nil {
		return err
	}
	return answer(codec.CmdDEL, r, codec.CmdOK)
}

// Send sends body to queue sid (SEND). sk signs it; nil sends it unsigned,
// as the confirmation must be. body goes to the server as is: seal it first
// (SenderQueue does). Safe for concurrent use.
func (c *Conn) Send(ctx context.Context, sid []byte, sk *codec.Signer, body []byte) error {
	if body == nil {
		body = []byte{}
	}
	r, err := c.do(ctx, request{cmd: codec.CmdSEND, qid: sid, signer: sk, body: body})
	if err != nil {
		return err
	}
	return answer(codec.CmdSEND, r, codec.CmdOK)
}

// Ping checks that the server answers (PING). Safe for concurrent use.
func (c *Conn) Ping(ctx context.Context) error {
	r, err := c.do(ctx, request{cmd: codec.CmdPING})
	if err != nil {
		return err
	}
	return answer(codec.CmdPING, r, codec.CmdPONG)
}
