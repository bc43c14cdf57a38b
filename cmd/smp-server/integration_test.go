package main_test

// Integration tests: each test starts the real smp-server binary on
// 127.0.0.1:0 and drives it over TCP with internal/smptest, checking the
// behaviour SPEC.md requires on the wire. Deadlines below only stop a test
// that would otherwise hang; nothing asserts how fast the server is.

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errtable"
	"github.com/smprelay/smprelay/internal/smptest"
)

func TestMain(m *testing.M) { smptest.Main(m) }

// hangGuard bounds every wait on the network.
const hangGuard = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	t.Cleanup(cancel)
	return ctx
}

func dial(t *testing.T, ctx context.Context, s *smptest.Server) *smptest.Conn {
	t.Helper()
	c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint)
	if err != nil {
		t.Fatalf("dial %s: %v", s.Addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func send(t *testing.T, c *smptest.Conn, txs ...[]byte) {
	t.Helper()
	if err := c.Send(txs...); err != nil {
		t.Fatalf("send: %v", err)
	}
}

func next(t *testing.T, ctx context.Context, c *smptest.Conn) smptest.Response {
	t.Helper()
	r, err := c.Next(ctx)
	if err != nil {
		t.Fatalf("next: %v", err)
	}
	return r
}

// want describes an expected response; Err is checked only for ERR.
type want struct {
	Cmd   codec.Cmd
	Corr  string
	Queue []byte
	Err   codec.Error
}

func (w want) String() string {
	s := fmt.Sprintf("%s corr=%q q=%s", w.Cmd, w.Corr, b64(w.Queue))
	if w.Cmd == codec.CmdERR {
		s += " ERR " + w.Err.String()
	}
	return s
}

func (w want) matches(r smptest.Response) bool {
	return r.Cmd == w.Cmd && r.CorrID == w.Corr && bytes.Equal(r.QueueID, w.Queue) &&
		(w.Cmd != codec.CmdERR || r.Err == w.Err)
}

func ok(corr string, q []byte) want { return want{Cmd: codec.CmdOK, Corr: corr, Queue: q} }
func errResp(corr string, q []byte, e codec.Error) want {
	return want{Cmd: codec.CmdERR, Corr: corr, Queue: q, Err: e}
}
func pong(corr string) want { return want{Cmd: codec.CmdPONG, Corr: corr} }

// expect reads the next response and checks it against w.
func expect(t *testing.T, ctx context.Context, c *smptest.Conn, w want) smptest.Response {
	t.Helper()
	r := next(t, ctx, c)
	if !w.matches(r) {
		t.Fatalf("got  %v\nwant %v", r, w)
	}
	return r
}

// expectMSG reads the next response and checks it is a MSG with body on rid.
func expectMSG(t *testing.T, ctx context.Context, c *smptest.Conn, corr string, rid, body []byte) smptest.Response {
	t.Helper()
	r := expect(t, ctx, c, want{Cmd: codec.CmdMSG, Corr: corr, Queue: rid})
	if !bytes.Equal(r.Body, body) {
		t.Fatalf("MSG body %q, want %q", r.Body, body)
	}
	if len(r.MsgID) != codec.MsgIDSize {
		t.Fatalf("MSG id %d bytes, want %d", len(r.MsgID), codec.MsgIDSize)
	}
	ts, err := time.Parse(codec.TimeLayout, r.Time)
	if err != nil {
		t.Fatalf("MSG timestamp %q: %v", r.Time, err)
	}
	if d := time.Since(ts); d < -time.Hour || d > time.Hour {
		t.Fatalf("MSG timestamp %s is not the server's receive time (now %s)", r.Time, time.Now().UTC().Format(codec.TimeLayout))
	}
	return r
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func newSigner(t *testing.T, alg codec.SigAlg) *codec.Signer {
	t.Helper()
	s, err := codec.GenerateSigner(alg, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newQueue creates a queue on c with recipient key rk (NEW signed by rk when
// signNEW) and returns its RID and SID.
func newQueue(t *testing.T, ctx context.Context, c *smptest.Conn, rk *codec.Signer, signNEW bool) (rid, sid []byte) {
	t.Helper()
	var s *codec.Signer
	if signNEW {
		s = rk
	}
	send(t, c, smptest.Cmd(s, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
	r := expect(t, ctx, c, want{Cmd: codec.CmdIDS, Corr: "new"})
	if len(r.RID) != codec.QueueIDSize || len(r.SID) != codec.QueueIDSize || bytes.Equal(r.RID, r.SID) {
		t.Fatalf("IDS rid=%x sid=%x: want two different %d-byte IDs", r.RID, r.SID, codec.QueueIDSize)
	}
	return r.RID, r.SID
}

// securedQueue creates a queue on c with a new Ed25519 recipient key and
// secures it with a new Ed25519 sender key (KEY), as a recipient does once
// the sender confirmed.
func securedQueue(t *testing.T, ctx context.Context, c *smptest.Conn, signNEW bool) (rk, sk *codec.Signer, rid, sid []byte) {
	t.Helper()
	rk, sk = newSigner(t, codec.SigEd25519), newSigner(t, codec.SigEd25519)
	rid, sid = newQueue(t, ctx, c, rk, signNEW)
	send(t, c, smptest.Cmd(rk, "key", rid, codec.CmdKEY, sk.PublicSPKI(), nil))
	expect(t, ctx, c, ok("key", rid))
	return rk, sk, rid, sid
}

// collect reads n responses.
func collect(t *testing.T, ctx context.Context, c *smptest.Conn, n int) []smptest.Response {
	t.Helper()
	out := make([]smptest.Response, 0, n)
	for range n {
		out = append(out, next(t, ctx, c))
	}
	return out
}

// ping does a PING round trip, proving the connection still works.
func ping(t *testing.T, ctx context.Context, c *smptest.Conn, corr string) {
	t.Helper()
	send(t, c, smptest.Ping(corr))
	expect(t, ctx, c, pong(corr))
}

// TestHandshakeAndPing: each transport key kind completes the handshake
// (SPEC §3.1–§3.2; Dial checks the fingerprint and the welcome block), and
// PING gets exactly the PONG of vectors.md §2.
func TestHandshakeAndPing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		keyType   string
		typeByte  codec.KEMType
		blockSize uint32
		args      []string
	}{
		{"rsa", codec.KEMRSA, 8192, nil},
		{"x25519", codec.KEMX25519, 8192, nil},
		{"mlkem768x25519", codec.KEMMLKEM768X25519, 8192, nil},
		{"mlkem768x25519", codec.KEMMLKEM768X25519, 4096, []string{"--block-size", "4096"}},
		{"x25519", codec.KEMX25519, 65536, []string{"--block-size", "65536"}},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%d", tc.keyType, tc.blockSize), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			s := smptest.StartServer(t, append([]string{"--key-type", tc.keyType}, tc.args...)...)
			c := dial(t, ctx, s)
			h := c.Hello()
			if h.MinVersion != 2 || h.MaxVersion != 2 || h.BlockSize != tc.blockSize {
				t.Errorf("hello: versions %d..%d, block size %d; want 2..2, %d", h.MinVersion, h.MaxVersion, h.BlockSize, tc.blockSize)
			}
			if h.Random == ([32]byte{}) || h.Share == ([32]byte{}) {
				t.Errorf("hello: serverRandom %x, serverShare %x; want both set", h.Random, h.Share)
			}
			if codec.KEMType(h.Key[0]) != tc.typeByte {
				t.Errorf("hello key type byte %#x, want %#x", h.Key[0], byte(tc.typeByte))
			}
			if err := c.WriteRaw(c.SealBlock([]byte("\r\np1\r\n\r\nPING\r\n"))); err != nil {
				t.Fatal(err)
			}
			r := next(t, ctx, c)
			if string(r.Raw) != "\r\np1\r\n\r\nPONG\r\n" {
				t.Errorf("PONG is %q, want %q", r.Raw, "\r\np1\r\n\r\nPONG\r\n")
			}
		})
	}
}

// TestWrongFingerprint: a client that holds another fingerprint refuses the
// server (SPEC §3.1); the right one is accepted by the same server.
func TestWrongFingerprint(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519")
	other := "VlJ8/8GyjK16/MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc=" // vectors.md §5
	near := "A" + s.Fingerprint[1:]                         // one character off
	if near == s.Fingerprint {
		near = "B" + s.Fingerprint[1:]
	}
	for _, fp := range []string{other, "", near} {
		c, err := smptest.Dial(ctx, s.Addr, fp)
		if err == nil {
			c.Close()
			t.Errorf("Dial with fingerprint %q succeeded; want a mismatch error", fp)
			continue
		}
		if !strings.Contains(err.Error(), "fingerprint") {
			t.Errorf("Dial with fingerprint %q: error %q does not name the fingerprint", fp, err)
		}
	}
	c := dial(t, ctx, s)
	ping(t, ctx, c, "after")
}

// TestSeedFlow runs the whole life of a queue over the wire (SPEC §1, §5),
// with the recipient and the sender on different connections.
func TestSeedFlow(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		recipient  codec.SigAlg
		sender     codec.SigAlg
		signNEW    bool
		binaryBody bool
	}{
		{"ed25519", codec.SigEd25519, codec.SigEd25519, true, true},
		{"rsa2048", codec.SigRSA, codec.SigRSA, true, true},
		{"rsa2048 recipient, ed25519 sender, unsigned NEW, string SEND", codec.SigRSA, codec.SigEd25519, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			s := smptest.StartServer(t, "--key-type", "x25519")
			rk, sk := newSigner(t, tc.recipient), newSigner(t, tc.sender)
			rc, sc := dial(t, ctx, s), dial(t, ctx, s)

			// NEW: the queue exists and rc is subscribed.
			rid, sid := newQueue(t, ctx, rc, rk, tc.signNEW)

			// Unsigned SEND to SID: the confirmation carrying SK (SPEC §10).
			conf := []byte("KEY " + b64(sk.PublicSPKI()) + "\r\nhello\r\n")
			if tc.binaryBody {
				send(t, sc, smptest.Cmd(nil, "s1", sid, codec.CmdSEND, nil, conf))
			} else {
				conf = []byte("KEY " + b64(sk.PublicSPKI()))
				send(t, sc, smptest.StringSend("s1", sid, string(conf)))
			}
			expect(t, ctx, sc, ok("s1", sid))
			m1 := expectMSG(t, ctx, rc, "", rid, conf)

			send(t, rc, smptest.Cmd(rk, "a1", rid, codec.CmdACK, nil, nil))
			expect(t, ctx, rc, ok("a1", rid))

			// KEY secures the queue with SK.
			send(t, rc, smptest.Cmd(rk, "k1", rid, codec.CmdKEY, sk.PublicSPKI(), nil))
			expect(t, ctx, rc, ok("k1", rid))

			// Signed SEND is delivered.
			body := []byte("signed message \x00\xff\r\n binary-safe")
			send(t, sc, smptest.Cmd(sk, "s2", sid, codec.CmdSEND, nil, body))
			expect(t, ctx, sc, ok("s2", sid))
			m2 := expectMSG(t, ctx, rc, "", rid, body)
			if bytes.Equal(m1.MsgID, m2.MsgID) {
				t.Errorf("two messages share msgId %s", b64(m1.MsgID))
			}
			send(t, rc, smptest.Cmd(rk, "a2", rid, codec.CmdACK, nil, nil))
			expect(t, ctx, rc, ok("a2", rid))

			// Secured: unsigned SEND, and SEND signed by the wrong key, are ERR AUTH.
			send(t, sc, smptest.Cmd(nil, "s3", sid, codec.CmdSEND, nil, []byte("unsigned")))
			expect(t, ctx, sc, errResp("s3", sid, codec.ErrAuth))
			send(t, sc, smptest.Cmd(rk, "s3b", sid, codec.CmdSEND, nil, []byte("wrong key")))
			expect(t, ctx, sc, errResp("s3b", sid, codec.ErrAuth))

			// OFF suspends: even a good signed SEND is ERR AUTH; KEY too.
			send(t, rc, smptest.Cmd(rk, "o1", rid, codec.CmdOFF, nil, nil))
			expect(t, ctx, rc, ok("o1", rid))
			send(t, sc, smptest.Cmd(sk, "s4", sid, codec.CmdSEND, nil, []byte("after OFF")))
			expect(t, ctx, sc, errResp("s4", sid, codec.ErrAuth))

			// SUB still works on a suspended queue, and finds nothing stored:
			// none of the refused SENDs was kept.
			send(t, rc, smptest.Cmd(rk, "sub1", rid, codec.CmdSUB, nil, nil))
			expect(t, ctx, rc, ok("sub1", rid))

			// DEL, then every command on either ID is ERR AUTH.
			send(t, rc, smptest.Cmd(rk, "d1", rid, codec.CmdDEL, nil, nil))
			expect(t, ctx, rc, ok("d1", rid))
			send(t, rc, smptest.Cmd(rk, "sub2", rid, codec.CmdSUB, nil, nil))
			expect(t, ctx, rc, errResp("sub2", rid, codec.ErrAuth))
			send(t, sc, smptest.Cmd(sk, "s5", sid, codec.CmdSEND, nil, []byte("after DEL")))
			expect(t, ctx, sc, errResp("s5", sid, codec.ErrAuth))

			// Both connections are still usable.
			ping(t, ctx, rc, "rp")
			ping(t, ctx, sc, "sp")

			// Production mode (SPEC §8): no queue IDs or addresses in the log.
			logs := s.Stdout() + s.Stderr()
			for _, secret := range []string{b64(rid), b64(sid), rc.NetConn().LocalAddr().String(), sc.NetConn().LocalAddr().String()} {
				if strings.Contains(logs, secret) {
					t.Errorf("the server logged %q at the default log level:\n%s", secret, logs)
				}
			}
		})
	}
}

// TestMaxBody: a body of exactly maxBody bytes is relayed; one byte more is
// ERR SIZE (SPEC §4).
func TestMaxBody(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519")
	c := dial(t, ctx, s)
	rk := newSigner(t, codec.SigEd25519)
	rid, sid := newQueue(t, ctx, c, rk, false)
	max := codec.MaxBody(c.BlockSize())
	body := bytes.Repeat([]byte{0xA5}, max)
	send(t, c, smptest.Cmd(nil, "big", sid, codec.CmdSEND, nil, body))
	var gotOK, gotMSG bool
	for range 2 { // OK and the push: different queueIds, so any order
		r := next(t, ctx, c)
		switch {
		case ok("big", sid).matches(r):
			gotOK = true
		case r.Cmd == codec.CmdMSG && bytes.Equal(r.QueueID, rid) && bytes.Equal(r.Body, body):
			gotMSG = true
		default:
			t.Fatalf("unexpected %v", r)
		}
	}
	if !gotOK || !gotMSG {
		t.Fatalf("got OK %v, MSG %v; want both", gotOK, gotMSG)
	}
	send(t, c, smptest.Cmd(nil, "toobig", sid, codec.CmdSEND, nil, append(body, 0)), smptest.Ping("after"))
	expect(t, ctx, c, errResp("toobig", sid, codec.ErrSize))
	ping(t, ctx, c, "still")
}

// TestPackedBlocks: transmissions packed in one block all get their
// responses, in order per queueId, and the server packs responses it has ready
// together (SPEC §3.3, §5 Order).
func TestPackedBlocks(t *testing.T) {
	t.Parallel()
	s := smptest.StartServer(t, "--key-type", "x25519")

	t.Run("20 PINGs in one block", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		c := dial(t, ctx, s)
		var txs [][]byte
		for i := range 20 {
			txs = append(txs, smptest.Ping(fmt.Sprintf("p%02d", i)))
		}
		send(t, c, txs...) // 20 × 14 bytes: one block
		blocks := map[uint64]bool{}
		for i, r := range collect(t, ctx, c, 20) {
			if w := pong(fmt.Sprintf("p%02d", i)); !w.matches(r) {
				t.Fatalf("response %d: got %v, want %v", i, r, w)
			}
			blocks[r.Block] = true
		}
		if len(blocks) >= 20 {
			t.Errorf("20 PONGs ready together came in %d blocks; the server must pack them", len(blocks))
		}
		t.Logf("20 PONGs in %d block(s)", len(blocks))
	})

	t.Run("600 PINGs spanning blocks", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		c := dial(t, ctx, s)
		corr := func(i int) string { return fmt.Sprintf("%064d", i) } // longest corrId
		var txs [][]byte
		for i := range 600 {
			txs = append(txs, smptest.Ping(corr(i)))
		}
		send(t, c, txs...) // 76 bytes each: 6 blocks in one write
		first := c.BlocksReceived()
		for i, r := range collect(t, ctx, c, 600) {
			if w := pong(corr(i)); !w.matches(r) {
				t.Fatalf("response %d: got %v, want %v", i, r, w)
			}
		}
		n := c.BlocksReceived() - first
		if min := uint64(600*76/(c.BlockSize()-codec.TagSize)) + 1; n < min || n >= 600 {
			t.Errorf("600 PONGs came in %d blocks, want between %d and 599", n, min)
		}
		t.Logf("600 PONGs in %d blocks", n)
	})

	t.Run("order on one queue", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		c := dial(t, ctx, s)
		rk, sk := newSigner(t, codec.SigEd25519), newSigner(t, codec.SigEd25519)
		rid, sid := newQueue(t, ctx, c, rk, true)

		// Three SENDs and a PING in one block. c is the subscriber, so "a"
		// is also pushed (empty corrId); its place is free.
		send(t, c, smptest.StringSend("sa", sid, "a"), smptest.StringSend("sb", sid, "b"),
			smptest.StringSend("sc", sid, "c"), smptest.Ping("p"))
		var onSID, onEmpty []smptest.Response
		var push *smptest.Response
		for _, r := range collect(t, ctx, c, 5) {
			switch {
			case r.Cmd == codec.CmdMSG && r.CorrID == "":
				if push != nil {
					t.Fatalf("second push %v before any ACK", r)
				}
				push = &r
			case bytes.Equal(r.QueueID, sid):
				onSID = append(onSID, r)
			case r.QueueID == nil:
				onEmpty = append(onEmpty, r)
			default:
				t.Fatalf("unexpected %v", r)
			}
		}
		checkSeq(t, "on SID", onSID, ok("sa", sid), ok("sb", sid), ok("sc", sid))
		checkSeq(t, "on the empty queueId", onEmpty, pong("p"))
		if push == nil || !bytes.Equal(push.QueueID, rid) || string(push.Body) != "a" {
			t.Fatalf("push: got %v, want MSG a on RID", push)
		}

		// One block of RID commands whose results depend on their order.
		first := c.BlocksReceived()
		send(t, c,
			smptest.Cmd(rk, "k1", rid, codec.CmdKEY, sk.PublicSPKI(), nil),
			smptest.Cmd(rk, "k2", rid, codec.CmdKEY, sk.PublicSPKI(), nil),
			smptest.Cmd(rk, "o1", rid, codec.CmdOFF, nil, nil),
			smptest.Cmd(rk, "o2", rid, codec.CmdOFF, nil, nil),
			smptest.Cmd(rk, "s1", rid, codec.CmdSUB, nil, nil),
			smptest.Cmd(rk, "a1", rid, codec.CmdACK, nil, nil),
			smptest.Cmd(rk, "a2", rid, codec.CmdACK, nil, nil),
			smptest.Cmd(rk, "a3", rid, codec.CmdACK, nil, nil),
			smptest.Cmd(rk, "a4", rid, codec.CmdACK, nil, nil),
		)
		rs := collect(t, ctx, c, 9)
		msg := func(corr string) want { return want{Cmd: codec.CmdMSG, Corr: corr, Queue: rid} }
		checkSeq(t, "on RID", rs, ok("k1", rid), errResp("k2", rid, codec.ErrAuth), ok("o1", rid), ok("o2", rid),
			msg("s1"), msg("a1"), msg("a2"), ok("a3", rid), errResp("a4", rid, codec.ErrProhibited))
		for i, body := range []string{"a", "b", "c"} {
			if string(rs[4+i].Body) != body {
				t.Errorf("MSG %d: body %q, want %q", i, rs[4+i].Body, body)
			}
		}
		if !bytes.Equal(rs[4].MsgID, push.MsgID) {
			t.Errorf("SUB re-delivered msgId %s, want the pushed one %s", b64(rs[4].MsgID), b64(push.MsgID))
		}
		if n := c.BlocksReceived() - first; n >= 9 {
			t.Errorf("9 responses ready together came in %d blocks", n)
		}
	})
}

