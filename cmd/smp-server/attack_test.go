package main_test

// Attack tests: each runs the real binary with small limits and plays one
// hostile client, and checks three things: the attacker gets the SPEC error or
// is disconnected, the server's memory stays bounded (read from /proc), and a
// well-behaved client on another connection keeps getting correct service.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
	"github.com/smprelay/smprelay/internal/smptest"
)

// memSlack scales memory bounds for a server built with -race (as
// smptest.BuildServer does under -race), whose shadow memory multiplies what
// every allocation costs.
var memSlack = map[bool]int{false: 1, true: 8}[race.Enabled]

// rssKiB reads the server's resident set size.
func rssKiB(t *testing.T, s *smptest.Server) int { return procStatusKiB(t, s, "VmRSS") }

// procStatusKiB reads a kB field of the server's /proc status.
func procStatusKiB(t *testing.T, s *smptest.Server, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.Cmd.Process.Pid))
	if err != nil {
		t.Fatalf("reading server memory: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			if err != nil {
				t.Fatalf("%s line %q: %v", field, line, err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc status", field)
	return 0
}

// bystander is a well-behaved client: a queue it sends to and receives from.
type bystander struct {
	r, s     *smptest.Conn
	rk, sk   *codec.Signer
	rid, sid []byte
	n        int
}

func newBystander(t *testing.T, ctx context.Context, srv *smptest.Server) *bystander {
	t.Helper()
	b := &bystander{r: dial(t, ctx, srv), s: dial(t, ctx, srv)}
	b.rk, b.sk, b.rid, b.sid = securedQueue(t, ctx, b.r, false)
	return b
}

// check sends one signed message and receives, verifies and acknowledges it.
func (b *bystander) check(t *testing.T, ctx context.Context) {
	t.Helper()
	b.n++
	body := []byte(fmt.Sprintf("bystander message %d", b.n))
	corr := fmt.Sprintf("b%d", b.n)
	send(t, b.s, smptest.Cmd(b.sk, corr, b.sid, codec.CmdSEND, nil, body))
	expect(t, ctx, b.s, ok(corr, b.sid))
	expectMSG(t, ctx, b.r, "", b.rid, body)
	send(t, b.r, smptest.Cmd(b.rk, corr, b.rid, codec.CmdACK, nil, nil))
	expect(t, ctx, b.r, ok(corr, b.rid))
}

// startLimited starts a server with small limits that the attacks reach quickly.
func startLimited(t *testing.T, extra ...string) *smptest.Server {
	t.Helper()
	args := []string{"--key-type", "x25519", "--max-conns", "64", "--idle-timeout", "1m",
		"--max-outbound", "65536", "--blocks-per-second", "200", "--handshake-timeout", "1s"}
	return smptest.StartServer(t, append(args, extra...)...)
}

func TestAttackRandomBytes(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t)
	by := newBystander(t, ctx, srv)
	before := rssKiB(t, srv)
	for i := range 20 {
		nc, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 1+i*997)
		rand.Read(junk)
		nc.Write(junk)
		if err := smptest.ExpectClosed(ctx, drainHello(t, ctx, nc)); err != nil {
			t.Fatalf("random bytes %d: %v", i, err)
		}
		by.check(t, ctx)
	}
	if after := rssKiB(t, srv); after > before+memSlack*16*1024 {
		t.Fatalf("server grew from %d to %d KiB on random bytes", before, after)
	}
}

// drainHello reads the server hello so that ExpectClosed sees only what follows it.
func drainHello(t *testing.T, ctx context.Context, nc net.Conn) net.Conn {
	t.Helper()
	if _, _, err := smptest.ReadServerHello(ctx, nc); err != nil {
		t.Fatalf("reading server hello: %v", err)
	}
	return nc
}

