// Package sessiontest is the test harness that drives engine Sessions at the
// plaintext level, as an event loop would but with no sockets and no
// encryption (the Writer's Seal is nil): tests see exactly the transmissions
// the engine writes and the blocks it packs them into. The engine's own tests
// and the tests of the engine on a store (wal) use it.
//
// It does not import engine, since engine's internal tests (package engine)
// import it: it names what it drives as interfaces, Session[W] and Writer,
// which *engine.Session and *engine.Writer satisfy, and leaves building the
// Engine, with its Store and Limits, to each test package:
//
//	w := engine.NewWriter(bs)
//	c := sessiontest.NewConn(t, bs, e.NewSession, w, &w.Send)
package sessiontest

import (
	"bytes"
	"context"
	"encoding/base64"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// Writer is what the harness needs of engine.Writer.
type Writer interface {
	Finish() error
}

// Session is what the harness needs of engine.Session, whose methods take
// the writer type W (*engine.Writer).
type Session[W Writer] interface {
	Process(plain []byte, p *codec.Parser, t *codec.Transmission, w W)
	Drain(w W)
	Close()
}

// Response is one server transmission, copied out of the parser's buffers.
type Response struct {
	Cmd     codec.Cmd
	CorrID  string
	QueueID []byte
	Err     codec.Error // ERR's type
	RID     []byte
	SID     []byte
	MsgID   []byte
	Time    string
	Body    []byte
}

// Conn is one connection's Session with the buffers an event loop would
// lend it. Its exported fields are there for tests that drive the Session
// themselves (ProcessSome, ProcessBatched, a Writer that drops batches);
// Do, One, Drain and Call cover the usual cases. A Conn is for one goroutine.
type Conn[S Session[W], W Writer] struct {
	T         testing.TB // where failures go; a subtest may set its own
	S         S
	P         *codec.Parser // the server side's parser for this connection
	Tr        codec.Transmission
	W         W
	Blocks    [][]byte     // plaintext blocks written since the last Read
	Woken     atomic.Int32 // how many times the session woke its loop
	BlockSize int

	wake    chan struct{} // a token when woken, for Call
	pending []Response    // read by Call and not yet returned
	closed  bool
}

// NewConn opens a session with newSession (an Engine's NewSession), to be
// driven with the writer w, whose Send field send points to: NewConn sets it
// to collect each block written into Blocks. The session is closed when the
// test ends.
func NewConn[S Session[W], W Writer](t testing.TB, blockSize int, newSession func(wake func()) S, w W,
	send *func(batch []byte) error) *Conn[S, W] {
	c := &Conn[S, W]{T: t, P: codec.NewParser(codec.ServerSide, blockSize), W: w, BlockSize: blockSize,
		wake: make(chan struct{}, 1)}
	c.S = newSession(func() {
		c.Woken.Add(1)
		select {
		case c.wake <- struct{}{}:
		default:
		}
	})
	*send = func(batch []byte) error {
		for len(batch) > 0 {
			c.Blocks = append(c.Blocks, bytes.Clone(batch[:blockSize]))
			batch = batch[blockSize:]
		}
		return nil
	}
	t.Cleanup(c.Close)
	return c
}

// Close ends the session, as the event loop does when the connection
// closes; a second call does nothing.
func (c *Conn[S, W]) Close() {
	if !c.closed {
		c.closed = true
		c.S.Close()
	}
}

// Block builds one block's plaintext (blockSize minus the tag) from whole
// transmissions, padded.
func Block(blockSize int, txs ...[]byte) []byte {
	b := make([]byte, blockSize-codec.TagSize)
	n := 0
	for _, tx := range txs {
		n += copy(b[n:], tx)
	}
	codec.Pad(b[n:])
	return b
}

// Do processes the transmissions in one block, then drains what other
// sessions posted, and returns every response written.
func (c *Conn[S, W]) Do(txs ...[]byte) []Response {
	c.T.Helper()
	c.S.Process(Block(c.BlockSize, txs...), c.P, &c.Tr, c.W)
	return c.Drain()
}

// One is Do expecting exactly one response.
func (c *Conn[S, W]) One(txs ...[]byte) Response {
	c.T.Helper()
	rs := c.Do(txs...)
	if len(rs) != 1 {
		c.T.Fatalf("got %d responses, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// Drain writes whatever other sessions (or the store) posted, finishes the
// writer and returns the responses written since the last read.
func (c *Conn[S, W]) Drain() []Response {
	c.T.Helper()
	c.S.Drain(c.W)
	if err := c.W.Finish(); err != nil {
		c.T.Fatal(err)
	}
	return c.Read()
}

// Read parses the blocks written since the last read.
func (c *Conn[S, W]) Read() []Response {
	c.T.Helper()
	var out []Response
	p := codec.NewParser(codec.ClientSide, c.BlockSize)
	var tr codec.Transmission
	for _, b := range c.Blocks {
		plain := b[:c.BlockSize-codec.TagSize]
		for codec.More(plain) {
			plain = plain[p.Parse(plain, &tr):]
			if tr.Err != codec.ErrNone {
				c.T.Fatalf("server wrote a transmission that does not parse: %v", tr.Err)
			}
			out = append(out, Response{
				Cmd: tr.Cmd, CorrID: string(tr.CorrID), QueueID: bytes.Clone(tr.QueueID), Err: tr.ErrType,
				RID: bytes.Clone(tr.RID), SID: bytes.Clone(tr.SID), MsgID: bytes.Clone(tr.MsgID),
				Time: string(tr.Time), Body: bytes.Clone(tr.Body),
			})
		}
	}
	c.Blocks = nil
	return out
}

// Call processes tx in a block of its own and returns the response with
// corrID, draining each time the session is woken until it comes: a store
// that makes records durable later (wal) holds the reply until then. Other
// responses read meanwhile are kept for later Calls. It fails the test when
// the test's deadline is near, as a guard against a hang.
func (c *Conn[S, W]) Call(corrID string, tx []byte) Response {
	c.T.Helper()
	c.S.Process(Block(c.BlockSize, tx), c.P, &c.Tr, c.W)
	ctx, cancel := guard(c.T)
	defer cancel()
	for {
		c.pending = append(c.pending, c.Drain()...)
		for i, r := range c.pending {
			if r.CorrID == corrID {
				c.pending = slices.Delete(c.pending, i, i+1)
				return r
			}
		}
		select {
		case <-c.wake:
		case <-ctx.Done():
			c.T.Fatalf("no response to %q: %v", corrID, ctx.Err())
		}
	}
}

// guard is a context that ends a little before t's deadline, if it has one.
func guard(t testing.TB) (context.Context, context.CancelFunc) {
	if d, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if dl, ok := d.Deadline(); ok {
			return context.WithDeadline(t.Context(), dl.Add(-5*time.Second))
		}
	}
	return context.WithCancel(t.Context())
}

// Tx builds a client transmission, signed by s when s is not nil.
func Tx(t testing.TB, s *codec.Signer, corrID string, qid []byte, cmd codec.Cmd, key, body []byte) []byte {
	t.Helper()
	signed := codec.AppendSigned(nil, []byte(corrID), qid, cmd, key, body)
	var sig []byte
	if s != nil {
		var err error
		if sig, err = s.Sign(signed); err != nil {
			t.Fatal(err)
		}
	}
	return codec.AppendClientTransmission(nil, sig, signed)
}

// Signer returns a new key of alg (RSA keys are 2048 bits).
func Signer(t testing.TB, alg codec.SigAlg) *codec.Signer {
	t.Helper()
	s, err := codec.GenerateSigner(alg, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// WantCmd fails the test unless r is a cmd, and returns r.
func WantCmd(t testing.TB, r Response, cmd codec.Cmd) Response {
	t.Helper()
	if r.Cmd != cmd {
		t.Fatalf("got %v (ERR %v), want %v", r.Cmd, r.Err, cmd)
	}
	return r
}

// WantErr fails the test unless r is ERR e.
func WantErr(t testing.TB, r Response, e codec.Error) {
	t.Helper()
	if r.Cmd != codec.CmdERR || r.Err != e {
		t.Fatalf("got %v %v, want ERR %v", r.Cmd, r.Err, e)
	}
}

// B64 is the base64 form of IDs and keys in transmissions.
func B64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Clock is a settable time source for engine.Options.Now, in whole seconds.
type Clock struct {
	sec  atomic.Int64
	step int64
}

// NewClock returns a clock at start that moves on by step (whole seconds;
// 0 for a clock that only Advance moves) each time it is read, so that
// successive messages can have timestamps of their own.
func NewClock(start time.Time, step time.Duration) *Clock {
	c := &Clock{step: int64(step / time.Second)}
	c.sec.Store(start.Unix() - c.step)
	return c
}

// Now moves the clock on by its step and returns the time.
func (c *Clock) Now() time.Time { return time.Unix(c.sec.Add(c.step), 0) }

// Advance moves the clock on by d (whole seconds).
func (c *Clock) Advance(d time.Duration) { c.sec.Add(int64(d / time.Second)) }
