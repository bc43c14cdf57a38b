package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errwrap"
	"github.com/smprelay/smprelay/internal/netctx"
)

// link is one transport connection after its handshake (SPEC §3). A writer
// goroutine packs queued transmissions into blocks; a reader goroutine opens
// blocks and hands each server transmission to the Conn. A link never
// recovers: on any failure it closes, fails its pending calls, and the Conn
// dials a new one.
type link struct {
	c         *Conn
	nc        net.Conn
	blockSize int

	tx codec.BlockCipher // client → server; writer goroutine only
	rx codec.BlockCipher // server → client; reader goroutine only

	qmu   sync.Mutex
	sendq [][]byte      // transmissions waiting for the writer
	kick  chan struct{} // capacity 1: the writer has work

	pmu     sync.Mutex
	pending map[string]*call // by corrId; nil once dead
	dead    bool
	err     error
	down    chan struct{} // closed when the link fails

	installed bool // guarded by c.mu: the Conn handed it to commands
}

// request is one client command before it is framed.
type request struct {
	cmd    codec.Cmd
	qid    []byte
	signer *codec.Signer // nil: unsigned
	key    []byte        // NEW, KEY: SPKI DER
	body   []byte        // SEND
}

// call is a command in flight.
type call struct {
	req  request
	corr string
	done chan reply // capacity 1; written once
}

// reply is the server's answer to a call, or the transport failure that
// ended it.
type reply struct {
	cmd      codec.Cmd
	errType  codec.Error // ERR
	rid, sid []byte      // IDS
	err      error
}

// errLinkDown is returned by start on a link that has already failed: the
// command was not sent, so it may go on the next link.
var errLinkDown = errors.New("client: link down")