func checkSeq(t *testing.T, what string, got []smptest.Response, want ...want) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d responses %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range want {
		if !want[i].matches(got[i]) {
			t.Fatalf("%s: response %d: got %v, want %v", what, i, got[i], want[i])
		}
	}
}

// TestTamperedBlock: a block that fails authentication closes the
// connection at once, with no reply (SPEC §3.3).
func TestTamperedBlock(t *testing.T) {
	t.Parallel()
	s := smptest.StartServer(t, "--key-type", "x25519")
	pingBlock := []byte("\r\np\r\n\r\nPING\r\n")
	tests := []struct {
		name  string
		write func(c *smptest.Conn) []byte // bytes to write; a PONG for "p" precedes the close when good
		good  bool
	}{
		{"ciphertext first byte", func(c *smptest.Conn) []byte { b := c.SealBlock(pingBlock); b[0] ^= 1; return b }, false},
		{"ciphertext middle byte", func(c *smptest.Conn) []byte { b := c.SealBlock(pingBlock); b[len(b)/2] ^= 0x80; return b }, false},
		{"tag last byte", func(c *smptest.Conn) []byte { b := c.SealBlock(pingBlock); b[len(b)-1] ^= 1; return b }, false},
		{"skipped counter", func(c *smptest.Conn) []byte { c.SealBlock(nil); return c.SealBlock(pingBlock) }, false},
		{"random block", func(c *smptest.Conn) []byte {
			b := make([]byte, c.BlockSize())
			rand.Read(b)
			return b
		}, false},
		{"replayed block", func(c *smptest.Conn) []byte { b := c.SealBlock(pingBlock); return append(b, b...) }, true},
		{"good block then flipped byte", func(c *smptest.Conn) []byte {
			b := append(c.SealBlock(pingBlock), c.SealBlock(pingBlock)...)
			b[len(b)-100] ^= 4
			return b
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			c := dial(t, ctx, s)
			if err := c.WriteRaw(tc.write(c)); err != nil {
				t.Fatal(err)
			}
			if tc.good {
				expect(t, ctx, c, pong("p"))
			}
			if err := c.ExpectClosed(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// rawHello is a connection made without smptest.Dial, with the server hello
// it began with.
type rawHello struct {
	nc  net.Conn
	k   *codec.KEMPublicKey
	h   codec.ServerHello
	raw []byte // the server hello exactly as received
}

// rawConn connects without smptest.Dial and reads the server hello.
func rawConn(t *testing.T, ctx context.Context, s *smptest.Server) *rawHello {
	t.Helper()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	h, raw, err := smptest.ReadServerHello(ctx, nc)
	if err != nil {
		t.Fatal(err)
	}
	k, err := codec.ParseKEMPublicKey(h.Key)
	if err != nil {
		t.Fatal(err)
	}
	return &rawHello{nc: nc, k: k, h: h, raw: raw}
}

// frame prefixes sealed with its 2-byte length (SPEC §3.2).
func frame(sealed []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(sealed))), sealed...)
}

// helloEdit describes a client hello built by hand: the plaintext's fields,
// a change to its bytes, the info it is sealed with and the key it is sealed to.
type helloEdit struct {
	version   uint16
	blockSize uint32
	plain     func([]byte) []byte // nil: unchanged
	info      string              // "": codec.TransportInfo
	to        *codec.KEMPublicKey // nil: the server's key
	zeroShare bool                // send an all-zero clientShare
}

// clientHello builds a client hello for r as e says (SPEC §3.2) and returns
// it with the keys a client derives from what it sent.
func (r *rawHello) clientHello(t *testing.T, e helloEdit) ([]byte, codec.SessionKeys) {
	t.Helper()
	if e.version == 0 {
		e.version = codec.TransportVersion
	}
	if e.blockSize == 0 {
		e.blockSize = r.h.BlockSize
	}
	if e.info == "" {
		e.info = codec.TransportInfo
	}
	if e.to == nil {
		e.to = r.k
	}
	hello := codec.ClientHello{Version: e.version, BlockSize: e.blockSize}
	rand.Read(hello.Secret[:])
	plain := hello.Append(nil)
	if e.plain != nil {
		plain = e.plain(plain)
	}
	sealed, err := e.to.Seal([]byte(e.info), plain)
	if err != nil {
		t.Fatal(err)
	}
	share, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ch := append(frame(sealed), share.PublicKey().Bytes()...)
	if e.zeroShare {
		clear(ch[len(ch)-codec.ShareSize:])
		return ch, codec.SessionKeys{}
	}
	peer, err := ecdh.X25519().NewPublicKey(r.h.Share[:])
	if err != nil {
		t.Fatal(err)
	}
	s, err := share.ECDH(peer)
	if err != nil {
		t.Fatal(err)
	}
	var dh [32]byte
	copy(dh[:], s)
	return ch, codec.DeriveKeys(&hello.Secret, &dh, &r.h.Random, ch, r.raw)
}

// TestBadClientHello: the server closes without a reply when the hello does
// not open, has the wrong length, version or block size, or its share gives
// no shared secret (SPEC §3.2). The handshake timeout is an hour, so only the
// rejection can close.
func TestBadClientHello(t *testing.T) {
	t.Parallel()
	s := smptest.StartServer(t, "--key-type", "x25519", "--handshake-timeout", "1h")
	other := func(t *testing.T) *codec.KEMPublicKey {
		priv, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		k, err := codec.ParseKEMPublicKey(append([]byte{byte(codec.KEMX25519)}, priv.PublicKey().Bytes()...))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	tests := []struct {
		name  string
		bytes func(t *testing.T, r *rawHello) []byte
	}{
		{"sealedLen 0", func(t *testing.T, r *rawHello) []byte { return []byte{0, 0} }},
		{"sealedLen above MaxSealedHello", func(t *testing.T, r *rawHello) []byte {
			return binary.BigEndian.AppendUint16(nil, codec.MaxSealedHello+1)
		}},
		{"sealedLen one more than x25519's", func(t *testing.T, r *rawHello) []byte {
			return binary.BigEndian.AppendUint16(nil, 32+codec.ClientHelloSize+16+1)
		}},
		{"random sealed bytes", func(t *testing.T, r *rawHello) []byte {
			b := make([]byte, 32+codec.ClientHelloSize+16+codec.ShareSize) // sealed, then the share
			rand.Read(b)
			return append(frame(b[:len(b)-codec.ShareSize]), b[len(b)-codec.ShareSize:]...)
		}},
		{"wrong block size", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{blockSize: 4096})
			return ch
		}},
		{"version 1", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{version: 1})
			return ch
		}},
		{"version 3", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{version: 3})
			return ch
		}},
		{"37-byte plaintext", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{plain: func(b []byte) []byte { return b[:37] }})
			return ch
		}},
		{"39-byte plaintext", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{plain: func(b []byte) []byte { return append(b, 0) }})
			return ch
		}},
		{"version 1 HPKE info", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{info: "SMP transport v1"})
			return ch
		}},
		{"sealed to another key", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{to: other(t)})
			return ch
		}},
		{"all-zero client share", func(t *testing.T, r *rawHello) []byte {
			ch, _ := r.clientHello(t, helloEdit{zeroShare: true})
			return ch
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			r := rawConn(t, ctx, s)
			if _, err := r.nc.Write(tc.bytes(t, r)); err != nil {
				t.Fatal(err)
			}
			if err := smptest.ExpectClosed(ctx, r.nc); err != nil {
				t.Fatal(err)
			}
		})
	}

	// Control: the same hand-built path with a good hello gets the welcome,
	// so the cases above fail for the reason they name.
	t.Run("good hello control", func(t *testing.T) {
		t.Parallel()
		ctx := testCtx(t)
		r := rawConn(t, ctx, s)
		ch, keys := r.clientHello(t, helloEdit{})
		if _, err := r.nc.Write(ch); err != nil {
			t.Fatal(err)
		}
		blk := make([]byte, 8192)
		r.nc.SetReadDeadline(time.Now().Add(hangGuard))
		if _, err := readFull(r.nc, blk); err != nil {
			t.Fatal(err)
		}
		var rx codec.BlockCipher
		if err := rx.Init(keys.S2CKey, keys.S2CNonce); err != nil {
			t.Fatal(err)
		}
		plain, err := rx.Open(blk)
		if err != nil || !bytes.HasPrefix(plain, codec.Welcome) {
			t.Fatalf("welcome: %v %q", err, plain[:16])
		}
	})
}