// TestAttackSlowloris: a client that stalls mid-handshake is closed by the
// handshake timeout, one that stalls mid-block by the idle timeout.
func TestAttackSlowloris(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t, "--idle-timeout", "2s")
	by := newBystander(t, ctx, srv)

	half, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	drainHello(t, ctx, half)
	half.Write([]byte{0x00, 0x30, 1, 2, 3}) // 5 bytes of a 50-byte hello, then nothing

	mid := dial(t, ctx, srv)
	if err := mid.WriteRaw(make([]byte, mid.BlockSize()/2)); err != nil { // half a block, then nothing
		t.Fatal(err)
	}

	closed := make(chan error, 2)
	for name, nc := range map[string]net.Conn{"mid-handshake": half, "mid-block": mid.NetConn()} {
		go func() {
			if err := smptest.ExpectClosed(ctx, nc); err != nil {
				closed <- fmt.Errorf("%s: %w", name, err)
				return
			}
			closed <- nil
		}()
	}
	// The bystander keeps working (and, being busy, is never idle) until both
	// stalled connections are closed.
	for done := 0; done < 2; {
		select {
		case err := <-closed:
			if err != nil {
				t.Fatal(err)
			}
			done++
		default:
			by.check(t, ctx)
		}
	}
}

// TestAttackUnsignedFlood: a client floods SENDs at a secured queue it cannot
// sign for. Every one is answered ERR AUTH, in order, none is stored, and the
// flood is throttled without starving the owner of the queue.
func TestAttackUnsignedFlood(t *testing.T) {
	ctx := testCtx(t)
	// The attacker reads its answers, but pipelines 100 blocks: room for
	// them all, so that only the flood limits decide.
	srv := startLimited(t, "--max-outbound", "1048576")
	by := newBystander(t, ctx, srv)
	attacker := dial(t, ctx, srv)
	forger := newSigner(t, codec.SigEd25519)
	const blocks = 100
	txs := make([][]byte, 0, 20)
	for i := range 20 {
		txs = append(txs, smptest.Cmd(forger, fmt.Sprint(i), by.sid, codec.CmdSEND, nil, []byte("forged")))
	}
	go func() {
		for range blocks {
			if attacker.Send(txs...) != nil {
				return
			}
		}
	}()
	for i := range blocks * len(txs) {
		r, err := attacker.Next(ctx)
		if err != nil {
			t.Fatalf("attacker response %d: %v", i, err)
		}
		// In order: a block of 20 is more than one work slice, so this also
		// checks that a block cut short resumes where it stopped.
		if r.Cmd != codec.CmdERR || r.Err != codec.ErrAuth || r.CorrID != fmt.Sprint(i%len(txs)) {
			t.Fatalf("attacker response %d: %v, want ERR AUTH to %d", i, r, i%len(txs))
		}
		if i%500 == 0 {
			by.check(t, ctx)
		}
	}
	// Nothing forged was stored: the bystander's queue holds only its own.
	by.check(t, ctx)
	send(t, by.r, smptest.Cmd(by.rk, "sub", by.rid, codec.CmdSUB, nil, nil))
	expect(t, ctx, by.r, ok("sub", by.rid))
}

// TestAttackNeverReads: a subscriber that never reads while others keep
// sending is disconnected once its backlog passes --max-outbound, instead of
// growing the server's memory.
func TestAttackNeverReads(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t, "--new-queues-per-minute", "100000", "--blocks-per-second", "100000")
	by := newBystander(t, ctx, srv)
	lazy := dial(t, ctx, srv)
	// The client's own kernel buffer absorbs pushes too: kept small, so that
	// what the server lets through is what the count below measures.
	if err := lazy.NetConn().(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	const queues = 2000
	rk := newSigner(t, codec.SigEd25519)
	sids := make([][]byte, 0, queues)
	// 2000 pushes of a full block, 16 MiB: several times what the kernel's
	// socket buffers absorb (tcp_wmem max 4 MiB here) for a reader that does not read.
	for i := 0; i < queues; i += 50 {
		var txs [][]byte
		for j := range 50 {
			txs = append(txs, smptest.Cmd(nil, fmt.Sprint(i+j), nil, codec.CmdNEW, rk.PublicSPKI(), nil))
		}
		send(t, lazy, txs...)
		for range 50 {
			sids = append(sids, next(t, ctx, lazy).SID)
		}
	}
	before := rssKiB(t, srv)
	// From here on the subscriber reads nothing; a sender fills every queue.
	sender := dial(t, ctx, srv)
	body := bytes.Repeat([]byte{'x'}, codec.MaxBody(sender.BlockSize())-64)
	for i, sid := range sids {
		send(t, sender, smptest.Cmd(nil, fmt.Sprint(i), sid, codec.CmdSEND, nil, body))
		expect(t, ctx, sender, ok(fmt.Sprint(i), sid))
	}
	by.check(t, ctx)
	// Reading now, the subscriber finds the connection closed before all of them.
	got := 0
	for {
		r, err := lazy.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("subscriber still connected after %d of %d pushes; server log:\n%s", got, queues, srv.Stderr())
			}
			break
		}
		if r.Cmd == codec.CmdMSG {
			got++
		}
	}
	// max-outbound (64 KiB) in gnet's buffer, as much again in the server's
	// socket (SO_SNDBUF half of it, doubled by Linux), 128 KiB in the
	// client's: 32 blocks, doubled for slack. Without the socket cap, the
	// kernel's 4 MiB let about 500 through.
	if limit := 64; got > limit {
		t.Fatalf("a subscriber that did not read received %d of %d pushes before the disconnect; want at most %d", got, queues, limit)
	}
	stored := queues * len(body) / 1024
	if after := rssKiB(t, srv); after > before+memSlack*(stored+32*1024) {
		t.Fatalf("server grew from %d to %d KiB; stored bodies are only %d KiB", before, after, stored)
	}
	t.Logf("subscriber got %d of %d pushes before the disconnect", got, queues)
}