// handshake runs SPEC §3.1–§3.3 on nc up to and including the welcome block,
// within ctx.
func handshake(ctx context.Context, c *Conn, nc net.Conn, fingerprint string) (*link, error) {
	var l *link
	err := netctx.Do(ctx, nc, func() error {
		var hdr [10]byte
		if _, err := io.ReadFull(nc, hdr[:]); err != nil {
			return fmt.Errorf("reading server hello: %w", err)
		}
		raw := make([]byte, len(hdr)+int(binary.BigEndian.Uint16(hdr[8:]))+codec.RandomSize+codec.ShareSize)
		copy(raw, hdr[:])
		if _, err := io.ReadFull(nc, raw[len(hdr):]); err != nil {
			return fmt.Errorf("reading server hello: %w", err)
		}
		h, _, err := codec.ParseServerHello(raw)
		if err != nil {
			return fmt.Errorf("server hello: %w", err)
		}
		// SPEC §3.1: the pin is checked before anything is sealed to the key.
		if got := codec.Fingerprint(h.Key); got != fingerprint {
			return fmt.Errorf("%w: server key %s, pinned %s", ErrFingerprint, got, fingerprint)
		}
		if h.MinVersion > codec.TransportVersion || h.MaxVersion < codec.TransportVersion {
			return fmt.Errorf("%w: server speaks transport versions %d..%d, not %d", ErrProtocol, h.MinVersion, h.MaxVersion, codec.TransportVersion)
		}
		key, err := codec.ParseKEMPublicKey(h.Key)
		if err != nil {
			return fmt.Errorf("server key: %w", err)
		}
		ch, keys, err := codec.ClientHandshake(raw, &h, key)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		l = &link{
			c: c, nc: nc, blockSize: int(h.BlockSize),
			kick: make(chan struct{}, 1), pending: make(map[string]*call), down: make(chan struct{}),
		}
		err = errors.Join(l.tx.Init(keys.C2SKey, keys.C2SNonce), l.rx.Init(keys.S2CKey, keys.S2CNonce))
		keys.Clear()
		if err != nil {
			return err
		}
		if _, err := nc.Write(ch); err != nil {
			return fmt.Errorf("sending client hello: %w", err)
		}
		blk := make([]byte, l.blockSize)
		if _, err := io.ReadFull(nc, blk); err != nil {
			return fmt.Errorf("reading welcome block: %w", err)
		}
		plain, err := l.rx.Open(blk)
		if err != nil {
			return fmt.Errorf("welcome block: %w", err)
		}
		rest, ok := bytes.CutPrefix(plain, codec.Welcome)
		if !ok || len(bytes.TrimLeft(rest, string(codec.Padding))) != 0 {
			return fmt.Errorf("%w: bad welcome block", ErrProtocol)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// run starts the reader and writer. The reader tells the Conn when the link
// is gone.
func (l *link) run() {
	l.c.wg.Add(2)
	go func() {
		defer l.c.wg.Done()
		l.writeLoop()
	}()
	go func() {
		defer l.c.wg.Done()
		l.readLoop()
		l.c.linkGone(l)
	}()
}

// fail closes the link once: pending calls get ErrConnLost, and the Conn
// stops handing the link to new commands at once.
func (l *link) fail(cause error) {
	l.pmu.Lock()
	if l.dead {
		l.pmu.Unlock()
		return
	}
	l.dead, l.err = true, cause
	calls := l.pending
	l.pending = nil
	l.pmu.Unlock()
	close(l.down)
	_ = l.nc.Close()
	l.c.detach(l)
	for _, cl := range calls {
		cl.done <- reply{err: errwrap.Wrap(ErrConnLost, cause)}
	}
}

// start frames, signs and queues req. It returns errLinkDown, with nothing
// sent, when the link has failed.
func (l *link) start(req request, corr string) (*call, error) {
	t, err := frame(req, corr, l.blockSize)
	if err != nil {
		return nil, err
	}
	return l.queue(req, corr, t)
}

// queue registers a call for corr and queues its framed transmission t. It
// returns errLinkDown, with nothing sent, when the link has failed, and
// ErrInFlight when a call with corr is already pending.
func (l *link) queue(req request, corr string, t []byte) (*call, error) {
	cl := &call{req: req, corr: corr, done: make(chan reply, 1)}
	l.pmu.Lock()
	if l.dead {
		l.pmu.Unlock()
		return nil, errLinkDown
	}
	if _, busy := l.pending[corr]; busy {
		l.pmu.Unlock()
		return nil, ErrInFlight
	}
	l.pending[corr] = cl
	l.c.notePending(len(l.pending))
	l.pmu.Unlock()
	l.c.release(req.cmd, req.qid)

	l.qmu.Lock()
	l.sendq = append(l.sendq, t)
	l.qmu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return cl, nil
}

// wait returns cl's reply, or ctx's error after forgetting cl (a late answer
// is then dropped, except a MSG, which is still delivered as an event).
func (l *link) wait(ctx context.Context, cl *call) (reply, error) {
	select {
	case r := <-cl.done:
		return r, r.err
	case <-ctx.Done():
		l.pmu.Lock()
		if l.pending != nil {
			delete(l.pending, cl.corr)
		}
		l.pmu.Unlock()
		return reply{}, ctx.Err()
	}
}

// frame builds the transmission of req (SPEC §4) and checks that it fits in
// one block.
func frame(req request, corr string, blockSize int) ([]byte, error) {
	if req.cmd == codec.CmdSEND && len(req.body) > codec.MaxBody(blockSize) {
		return nil, fmt.Errorf("%w: a %d-byte body, the server takes at most %d", ErrTooLarge, len(req.body), codec.MaxBody(blockSize))
	}
	signed := codec.AppendSigned(nil, []byte(corr), req.qid, req.cmd, req.key, req.body)
	var sig []byte
	if req.signer != nil {
		var err error
		if sig, err = req.signer.Sign(signed); err != nil {
			return nil, fmt.Errorf("client: signing %v: %w", req.cmd, err)
		}
	}
	t := codec.AppendClientTransmission(nil, sig, signed)
	if room := blockSize - codec.TagSize; len(t) > room {
		return nil, fmt.Errorf("%w: a %d-byte transmission, a block holds %d", ErrTooLarge, len(t), room)
	}
	return t, nil
}

// writeLoop packs every transmission that is queued when it wakes into as
// few blocks as possible (SPEC §3.3) and writes them with one call.
func (l *link) writeLoop() {
	room := l.blockSize - codec.TagSize
	plain := make([]byte, 0, room)
	var out []byte
	var batch [][]byte
	for {
		select {
		case <-l.kick:
		case <-l.down:
			return
		}
		l.qmu.Lock()
		batch, l.sendq = l.sendq, batch[:0]
		l.qmu.Unlock()
		if len(batch) == 0 {
			continue
		}
		out, plain = out[:0], plain[:0]
		var err error
		for i, t := range batch {
			if len(plain)+len(t) > room {
				if out, err = l.seal(out, plain); err != nil {
					break
				}
				plain = plain[:0]
			}
			plain = append(plain, t...)
			batch[i] = nil
		}
		if err == nil {
			out, err = l.seal(out, plain)
		}
		if err == nil {
			_, err = l.nc.Write(out)
		}
		if err != nil {
			l.fail(fmt.Errorf("writing: %w", err))
			return
		}
		l.c.noteBlocks(len(out) / l.blockSize)
	}
}

// seal appends plain, padded and sealed, as one block to out.
func (l *link) seal(out, plain []byte) ([]byte, error) {
	start := len(out)
	out = append(out, plain...)
	out = append(out, make([]byte, l.blockSize-len(plain))...)
	blk := out[start:]
	codec.Pad(blk[len(plain) : l.blockSize-codec.TagSize])
	if err := l.tx.Seal(blk); err != nil {
		return out, err
	}
	return out, nil
}

// readLoop opens blocks and handles their transmissions until the link fails.
func (l *link) readLoop() {
	buf := make([]byte, l.blockSize)
	p := codec.NewParser(codec.ClientSide, l.blockSize)
	var t codec.Transmission
	for {
		if _, err := io.ReadFull(l.nc, buf); err != nil {
			l.fail(fmt.Errorf("reading: %w", err))
			return
		}
		plain, err := l.rx.Open(buf)
		if err != nil {
			l.fail(fmt.Errorf("%w: %w", ErrProtocol, err))
			return
		}
		for codec.More(plain) {
			n := p.Parse(plain, &t)
			plain = plain[n:]
			if t.Err != codec.ErrNone || t.Lost || len(t.Signature) > 0 {
				l.fail(fmt.Errorf("%w: malformed server transmission (%v)", ErrProtocol, t.Err))
				return
			}
			l.handle(&t)
		}
	}
}

// subPending reports whether a SUB for rid is in flight on l.
func (l *link) subPending(rid []byte) bool {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	for _, cl := range l.pending {
		if cl.req.cmd == codec.CmdSUB && bytes.Equal(cl.req.qid, rid) {
			return true
		}
	}
	return false
}

// answers lists what the server may answer to each command (SPEC §5, §6).
var answers = map[codec.Cmd][]codec.Cmd{
	codec.CmdNEW:  {codec.CmdIDS},
	codec.CmdSUB:  {codec.CmdOK, codec.CmdMSG},
	codec.CmdACK:  {codec.CmdOK, codec.CmdMSG},
	codec.CmdKEY:  {codec.CmdOK},
	codec.CmdOFF:  {codec.CmdOK},
	codec.CmdDEL:  {codec.CmdOK},
	codec.CmdSEND: {codec.CmdOK},
	codec.CmdPING: {codec.CmdPONG},
}

// checkAnswer checks that t may answer cl: a response carries the
// command's queueId (SPEC §5; empty for NEW and PING, whose IDS and PONG
// have none) and is of a kind the command can get.
func checkAnswer(cl *call, t *codec.Transmission) error {
	if !bytes.Equal(t.QueueID, cl.req.qid) {
		return fmt.Errorf("%w: %v for queue %q answered with %v for queue %q", ErrProtocol, cl.req.cmd,
			base64.StdEncoding.EncodeToString(cl.req.qid), t.Cmd, base64.StdEncoding.EncodeToString(t.QueueID))
	}
	if t.Cmd == codec.CmdERR || slices.Contains(answers[cl.req.cmd], t.Cmd) {
		return nil
	}
	return fmt.Errorf("%w: %v answered with %v", ErrProtocol, cl.req.cmd, t.Cmd)
}

// handle answers the call t names by its corrId and delivers pushes. What
// the relay sends is checked before the client keeps anything of it: an
// answer for another queue, a push for a queue this client is not
// subscribed to or a second MSG before ACK fails the link, so that a hostile
// relay cannot make the client hold an unbounded amount.
func (l *link) handle(t *codec.Transmission) {
	var cl *call
	if len(t.CorrID) > 0 {
		l.pmu.Lock()
		cl = l.pending[string(t.CorrID)]
		delete(l.pending, string(t.CorrID))
		l.pmu.Unlock()
	}
	if cl != nil {
		if err := checkAnswer(cl, t); err != nil {
			cl.done <- reply{err: err}
			l.fail(err)
			return
		}
		r := reply{cmd: t.Cmd, errType: t.ErrType}
		if t.Cmd == codec.CmdIDS {
			r.rid, r.sid = bytes.Clone(t.RID), bytes.Clone(t.SID)
		}
		// Done here, on the reader, so that a reconnection (which starts only
		// after this goroutine ends) sees every subscription that succeeded,
		// and before the MSG is delivered, so that its queue is subscribed.
		l.c.account(cl, &r)
		if t.Cmd == codec.CmdMSG {
			l.c.deliver(t)
		}
		cl.done <- r
		return
	}
	switch {
	case len(t.CorrID) > 0 && t.Cmd == codec.CmdMSG:
		// The answer to a SUB or ACK whose caller gave up: the server counts
		// the message as delivered, and the queue stalls until it is
		// acknowledged, so it is delivered if the queue is still ours and
		// no message awaits ACK on it; otherwise it is dropped.
		if l.c.lateMessage(t.QueueID) {
			l.c.deliver(t)
		}
	case len(t.CorrID) > 0:
		// Another answer to a command whose caller gave up.
	case t.Cmd == codec.CmdMSG || t.Cmd == codec.CmdEND:
		if err := l.c.admitPush(l, t.Cmd, t.QueueID); err != nil {
			l.fail(err)
			return
		}
		if t.Cmd == codec.CmdMSG {
			l.c.deliver(t)
		} else {
			l.c.ended(t.QueueID)
		}
	}
}
