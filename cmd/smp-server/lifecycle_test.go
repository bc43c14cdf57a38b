package main_test

// Lifecycle tests against the real binary: SIGHUP reload and the SIGTERM
// drain. They wait on log lines and replies, never on the clock.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

func writeConfig(t *testing.T, dir, text string) {
	t.Helper()
	// Written whole and renamed, so a reload never reads half a file.
	tmp := filepath.Join(dir, ".conf.tmp")
	if err := os.WriteFile(tmp, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "smp-server.conf")); err != nil {
		t.Fatal(err)
	}
}

func hup(t *testing.T, s *smptest.Server) {
	t.Helper()
	if err := s.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// exitAfterDrain waits for a server that was signalled to exit by itself (Stop
// would signal again, and a second SIGTERM cuts a drain short).
func exitAfterDrain(t *testing.T, ctx context.Context, s *smptest.Server) int {
	t.Helper()
	select {
	case <-s.Exited():
	case <-ctx.Done():
		t.Fatalf("smp-server did not exit after the drain:\n%s", s.Stderr())
	}
	return s.Stop()
}

func waitOutput(t *testing.T, ctx context.Context, s *smptest.Server, substr string, n int) {
	t.Helper()
	if err := s.WaitOutput(ctx, substr, n); err != nil {
		t.Fatalf("%v\nserver log:\n%s", err, s.Stderr())
	}
}

// TestReloadSIGHUP: quota changed in the config file applies on SIGHUP (ERR
// QUOTA at the new limit); a restart-only change is reported as such and not
// applied; the log level changes; an invalid file is logged and ignored.
func TestReloadSIGHUP(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	writeConfig(t, dir, "quota = 2\nkey-type = \"x25519\"\n")
	s := smptest.StartServerIn(t, dir)
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	_, sid := newQueue(t, ctx, rc, rk, false)
	sendN := func(from, n int) []smptest.Response {
		var txs [][]byte
		for i := from; i < from+n; i++ {
			txs = append(txs, smptest.StringSend(fmt.Sprint("s", i), sid, fmt.Sprint(i)))
		}
		send(t, sc, txs...)
		return collect(t, ctx, sc, n)
	}
	checkSeq(t, "quota 2", sendN(1, 3), ok("s1", sid), ok("s2", sid), errResp("s3", sid, codec.ErrQuota))

	// Live: quota and log level. Restart-only: block-size and handshake-timeout.
	// (listen in the file would not count: the --listen flag wins over it.)
	writeConfig(t, dir, "quota = 4\nkey-type = \"x25519\"\nlog-level = \"warn\"\nblock-size = 16384\nhandshake-timeout = \"5s\"\nlisten = \"127.0.0.1:1\"\n")
	hup(t, s)
	waitOutput(t, ctx, s, `msg="reloaded configuration" changed="quota 2 -> 4, log-level info -> warn"`, 1)
	waitOutput(t, ctx, s, `msg="reload: changed options that take effect only after a restart" options="block-size, handshake-timeout"`, 1)
	checkSeq(t, "quota 4", sendN(4, 3), ok("s4", sid), ok("s5", sid), errResp("s6", sid, codec.ErrQuota))
	ping(t, ctx, sc, "p8192") // block-size did not change under the connection

	// At warn, the next reload's info line is not logged; its warning is, after it.
	writeConfig(t, dir, "quota = 4\nkey-type = \"x25519\"\nlog-level = \"warn\"\nblock-size = 32768\n")
	hup(t, s)
	waitOutput(t, ctx, s, `options=block-size`, 1)
	if n := strings.Count(s.Stderr(), `msg="reloaded configuration"`); n != 1 {
		t.Fatalf("log-level warn still logs info lines (%d reload lines):\n%s", n, s.Stderr())
	}

	// Invalid: logged, and the relay keeps quota 4.
	writeConfig(t, dir, "quota = 0\nlog-level = \"warn\"\n")
	hup(t, s)
	waitOutput(t, ctx, s, `reload: configuration rejected; the relay keeps its current one`, 1)
	if !strings.Contains(s.Stderr(), `quota = \"0\" (file `+filepath.Join(dir, "smp-server.conf")+`:1): must be an integer of at least 1`) {
		t.Fatalf("the rejection does not name the option, value and allowed values:\n%s", s.Stderr())
	}
	checkSeq(t, "still quota 4", sendN(7, 1), errResp("s7", sid, codec.ErrQuota))
}

// TestReloadConnLimits: a connection limit lowered on SIGHUP applies to the
// next connection, and closes none that are open.
func TestReloadConnLimits(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\nmax-conns = 100\n")
	s := smptest.StartServerIn(t, dir)
	a, b := dial(t, ctx, s), dial(t, ctx, s)
	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\nmax-conns = 2\n")
	hup(t, s)
	waitOutput(t, ctx, s, `changed="max-conns 100 -> 2"`, 1)
	if c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint); err == nil {
		c.Close()
		t.Fatal("a third connection was served with max-conns 2")
	}
	ping(t, ctx, a, "a")
	ping(t, ctx, b, "b")
}