func readFull(nc net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := nc.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestHandshakeTimeout: a connection whose hello is not complete within
// --handshake-timeout is closed by the server (SPEC §3.2); one that completed
// its handshake is not.
func TestHandshakeTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	s := smptest.StartServer(t, "--key-type", "x25519", "--handshake-timeout", timeout.String())
	ctx := testCtx(t)
	established := dial(t, ctx, s) // accepted before any of the idle connections below

	partial := func(keep func(ch []byte) []byte) func(t *testing.T, r *rawHello) {
		return func(t *testing.T, r *rawHello) {
			ch, _ := r.clientHello(t, helloEdit{})
			if _, err := r.nc.Write(keep(ch)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name      string
		readHello bool
		act       func(t *testing.T, r *rawHello)
	}{
		{"nothing read, nothing sent", false, nil},
		{"hello read, nothing sent", true, nil},
		{"length only", true, partial(func(b []byte) []byte { return b[:2] })},
		{"one byte of length", true, partial(func(b []byte) []byte { return b[:1] })},
		{"half a hello", true, partial(func(b []byte) []byte { return b[:len(b)/2] })},
		{"all but one byte", true, partial(func(b []byte) []byte { return b[:len(b)-1] })},
	}
	t.Run("idle", func(t *testing.T) {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				start := time.Now()
				var d net.Dialer
				nc, err := d.DialContext(ctx, "tcp", s.Addr)
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				if tc.readHello {
					h, raw, err := smptest.ReadServerHello(ctx, nc)
					if err != nil {
						t.Fatal(err)
					}
					k, err := codec.ParseKEMPublicKey(h.Key)
					if err != nil {
						t.Fatal(err)
					}
					if tc.act != nil {
						tc.act(t, &rawHello{nc: nc, k: k, h: h, raw: raw})
					}
				} else {
					// The hello is left unread until the server has closed:
					// then it must be all there is (10 + 33 + 64 bytes for x25519).
					nc.SetReadDeadline(time.Now().Add(10 * time.Second))
					n, err := readFull(nc, make([]byte, 4096))
					if n != 107 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
						t.Fatalf("read %d bytes then %v; want the 107-byte hello then EOF", n, err)
					}
				}
				if err := smptest.ExpectClosed(ctx, nc); err != nil {
					t.Fatalf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
				}
				if d := time.Since(start); d < timeout {
					t.Errorf("closed after %s, before the %s handshake timeout", d, timeout)
				}
			})
		}
	})
	// Every idle connection above was closed by its timer, and each was
	// accepted after this one, whose timer must have been stopped.
	ping(t, testCtx(t), established, "survivor")
}

