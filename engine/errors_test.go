package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// TestErrorRows drives every row of SPEC §6 through a Session and checks the
// error and what it echoes.
func TestErrorRows(t *testing.T) {
	e, _ := newTestEngine(t, Limits{})
	q := newQueue(t, e, codec.SigEd25519)
	sid, rid := b64(q.sid), b64(q.rid)
	sig := b64(make([]byte, 64))
	key := b64(q.rk.PublicSPKI())
	long := strings.Repeat("c", codec.MaxCorrID+1)

	rows := []struct {
		name      string
		tx        string
		want      codec.Error
		wantCorr  string
		wantQueue []byte
	}{
		// SYNTAX 1: structure.
		{"missing CRLFs", "\r\nc1\r\n", codec.ErrSyntaxStructure, "c1", nil},
		{"corrId too long", "\r\n" + long + "\r\n\r\nPING\r\n", codec.ErrSyntaxStructure, "", nil},
		{"corrId with a space", "\r\na b\r\n\r\nPING\r\n", codec.ErrSyntaxStructure, "", nil},
		{"signature not base64", "!!!!\r\nc2\r\n\r\nPING\r\n", codec.ErrSyntaxStructure, "c2", nil},
		{"queueId not base64", "\r\nc3\r\n" + rid[:10] + "\r\nPING\r\n", codec.ErrSyntaxStructure, "c3", nil},
		{"queueId with a lone LF", "\r\nc4\r\nAAAA\nAAA\r\nPING\r\n", codec.ErrSyntaxStructure, "c4", nil},
		// UNKNOWN.
		{"unknown command", "\r\nc5\r\n\r\nHELLO\r\n", codec.ErrUnknown, "c5", nil},
		// PROHIBITED: server transmissions from a client.
		{"OK from client", "\r\nc6\r\n" + rid + "\r\nOK\r\n", codec.ErrProhibited, "c6", q.rid},
		{"IDS from client", "\r\nc7\r\n\r\nIDS " + rid + " " + sid + "\r\n", codec.ErrProhibited, "c7", nil},
		{"MSG from client", "\r\nc8\r\n" + rid + "\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 2\r\nhi\r\n\r\n", codec.ErrProhibited, "c8", q.rid},
		{"END from client", "\r\nc9\r\n\r\nEND\r\n", codec.ErrProhibited, "c9", nil},
		{"PONG from client", "\r\nc10\r\n\r\nPONG\r\n", codec.ErrProhibited, "c10", nil},
		{"ERR from client", "\r\nc11\r\n\r\nERR AUTH\r\n", codec.ErrProhibited, "c11", nil},
		// SYNTAX 2: parameters.
		{"token with other bytes", "\r\nc12\r\n\r\nSUB=\r\n", codec.ErrSyntaxParams, "c12", nil},
		{"lower case", "\r\nc13\r\n\r\nping\r\n", codec.ErrSyntaxParams, "c13", nil},
		{"SUB with a parameter", sig + "\r\nc14\r\n" + rid + "\r\nSUB x\r\n", codec.ErrSyntaxParams, "c14", q.rid},
		{"PING with trailing space", "\r\nc15\r\n\r\nPING \r\n", codec.ErrSyntaxParams, "c15", nil},
		{"NEW without key", "\r\nc16\r\n\r\nNEW\r\n", codec.ErrSyntaxParams, "c16", nil},
		{"NEW key not base64", "\r\nc17\r\n\r\nNEW ***\r\n", codec.ErrSyntaxParams, "c17", nil},
		{"NEW key not SPKI", "\r\nc18\r\n\r\nNEW AAAA\r\n", codec.ErrSyntaxParams, "c18", nil},
		{"KEY key not SPKI", sig + "\r\nc19\r\n" + rid + "\r\nKEY AAAA\r\n", codec.ErrSyntaxParams, "c19", q.rid},
		{"NEW two keys", "\r\nc20\r\n\r\nNEW " + key + " " + key + "\r\n", codec.ErrSyntaxParams, "c20", nil},
		{"SEND without body", "\r\nc21\r\n" + sid + "\r\nSEND\r\n", codec.ErrSyntaxParams, "c21", q.sid},
		{"SEND with empty body", "\r\nc22\r\n" + sid + "\r\nSEND \r\n", codec.ErrSyntaxParams, "c22", q.sid},
		{"empty command", "\r\nc23\r\n\r\n\r\n", codec.ErrSyntaxParams, "c23", nil},
		// SYNTAX 6: body.
		{"SEND bare word", "\r\nc24\r\n" + sid + "\r\nSEND hello\r\n", codec.ErrSyntaxBody, "c24", q.sid},
		{"SEND size and word", "\r\nc25\r\n" + sid + "\r\nSEND 5x\r\n", codec.ErrSyntaxBody, "c25", q.sid},
		{"SEND size disagrees", "\r\nc26\r\n" + sid + "\r\nSEND 5\r\nhel\r\n\r\n", codec.ErrSyntaxBody, "c26", q.sid},
		// SIZE.
		{"SEND 6 digits", "\r\nc27\r\n" + sid + "\r\nSEND 123456\r\nx\r\n\r\n", codec.ErrSize, "c27", q.sid},
		{"SEND above maxBody", "\r\nc28\r\n" + sid + "\r\nSEND 99999\r\n", codec.ErrSize, "c28", q.sid},
		{"string SEND above maxBody", "\r\nc28s\r\n" + sid + "\r\nSEND :" + strings.Repeat("x", codec.MaxBody(testBlock)+1) + "\r\n", codec.ErrSize, "c28s", q.sid},
		// SYNTAX 5.
		{"SEND without queueId", "\r\nc29\r\n\r\nSEND :hi\r\n", codec.ErrSyntaxNoQueue, "c29", nil},
		// SYNTAX 3.
		{"SUB unsigned", "\r\nc30\r\n" + rid + "\r\nSUB\r\n", codec.ErrSyntaxMissing, "c30", q.rid},
		{"ACK without queueId", sig + "\r\nc31\r\n\r\nACK\r\n", codec.ErrSyntaxMissing, "c31", nil},
		{"DEL unsigned", "\r\nc32\r\n" + rid + "\r\nDEL\r\n", codec.ErrSyntaxMissing, "c32", q.rid},
		// SYNTAX 4.
		{"NEW with queueId", "\r\nc33\r\n" + rid + "\r\nNEW " + key + "\r\n", codec.ErrSyntaxExtra, "c33", q.rid},
		{"PING with queueId", "\r\nc34\r\n" + rid + "\r\nPING\r\n", codec.ErrSyntaxExtra, "c34", q.rid},
		{"PING signed", sig + "\r\nc35\r\n\r\nPING\r\n", codec.ErrSyntaxExtra, "c35", nil},
		// AUTH.
		{"SUB bad signature", sig + "\r\nc36\r\n" + rid + "\r\nSUB\r\n", codec.ErrAuth, "c36", q.rid},
		{"SEND signed before KEY", sig + "\r\nc37\r\n" + sid + "\r\nSEND :x\r\n", codec.ErrAuth, "c37", q.sid},
	}
	c := newConn(t, e)
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			c.T = t
			r := c.One([]byte(row.tx))
			wantErr(t, r, row.want)
			if r.CorrID != row.wantCorr || string(r.QueueID) != string(row.wantQueue) {
				t.Fatalf("echo: corrId %q queueId %x, want %q %x", r.CorrID, r.QueueID, row.wantCorr, row.wantQueue)
			}
		})
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
type failingStore struct{ MemoryStore }

func (failingStore) Append(Record, Notifier) (uint64, error) { return 0, errors.New("disk full") }

func TestInternalError(t *testing.T) {
	e, err := New(Options{BlockSize: testBlock, Store: failingStore{}})
	if err != nil {
		t.Fatal(err)
	}
	c := newConn(t, e)
	rk := signer(t, codec.SigEd25519)
	wantErr(t, c.One(tx(t, nil, "n", nil, codec.CmdNEW, rk.PublicSPKI(), nil)), codec.ErrInternal)
	if e.Queues() != 0 {
		t.Fatal("a queue whose record failed was kept")
	}
}