// TestDrainSIGTERM: SIGTERM while a client pipelines SENDs under fsync
// always. Every SEND the server took in is answered before the connection
// closes (its reply may have been held for the log), no reply is missing
// for a message that is stored, and every answered message survives the
// restart.
func TestDrainSIGTERM(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	s := smptest.StartServerIn(t, dir, "--key-type", "x25519", "--fsync", "always", "--quota", "100000")
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, rc, rk, false)

	// The writer pipelines SENDs, one block each, until the server closes.
	const total = 20000
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range total {
			if sc.Send(smptest.StringSend(fmt.Sprint(i), sid, fmt.Sprint(i))) != nil {
				return // the server has closed the connection
			}
		}
	}()

	okd := make(map[string]bool)
	signalled := false
	var readErr error
	for {
		r, err := sc.Next(ctx)
		if err != nil {
			readErr = err
			break
		}
		if r.Cmd != codec.CmdOK {
			t.Fatalf("reply %v, want OK", r)
		}
		okd[r.CorrID] = true
		if !signalled {
			// At least one SEND is answered, and more are in flight.
			if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			signalled = true
		}
	}
	if errors.Is(readErr, context.DeadlineExceeded) {
		t.Fatalf("the connection was not closed by the drain: %v\nserver log:\n%s", readErr, s.Stderr())
	}
	sc.Close()
	wg.Wait()
	if code := exitAfterDrain(t, ctx, s); code != 0 {
		t.Fatalf("exit status %d after the drain:\n%s", code, s.Stderr())
	}
	if !strings.Contains(s.Stderr(), `msg=drained`) {
		t.Fatalf("no drained line:\n%s", s.Stderr())
	}

	// Restart and read every stored message back.
	s2 := smptest.StartServerIn(t, dir, "--fsync", "never")
	rc2 := dial(t, ctx, s2)
	stored := make(map[string]bool)
	send(t, rc2, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	corr := "sub"
	for {
		r := next(t, ctx, rc2)
		if r.CorrID != corr {
			t.Fatalf("reply %v to %s", r, corr)
		}
		if r.Cmd == codec.CmdOK {
			break // the queue is empty
		}
		if r.Cmd != codec.CmdMSG {
			t.Fatalf("reply %v, want MSG or OK", r)
		}
		stored[string(r.Body)] = true
		corr = fmt.Sprint("ack", len(stored))
		send(t, rc2, smptest.Cmd(rk, corr, rid, codec.CmdACK, nil, nil))
	}
	for m := range okd {
		if !stored[m] {
			t.Errorf("message %s was answered OK but is not stored after the restart", m)
		}
	}
	for m := range stored {
		if !okd[m] {
			t.Errorf("message %s is stored but its SEND got no reply before the connection closed", m)
		}
	}
	t.Logf("%d of %d SENDs answered before the drain closed the connection (read ended with %v)", len(okd), total, readErr)
	if len(okd) == 0 {
		t.Fatal("no SEND answered")
	}
}

