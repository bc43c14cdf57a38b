package wal_test

// Engine + log: the engine runs on a wal.Log exactly as the server does, and
// a restart rebuilds the same state — queues, keys, flags, and every stored
// message with its msgId, timestamp and place in the queue.

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/internal/enginetest"
	"github.com/smprelay/smprelay/internal/sessiontest"
	"github.com/smprelay/smprelay/internal/smptest"
	"github.com/smprelay/smprelay/wal"
)

const bs = codec.DefaultBlockSize

// sess drives one engine Session the way a gnet loop does (internal/sessiontest):
// Process, then Drain whenever the session is woken, which the log does when
// a record the reply waits for becomes durable.
type sess = sessiontest.Conn[*engine.Session, *engine.Writer]

type resp = sessiontest.Response

func newSess(t *testing.T, e *engine.Engine) *sess {
	w := engine.NewWriter(bs)
	return sessiontest.NewConn(t, bs, e.NewSession, w, &w.Send)
}

var signer = sessiontest.Signer

// clock moves on by 7 s each time it is read, so each message has its own
// timestamp.
func newClock() *sessiontest.Clock {
	return sessiontest.NewClock(time.Unix(1764097639, 0), 7*time.Second)
}

func start(t *testing.T, dir string, mode wal.SyncMode, clk *sessiontest.Clock) (*engine.Engine, *wal.Log) {
	t.Helper()
	l, err := wal.Open(dir, wal.Options{Sync: mode})
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(engine.Options{BlockSize: bs, Store: l, Now: clk.Now})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	return e, l
}

