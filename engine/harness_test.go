package engine

import (
	"bytes"
	"encoding/base64"
	"sync/atomic"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// The harness drives Sessions at the plaintext level: no sockets, no
// encryption (Writer.Seal is nil), so tests see exactly the transmissions the
// engine writes and the blocks it packs them into.

const testBlock = codec.DefaultBlockSize

// clock is an injectable time source.
type clock struct{ t atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.t.Store(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC).Unix())
	return c
}

func (c *clock) now() time.Time          { return time.Unix(c.t.Load(), 0) }
func (c *clock) advance(d time.Duration) { c.t.Add(int64(d / time.Second)) }
func newTestEngine(t testing.TB, l Limits) (*Engine, *clock) {
	t.Helper()
	c := newClock()
	e, err := New(Options{BlockSize: testBlock, Limits: l, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

// resp is one server transmission, copied out of the parser's buffers.
type resp struct {
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

// tconn is one connection's Session with the buffers an event loop would lend it.
type tconn struct {
	t      testing.TB
	s      *Session
	p      *codec.Parser
	tr     codec.Transmission
	w      *Writer
	blocks [][]byte // plaintext blocks written since the last read
	woken  atomic.Int32
	closed bool
}

func newConn(t testing.TB, e *Engine) *tconn {
	c := &tconn{t: t, p: codec.NewParser(codec.ServerSide, testBlock), w: NewWriter(testBlock)}
	c.s = e.NewSession(func() { c.woken.Add(1) })
	c.w.Send = func(batch []byte) error {
		for len(batch) > 0 {
			c.blocks = append(c.blocks, bytes.Clone(batch[:testBlock]))
			batch = batch[testBlock:]
		}
		return nil
	}
	t.Cleanup(c.close)
	return c
}

// close ends the session, as gnet's OnClose does; a second call does nothing.
func (c *tconn) close() {
	if !c.closed {
		c.closed = true
		c.s.Close()
	}
}

// block builds one block's plaintext from whole transmissions.
func block(txs ...[]byte) []byte {
	b := make([]byte, testBlock-codec.TagSize)
	n := 0
	for _, tx := range txs {
		n += copy(b[n:], tx)
	}
	codec.Pad(b[n:])
	return b
}

// do sends the transmissions in one block, then drains pushes, and returns
// every response written.
func (c *tconn) do(txs ...[]byte) []resp {
	c.t.Helper()
	c.s.Process(block(txs...), c.p, &c.tr, c.w)
	return c.drain()
}

// drain writes whatever other sessions posted and returns the responses.
func (c *tconn) drain() []resp {
	c.t.Helper()
	c.s.Drain(c.w)
	if err := c.w.Finish(); err != nil {
		c.t.Fatal(err)
	}
	return c.read()
}

// read parses the blocks written since the last read.
func (c *tconn) read() []resp {
	c.t.Helper()
	var out []resp
	p := codec.NewParser(codec.ClientSide, testBlock)
	var tr codec.Transmission
	for _, b := range c.blocks {
		plain := b[:testBlock-codec.TagSize]
		for codec.More(plain) {
			n := p.Parse(plain, &tr)
			plain = plain[n:]
			if tr.Err != codec.ErrNone {
				c.t.Fatalf("server wrote a transmission that does not parse: %v", tr.Err)
			}
			out = append(out, resp{
				Cmd: tr.Cmd, CorrID: string(tr.CorrID), QueueID: bytes.Clone(tr.QueueID), Err: tr.ErrType,
				RID: bytes.Clone(tr.RID), SID: bytes.Clone(tr.SID), MsgID: bytes.Clone(tr.MsgID),
				Time: string(tr.Time), Body: bytes.Clone(tr.Body),
			})
		}
	}
	c.blocks = nil
	return out
}

// one expects exactly one response.
func (c *tconn) one(txs ...[]byte) resp {
	c.t.Helper()
	rs := c.do(txs...)
	if len(rs) != 1 {
		c.t.Fatalf("got %d responses, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// tx builds a client transmission, signed when s is not nil.
func tx(t testing.TB, s *codec.Signer, corrID string, qid []byte, cmd codec.Cmd, key, body []byte) []byte {
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

func signer(t testing.TB, alg codec.SigAlg) *codec.Signer {
	t.Helper()
	s, err := codec.GenerateSigner(alg, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// queueFixture is a created queue with its recipient connection subscribed.
type queueFixture struct {
	rid, sid []byte
	rk       *codec.Signer
	rc       *tconn // the recipient's connection (subscribed by NEW)
}

func newQueue(t testing.TB, e *Engine, alg codec.SigAlg) queueFixture {
	t.Helper()
	rk := signer(t, alg)
	rc := newConn(t, e)
	r := rc.one(tx(t, nil, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
	if r.Cmd != codec.CmdIDS {
		t.Fatalf("NEW: got %+v", r)
	}
	return queueFixture{rid: r.RID, sid: r.SID, rk: rk, rc: rc}
}

// secure secures the queue with a new sender key of alg (KEY) and returns
// that key, as a recipient does once the sender confirmed.
func (q queueFixture) secure(t testing.TB, alg codec.SigAlg) *codec.Signer {
	t.Helper()
	sk := signer(t, alg)
	wantCmd(t, q.rc.one(tx(t, q.rk, "key", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.CmdOK)
	return sk
}

func wantCmd(t testing.TB, r resp, cmd codec.Cmd) {
	t.Helper()
	if r.Cmd != cmd {
		t.Fatalf("got %v (ERR %v), want %v", r.Cmd, r.Err, cmd)
	}
}

func wantErr(t testing.TB, r resp, e codec.Error) {
	t.Helper()
	if r.Cmd != codec.CmdERR || r.Err != e {
		t.Fatalf("got %v %v, want ERR %v", r.Cmd, r.Err, e)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
