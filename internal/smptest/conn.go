// Package smptest is a small SMP v1 test client written against SPEC.md, plus
// helpers that build and run the real smp-server binary.
//
// A Conn is one client connection after the handshake (SPEC §3): Dial checks
// the server key's fingerprint and the welcome block; Send packs whole
// transmissions into sealed blocks; Next returns the server's transmissions one
// at a time, copied out of the parser's buffers. WriteRaw and SealBlock let a
// test put arbitrary bytes on the wire (tampered blocks, malformed
// transmissions). Cmd and StringSend build client transmissions.
//
// Every blocking call takes a context and maps its deadline (or cancellation)
// onto the socket's deadline, so a test that waits for something that never
// comes fails instead of hanging.
//
// The real binary is launched by package proc (internal/smptest/proc), which
// go run ./bench uses too; for tests, BuildServer builds it once per test
// binary run (with -race when the tests have it), StartServer runs it on
// 127.0.0.1 with a fresh data directory and stops it (SIGTERM, exit status 0
// asserted) when the test ends, and RunServer runs one of its commands to the
// end.
package smptest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"

	"github.com/smprelay/smprelay/codec"

	"github.com/smprelay/smprelay/internal/netctx"
)

// Response is one server transmission, with every field copied.
type Response struct {
	Cmd     codec.Cmd
	CorrID  string
	QueueID []byte      // decoded queueId; nil when empty
	Err     codec.Error // ERR: the error the server reported
	RID     []byte      // IDS
	SID     []byte      // IDS
	MsgID   []byte      // MSG
	Time    string      // MSG: the timestamp as sent
	Body    []byte      // MSG
	Raw     []byte      // the whole transmission as received
	Block   uint64      // number of the s2c block that carried it (the welcome is 0)
}

