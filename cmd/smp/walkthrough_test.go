package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"image/png"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	goqr "github.com/piglig/go-qr"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/race"
	"github.com/smprelay/smprelay/internal/smptest"
)

func TestMain(m *testing.M) { smptest.Main(m) }

// guard bounds a test's waits; see smptest.Guard.
func guard(t *testing.T) context.Context { return smptest.Guard(t) }

// relay is a server behind a recording proxy, and a folder for the smp
// processes to run in.
type relay struct {
	srv   *smptest.Server
	proxy *smptest.Proxy
	bin   string
	dir   string
	env   []string
}

func startRelay(t *testing.T) *relay {
	t.Helper()
	srv := smptest.StartServer(t)
	r := &relay{srv: srv, proxy: smptest.StartProxy(t, srv.Addr), dir: t.TempDir(),
		bin: smptest.BuildCommand(t, "github.com/smprelay/smprelay/cmd/smp")}
	r.env = append(os.Environ(), "SMP_SERVER="+r.proxy.Addr, "SMP_FINGERPRINT="+srv.Fingerprint,
		"HOME="+r.dir, "XDG_CONFIG_HOME="+filepath.Join(r.dir, "config"), "SMP_STATE=")
	if race.Enabled {
		r.env = append(r.env, "GORACE=atexit_sleep_ms=0")
	}
	return r
}

func (r *relay) command(ctx context.Context, argv []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, r.bin, argv[1:]...)
	cmd.Dir, cmd.Env = r.dir, r.env
	return cmd
}

