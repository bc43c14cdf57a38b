package main_test

// The relay-wide caps against the real binary: flags and the config file
// reach the engine, and SIGHUP changes them live (SPEC §11, server-wide
// limits).

import (
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestCapsReload: SEND past --max-stored-bytes and NEW past --max-queues get
// ERR QUOTA while SUB and ACK work; raising one on SIGHUP and lifting the
// other (0: no limit) lets both through at once.
func TestCapsReload(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\nmax-stored-bytes = 3\nmax-queues = 1\n")
	s := smptest.StartServerIn(t, dir)
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, rc, rk, false)
	newq := func(corr string) {
		t.Helper()
		send(t, sc, smptest.Cmd(nil, corr, nil, codec.CmdNEW, newSigner(t, codec.SigEd25519).PublicSPKI(), nil))
	}
	send(t, sc, smptest.StringSend("s1", sid, "ab"), smptest.StringSend("s2", sid, "cd"))
	newq("n1")
	checkSeq(t, "at the caps", collect(t, ctx, sc, 3), ok("s1", sid), errResp("s2", sid, codec.ErrQuota),
		errResp("n1", nil, codec.ErrQuota))
	expectMSG(t, ctx, rc, "", rid, []byte("ab"))
	send(t, rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	expectMSG(t, ctx, rc, "sub", rid, []byte("ab"))

	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\nmax-stored-bytes = 0\nmax-queues = 2\n")
	hup(t, s)
	waitOutput(t, ctx, s, `changed="max-stored-bytes 3 -> 0, max-queues 1 -> 2"`, 1)
	send(t, sc, smptest.StringSend("s3", sid, "cdef"))
	newq("n2")
	newq("n3")
	got := collect(t, ctx, sc, 3)
	checkSeq(t, "after the reload", got[:1], ok("s3", sid))
	if got[1].Cmd != codec.CmdIDS || got[2].Cmd != codec.CmdERR || got[2].Err != codec.ErrQuota {
		t.Fatalf("NEWs after raising max-queues to 2: %v, %v; want IDS, then ERR QUOTA", got[1], got[2])
	}
	send(t, rc, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
	expectMSG(t, ctx, rc, "ack", rid, []byte("cdef"))
}