func TestEngineRestartRebuildsState(t *testing.T) {
	for _, mode := range []wal.SyncMode{wal.SyncAlways, wal.SyncInterval, wal.SyncNever} {
		t.Run(mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			clk := newClock()
			e, l := start(t, dir, mode, clk)
			r := newSess(t, e)
			s := newSess(t, e)

			type queue struct {
				rk, sk   *codec.Signer
				rid, sid []byte
			}
			newQueue := func(alg codec.SigAlg) *queue {
				q := &queue{rk: signer(t, alg)}
				ids := r.Call("n", smptest.Cmd(q.rk, "n", nil, codec.CmdNEW, q.rk.PublicSPKI(), nil))
				if ids.Cmd != codec.CmdIDS {
					t.Fatalf("NEW: %+v", ids)
				}
				q.rid, q.sid = ids.RID, ids.SID
				return q
			}
			want := func(got resp, cmd codec.Cmd) resp {
				t.Helper()
				return sessiontest.WantCmd(t, got, cmd)
			}

			// a: secured, 6 messages sent, 2 acknowledged, the third delivered and not.
			a := newQueue(codec.SigEd25519)
			a.sk = signer(t, codec.SigEd25519)
			want(r.Call("k", smptest.Cmd(a.rk, "k", a.rid, codec.CmdKEY, a.sk.PublicSPKI(), nil)), codec.CmdOK)
			for i := range 6 {
				corr := fmt.Sprint("s", i)
				want(s.Call(corr, smptest.Cmd(a.sk, corr, a.sid, codec.CmdSEND, nil, []byte(fmt.Sprint("a-message-", i)))), codec.CmdOK)
			}
			first := want(r.Call("sub", smptest.Cmd(a.rk, "sub", a.rid, codec.CmdSUB, nil, nil)), codec.CmdMSG)
			want(r.Call("a1", smptest.Cmd(a.rk, "a1", a.rid, codec.CmdACK, nil, nil)), codec.CmdMSG)
			third := want(r.Call("a2", smptest.Cmd(a.rk, "a2", a.rid, codec.CmdACK, nil, nil)), codec.CmdMSG)
			if string(first.Body) != "a-message-0" || string(third.Body) != "a-message-2" {
				t.Fatalf("delivery order: %q then %q", first.Body, third.Body)
			}
			// b: RSA keys, unsecured, 2 messages, suspended.
			b := newQueue(codec.SigRSA)
			for i := range 2 {
				corr := fmt.Sprint("b", i)
				want(s.Call(corr, smptest.Cmd(nil, corr, b.sid, codec.CmdSEND, nil, []byte(fmt.Sprint("b-message-", i)))), codec.CmdOK)
			}
			want(r.Call("off", smptest.Cmd(b.rk, "off", b.rid, codec.CmdOFF, nil, nil)), codec.CmdOK)
			// c: messages, then deleted.
			c := newQueue(codec.SigEd25519)
			want(s.Call("c0", smptest.Cmd(nil, "c0", c.sid, codec.CmdSEND, nil, []byte("c-message"))), codec.CmdOK)
			want(r.Call("del", smptest.Cmd(c.rk, "del", c.rid, codec.CmdDEL, nil, nil)), codec.CmdOK)

			before, stats := enginetest.State(t, e, enginetest.InlineBody), e.Stats()
			if !strings.Contains(before, "a-message-5") || strings.Contains(before, "a-message-1") || strings.Contains(before, "c-message") {
				t.Fatalf("unexpected state before the restart:\n%s", before)
			}
			r.Close()
			s.Close()
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}

			for round := range 2 { // the second restart replays the start-up snapshot of the first
				e, l = start(t, dir, mode, clk)
				if got := enginetest.State(t, e, enginetest.InlineBody); got != before {
					t.Fatalf("restart %d: state differs\n got %s\nwant %s", round, got, before)
				}
				if e.Stats() != stats {
					t.Fatalf("restart %d: stats %+v, want %+v", round, e.Stats(), stats)
				}
				if err := l.Close(); err != nil {
					t.Fatal(err)
				}
			}

			// On the wire: the un-acknowledged message comes again with the same
			// msgId and timestamp, then the rest in order.
			e, l = start(t, dir, mode, clk)
			defer l.Close()
			r, s = newSess(t, e), newSess(t, e)
			m := want(r.Call("sub", smptest.Cmd(a.rk, "sub", a.rid, codec.CmdSUB, nil, nil)), codec.CmdMSG)
			if !bytes.Equal(m.MsgID, third.MsgID) || m.Time != third.Time || string(m.Body) != "a-message-2" {
				t.Fatalf("redelivery after restart: %+v, want msgId %x at %s", m, third.MsgID, third.Time)
			}
			for i := 3; i < 6; i++ {
				m = want(r.Call("ack", smptest.Cmd(a.rk, "ack", a.rid, codec.CmdACK, nil, nil)), codec.CmdMSG)
				if string(m.Body) != fmt.Sprint("a-message-", i) {
					t.Fatalf("message %d after restart: %q", i, m.Body)
				}
			}
			want(r.Call("ack", smptest.Cmd(a.rk, "ack", a.rid, codec.CmdACK, nil, nil)), codec.CmdOK)
			// a is still secured; b still suspended; c gone.
			if got := s.Call("u", smptest.Cmd(nil, "u", a.sid, codec.CmdSEND, nil, []byte("x"))); got.Err != codec.ErrAuth {
				t.Fatalf("unsigned SEND to the secured queue after restart: %+v", got)
			}
			want(s.Call("v", smptest.Cmd(a.sk, "v", a.sid, codec.CmdSEND, nil, []byte("x"))), codec.CmdOK)
			if got := s.Call("w", smptest.Cmd(nil, "w", b.sid, codec.CmdSEND, nil, []byte("x"))); got.Err != codec.ErrAuth {
				t.Fatalf("SEND to the suspended queue after restart: %+v", got)
			}
			want(r.Call("bsub", smptest.Cmd(b.rk, "bsub", b.rid, codec.CmdSUB, nil, nil)), codec.CmdMSG)
			if got := r.Call("csub", smptest.Cmd(c.rk, "csub", c.rid, codec.CmdSUB, nil, nil)); got.Err != codec.ErrAuth {
				t.Fatalf("SUB to the deleted queue after restart: %+v", got)
			}
		})
	}
}