// TestKeyReuse: the server key is created once; a restart on the same data
// directory serves the same key (whatever --key-type says), and
// DIR/fingerprint is one line holding the hello key's fingerprint (SPEC §11).
func TestKeyReuse(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := filepath.Join(t.TempDir(), "data") // absent: the server creates it
	var key []byte
	for i, keyType := range []string{"x25519", "rsa", "mlkem768x25519"} {
		s := smptest.StartServerIn(t, dir, "--key-type", keyType)
		raw, err := os.ReadFile(filepath.Join(dir, "fingerprint"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.Count(string(raw), "\n") != 1 || !strings.HasSuffix(string(raw), "\n") {
			t.Errorf("fingerprint file %q is not one line", raw)
		}
		c := dial(t, ctx, s) // checks codec.Fingerprint(hello key) == the file's line
		h := c.Hello()
		if i == 0 {
			key = h.Key
			if codec.KEMType(key[0]) != codec.KEMX25519 {
				t.Fatalf("first start made a %#x key, want x25519", key[0])
			}
		} else if !bytes.Equal(h.Key, key) {
			t.Fatalf("start %d (--key-type %s) serves another key: fingerprint %s", i, keyType, codec.Fingerprint(h.Key))
		}
		ping(t, ctx, c, "p")
		if code := s.Stop(); code != 0 {
			t.Fatalf("start %d: exit status %d; stderr:\n%s", i, code, s.Stderr())
		}
	}
}

// TestSignalExit: SIGTERM and SIGINT stop the server with status 0 and close
// its connections; "listening on" carries the real port (SPEC §11).
func TestSignalExit(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			ctx := testCtx(t)
			s := smptest.StartServer(t, "--key-type", "x25519")
			_, port, _ := net.SplitHostPort(s.Addr)
			if port == "0" || port == "" {
				t.Fatalf("listening on %q: want the real port", s.Addr)
			}
			if !strings.Contains(s.Stdout()+s.Stderr(), "listening on 127.0.0.1:"+port) {
				t.Fatalf("no \"listening on 127.0.0.1:%s\" line in the output:\n%s%s", port, s.Stdout(), s.Stderr())
			}
			c := dial(t, ctx, s)
			ping(t, ctx, c, "before")
			if code := s.Signal(sig); code != 0 {
				t.Fatalf("exit status %d after %v; stderr:\n%s", code, sig, s.Stderr())
			}
			if err := c.ExpectClosed(ctx); err != nil {
				t.Fatalf("open connection after exit: %v", err)
			}
		})
	}
}

