package engine

import (
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/sessiontest"
)

// The harness (internal/sessiontest) drives Sessions at the plaintext level:
// no sockets, no encryption (Writer.Seal is nil), so tests see exactly the
// transmissions the engine writes and the blocks it packs them into. This
// file binds it to this package's Engine, under the short names the tests
// use.

const testBlock = codec.DefaultBlockSize

// tconn is one connection's Session with the buffers an event loop would lend it.
type tconn = sessiontest.Conn[*Session, *Writer]

// resp is one server transmission, copied out of the parser's buffers.
type resp = sessiontest.Response

var (
	tx      = sessiontest.Tx
	signer  = sessiontest.Signer
	wantErr = sessiontest.WantErr
	b64     = sessiontest.B64
)

// newTestEngine returns an Engine with limits l on a clock that moves only
// when the test advances it.
func newTestEngine(t testing.TB, l Limits) (*Engine, *sessiontest.Clock) {
	t.Helper()
	c := sessiontest.NewClock(time.Date(2026, 11, 25, 19, 7, 19, 0, time.UTC), 0)
	e, err := New(Options{BlockSize: testBlock, Limits: l, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return e, c
}

func newConn(t testing.TB, e *Engine) *tconn {
	w := NewWriter(testBlock)
	return sessiontest.NewConn(t, testBlock, e.NewSession, w, &w.Send)
}

// block builds one block's plaintext from whole transmissions.
func block(txs ...[]byte) []byte { return sessiontest.Block(testBlock, txs...) }

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
	r := rc.One(tx(t, nil, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
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
	wantCmd(t, q.rc.One(tx(t, q.rk, "key", q.rid, codec.CmdKEY, sk.PublicSPKI(), nil)), codec.CmdOK)
	return sk
}

func wantCmd(t testing.TB, r resp, cmd codec.Cmd) { t.Helper(); sessiontest.WantCmd(t, r, cmd) }
