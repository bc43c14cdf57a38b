package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
	"github.com/smprelay/smprelay/internal/smptest"
)

// forwarder forwards a port of 127.0.0.1, fixed for the test, to a relay:
// stop closes the port, so that connecting is refused, and every connection
// through it, as a relay going down would; start opens the port again.
type forwarder struct {
	addr, target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startForwarder(t *testing.T, target string) *forwarder {
	t.Helper()
	f := &forwarder{addr: "127.0.0.1:0", target: target, conns: map[net.Conn]bool{}}
	f.start(t)
	f.addr = f.ln.Addr().String()
	t.Cleanup(func() {
		f.stop()
		f.wg.Wait()
	})
	return f
}

func (f *forwarder) start(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.ln = ln
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns[c], f.conns[s] = true, true
			f.mu.Unlock()
			pipe := func(dst, src net.Conn) {
				_, _ = io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			f.wg.Go(func() { pipe(s, c) })
			f.wg.Go(func() { pipe(c, s) })
		}
	})
}

func (f *forwarder) stop() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ln.Close()
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// relayAt is a relay that smp reaches at addr, and a folder for its states.
func relayAt(t *testing.T, srv *smptest.Server, addr string) *relay {
	t.Helper()
	r := &relay{srv: srv, dir: t.TempDir(), bin: smptest.BuildCommand(t, "github.com/smprelay/smprelay/cmd/smp")}
	r.env = append(os.Environ(), "SMP_SERVER="+addr, "SMP_FINGERPRINT="+srv.Fingerprint,
		"HOME="+r.dir, "XDG_CONFIG_HOME="+filepath.Join(r.dir, "config"), "SMP_STATE=", "COLUMNS=")
	if race.Enabled {
		r.env = append(r.env, "GORACE=atexit_sleep_ms=0")
	}
	return r
}

// smp runs smp with args and standard input, and returns its outputs and
// exit status.
func (r *relay) smp(t *testing.T, ctx context.Context, stdin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := r.command(ctx, append([]string{"smp"}, args...))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("smp %v: %v", args, err)
	}
	t.Logf("$ smp %s [exit %d]\n%s%s", strings.Join(args, " "), code, abbrev(out.String()), errOut.String())
	return out.String(), errOut.String(), code
}

func abbrev(s string) string {
	if len(s) > 300 {
		return s[:300] + "…\n"
	}
	return s
}

// must is smp that must succeed.
func (r *relay) must(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, errOut, code := r.smp(t, ctx, "", nil, args...)
	if code != 0 {
		t.Fatalf("smp %v: exit %d: %s", args, code, errOut)
	}
	return out
}

// pair sets up a queue from Bob to Alice: alice.json receives from "bob",
// bob.json sends to "alice".
func (r *relay) pair(t *testing.T, ctx context.Context) {
	t.Helper()
	inv := strings.TrimSpace(r.must(t, ctx, "--state", "alice.json", "create", "--kem", "x25519", "bob"))
	r.must(t, ctx, "--state", "bob.json", "connect", "alice", inv)
	r.must(t, ctx, "--state", "alice.json", "accept", "bob")
}