// TestDrainRefusesNewConnections: while a drain waits for a client to read
// a large backlog of replies, a new connection is closed at once; the
// backlog then arrives whole and in order, and the drain ends cleanly.
func TestDrainRefusesNewConnections(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory",
		"--max-outbound", "67108864", "--drain-timeout", "10m")
	rk := newSigner(t, codec.SigEd25519)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rid, sid := newQueue(t, ctx, rc, rk, false)
	body := strings.Repeat("m", 4000)
	send(t, sc, smptest.StringSend("s", sid, body))
	expect(t, ctx, sc, ok("s", sid))
	expectMSG(t, ctx, rc, "", rid, []byte(body))

	// Each SUB is answered with the 4000-byte message again: some 80 blocks
	// of SUBs make about 20 MB of replies, more than the kernel buffers hold,
	// so the drain has to wait for this client to read.
	const subs = 4800
	txs := make([][]byte, subs)
	for i := range txs {
		txs[i] = smptest.Cmd(rk, fmt.Sprint("b", i), rid, codec.CmdSUB, nil, nil)
	}
	send(t, rc, txs...)
	expectMSG(t, ctx, rc, "b0", rid, []byte(body))
	if err := s.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitOutput(t, ctx, s, "msg=\"draining: new connections are refused", 1)
	if c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint); err == nil {
		c.Close()
		t.Fatal("a new connection was served during the drain")
	}
	n := 1
	for {
		r, err := rc.Next(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("the drain did not close the connection: %v", err)
			}
			break
		}
		if want := fmt.Sprint("b", n); r.Cmd != codec.CmdMSG || r.CorrID != want {
			t.Fatalf("reply %v, want MSG %s", r, want)
		}
		n++
	}
	if code := exitAfterDrain(t, ctx, s); code != 0 || !strings.Contains(s.Stderr(), "msg=drained") {
		t.Fatalf("exit status %d, want 0 after a complete drain:\n%s", code, s.Stderr())
	}
	t.Logf("%d of %d SUBs answered before the drain closed the connection", n, subs)
}

// TestMetricsListenOption: metrics-listen PORT binds loopback and its line
// follows the listening line; a non-loopback address is warned about; an
// address that cannot be bound stops the start.
func TestMetricsListenOption(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	s := smptest.StartServer(t, "--key-type", "x25519", "--store", "memory", "--metrics-listen", "0")
	waitOutput(t, ctx, s, "smp-server: metrics on ", 1)
	lines := strings.Split(s.Stdout(), "\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[0], "smp-server: listening on ") ||
		!strings.HasPrefix(lines[1], "smp-server: metrics on 127.0.0.1:") || strings.HasSuffix(lines[1], ":0") {
		t.Fatalf("stdout %q: want the listening line, then metrics on 127.0.0.1 with a real port", s.Stdout())
	}
	if strings.Contains(s.Stderr(), "reachable from the network") {
		t.Fatalf("loopback metrics warned about:\n%s", s.Stderr())
	}

	// The real binary's endpoint moves with real traffic: one PING, one PONG.
	base := "http://" + strings.TrimPrefix(lines[1], "smp-server: metrics on ")
	before := smptest.ScrapeMetrics(t, base+"/metrics")
	c, err := smptest.Dial(ctx, s.Addr, s.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Send([]byte("\r\nping\r\n\r\nPING\r\n")); err != nil {
		t.Fatal(err)
	}
	if r, err := c.Next(ctx); err != nil || r.Cmd != codec.CmdPONG {
		t.Fatalf("PING: %v %v", r, err)
	}
	after := smptest.ScrapeMetrics(t, base+"/metrics")
	for _, m := range []struct {
		name   string
		labels []string
	}{
		{"smp_commands_total", []string{"command", "PING", "result", "ok"}},
		{"smp_handshakes_total", []string{"kem", "x25519", "outcome", "ok"}},
		{"smp_connections_accepted_total", nil},
	} {
		if d := after.Value(t, m.name, m.labels...) - before.Value(t, m.name, m.labels...); d != 1 {
			t.Errorf("%s%v moved by %v after one PING on a new connection, want 1", m.name, m.labels, d)
		}
	}
	if status, body := smptest.HTTPGet(t, base+"/healthz"); status != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q, want 200 ok", status, body)
	}

	// The warning for a non-loopback address is decided by loopback(),
	// tested in options_test.go: tests bind nothing beyond 127.0.0.1.

	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	out, code := smptest.RunServer(t, "start", "--data", t.TempDir(), "--listen", "127.0.0.1:0",
		"--key-type", "x25519", "--store", "memory", "--metrics-listen", taken.Addr().String())
	if code != 1 || !strings.Contains(out, "metrics-listen "+taken.Addr().String()) || strings.Contains(out, "listening on") {
		t.Fatalf("metrics address in use: exit %d, want 1 with a message naming metrics-listen and no listening line:\n%s", code, out)
	}
}
