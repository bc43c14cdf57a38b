// Package fakerelay is a scriptable SMP relay for tests of clients against a
// relay that breaks SPEC.md. It is written on codec alone: the server side of
// the transport v2 handshake (SPEC §3.1, §3.2) with codec.ServerHandshake and
// an X25519 share, blocks with codec.BlockCipher (SPEC §3.3), and server
// transmissions built with codec's Append* encoders (SPEC §4, §5).
//
// Start listens on 127.0.0.1 and hands each connection, as a Session, to the
// test's Handler, which decides what the relay does: run the handshake or
// not, send the welcome or not, answer commands honestly (Answer) or not,
// push anything, and write fast or one byte at a time. Every command any
// session reads is logged (Relay.Commands).
package fakerelay

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// Handler runs one connection. ctx ends when the test does; the connection
// is closed when the Handler returns.
type Handler func(ctx context.Context, s *Session)

// Relay is a fake relay listening on 127.0.0.1. Its methods are safe for
// concurrent use. It closes when the test ends.
type Relay struct {
	Addr        string // host:port clients dial
	Fingerprint string // of its x25519 transport key (SPEC §2)
	BlockSize   int    // of every connection; codec.DefaultBlockSize

	key    *codec.KEMPrivateKey
	ln     net.Listener
	handle Handler
	ctx    context.Context
	wg     sync.WaitGroup

	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	log      []Command
	accepted int
}

// Start starts a relay whose connections h runs.
func Start(t testing.TB, h Handler) *Relay {
	t.Helper()
	key, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Relay{
		Addr: ln.Addr().String(), Fingerprint: key.Public().Fingerprint(), BlockSize: codec.DefaultBlockSize,
		key: key, ln: ln, handle: h, ctx: ctx, conns: map[net.Conn]struct{}{},
	}
	r.wg.Add(1)
	go r.acceptLoop()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		r.mu.Lock()
		for nc := range r.conns {
			nc.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *Relay) acceptLoop() {
	defer r.wg.Done()
	for {
		nc, err := r.ln.Accept()
		if err != nil {
			return
		}
		r.mu.Lock()
		r.conns[nc] = struct{}{}
		r.accepted++
		seq := r.accepted
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() {
				nc.Close()
				r.mu.Lock()
				delete(r.conns, nc)
				r.mu.Unlock()
			}()
			r.handle(r.ctx, &Session{r: r, nc: nc, BlockSize: r.BlockSize, Seq: seq})
		}()
	}
}

// Accepted returns how many connections the relay accepted.
func (r *Relay) Accepted() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accepted
}

// Commands returns every command the sessions have read, in order.
func (r *Relay) Commands() []Command {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Command(nil), r.log...)
}

// Count returns how many commands of kind cmd the sessions have read.
func (r *Relay) Count(cmd codec.Cmd) int {
	n := 0
	for _, c := range r.Commands() {
		if c.Cmd == cmd {
			n++
		}
	}
	return n
}

// Command is a client command as the relay read it, every field copied.
type Command struct {
	Cmd     codec.Cmd
	CorrID  []byte
	QueueID []byte
	Signed  bool   // the signature field was not empty
	Key     []byte // NEW, KEY: SPKI DER
	Body    []byte // SEND
}

// Session is one connection. Its methods are for the Handler's goroutine.
type Session struct {
	Seq       int // 1 for the relay's first connection, 2 for the next…
	BlockSize int
	// Trickle makes every write go out one byte at a time, and Gap, when
	// set, waits that long between bytes: a relay that is slow on purpose.
	Trickle bool
	Gap     time.Duration

	r      *Relay
	nc     net.Conn
	tx, rx codec.BlockCipher
	parser *codec.Parser
	rest   []byte // plaintext of the current c2s block not parsed yet
}

// Conn returns the TCP connection.
func (s *Session) Conn() net.Conn { return s.nc }

// Handshake sends the server hello, reads the client hello and derives the
// block keys (SPEC §3.1, §3.2). It does not send the welcome.
func (s *Session) Handshake() error {
	share, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	h := codec.ServerHello{
		MinVersion: codec.TransportVersion, MaxVersion: codec.TransportVersion,
		BlockSize: uint32(s.BlockSize), Key: s.r.key.Public().Bytes(),
	}
	if _, err := rand.Read(h.Random[:]); err != nil {
		return err
	}
	copy(h.Share[:], share.PublicKey().Bytes())
	sh := h.Append(nil)
	if err := s.Write(sh); err != nil {
		return fmt.Errorf("fakerelay: sending the hello: %w", err)
	}
	ch := make([]byte, codec.ClientHelloLen(s.r.key.Public()))
	if _, err := io.ReadFull(s.nc, ch); err != nil {
		return fmt.Errorf("fakerelay: reading the client hello: %w", err)
	}
	keys, err := codec.ServerHandshake(s.r.key, share, h.BlockSize, &h.Random, ch, sh)
	if err != nil {
		return fmt.Errorf("fakerelay: %w", err)
	}
	defer keys.Clear()
	s.parser = codec.NewParser(codec.ServerSide, s.BlockSize)
	return errors.Join(s.tx.Init(keys.S2CKey, keys.S2CNonce), s.rx.Init(keys.C2SKey, keys.C2SNonce))
}