// words splits a line of the walkthrough as sh would for the forms it
// uses: words, "double-quoted strings" with $VAR expanded, and an
// assignment NAME=$(command).
func words(t *testing.T, line string, vars map[string]string) (assign string, argv []string) {
	t.Helper()
	if m := regexp.MustCompile(`^([A-Z_]+)=\$\((.*)\)$`).FindStringSubmatch(line); m != nil {
		assign, line = m[1], m[2]
	}
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			quoted, inWord = !quoted, true
		case c == ' ' && !quoted:
			if inWord {
				argv = append(argv, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '$' && quoted:
			j := i + 1
			for j < len(line) && (line[j] >= 'A' && line[j] <= 'Z' || line[j] == '_') {
				j++
			}
			v, ok := vars[line[i+1:j]]
			if !ok {
				t.Fatalf("walkthrough line %q uses $%s before it is set", line, line[i+1:j])
			}
			cur.WriteString(v)
			i = j - 1
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quotes in %q", line)
	}
	if inWord {
		argv = append(argv, cur.String())
	}
	return assign, argv
}

const (
	cake   = "The cake is in the oven."
	marker = "cake is in the oven"
	long   = "It needs another forty minutes, then it rests on the windowsill until four."
)

// step is one line of the walkthrough, what it must do, and the test's own
// checks after it.
type step struct {
	line   string
	exit   int
	stdout string // a substring standard output must hold
	stderr string // a substring standard error must hold
	after  func(t *testing.T, out string)
}

// TestWalkthrough runs the README walk-through line by line with two
// independent smp states (Alice and Bob) against a real relay: the seed's
// whole procedure, a forged confirmation, suspend and delete. It shows that
// the relay never sees the plaintext: every body it stores and relays is
// maxBody bytes whatever the text's length and holds no trace of the text,
// nor do the bytes that crossed the network or the relay's data directory.
func TestWalkthrough(t *testing.T) {
	r := startRelay(t)
	ctx := guard(t)
	maxBody := codec.MaxBody(codec.DefaultBlockSize)
	vars := map[string]string{}
	var relayed [][]byte // bodies as the relay stored and relays them

	steps := []step{
		{line: `INVITATION=$(smp --state alice.json create --png invitation.png bob)`, stderr: "smp accept bob",
			after: func(t *testing.T, out string) {
				checkInvitation(t, r, vars["INVITATION"])
				mallory(t, ctx, r, vars["INVITATION"])
			}},
		{line: `smp --state bob.json connect --message "Hi Alice, it's Bob" alice "$INVITATION"`, stderr: "sent the confirmation"},
		{line: `smp --state alice.json accept bob`, stdout: "Hi Alice, it's Bob",
			stderr: "dropped a message that does not open", after: func(t *testing.T, out string) {
				if strings.Count(out, "\n") != 1 {
					t.Fatalf("accept printed %q, want only Bob's note", out)
				}
			}},
		{line: `smp --state bob.json send alice "The cake is in the oven."`,
			after: func(t *testing.T, _ string) { relayed = append(relayed, peek(t, ctx, r)) }},
		{line: `smp --state alice.json receive bob`, stdout: cake + "\n"},
		{line: `smp --state bob.json send alice "` + long + `"`,
			after: func(t *testing.T, _ string) { relayed = append(relayed, peek(t, ctx, r)) }},
		{line: `smp --state alice.json receive bob`, stdout: long + "\n"},
		{line: `smp --state alice.json list`, stdout: "bob   receive  secured"},
		{line: `smp --state alice.json suspend bob`, stderr: "suspended"},
		{line: `smp --state bob.json send alice "Still there?"`, exit: 1, stderr: "ERR AUTH"},
		{line: `smp --state alice.json delete bob`, stderr: "deleted the queue"},
		{line: `smp --state bob.json delete alice`, stderr: "forgot alice", after: func(t *testing.T, _ string) {
			for _, who := range []string{"alice.json", "bob.json"} {
				fi, err := os.Stat(filepath.Join(r.dir, who))
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o600 {
					t.Fatalf("%s has mode %v, want 0600", who, fi.Mode().Perm())
				}
			}
		}},
	}

	doc := walkthroughDoc(t)
	for i, s := range steps {
		if !strings.Contains(doc, "\n"+s.line+"\n") {
			t.Fatalf("step %d is not a line of the walk-through: %s", i, s.line)
		}
		assign, argv := words(t, s.line, vars)
		if argv[0] != "smp" {
			t.Fatalf("step %d does not run smp: %s", i, s.line)
		}
		cmd := r.command(ctx, argv)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		elapsed := time.Since(start)
		code := 0
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		t.Logf("$ %s   [%v]\n%s%s", s.line, elapsed.Round(time.Millisecond), stdout.String(), stderr.String())
		if code != s.exit || !strings.Contains(stdout.String(), s.stdout) || !strings.Contains(stderr.String(), s.stderr) {
			t.Fatalf("step %d, %s: exit %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)",
				i, s.line, code, s.exit, stdout.String(), s.stdout, stderr.String(), s.stderr)
		}
		if assign != "" {
			vars[assign] = strings.TrimRight(stdout.String(), "\n") // as $(...) does
		}
		if s.after != nil {
			s.after(t, stdout.String())
		}
	}
	if n := len(scriptLines(t, doc, steps[0].line)); n != len(steps) {
		t.Fatalf("the walk-through's script has %d lines, the test runs %d", n, len(steps))
	}

	// What the relay stored and relayed: one size, no plaintext.
	for i, b := range relayed {
		if len(b) != maxBody {
			t.Fatalf("relayed body %d has %d bytes, want maxBody %d for every message", i, len(b), maxBody)
		}
		for _, text := range []string{marker, "windowsill"} {
			if bytes.Contains(b, []byte(text)) {
				t.Fatalf("relayed body %d holds %q", i, text)
			}
		}
	}
	// Everything that crossed the network, both ways, all connections.
	c2s, s2c := r.proxy.Recorded()
	if len(c2s) == 0 || len(s2c) == 0 {
		t.Fatal("the proxy recorded nothing")
	}
	for _, b := range [][]byte{c2s, s2c} {
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("windowsill")) {
			t.Fatal("plaintext crossed the network")
		}
	}
	// The relay's data directory (its key and, with the write-ahead log,
	// its log; the log may compress, so this check adds little to the
	// relayed-body check above, which is the one that matters).
	err := filepath.WalkDir(r.srv.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() { // directories, and the admin socket
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte("windowsill")) {
			t.Errorf("%s holds the plaintext", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// walkthroughDoc returns the walk-through: the README's section once it is
// merged there, else client/README-walkthrough.md.
func walkthroughDoc(t *testing.T) string {
	t.Helper()
	if b, err := os.ReadFile("../../README.md"); err == nil && bytes.Contains(b, []byte("## Talk through your relay")) {
		return string(b)
	}
	b, err := os.ReadFile("../../client/README-walkthrough.md")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// scriptLines returns the lines of the fenced block of doc that holds first.
func scriptLines(t *testing.T, doc, first string) []string {
	t.Helper()
	i := strings.Index(doc, "\n"+first+"\n")
	if i < 0 {
		t.Fatalf("no script starting with %s", first)
	}
	block, _, ok := strings.Cut(doc[i+1:], "```")
	if !ok {
		t.Fatal("the script's block does not end")
	}
	return strings.Split(strings.TrimSpace(block), "\n")
}

// checkInvitation checks the printed URI and that the PNG decodes to it.
func checkInvitation(t *testing.T, r *relay, uri string) {
	t.Helper()
	inv, err := codec.ParseInvitationURI(uri)
	if err != nil {
		t.Fatalf("create printed %q: %v", uri, err)
	}
	if inv.Addr() != r.proxy.Addr || inv.ServerKeyHash != r.srv.Fingerprint || inv.EncryptionKey.Type() != codec.KEMMLKEM768X25519 {
		t.Fatalf("invitation %+v", inv)
	}
	f, err := os.Open(filepath.Join(r.dir, "invitation.png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	got, err := goqr.Decode(img)
	if err != nil {
		t.Fatalf("decoding the PNG QR code: %v", err)
	}
	if got != uri {
		t.Fatalf("the PNG QR code holds %q, want the invitation", got)
	}
}

// mallory sends a forged confirmation to the invitation's SID, sealed to a
// key of her own since she does not have the invitation's EK.
func mallory(t *testing.T, ctx context.Context, r *relay, uri string) {
	t.Helper()
	inv, err := codec.ParseInvitationURI(uri)
	if err != nil {
		t.Fatal(err)
	}
	k, err := codec.GenerateKEMKey(codec.KEMMLKEM768X25519)
	if err != nil {
		t.Fatal(err)
	}
	inv.EncryptionKey = k.Public()
	sq, err := client.NewSenderQueue(&inv)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialServer(ctx, sq.Server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := sq.Confirm(ctx, c, []byte("Hi Alice, it's Bob (really)")); err != nil {
		t.Fatal(err)
	}
}

// peek subscribes to Alice's queue with her key, as the relay would deliver
// to her, and returns the head message's body as the relay stored it,
// without acknowledging it (Alice's next receive gets it again).
func peek(t *testing.T, ctx context.Context, r *relay) []byte {
	t.Helper()
	s, err := store{path: filepath.Join(r.dir, "alice.json")}.load()
	if err != nil {
		t.Fatal(err)
	}
	q := s.Contacts["bob"].Recv
	c, err := client.DialServer(ctx, q.Server, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := q.Subscribe(ctx, c)
	if err != nil || !got {
		t.Fatalf("peek: SUB: %v %v", got, err)
	}
	for e := range c.Events() {
		if e.Kind == client.EventMessage {
			return e.Message.Body
		}
	}
	t.Fatal("peek: no message")
	return nil
}

// TestChat runs two interactive smp chat sessions against each other: the
// set-up of both queues in one flow, then a message each way.
func TestChat(t *testing.T) {
	doc := walkthroughDoc(t)
	for _, l := range []string{"smp --state alice.json chat bob ", `smp --state bob.json chat --join "$INVITATION" alice `} {
		if !strings.Contains(doc, "\n"+l) {
			t.Fatalf("the walk-through does not show %q", l)
		}
	}
	r := startRelay(t)
	ctx := guard(t)
	alice := startInteractive(t, ctx, r, "smp", "--state", "alice.json", "chat", "bob")
	uri := alice.waitOut(t, ctx, "smp://")
	bob := startInteractive(t, ctx, r, "smp", "--state", "bob.json", "chat", "--join", uri, "alice")
	alice.waitErr(t, ctx, "chatting with bob")
	bob.waitErr(t, ctx, "chatting with alice")

	bob.say(t, "hello from bob")
	alice.waitOut(t, ctx, "bob: hello from bob")
	alice.say(t, "hi from alice")
	bob.waitOut(t, ctx, "alice: hi from alice")
	alice.end(t)
	bob.end(t)

	// A later session talks at once over the queues already set up.
	bob2 := startInteractive(t, ctx, r, "smp", "--state", "bob.json", "chat", "alice")
	bob2.waitErr(t, ctx, "chatting with alice")
	bob2.say(t, "still here")
	bob2.end(t)
	cmd := r.command(ctx, []string{"smp", "--state", "alice.json", "receive", "bob"})
	out, err := cmd.Output()
	if err != nil || string(out) != "still here\n" {
		t.Fatalf("receive after chat: %q %v", out, err)
	}
}

// interactive is a running smp process whose lines are read as they come.
type interactive struct {
	cmd      *exec.Cmd
	stdin    *os.File
	out, err chan string
	done     chan struct{}
}

func startInteractive(t *testing.T, ctx context.Context, r *relay, argv ...string) *interactive {
	t.Helper()
	cmd := r.command(ctx, argv)
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = inR
	outR, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	p := &interactive{cmd: cmd, stdin: inW, out: make(chan string, 100), err: make(chan string, 100), done: make(chan struct{})}
	scan := func(rd *bufio.Scanner, ch chan string, name string) {
		for rd.Scan() {
			t.Logf("%s %s: %s", argv[2], name, rd.Text())
			ch <- rd.Text()
		}
		close(ch)
	}
	go scan(bufio.NewScanner(outR), p.out, "stdout")
	go scan(bufio.NewScanner(errR), p.err, "stderr")
	t.Cleanup(func() {
		inW.Close()
		_ = cmd.Process.Kill()
		<-p.done
	})
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p
}

func waitLine(t *testing.T, ctx context.Context, ch chan string, prefix string) string {
	t.Helper()
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("output ended before a line with %q", prefix)
			}
			if strings.Contains(l, prefix) {
				return l
			}
		case <-ctx.Done():
			t.Fatalf("no line with %q", prefix)
		}
	}
}

func (p *interactive) waitOut(t *testing.T, ctx context.Context, s string) string {
	t.Helper()
	return waitLine(t, ctx, p.out, s)
}

func (p *interactive) waitErr(t *testing.T, ctx context.Context, s string) string {
	t.Helper()
	return waitLine(t, ctx, p.err, s)
}

func (p *interactive) say(t *testing.T, line string) {
	t.Helper()
	if _, err := p.stdin.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// end closes standard input and expects a clean exit.
func (p *interactive) end(t *testing.T) {
	t.Helper()
	p.stdin.Close()
	for range p.out {
	}
	for range p.err {
	}
	<-p.done
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("%v exited %d", p.cmd.Args, code)
	}
}