// TestAttackConnectionLimit: connections beyond --max-conns are closed at
// once; closing some makes room again.
func TestAttackConnectionLimit(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t, "--max-conns", "20")
	by := newBystander(t, ctx, srv) // 2 connections
	var held []net.Conn
	for range 18 {
		nc, err := net.Dial("tcp", srv.Addr)
		if err != nil {
			t.Fatal(err)
		}
		drainHello(t, ctx, nc)
		held = append(held, nc)
	}
	over, err := net.Dial("tcp", srv.Addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := smptest.ExpectClosed(ctx, over); err != nil {
		t.Fatalf("connection over the limit: %v", err)
	}
	by.check(t, ctx)
	for _, nc := range held {
		nc.Close()
	}
	// The server notices the closes on its own loops; retry until one fits.
	deadline, _ := ctx.Deadline()
	for {
		c, err := smptest.Dial(ctx, srv.Addr, srv.Fingerprint)
		if err == nil {
			ping(t, ctx, c, "room")
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after closing connections: %v", err)
		}
	}
}

// TestAttackGarbagePlaintext: a block with a valid tag but garbage plaintext
// gets SPEC errors, not a crash, and the connection goes on.
func TestAttackGarbagePlaintext(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t)
	by := newBystander(t, ctx, srv)
	c := dial(t, ctx, srv)
	for i := range 50 {
		plain := make([]byte, c.BlockSize()-codec.TagSize)
		rand.Read(plain)
		plain[0] = '\r' // starts a transmission, so there is something to answer
		if err := c.WriteRaw(c.SealBlock(plain)); err != nil {
			t.Fatal(err)
		}
		ping(t, ctx, drainUntilPong(t, ctx, c, i), fmt.Sprint("after", i))
	}
	by.check(t, ctx)
}

// drainUntilPong sends a PING and reads ERR responses (the garbage's) until
// its PONG arrives.
func drainUntilPong(t *testing.T, ctx context.Context, c *smptest.Conn, i int) *smptest.Conn {
	t.Helper()
	corr := fmt.Sprint("g", i)
	send(t, c, smptest.Ping(corr))
	for {
		r := next(t, ctx, c)
		if r.Cmd == codec.CmdPONG && r.CorrID == corr {
			return c
		}
		if r.Cmd != codec.CmdERR {
			t.Fatalf("garbage block %d answered with %v", i, r)
		}
	}
}

// TestAttackHugeSize: a SEND declaring a 99999-byte body is ERR SIZE and the
// rest of its block is dropped.
func TestAttackHugeSize(t *testing.T) {
	ctx := testCtx(t)
	srv := startLimited(t)
	by := newBystander(t, ctx, srv)
	c := dial(t, ctx, srv)
	tx := []byte("\r\nhuge\r\n" + b64(by.sid) + "\r\nSEND 99999\r\n")
	send(t, c, tx, smptest.Ping("dropped"))
	expect(t, ctx, c, errResp("huge", by.sid, codec.ErrSize))
	ping(t, ctx, c, "next")
	by.check(t, ctx)
}
