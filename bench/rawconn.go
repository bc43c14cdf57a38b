package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// rawConn is an attacker's connection: the handshake done by hand with
// codec, so that it can send what no well-behaved client would (packed
// floods, repeated pre-signed transmissions) and count every byte. Its
// socket closes when the context it was dialled with ends, which unblocks
// any read or write on it.
type rawConn struct {
	nc     net.Conn
	bs     int
	tx, rx codec.BlockCipher
	parser *codec.Parser
	tr     codec.Transmission
	buf    []byte
	rest   []byte // plaintext of the current block not yet parsed
	ctr    *attackCounters
	stop   func() bool
}

// rawResp is one server transmission, the fields the attacks look at copied.
type rawResp struct {
	cmd      codec.Cmd
	errType  codec.Error
	rid, sid []byte
}

// attackCounters are one attack's running totals, shared by its goroutines.
type attackCounters struct {
	conns, cmds, out, in, resps, drops atomic.Int64
	firstErr                           atomic.Value // string: the first dial that failed, and why
}

// dialFailed counts a failed dial and keeps the first reason; a dial cut
// short by the end of the phase is neither.
func (c *attackCounters) dialFailed(ctx context.Context, err error) {
	if phaseOver(ctx) {
		return
	}
	c.drops.Add(1)
	c.firstErr.CompareAndSwap(nil, err.Error())
}

// phaseOver reports whether ctx, a phase's context, has ended. Its deadline
// counts from the moment it passes: a dial waiting in connect gets "i/o
// timeout" from the poller a moment before ctx.Err is set, and that is the
// phase ending, not the relay refusing.
func phaseOver(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// dialFromSrc opens a TCP connection from src whose close sends RST, so
// that the thousands of short connections a flood makes leave no TIME_WAIT
// behind to exhaust the source address's ports.
func dialFromSrc(ctx context.Context, src, addr string) (*net.TCPConn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := nc.(*net.TCPConn)
	_ = tc.SetLinger(0)
	return tc, nil
}

// readServerHello reads one server hello (SPEC §3.1) and returns it parsed
// and as sent.
func readServerHello(r io.Reader) (codec.ServerHello, []byte, error) {
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return codec.ServerHello{}, nil, err
	}
	raw := make([]byte, 10+int(binary.BigEndian.Uint16(hdr[8:]))+codec.RandomSize+codec.ShareSize)
	copy(raw, hdr)
	if _, err := io.ReadFull(r, raw[10:]); err != nil {
		return codec.ServerHello{}, nil, err
	}
	h, _, err := codec.ParseServerHello(raw)
	return h, raw, err
}

// rawDial connects from src, checks the relay's key against fp, completes
// the handshake and reads the welcome block.
func rawDial(ctx context.Context, src, addr, fp string, ctr *attackCounters) (*rawConn, error) {
	tc, err := dialFromSrc(ctx, src, addr)
	if err != nil {
		return nil, err
	}
	c := &rawConn{nc: tc, ctr: ctr, stop: context.AfterFunc(ctx, func() { tc.Close() })}
	if err := c.handshake(fp); err != nil {
		c.close()
		return nil, err
	}
	ctr.conns.Add(1)
	return c, nil
}

func (c *rawConn) handshake(fp string) error {
	h, raw, err := readServerHello(c.nc)
	if err != nil {
		return fmt.Errorf("server hello: %w", err)
	}
	if codec.Fingerprint(h.Key) != fp {
		return errors.New("server key fingerprint mismatch")
	}
	key, err := codec.ParseKEMPublicKey(h.Key)
	if err != nil {
		return err
	}
	ch, keys, err := codec.ClientHandshake(raw, &h, key)
	if err != nil {
		return err
	}
	defer keys.Clear()
	c.bs = int(h.BlockSize)
	c.buf = make([]byte, c.bs)
	c.parser = codec.NewParser(codec.ClientSide, c.bs)
	if err := c.tx.Init(keys.C2SKey, keys.C2SNonce); err != nil {
		return err
	}
	if err := c.rx.Init(keys.S2CKey, keys.S2CNonce); err != nil {
		return err
	}
	if err := c.write(ch); err != nil {
		return err
	}
	plain, err := c.readBlock()
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	if !bytes.HasPrefix(plain, codec.Welcome) {
		return errors.New("bad welcome block")
	}
	return nil
}