// TestBadInputIsolation: malformed transmissions in authenticated blocks get
// the SPEC §6 response on the offending connection, which stays open; garbage
// that breaks the transport closes only its own connection. Another
// connection keeps working throughout.
func TestBadInputIsolation(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const quota = 3
	s := smptest.StartServer(t, "--key-type", "x25519", "--quota", fmt.Sprint(quota))
	good := dial(t, ctx, s)
	rk := newSigner(t, codec.SigEd25519)
	rid, sid := newQueue(t, ctx, good, rk, true)
	bad := dial(t, ctx, s)
	// A full queue, for ERR QUOTA: its own connection subscribes to it (and
	// gets the push), good fills it.
	holder := dial(t, ctx, s)
	_, fullSID := newQueue(t, ctx, holder, newSigner(t, codec.SigEd25519), false)
	for i := range quota {
		corr := fmt.Sprint("fill", i)
		send(t, good, smptest.StringSend(corr, fullSID, "x"))
		expect(t, ctx, good, ok(corr, fullSID))
	}

	// exchange writes the block plaintexts on bad, each padded and sealed as
	// given, and checks that the responses are want: a PING in a block of its
	// own marks their end. Then good must still answer.
	n := 0
	exchange := func(t *testing.T, blocks [][]byte, want []want) {
		t.Helper()
		n++
		for _, p := range blocks {
			if err := bad.WriteRaw(bad.SealBlock(p)); err != nil {
				t.Fatal(err)
			}
		}
		mark := fmt.Sprintf("mark%d", n)
		send(t, bad, smptest.Ping(mark))
		var got []smptest.Response
		for {
			r := next(t, ctx, bad)
			if pong(mark).matches(r) {
				break
			}
			got = append(got, r)
			if len(got) > len(want)+2 {
				break
			}
		}
		if len(got) != len(want) {
			t.Errorf("got %d responses %v, want %v", len(got), got, want)
		} else {
			for j := range got {
				if !want[j].matches(got[j]) {
					t.Errorf("response %d: got %v, want %v", j, got[j], want[j])
				}
			}
		}
		ping(t, ctx, good, fmt.Sprintf("good%d", n))
	}

	// Every row of SPEC §6 (internal/errtable), one transmission a block.
	f := errtable.Fixture{BlockSize: good.BlockSize(), RID: rid, SID: sid, RK: rk, FullSID: fullSID}
	for _, row := range errtable.Rows {
		t.Run(row.Name, func(t *testing.T) {
			if row.NotRelay != "" {
				t.Skip(row.NotRelay)
			}
			for _, tc := range row.Cases {
				t.Run(tc.Name, func(t *testing.T) {
					if tc.Needs != errtable.Nothing {
						t.Fatalf("the case needs server condition %d, which this test does not set up", tc.Needs)
					}
					var queue []byte
					if tc.Queue != nil {
						queue = tc.Queue(f)
					}
					exchange(t, [][]byte{tc.Tx(f)}, []want{errResp(tc.Corr, queue, row.Err)})
				})
			}
		})
	}

	// What follows an error in the same block (SPEC §3.3).
	q := b64(sid)
	tx := func(s string) []byte { return []byte(s) }
	tests := []struct {
		name   string
		blocks [][]byte // block plaintexts, padded and sealed as given
		want   []want
	}{
		{"SEND hello, then PING in the same block", [][]byte{tx("\r\nu5\r\n" + q + "\r\nSEND hello\r\n\r\nu5p\r\n\r\nPING\r\n")},
			[]want{errResp("u5", sid, codec.ErrSyntaxBody), pong("u5p")}},
		{"keep-alive block", [][]byte{nil}, nil},
		// Boundary lost (SPEC §3.3): one error, the rest of the block is
		// discarded, transmissions before it are processed.
		{"missing final CRLF", [][]byte{tx("\r\nl1p\r\n\r\nPING\r\n\r\nl1\r\n\r\nPING")},
			[]want{pong("l1p"), errResp("l1", nil, codec.ErrSyntaxStructure)}},
		{"size above maxBody", [][]byte{tx("\r\nl2p\r\n\r\nPING\r\n\r\nl2\r\n" + q + "\r\nSEND 99999\r\nx\r\n\r\n\r\nl2x\r\n\r\nPING\r\n")},
			[]want{pong("l2p"), errResp("l2", sid, codec.ErrSize)}},
		{"size of 6 digits", [][]byte{tx("\r\nl3\r\n" + q + "\r\nSEND 000005\r\nhello\r\n\r\n\r\nl3x\r\n\r\nPING\r\n")},
			[]want{errResp("l3", sid, codec.ErrSize)}},
		{"size shorter than the body", [][]byte{tx("\r\nl4\r\n" + q + "\r\nSEND 4\r\nhello\r\n\r\n\r\nl4x\r\n\r\nPING\r\n")},
			[]want{errResp("l4", sid, codec.ErrSyntaxBody)}},
		{"size longer than the body", [][]byte{tx("\r\nl5\r\n" + q + "\r\nSEND 7000\r\nhi\r\n\r\n\r\nl5x\r\n\r\nPING\r\n")},
			[]want{errResp("l5", sid, codec.ErrSyntaxBody)}},
		{"two lost blocks in a row", [][]byte{tx("\r\nl6\r\n\r\nPING"), tx("\r\nl7\r\n" + q + "\r\nSEND 99999\r\n")},
			[]want{errResp("l6", nil, codec.ErrSyntaxStructure), errResp("l7", sid, codec.ErrSize)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { exchange(t, tc.blocks, tc.want) })
	}

	// Transport-level garbage closes only the connection that sent it.
	var d net.Dialer
	garbage := []struct {
		name string
		do   func(t *testing.T) net.Conn
	}{
		{"random bytes instead of a hello", func(t *testing.T) net.Conn {
			r := rawConn(t, ctx, s)
			b := make([]byte, r.k.SealedSize(codec.ClientHelloSize)+2+codec.ShareSize)
			rand.Read(b)
			binary.BigEndian.PutUint16(b, uint16(len(b)-2-codec.ShareSize)) // the right size, and complete
			r.nc.Write(b)
			return r.nc
		}},
		{"random block after the handshake", func(t *testing.T) net.Conn {
			c := dial(t, ctx, s)
			b := make([]byte, c.BlockSize())
			rand.Read(b)
			c.WriteRaw(b)
			return c.NetConn()
		}},
		{"tampered block on the bad connection", func(t *testing.T) net.Conn {
			b := bad.SealBlock(smptest.Ping("x"))
			b[3] ^= 0x10
			bad.WriteRaw(b)
			return bad.NetConn()
		}},
	}
	for _, g := range garbage {
		t.Run(g.name, func(t *testing.T) {
			nc := g.do(t)
			if err := smptest.ExpectClosed(ctx, nc); err != nil {
				t.Fatal(err)
			}
			ping(t, ctx, good, "after-"+strings.ReplaceAll(g.name, " ", "-"))
		})
	}
	// Half a block, then the client goes away.
	nc, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write(make([]byte, 100))
	nc.Close()

	// The good connection still does a whole round: a message sent by a new
	// connection is pushed to it.
	sender := dial(t, ctx, s)
	send(t, sender, smptest.StringSend("fin", sid, "still here"))
	expect(t, ctx, sender, ok("fin", sid))
	expectMSG(t, ctx, good, "", rid, []byte("still here"))
}

// TestSubscriptionHandover: SUB from a second connection makes it the only
// subscriber; the first gets END and nothing more for the queue (SPEC §5).
func TestSubscriptionHandover(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519")
	rk := newSigner(t, codec.SigEd25519)
	r1, r2, sc := dial(t, ctx, s), dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, r1, rk, true)

	send(t, sc, smptest.StringSend("s1", sid, "one"))
	expect(t, ctx, sc, ok("s1", sid))
	m := expectMSG(t, ctx, r1, "", rid, []byte("one")) // delivered, not acknowledged

	send(t, r2, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	m2 := expectMSG(t, ctx, r2, "sub", rid, []byte("one"))
	if !bytes.Equal(m.MsgID, m2.MsgID) {
		t.Errorf("re-delivered msgId %s, want %s", b64(m2.MsgID), b64(m.MsgID))
	}
	expect(t, ctx, r1, want{Cmd: codec.CmdEND, Queue: rid})

	// The old subscriber may not ACK; the new one may.
	send(t, r1, smptest.Cmd(rk, "a1", rid, codec.CmdACK, nil, nil))
	expect(t, ctx, r1, errResp("a1", rid, codec.ErrProhibited))
	send(t, r2, smptest.Cmd(rk, "a2", rid, codec.CmdACK, nil, nil))
	expect(t, ctx, r2, ok("a2", rid))

	// New messages go to r2 only: r1's next transmission is its PONG.
	send(t, sc, smptest.StringSend("s2", sid, "two"))
	expect(t, ctx, sc, ok("s2", sid))
	expectMSG(t, ctx, r2, "", rid, []byte("two"))
	ping(t, ctx, r1, "r1")
}

// TestQuota: a queue holding --quota messages answers ERR QUOTA and stores
// nothing; an ACK makes room again (SPEC §5).
func TestQuota(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519", "--quota", "3")
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, rc, rk, false)
	send(t, sc, smptest.StringSend("q1", sid, "1"), smptest.StringSend("q2", sid, "2"),
		smptest.StringSend("q3", sid, "3"), smptest.StringSend("q4", sid, "4"))
	checkSeq(t, "SENDs", collect(t, ctx, sc, 4), ok("q1", sid), ok("q2", sid), ok("q3", sid), errResp("q4", sid, codec.ErrQuota))
	expectMSG(t, ctx, rc, "", rid, []byte("1"))
	send(t, rc, smptest.Cmd(rk, "a1", rid, codec.CmdACK, nil, nil))
	expectMSG(t, ctx, rc, "a1", rid, []byte("2"))
	send(t, sc, smptest.StringSend("q5", sid, "5"))
	expect(t, ctx, sc, ok("q5", sid))
	for i, body := range []string{"3", "5"} {
		corr := fmt.Sprintf("a%d", i+2)
		send(t, rc, smptest.Cmd(rk, corr, rid, codec.CmdACK, nil, nil))
		expectMSG(t, ctx, rc, corr, rid, []byte(body))
	}
	send(t, rc, smptest.Cmd(rk, "a4", rid, codec.CmdACK, nil, nil))
	expect(t, ctx, rc, ok("a4", rid))
}