// TestFollowRetries: receive --follow started while the relay is down says
// so and retries until it is up; when the connection drops it says it is
// reconnecting, retries, and says when it is back; the messages sent
// meanwhile arrive. Without --follow, receive fails at once.
func TestFollowRetries(t *testing.T) {
	srv := smptest.StartServer(t)
	fw := startForwarder(t, srv.Addr)
	r := relayAt(t, srv, fw.addr)
	ctx := guard(t)
	r.pair(t, ctx)

	fw.stop()
	_, errOut, code := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob")
	if want := "smp receive: relay " + fw.addr + " unreachable (connection refused)\n"; code != 1 || errOut != want {
		t.Fatalf("receive with the relay down: exit %d, stderr %q; want 1, %q", code, errOut, want)
	}

	p := startInteractive(t, ctx, r, "smp", "--state", "alice.json", "receive", "--follow", "bob")
	p.waitErr(t, ctx, "smp: relay "+fw.addr+" unreachable (connection refused); retrying in 1s")
	fw.start(t)
	p.waitErr(t, ctx, "smp: connected to relay "+fw.addr)
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "one")
	p.waitOut(t, ctx, "one")

	fw.stop()
	p.waitErr(t, ctx, "smp: connection lost; reconnecting…")
	p.waitErr(t, ctx, "smp: relay "+fw.addr+" unreachable (connection refused); retrying in")
	fw.start(t)
	p.waitErr(t, ctx, "smp: reconnected")
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "two")
	if got := p.waitOut(t, ctx, "two"); got != "two" {
		t.Fatalf("after reconnecting, receive printed %q", got)
	}

	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 130 {
		t.Fatalf("receive --follow interrupted: exit %d, want 130", code)
	}
}

// TestSenderStatus: the sender's line in smp list moves from "confirmation
// sent" to "secured" once a message was accepted, and to "refused" when the
// owner suspends the queue.
func TestSenderStatus(t *testing.T) {
	r := startRelay(t)
	ctx := guard(t)
	bobStatus := func() string {
		out := r.must(t, ctx, "--state", "bob.json", "list")
		for l := range strings.SplitSeq(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == "alice" && f[1] == "send" {
				return strings.Join(f[2:len(f)-2], " ")
			}
		}
		t.Fatalf("no line for alice in %q", out)
		return ""
	}
	inv := strings.TrimSpace(r.must(t, ctx, "--state", "alice.json", "create", "bob"))
	r.must(t, ctx, "--state", "bob.json", "connect", "alice", inv)
	if s := bobStatus(); s != "confirmation sent" {
		t.Fatalf("after connect: %q", s)
	}
	r.must(t, ctx, "--state", "alice.json", "accept", "bob")
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "hi")
	if s := bobStatus(); s != "secured" {
		t.Fatalf("after a message was accepted: %q, want secured", s)
	}
	r.must(t, ctx, "--state", "alice.json", "suspend", "bob")
	if _, _, code := r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "still there?"); code != 1 {
		t.Fatalf("send to a suspended queue: exit %d", code)
	}
	if s := bobStatus(); s != "refused (suspended or deleted)" {
		t.Fatalf("after ERR AUTH on a secured queue: %q", s)
	}
}

// TestCreateNotTerminal: with standard output not a terminal, as in
// INVITATION=$(smp create bob), standard output carries only the invitation
// and the notice does not point "above".
func TestCreateNotTerminal(t *testing.T) {
	r := startRelay(t)
	ctx := guard(t)
	out, errOut, code := r.smp(t, ctx, "", nil, "create", "bob")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := codec.ParseInvitationURI(strings.TrimSuffix(out, "\n")); err != nil || strings.Count(out, "\n") != 1 {
		t.Fatalf("standard output %q is not the invitation alone: %v", out, err)
	}
	if strings.Contains(errOut, "above") || !strings.Contains(errOut, "printed on standard output") {
		t.Fatalf("notice %q", errOut)
	}
}

// badOutput matches what a user-facing message must not hold: a Go type
// name, a fmt verb error, and a package prefix inside the message (one per
// line is the command's own, "smp" or "smp NAME").
var badOutput = []*regexp.Regexp{
	regexp.MustCompile(`\*?\b[a-z]+\.[A-Z][A-Za-z]*(Error|Err)\b`),
	regexp.MustCompile(`%!`),
	regexp.MustCompile(`.: .*\b(smp|client|codec|e2e): `),
	regexp.MustCompile(`\b(smp|client|codec|e2e): (smp|client|codec|e2e): `),
}

