package engine

import (
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// TestSetLimits: a new quota applies to the next SEND (a lowered one deletes
// nothing), a shorter TTL to the next sweep, and an invalid set is refused
// with the old limits kept.
func TestSetLimits(t *testing.T) {
	e, clk := newTestEngine(t, Limits{Quota: 2})
	q := newQueue(t, e, codec.SigEd25519)
	s := newConn(t, e)
	send := func(corr string) resp { return s.One(tx(t, nil, corr, q.sid, codec.CmdSEND, nil, []byte(corr))) }
	wantCmd(t, send("a"), codec.CmdOK)
	wantCmd(t, send("b"), codec.CmdOK)
	wantErr(t, send("c"), codec.ErrQuota)

	if err := e.SetLimits(Limits{Quota: 3}); err != nil {
		t.Fatal(err)
	}
	if l := e.Limits(); l.Quota != 3 || l.MessageTTL != DefaultLimits.MessageTTL || l.NewQueuesPerMinute != DefaultLimits.NewQueuesPerMinute {
		t.Fatalf("limits %+v: want quota 3 and defaults", l)
	}
	wantCmd(t, send("d"), codec.CmdOK)
	wantErr(t, send("e"), codec.ErrQuota)

	if err := e.SetLimits(Limits{Quota: 1}); err != nil {
		t.Fatal(err)
	}
	if n := e.Stats().Messages; n != 3 {
		t.Fatalf("a lowered quota left %d messages, want the 3 stored", n)
	}
	wantErr(t, send("f"), codec.ErrQuota)

	if err := e.SetLimits(Limits{Quota: -1}); err == nil || e.Limits().Quota != 1 {
		t.Fatalf("negative quota: err %v, quota %d; want an error and quota 1", err, e.Limits().Quota)
	}

	if err := e.SetLimits(Limits{Quota: 10, MessageTTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	e.Expire(clk.Now())
	if n := e.Stats().Messages; n != 0 {
		t.Fatalf("after a TTL of 1h and 2h passing, %d messages left", n)
	}
}