// String renders r for test failure messages.
func (r Response) String() string {
	s := fmt.Sprintf("%s corr=%q q=%s", r.Cmd, r.CorrID, b64(r.QueueID))
	switch r.Cmd {
	case codec.CmdERR:
		s += " ERR " + r.Err.String()
	case codec.CmdIDS:
		s += " rid=" + b64(r.RID) + " sid=" + b64(r.SID)
	case codec.CmdMSG:
		s += fmt.Sprintf(" id=%s t=%s body=%q", b64(r.MsgID), r.Time, r.Body)
	}
	return s
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Conn is an SMP client connection whose handshake is done. Send, WriteRaw and
// SealBlock may run concurrently with Next; each of the two groups is for one
// goroutine at a time.
type Conn struct {
	nc        net.Conn
	hello     codec.ServerHello
	blockSize int

	wmu sync.Mutex
	tx  codec.BlockCipher // client -> server

	rx      codec.BlockCipher // server -> client
	parser  *codec.Parser
	tr      codec.Transmission
	buf     []byte
	pending []Response
	blocks  uint64 // s2c blocks opened, welcome included
}

// ReadServerHello reads exactly one server hello (SPEC §3.1) from nc, no more,
// honouring ctx's deadline. It is for tests that run the handshake by hand.
func ReadServerHello(ctx context.Context, nc net.Conn) (codec.ServerHello, []byte, error) {
	var h codec.ServerHello
	var raw []byte
	err := netctx.Do(ctx, nc, func() error {
		hdr := make([]byte, 10)
		if _, err := io.ReadFull(nc, hdr); err != nil {
			return fmt.Errorf("smptest: reading server hello: %w", err)
		}
		raw = make([]byte, 10+int(binary.BigEndian.Uint16(hdr[8:]))+codec.RandomSize+codec.ShareSize)
		copy(raw, hdr)
		if _, err := io.ReadFull(nc, raw[10:]); err != nil {
			return fmt.Errorf("smptest: reading server hello key, random and share: %w", err)
		}
		var n int
		var err error
		h, n, err = codec.ParseServerHello(raw)
		if err != nil {
			return fmt.Errorf("smptest: server hello: %w", err)
		}
		if n != len(raw) {
			return fmt.Errorf("smptest: server hello used %d of %d bytes", n, len(raw))
		}
		return nil
	})
	return h, raw, err
}

// Dial connects to addr, checks that the server key's fingerprint is
// fingerprint (closing the connection with an error if not), sends a fresh
// client hello and reads and checks the welcome block.
func Dial(ctx context.Context, addr, fingerprint string) (*Conn, error) {
	return DialFrom(ctx, nil, addr, fingerprint)
}

// DialFrom is Dial from the local address from (nil: any), for tests of
// per-source limits: 127.0.0.x addresses are distinct sources on loopback.
func DialFrom(ctx context.Context, from net.IP, addr, fingerprint string) (*Conn, error) {
	var d net.Dialer
	if from != nil {
		d.LocalAddr = &net.TCPAddr{IP: from}
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := handshake(ctx, nc, fingerprint)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

func handshake(ctx context.Context, nc net.Conn, fingerprint string) (*Conn, error) {
	h, raw, err := ReadServerHello(ctx, nc)
	if err != nil {
		return nil, err
	}
	if got := codec.Fingerprint(h.Key); got != fingerprint {
		return nil, fmt.Errorf("smptest: server key fingerprint mismatch: server has %s, want %s", got, fingerprint)
	}
	key, err := codec.ParseKEMPublicKey(h.Key)
	if err != nil {
		return nil, fmt.Errorf("smptest: server key: %w", err)
	}
	ch, keys, err := codec.ClientHandshake(raw, &h, key)
	if err != nil {
		return nil, fmt.Errorf("smptest: %w", err)
	}
	defer keys.Clear()
	bs := int(h.BlockSize)
	c := &Conn{nc: nc, hello: h, blockSize: bs, parser: codec.NewParser(codec.ClientSide, bs), buf: make([]byte, bs)}
	if err := c.tx.Init(keys.C2SKey, keys.C2SNonce); err != nil {
		return nil, err
	}
	if err := c.rx.Init(keys.S2CKey, keys.S2CNonce); err != nil {
		return nil, err
	}
	if err := netctx.Do(ctx, nc, func() error { _, err := nc.Write(ch); return err }); err != nil {
		return nil, fmt.Errorf("smptest: sending client hello: %w", err)
	}
	plain, err := c.ReadBlock(ctx)
	if err != nil {
		return nil, fmt.Errorf("smptest: reading welcome: %w", err)
	}
	if !bytes.HasPrefix(plain, codec.Welcome) || len(bytes.Trim(plain[len(codec.Welcome):], "#")) != 0 {
		return nil, fmt.Errorf("smptest: bad welcome block %q", trunc(plain))
	}
	return c, nil
}

// Hello returns the server hello the connection began with.
func (c *Conn) Hello() codec.ServerHello { return c.hello }

// BlockSize returns the connection's block size.
func (c *Conn) BlockSize() int { return c.blockSize }

// BlocksReceived returns how many s2c blocks were opened, the welcome included.
func (c *Conn) BlocksReceived() uint64 { return c.blocks }

// NetConn returns the underlying TCP connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// SealBlock pads plain (at most BlockSize−16 bytes) with '#' and seals it as
// the next c2s block, advancing the block counter. The caller sends the result
// with WriteRaw, in the order blocks were sealed.
func (c *Conn) SealBlock(plain []byte) []byte {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.sealLocked(plain)
}

func (c *Conn) sealLocked(plain []byte) []byte {
	if len(plain) > c.blockSize-codec.TagSize {
		panic(fmt.Sprintf("smptest: %d bytes do not fit in a block of %d", len(plain), c.blockSize))
	}
	blk := make([]byte, c.blockSize)
	n := copy(blk, plain)
	codec.Pad(blk[n : c.blockSize-codec.TagSize])
	if err := c.tx.Seal(blk); err != nil {
		panic(err)
	}
	return blk
}

// WriteRaw writes b to the socket as is.
func (c *Conn) WriteRaw(b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.nc.Write(b)
	return err
}

// Send packs whole transmissions, in order, into as few blocks as possible
// and writes them in one write. A transmission larger than a block's
// plaintext is an error.
func (c *Conn) Send(transmissions ...[]byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	room := c.blockSize - codec.TagSize
	var out, cur []byte
	for _, t := range transmissions {
		if len(t) > room {
			return fmt.Errorf("smptest: a %d-byte transmission does not fit in a block", len(t))
		}
		if len(cur)+len(t) > room {
			out = append(out, c.sealLocked(cur)...)
			cur = cur[:0]
		}
		cur = append(cur, t...)
	}
	if len(cur) > 0 || len(transmissions) == 0 {
		out = append(out, c.sealLocked(cur)...)
	}
	_, err := c.nc.Write(out)
	return err
}

// ReadBlock reads and opens the next s2c block and returns its plaintext,
// valid until the next read. Transmissions parsed but not yet returned by Next
// are not affected.
func (c *Conn) ReadBlock(ctx context.Context) ([]byte, error) {
	err := netctx.Do(ctx, c.nc, func() error {
		_, err := io.ReadFull(c.nc, c.buf)
		return err
	})
	if err != nil {
		return nil, err
	}
	plain, err := c.rx.Open(c.buf)
	if err != nil {
		return nil, fmt.Errorf("smptest: s2c block %d: %w", c.blocks, err)
	}
	c.blocks++
	return plain, nil
}

// Next returns the next server transmission, reading blocks as needed. A
// transmission that does not parse cleanly, or carries a signature, is an
// error: the server sent something SPEC does not allow.
func (c *Conn) Next(ctx context.Context) (Response, error) {
	for len(c.pending) == 0 {
		plain, err := c.ReadBlock(ctx)
		if err != nil {
			return Response{}, err
		}
		blk := c.blocks - 1
		for codec.More(plain) {
			n := c.parser.Parse(plain, &c.tr)
			raw := plain[:n]
			plain = plain[n:]
			t := &c.tr
			if t.Err != codec.ErrNone || t.Lost {
				return Response{}, fmt.Errorf("smptest: s2c block %d: malformed server transmission (%v): %q", blk, t.Err, trunc(raw))
			}
			if len(t.Signature) > 0 || raw[0] != '\r' {
				return Response{}, fmt.Errorf("smptest: s2c block %d: server transmission with a signature: %q", blk, trunc(raw))
			}
			c.pending = append(c.pending, Response{
				Cmd: t.Cmd, CorrID: string(t.CorrID), QueueID: clone(t.QueueID), Err: t.ErrType,
				RID: clone(t.RID), SID: clone(t.SID), MsgID: clone(t.MsgID), Time: string(t.Time),
				Body: clone(t.Body), Raw: bytes.Clone(raw), Block: blk,
			})
		}
	}
	r := c.pending[0]
	c.pending = c.pending[1:]
	return r, nil
}

// ExpectClosed waits for the server to close the connection and reports
// nil if it did: the read ends with EOF or a connection reset before ctx's
// deadline and without any byte arriving. Transmissions already parsed but not
// returned by Next count as bytes that arrived.
func (c *Conn) ExpectClosed(ctx context.Context) error {
	if len(c.pending) > 0 {
		return fmt.Errorf("smptest: expected the connection closed, %d transmissions pending, first %v", len(c.pending), c.pending[0])
	}
	return ExpectClosed(ctx, c.nc)
}

// ExpectClosed is Conn.ExpectClosed for a raw connection.
func ExpectClosed(ctx context.Context, nc net.Conn) error {
	var n int
	err := netctx.Do(ctx, nc, func() error {
		var b [4096]byte
		var err error
		n, err = nc.Read(b[:])
		return err
	})
	switch {
	case n > 0:
		return fmt.Errorf("smptest: expected the connection closed, got %d bytes", n)
	case errors.Is(err, io.EOF), errors.Is(err, syscall.ECONNRESET):
		return nil
	case err == nil:
		return errors.New("smptest: expected the connection closed, read returned nothing")
	default:
		return fmt.Errorf("smptest: connection not closed by the server: %w", err)
	}
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return bytes.Clone(b)
}

func trunc(b []byte) []byte {
	if len(b) > 200 {
		return b[:200]
	}
	return b
}

// Cmd builds a client transmission (SPEC §4): the signed part from
// codec.AppendSigned, signed by signer, framed by
// codec.AppendClientTransmission. A nil signer leaves the signature empty. key
// is the SPKI DER of NEW and KEY; body is SEND's body (binary form). Cmd panics
// if signing fails, which only a broken random source causes.
func Cmd(signer *codec.Signer, corrID string, queueID []byte, cmd codec.Cmd, key, body []byte) []byte {
	signed := codec.AppendSigned(nil, []byte(corrID), queueID, cmd, key, body)
	var sig []byte
	if signer != nil {
		var err error
		if sig, err = signer.Sign(signed); err != nil {
			panic(fmt.Sprintf("smptest: signing: %v", err))
		}
	}
	return codec.AppendClientTransmission(nil, sig, signed)
}

// StringSend builds the unsigned string form "SEND :text" to the queue sid
// (SPEC §4 stringMsg).
func StringSend(corrID string, sid []byte, text string) []byte {
	signed := fmt.Appendf(nil, "%s\r\n%s\r\nSEND :%s", corrID, b64(sid), text)
	return codec.AppendClientTransmission(nil, nil, signed)
}

// Ping builds an unsigned PING with corrID.
func Ping(corrID string) []byte { return Cmd(nil, corrID, nil, codec.CmdPING, nil, nil) }
