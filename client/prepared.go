package client

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/smprelay/smprelay/codec"
)

// ErrInFlight reports a Do of a Prepared whose previous Do has not returned:
// the two would share a corrId, so their answers could not be told apart.
var ErrInFlight = errors.New("client: prepared command already in flight")

// Prepared is a command framed and signed ahead of time: Do queues its bytes
// as they are, so what a caller pays per command is queueing and the wait for
// the answer, not signing. It is meant for load generators, where the cost of
// the server, not the client's signatures, must be what is measured.
//
// A Prepared belongs to the Conn that made it and carries a corrId of its own,
// fixed when it is made. It may be sent any number of times, one at a time:
// SPEC §4 lets the client choose corrIds and the server only echoes them, so
// a repeated corrId is legal; it is the client that must not have two
// commands with one corrId in flight, which Do enforces (ErrInFlight). A
// repeated SEND is a replay of the same signed bytes, which the server stores
// as a new message each time (SMP has no replay protection; the benchmark
// relies on that). A Prepared is immutable and safe for concurrent use, though
// concurrent Do calls on one of them fail with ErrInFlight.
type Prepared struct {
	c    *Conn
	req  request
	corr string
	t    []byte
}

// Prepare frames cmd for queue qid, signed by signer (nil: unsigned), with
// key (NEW, KEY: SPKI DER) and body (SEND), for later Do calls on c. It
// fails when the transmission does not fit in one block of c's block size.
// Safe for concurrent use.
func (c *Conn) Prepare(cmd codec.Cmd, qid []byte, signer *codec.Signer, key, body []byte) (*Prepared, error) {
	if cmd == codec.CmdNone || cmd.FromServer() {
		return nil, fmt.Errorf("client: cannot prepare %q: not a client command", cmd)
	}
	if cmd == codec.CmdSEND && body == nil {
		body = []byte{}
	}
	req := request{cmd: cmd, qid: append([]byte(nil), qid...), signer: signer, key: key, body: body}
	// An upper-case prefix keeps these corrIds apart from nextCorr's, which
	// are lower-case base 36.
	corr := "P" + strconv.FormatUint(c.prepCorr.Add(1), 36)
	t, err := frame(req, corr, c.BlockSize())
	if err != nil {
		return nil, err
	}
	req.body = nil // framed into t; not kept twice
	return &Prepared{c: c, req: req, corr: corr, t: t}, nil
}

// PrepareSend is Prepare for SEND of body to queue sid, signed by sk (nil:
// unsigned). Safe for concurrent use.
func (c *Conn) PrepareSend(sid []byte, sk *codec.Signer, body []byte) (*Prepared, error) {
	return c.Prepare(codec.CmdSEND, sid, sk, nil, body)
}

// PrepareAck is Prepare for ACK on queue rid, signed by rk. ACK carries
// nothing that varies, so one PrepareAck per queue serves every message.
// Safe for concurrent use.
func (c *Conn) PrepareAck(rid []byte, rk *codec.Signer) (*Prepared, error) {
	return c.Prepare(codec.CmdACK, rid, rk, nil, nil)
}

// Cmd returns the command p carries.
func (p *Prepared) Cmd() codec.Cmd { return p.req.cmd }

// CorrID returns the corrId p carries, the same on every Do.
func (p *Prepared) CorrID() string { return p.corr }

// Len returns the size of p's transmission in bytes.
func (p *Prepared) Len() int { return len(p.t) }

// Do sends p as it was prepared and waits for its answer, which it returns:
// OK, MSG (for SUB and ACK: the message is also delivered as an
// EventMessage before Do returns), IDS or PONG. An ERR answer is returned
// as an error wrapping the codec.Error. While the Conn is reconnecting Do
// waits for the new connection, as other commands do. If a Do gave up (its
// context ended) before the answer came, a later Do of p may take that late
// answer for its own. Safe for concurrent use (see ErrInFlight).
func (c *Conn) Do(ctx context.Context, p *Prepared) (codec.Cmd, error) {
	if p.c != c {
		return codec.CmdNone, errors.New("client: Do of a command prepared on another Conn")
	}
	r, err := c.roundTrip(ctx, p.req.cmd, func(l *link) (*call, error) {
		if room := l.blockSize - codec.TagSize; len(p.t) > room {
			// Possible only after a reconnection to a server with smaller blocks.
			return nil, fmt.Errorf("%w: a %d-byte prepared %v, a block holds %d", ErrTooLarge, len(p.t), p.req.cmd, room)
		}
		return l.queue(p.req, p.corr, p.t)
	})
	if err != nil {
		return codec.CmdNone, err
	}
	if r.cmd == codec.CmdERR {
		return r.cmd, fmt.Errorf("client: %v: %w", p.req.cmd, r.errType)
	}
	return r.cmd, nil
}