// TestConcurrentSenders: several connections send to one queue at once; the
// recipient gets every message exactly once, each sender's in order, and
// every ACK one answer, in order.
func TestConcurrentSenders(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519")
	rc := dial(t, ctx, s)
	rk, sk, rid, sid := securedQueue(t, ctx, rc, true)

	const senders, each = 4, 20
	conns := make([]*smptest.Conn, senders)
	for i := range conns {
		conns[i] = dial(t, ctx, s)
	}
	errs := make(chan error, senders)
	for i, c := range conns {
		go func() {
			errs <- func() error {
				for j := range each {
					corr := fmt.Sprintf("s%d-%d", i, j)
					if err := c.Send(smptest.Cmd(sk, corr, sid, codec.CmdSEND, nil, []byte(corr))); err != nil {
						return err
					}
					r, err := c.Next(ctx)
					if err != nil {
						return err
					}
					if !ok(corr, sid).matches(r) {
						return fmt.Errorf("sender %d: got %v, want OK %s", i, r, corr)
					}
				}
				return nil
			}()
		}()
	}
	// The recipient ACKs each MSG at once. An ACK is answered by the next
	// message (a MSG with the ACK's corrId) or by OK, and the answers come in
	// the order the ACKs went out: they share a queueId (SPEC §5, Order). A
	// MSG pushed once an ACK found the queue empty is in no order with those
	// answers (§5, Order), and with --fsync always (the default) it can come
	// before that ACK's OK: the OK waits until the ACK's log record is durable
	// (§8, Durability) while the push waits for nothing. So the push and the
	// OK are matched up, not expected in one order.
	last := make([]int, senders)
	for i := range last {
		last[i] = -1
	}
	var pending []string // corrIds of the ACKs not answered yet, oldest first
	// okOnly is how many of the oldest pending ACKs must be answered OK: a
	// push means the relay had no message awaiting ACK (§5, Delivery), so
	// every ACK sent before it found the queue empty.
	okOnly := 0
	answer := func(r smptest.Response) {
		t.Helper()
		if len(pending) == 0 || r.CorrID != pending[0] {
			t.Fatalf("recipient: %v answers %q, want the answer to the oldest pending ACK of %q", r.Cmd, r.CorrID, pending)
		}
		if r.Cmd == codec.CmdMSG && okOnly > 0 {
			t.Fatalf("recipient: ACK %s answered with a MSG after a MSG was pushed while it was pending", r.CorrID)
		}
		pending = pending[1:]
		okOnly = max(0, okOnly-1)
	}
	for got := 0; got < senders*each || len(pending) > 0; {
		r := next(t, ctx, rc)
		if !bytes.Equal(r.QueueID, rid) {
			t.Fatalf("recipient: unexpected %v", r)
		}
		switch r.Cmd {
		case codec.CmdMSG:
			if r.CorrID == "" {
				okOnly = len(pending)
			} else {
				answer(r)
			}
			var i, j int
			if _, err := fmt.Sscanf(string(r.Body), "s%d-%d", &i, &j); err != nil || i < 0 || i >= senders {
				t.Fatalf("unexpected body %q", r.Body)
			}
			if j != last[i]+1 {
				t.Fatalf("sender %d: message %d after %d", i, j, last[i])
			}
			last[i] = j
			got++
			corr := fmt.Sprintf("a%d", got)
			pending = append(pending, corr)
			send(t, rc, smptest.Cmd(rk, corr, rid, codec.CmdACK, nil, nil))
		case codec.CmdOK:
			answer(r)
		default:
			t.Fatalf("recipient: unexpected %v", r)
		}
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