// Welcome sends the welcome block (SPEC §3.3).
func (s *Session) Welcome() error { return s.Send(codec.Welcome) }

// Accept runs the handshake and sends the welcome, as an honest relay does.
func (s *Session) Accept() error {
	if err := s.Handshake(); err != nil {
		return err
	}
	return s.Welcome()
}

// Block seals plain, padded, as the next s2c block. plain must fit.
func (s *Session) Block(plain []byte) ([]byte, error) {
	room := s.BlockSize - codec.TagSize
	if len(plain) > room {
		return nil, fmt.Errorf("fakerelay: %d bytes do not fit in a block of %d", len(plain), s.BlockSize)
	}
	blk := make([]byte, s.BlockSize)
	copy(blk, plain)
	codec.Pad(blk[len(plain):room])
	if err := s.tx.Seal(blk); err != nil {
		return nil, err
	}
	return blk, nil
}

// Send packs the transmissions ts into as few blocks as they need, in order,
// and writes them.
func (s *Session) Send(ts ...[]byte) error {
	room := s.BlockSize - codec.TagSize
	var out, plain []byte
	for _, t := range ts {
		if len(plain)+len(t) > room && len(plain) > 0 {
			blk, err := s.Block(plain)
			if err != nil {
				return err
			}
			out, plain = append(out, blk...), plain[:0]
		}
		plain = append(plain, t...)
	}
	if len(plain) > 0 || len(ts) == 0 {
		blk, err := s.Block(plain)
		if err != nil {
			return err
		}
		out = append(out, blk...)
	}
	return s.Write(out)
}

// Write writes b as it is, one byte at a time with Trickle.
func (s *Session) Write(b []byte) error {
	if !s.Trickle {
		_, err := s.nc.Write(b)
		return err
	}
	for i := range b {
		if _, err := s.nc.Write(b[i : i+1]); err != nil {
			return err
		}
		if s.Gap > 0 {
			time.Sleep(s.Gap) // the relay's pace, not a synchronisation
		}
	}
	return nil
}

// Next returns the client's next command, reading blocks as needed. It
// returns io.EOF (possibly wrapped) once the client has closed.
func (s *Session) Next() (Command, error) {
	for !codec.More(s.rest) {
		blk := make([]byte, s.BlockSize)
		if _, err := io.ReadFull(s.nc, blk); err != nil {
			return Command{}, err
		}
		plain, err := s.rx.Open(blk)
		if err != nil {
			return Command{}, fmt.Errorf("fakerelay: %w", err)
		}
		s.rest = plain
	}
	var t codec.Transmission
	n := s.parser.Parse(s.rest, &t)
	s.rest = s.rest[n:]
	if t.Err != codec.ErrNone {
		return Command{}, fmt.Errorf("fakerelay: client sent a bad transmission: %v", t.Err)
	}
	c := Command{
		Cmd: t.Cmd, CorrID: bytes.Clone(t.CorrID), QueueID: bytes.Clone(t.QueueID),
		Signed: len(t.Signature) > 0, Body: bytes.Clone(t.Body),
	}
	if t.Key != nil {
		c.Key = bytes.Clone(t.Key.SPKI())
	}
	s.r.mu.Lock()
	s.r.log = append(s.r.log, c)
	s.r.mu.Unlock()
	return c, nil
}

// Serve reads commands until the client closes and sends, in one go, the
// transmissions answer returns for each.
func (s *Session) Serve(answer func(Command) [][]byte) error {
	for {
		c, err := s.Next()
		if err != nil {
			return err
		}
		if ts := answer(c); len(ts) > 0 {
			if err := s.Send(ts...); err != nil {
				return err
			}
		}
	}
}

// Answer is what an honest relay with no messages answers to c: IDS with
// fresh IDs for NEW, PONG for PING, OK for everything else (SPEC §5).
func Answer(c Command) [][]byte {
	switch c.Cmd {
	case codec.CmdNEW:
		return [][]byte{codec.AppendIDS(nil, c.CorrID, RandomID(), RandomID())}
	case codec.CmdPING:
		return [][]byte{codec.AppendPONG(nil, c.CorrID)}
	}
	return [][]byte{codec.AppendOK(nil, c.CorrID, c.QueueID)}
}

// RandomID returns a fresh 16-byte queue ID.
func RandomID() []byte {
	b := make([]byte, codec.QueueIDSize)
	rand.Read(b)
	return b
}

// RandomMsgID returns a fresh 8-byte message ID.
func RandomMsgID() []byte {
	b := make([]byte, codec.MsgIDSize)
	rand.Read(b)
	return b
}
