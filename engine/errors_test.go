package engine

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errtable"
	"github.com/smprelay/smprelay/store"
)

// TestErrorRows drives every row of SPEC §6 (internal/errtable) through a
// Session and checks the error and what it echoes.
func TestErrorRows(t *testing.T) {
	e, _ := newTestEngine(t, Limits{Quota: 3})
	q := newQueue(t, e, codec.SigEd25519)
	full := newQueue(t, e, codec.SigEd25519)
	sender := newConn(t, e)
	for i := range e.Limits().Quota {
		wantCmd(t, sender.One(tx(t, nil, fmt.Sprint("fill", i), full.sid, codec.CmdSEND, nil, []byte("x"))), codec.CmdOK)
	}
	f := errtable.Fixture{BlockSize: testBlock, RID: q.rid, SID: q.sid, RK: q.rk, FullSID: full.sid}

	// ERR INTERNAL needs an engine whose store fails every write.
	failing, err := New(Options{BlockSize: testBlock, Store: failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	conns := map[errtable.Need]*tconn{errtable.Nothing: newConn(t, e), errtable.FailingStore: newConn(t, failing)}
	for _, row := range errtable.Rows {
		t.Run(row.Name, func(t *testing.T) {
			if row.NotEngine != "" {
				t.Skip(row.NotEngine)
			}
			for _, tc := range row.Cases {
				t.Run(tc.Name, func(t *testing.T) {
					c := conns[tc.Needs]
					c.T = t
					r := c.One(tc.Tx(f))
					wantErr(t, r, row.Err)
					var queue []byte
					if tc.Queue != nil {
						queue = tc.Queue(f)
					}
					if r.CorrID != tc.Corr || !bytes.Equal(r.QueueID, queue) {
						t.Fatalf("echo: corrId %q queueId %x, want %q %x", r.CorrID, r.QueueID, tc.Corr, queue)
					}
				})
			}
		})
	}
	if failing.Queues() != 0 {
		t.Fatal("a queue whose record failed was kept")
	}
}

// TestBoundaryLostDiscardsRest: after a transmission whose end is lost, the
// rest of the block gets no response; one whose end is known is followed.
func TestBoundaryLostDiscardsRest(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	ping := func(c string) []byte { return []byte("\r\n" + c + "\r\n\r\nPING\r\n") }
	c := newConn(t, e)
	for _, tc := range []struct {
		name string
		mid  string
		want codec.Error
	}{
		{"size", "\r\nx\r\n" + b64(q.sid) + "\r\nSEND 99999\r\n", codec.ErrSize},
		{"size disagrees", "\r\nx\r\n" + b64(q.sid) + "\r\nSEND 30\r\nshort\r\n\r\n", codec.ErrSyntaxBody},
	} {
		rs := c.Do(ping("before"), []byte(tc.mid), ping("after"))
		if len(rs) != 2 || rs[0].Cmd != codec.CmdPONG || rs[1].Cmd != codec.CmdERR || rs[1].Err != tc.want {
			t.Fatalf("%s: got %+v, want PONG then ERR %v and nothing more", tc.name, rs, tc.want)
		}
	}
	rs := c.Do(ping("before"), []byte("\r\nx\r\n\r\nHELLO\r\n"), ping("after"))
	if len(rs) != 3 || rs[2].Cmd != codec.CmdPONG || rs[2].CorrID != "after" {
		t.Fatalf("boundary intact: got %+v, want parsing to go on", rs)
	}
}

// failingStore fails every Append, as a log on a full disk would.
type failingStore struct{ store.MemoryStore }

func (failingStore) Append(store.Record, store.Notifier) (uint64, store.BodyRef, error) {
	return 0, 0, errors.New("disk full")
}