func (c *rawConn) close() {
	c.stop()
	c.nc.Close()
}

func (c *rawConn) write(b []byte) error {
	n, err := c.nc.Write(b)
	c.ctr.out.Add(int64(n))
	return err
}

// seal appends to dst the next c2s block: plain padded with '#' and sealed.
func (c *rawConn) seal(dst, plain []byte) []byte {
	i := len(dst)
	dst = append(dst, plain...)
	dst = append(dst, make([]byte, c.bs-len(plain))...)
	codec.Pad(dst[i+len(plain) : i+c.bs-codec.TagSize])
	if err := c.tx.Seal(dst[i : i+c.bs]); err != nil {
		panic(err) // only a block of the wrong size fails, and this one is right
	}
	return dst
}

// pack packs whole transmissions into block plaintexts, as many to a block
// as fit.
func pack(bs int, txs [][]byte) [][]byte {
	room := bs - codec.TagSize
	var out [][]byte
	var cur []byte
	for _, t := range txs {
		if len(cur)+len(t) > room {
			out = append(out, cur)
			cur = nil
		}
		cur = append(cur, t...)
	}
	return append(out, cur)
}

// sendPlain seals each plaintext as a block and writes them in one write,
// counting n commands.
func (c *rawConn) sendPlain(plains [][]byte, n int) error {
	var out []byte
	for _, p := range plains {
		out = c.seal(out, p)
	}
	c.ctr.cmds.Add(int64(n))
	return c.write(out)
}

// send packs transmissions into blocks and writes them.
func (c *rawConn) send(txs ...[]byte) error { return c.sendPlain(pack(c.bs, txs), len(txs)) }

func (c *rawConn) readBlock() ([]byte, error) {
	n, err := io.ReadFull(c.nc, c.buf)
	c.ctr.in.Add(int64(n))
	if err != nil {
		return nil, err
	}
	return c.rx.Open(c.buf)
}

// recv returns the relay's next transmission.
func (c *rawConn) recv() (rawResp, error) {
	for !codec.More(c.rest) {
		plain, err := c.readBlock()
		if err != nil {
			return rawResp{}, err
		}
		c.rest = plain
	}
	n := c.parser.Parse(c.rest, &c.tr)
	c.rest = c.rest[n:]
	c.ctr.resps.Add(1)
	t := &c.tr
	if t.Err != codec.ErrNone {
		return rawResp{}, fmt.Errorf("malformed server transmission: %v", t.Err)
	}
	return rawResp{cmd: t.Cmd, errType: t.ErrType, rid: bytes.Clone(t.RID), sid: bytes.Clone(t.SID)}, nil
}

// answers reads until n responses other than pushed MSGs have come, and
// returns them.
func (c *rawConn) answers(n int) ([]rawResp, error) {
	var out []rawResp
	for len(out) < n {
		r, err := c.recv()
		if err != nil {
			return out, err
		}
		if r.cmd != codec.CmdMSG {
			out = append(out, r)
		}
	}
	return out, nil
}

// drain reads and parses everything the relay sends until the connection
// ends, calling f for each transmission.
func (c *rawConn) drain(f func(rawResp)) {
	for {
		r, err := c.recv()
		if err != nil {
			return
		}
		f(r)
	}
}

// tx builds a client transmission, signed by signer when it is not nil.
func tx(signer *codec.Signer, corrID string, qid []byte, cmd codec.Cmd, key, body []byte) []byte {
	signed := codec.AppendSigned(nil, []byte(corrID), qid, cmd, key, body)
	var sig []byte
	if signer != nil {
		var err error
		if sig, err = signer.Sign(signed); err != nil {
			panic(fmt.Sprintf("signing: %v", err)) // only a broken random source fails
		}
	}
	return codec.AppendClientTransmission(nil, sig, signed)
}