// TestFailureMessages runs typical failures against a relay whose queues
// hold one message, and checks that each message names the problem and is
// free of Go type names and repeated prefixes.
func TestFailureMessages(t *testing.T) {
	srv := smptest.StartServer(t, "--quota", "1")
	r := relayAt(t, srv, srv.Addr)
	ctx := guard(t)
	r.pair(t, ctx)
	down, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downAddr := down.Addr().String()
	down.Close()
	otherFP := strings.Repeat("A", 43) + "="
	// The longest message: maxBody of 8192-byte blocks, less the x25519
	// overhead (SPEC §10), the length prefix and two CRLFs, and the longest
	// signed header: "MSG " + 20 digits + " " + an 88-byte base64 Ed25519
	// signature.
	maxX25519 := codec.MaxBody(codec.DefaultBlockSize) - 48 - 8 - 113

	cases := []struct {
		name  string
		env   []string
		stdin string
		args  []string
		code  int
		want  string
	}{
		{"no fingerprint", []string{"SMP_FINGERPRINT="}, "", []string{"create", "--server", srv.Addr, "x"}, 1,
			"--server " + srv.Addr + " is given without its key fingerprint: add --fingerprint or set SMP_FINGERPRINT (run 'smp-server fingerprint'"},
		{"no fingerprint from env", []string{"SMP_FINGERPRINT="}, "", []string{"create", "x"}, 1,
			"SMP_SERVER " + srv.Addr + " is given without its key fingerprint"},
		{"malformed --fingerprint", nil, "", []string{"create", "--fingerprint", "c2VjcmV0", "x"}, 2,
			`invalid value "c2VjcmV0" for flag -fingerprint: not a fingerprint: a relay key fingerprint is 44 characters of base64`},
		{"malformed SMP_FINGERPRINT", []string{"SMP_FINGERPRINT=abc"}, "", []string{"create", "x"}, 1,
			"SMP_FINGERPRINT: not a fingerprint"},
		{"relay down", nil, "", []string{"create", "--server", downAddr, "x"}, 1,
			"smp create: relay " + downAddr + " unreachable (connection refused)\n"},
		{"other key", nil, "", []string{"create", "--fingerprint", otherFP, "x"}, 1,
			"relay " + srv.Addr + " has another key than its fingerprint says (server key " + srv.Fingerprint + ", pinned " + otherFP + ")"},
		{"bad invitation", nil, "", []string{"connect", "x", "smp://nothing"}, 1, "smp connect: malformed invitation: "},
		{"longest message", nil, strings.Repeat("x", maxX25519), []string{"--state", "bob.json", "send", "alice"}, 0, ""},
		{"too long", nil, strings.Repeat("x", maxX25519+1), []string{"--state", "bob.json", "send", "alice"}, 1,
			"smp send: the message has " + strconv.Itoa(maxX25519+1) + " bytes; alice's queue carries at most " + strconv.Itoa(maxX25519) +
				" (its key is x25519 and the relay's blocks are 8192 bytes)\n"},
		{"quota", nil, "", []string{"--state", "bob.json", "send", "alice", "more"}, 1,
			"smp send: the server refused the message (ERR QUOTA): alice's queue is full (or the relay's storage is) until they receive the messages waiting there; try again later\n"},
		{"not accepted", nil, "", []string{"--state", "alice.json", "send", "bob", "hi"}, 1, "you have no queue to send to bob"},
		{"no contact", nil, "", []string{"--state", "alice.json", "receive", "carol"}, 1, `no contact "carol" in the state file`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := r.smp(t, ctx, c.stdin, c.env, c.args...)
			if code != c.code || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, c.code, c.want)
			}
			for _, re := range badOutput {
				if m := re.FindString(errOut); m != "" {
					t.Fatalf("stderr %q holds %q", errOut, m)
				}
			}
		})
	}
	out, _, _ := r.smp(t, ctx, "", nil, "--state", "alice.json", "receive", "bob")
	if len(out) != maxX25519+1 {
		t.Fatalf("received %d bytes, want the %d-byte message and a newline", len(out), maxX25519)
	}
}
