package main_test

// Who may create queues, against the real binary: --new-queues and
// --creator-keys from the config file, changed on SIGHUP (SPEC §5 creator
// keys, §11 server-wide limits).

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestNewQueuesOff: with new-queues off every NEW gets ERR AUTH while SEND,
// SUB and ACK on an existing queue work; SIGHUP back to on restores NEW.
func TestNewQueuesOff(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	const base = "key-type = \"x25519\"\nstore = \"memory\"\n"
	writeConfig(t, dir, base+"new-queues = \"on\"\n")
	s := smptest.StartServerIn(t, dir)
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, rc, rk, false)

	writeConfig(t, dir, base+"new-queues = \"off\"\n")
	hup(t, s)
	waitOutput(t, ctx, s, `changed="new-queues on -> off"`, 1)
	waitOutput(t, ctx, s, `msg="new-queues off: every NEW gets ERR AUTH"`, 1)
	other := newSigner(t, codec.SigEd25519)
	send(t, sc, smptest.Cmd(nil, "n1", nil, codec.CmdNEW, other.PublicSPKI(), nil),
		smptest.Cmd(other, "n2", nil, codec.CmdNEW, other.PublicSPKI(), nil),
		smptest.StringSend("s1", sid, "hello"))
	checkSeq(t, "creation closed", collect(t, ctx, sc, 3),
		errResp("n1", nil, codec.ErrAuth), errResp("n2", nil, codec.ErrAuth), ok("s1", sid))
	expectMSG(t, ctx, rc, "", rid, []byte("hello"))
	send(t, rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	expectMSG(t, ctx, rc, "sub", rid, []byte("hello"))
	send(t, rc, smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
	expect(t, ctx, rc, ok("ack", rid))

	writeConfig(t, dir, base+"new-queues = \"on\"\n")
	hup(t, s)
	waitOutput(t, ctx, s, `changed="new-queues off -> on"`, 1)
	newQueue(t, ctx, sc, other, true)
}

// TestCreatorKeysFile: with a creator-keys file, NEW unsigned, signed by its
// own recipient key or by an unknown key gets ERR AUTH and NEW signed by a
// listed key creates the queue; a key removed from the file refuses the
// next NEW after SIGHUP; a bad line is rejected, naming the file and line,
// and the keys in force stay.
func TestCreatorKeysFile(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	keys := filepath.Join(dir, "creators")
	creator, creator2 := newSigner(t, codec.SigEd25519), newSigner(t, codec.SigRSA)
	writeKeys := func(lines ...string) {
		t.Helper()
		tmp := keys + ".tmp"
		if err := os.WriteFile(tmp, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, keys); err != nil {
			t.Fatal(err)
		}
	}
	line := func(s *codec.Signer) string { return base64.StdEncoding.EncodeToString(s.PublicSPKI()) }
	writeKeys("# issued to the test", "", "  "+line(creator)+"  ")
	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\ncreator-keys = \""+keys+"\"\n")
	s := smptest.StartServerIn(t, dir)
	waitOutput(t, ctx, s, `msg="creator keys in force: NEW must be signed by one of them" creator-keys=`+keys+` keys=1`, 1)
	c := dial(t, ctx, s)

	rk, stranger := newSigner(t, codec.SigEd25519), newSigner(t, codec.SigEd25519)
	newBy := func(corr string, by *codec.Signer) []byte {
		return smptest.Cmd(by, corr, nil, codec.CmdNEW, rk.PublicSPKI(), nil)
	}
	send(t, c, newBy("unsigned", nil), newBy("own", rk), newBy("unknown", stranger), newBy("creator", creator))
	got := collect(t, ctx, c, 4)
	checkSeq(t, "with a creator key", got[:3], errResp("unsigned", nil, codec.ErrAuth),
		errResp("own", nil, codec.ErrAuth), errResp("unknown", nil, codec.ErrAuth))
	if got[3].Cmd != codec.CmdIDS || got[3].CorrID != "creator" {
		t.Fatalf("NEW signed by the creator key: %v, want IDS", got[3])
	}

	// The key removed (another in its place): the next NEW it signs is refused.
	writeKeys(line(creator2))
	hup(t, s)
	waitOutput(t, ctx, s, `keys=1`, 2)
	send(t, c, newBy("removed", creator), newBy("added", creator2))
	got = collect(t, ctx, c, 2)
	checkSeq(t, "after the removal", got[:1], errResp("removed", nil, codec.ErrAuth))
	if got[1].Cmd != codec.CmdIDS {
		t.Fatalf("NEW signed by the added key: %v, want IDS", got[1])
	}

	// A bad line: rejected with the file and line named; creator2 still admits.
	writeKeys(line(creator2), "# next is not a key", "bm90IGEga2V5")
	hup(t, s)
	waitOutput(t, ctx, s, `reload: configuration rejected; the relay keeps its current one`, 1)
	if !strings.Contains(s.Stderr(), keys+":3: not an Ed25519 or RSA") {
		t.Fatalf("the rejection does not name the file and line:\n%s", s.Stderr())
	}
	send(t, c, newBy("kept", creator2), newBy("still-refused", creator))
	got = collect(t, ctx, c, 2)
	if got[0].Cmd != codec.CmdIDS {
		t.Fatalf("NEW signed by the key in force after a rejected reload: %v, want IDS", got[0])
	}
	checkSeq(t, "after the rejected reload", got[1:], errResp("still-refused", nil, codec.ErrAuth))
}
