package main_test

// The admin socket and "smp-server admin", and "smp-server creator-key
// new", against the real binary (issue 16).

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// runCmd runs the smp-server binary bin with args, as the credential cred
// when it is not nil, and returns its output and exit status.
func runCmd(t *testing.T, bin string, cred *syscall.Credential, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running %s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), code
}

// admin runs "smp-server admin --data dir args..." and wants exit status want.
func admin(t *testing.T, dir string, want int, args ...string) string {
	t.Helper()
	out, errOut, code := runCmd(t, smptest.BuildServer(t), nil, append([]string{"admin", "--data", dir}, args...)...)
	if code != want {
		t.Fatalf("admin %v: exit %d, want %d\nstdout: %s\nstderr: %s", args, code, want, out, errOut)
	}
	return out
}

// TestAdminBlock: admin block (by SID) makes both sides get ERR AUTH and
// keeps the message; the block survives a restart; admin unblock (by RID)
// restores both sides with the message; admin delete removes the queue; the
// log names the actions and never a queue ID.
func TestAdminBlock(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	args := []string{"--key-type", "x25519", "--store", "wal"}
	s := smptest.StartServerIn(t, dir, args...)
	rc, sc := dial(t, ctx, s), dial(t, ctx, s)
	rk, sk, rid, sid := securedQueue(t, ctx, rc, false)
	send(t, sc, smptest.Cmd(sk, "s1", sid, codec.CmdSEND, nil, []byte("hello")))
	expect(t, ctx, sc, ok("s1", sid))
	expectMSG(t, ctx, rc, "", rid, []byte("hello"))

	if st := admin(t, dir, 0, "status"); !strings.Contains(st, "queues: 1\n") || !strings.Contains(st, "messages: 1\n") ||
		!strings.Contains(st, "connections: 2\n") || !strings.Contains(st, "store-state: ok\n") {
		t.Fatalf("status:\n%s", st)
	}
	if out := admin(t, dir, 0, "block", b64(sid)); out != "blocked\n" {
		t.Fatalf("block: %q", out)
	}
	blockedBothSides := func(rc, sc *smptest.Conn) {
		t.Helper()
		send(t, sc, smptest.Cmd(sk, "s2", sid, codec.CmdSEND, nil, []byte("refused")))
		expect(t, ctx, sc, errResp("s2", sid, codec.ErrAuth))
		send(t, rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil), smptest.Cmd(rk, "ack", rid, codec.CmdACK, nil, nil))
		checkSeq(t, "recipient of a blocked queue", collect(t, ctx, rc, 2),
			errResp("sub", rid, codec.ErrAuth), errResp("ack", rid, codec.ErrAuth))
	}
	blockedBothSides(rc, sc)
	waitOutput(t, ctx, s, `msg=admin action=block result=ok was-blocked=false dropped=0`, 1)

	// The block is kept across a restart (wal record kind 9).
	if code := s.Stop(); code != 0 {
		t.Fatalf("stop: exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "admin.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("admin.sock after the stop: %v, want it removed", err)
	}
	s = smptest.StartServerIn(t, dir, args...)
	rc, sc = dial(t, ctx, s), dial(t, ctx, s)
	blockedBothSides(rc, sc)

	if out := admin(t, dir, 0, "unblock", b64(rid)); out != "unblocked\n" {
		t.Fatalf("unblock: %q", out)
	}
	send(t, rc, smptest.Cmd(rk, "sub", rid, codec.CmdSUB, nil, nil))
	expectMSG(t, ctx, rc, "sub", rid, []byte("hello"))
	send(t, sc, smptest.Cmd(sk, "s3", sid, codec.CmdSEND, nil, []byte("again")))
	expect(t, ctx, sc, ok("s3", sid))

	if out := admin(t, dir, 0, "delete", b64(rid)); out != "deleted, with 2 messages\n" {
		t.Fatalf("delete: %q", out)
	}
	send(t, rc, smptest.Cmd(rk, "sub2", rid, codec.CmdSUB, nil, nil))
	expect(t, ctx, rc, errResp("sub2", rid, codec.ErrAuth))
	admin(t, dir, 1, "block", b64(rid))      // no such queue
	admin(t, dir, 1, "unblock", "not-an-id") // not base64
	admin(t, dir, 2, "block")                // usage
	admin(t, dir, 2, "frobnicate")           // unknown command
	admin(t, dir, 2)                         // no command
	if out := admin(t, dir, 0, "compact"); !strings.HasPrefix(out, "compacted in ") {
		t.Fatalf("compact: %q", out)
	}
	if out := admin(t, dir, 0, "stats"); !strings.Contains(out, "\nsmp_queues 0\n") {
		t.Fatalf("stats has no smp_queues 0:\n%s", out)
	}
	waitOutput(t, ctx, s, `msg=admin action=delete result=ok messages=2`, 1)
	waitOutput(t, ctx, s, `msg=admin action=block result=error err="engine: no such queue"`, 1)
	for _, id := range [][]byte{rid, sid} {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
			if strings.Contains(s.Stderr(), enc.EncodeToString(id)) {
				t.Fatalf("the log names a queue ID (SPEC §8):\n%s", s.Stderr())
			}
		}
	}
}

// TestAdminNewQueues: admin new-queues off closes creation at once, until
// admin new-queues on, or a reload, which restores the configuration's.
func TestAdminNewQueues(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	writeConfig(t, dir, "key-type = \"x25519\"\nstore = \"memory\"\n")
	s := smptest.StartServerIn(t, dir)
	c := dial(t, ctx, s)
	rk := newSigner(t, codec.SigEd25519)
	admin(t, dir, 0, "new-queues", "off")
	if st := admin(t, dir, 0, "status"); !strings.Contains(st, "new-queues: off (set by admin") {
		t.Fatalf("status:\n%s", st)
	}
	send(t, c, smptest.Cmd(rk, "n1", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
	expect(t, ctx, c, errResp("n1", nil, codec.ErrAuth))
	admin(t, dir, 0, "new-queues", "on")
	newQueue(t, ctx, c, rk, true)
	admin(t, dir, 0, "new-queues", "off")
	hup(t, s)
	waitOutput(t, ctx, s, `msg="reloaded configuration"`, 1)
	newQueue(t, ctx, c, rk, true)
	if st := admin(t, dir, 0, "status"); !strings.Contains(st, "new-queues: on\n") {
		t.Fatalf("status after the reload:\n%s", st)
	}
	admin(t, dir, 2, "new-queues", "maybe")
}

// TestAdminRefused: a caller without the socket's permission is refused
// and nothing is logged. As root, whom file permissions do not stop, the
// client runs as nobody (uid 65534) against a socket in a data directory
// made world-searchable, so that only the socket's 0600 refuses it; as
// another user, the socket is made 0000.
func TestAdminRefused(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	s := smptest.StartServerIn(t, dir, "--key-type", "x25519", "--store", "memory")
	sock := filepath.Join(dir, "admin.sock")
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin.sock: mode %v, want a socket 0600", fi.Mode())
	}
	bin := smptest.BuildServer(t)
	var cred *syscall.Credential
	if os.Geteuid() == 0 {
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		// nobody must be able to run the binary and reach the socket's
		// directory: only the socket's own mode may refuse it.
		binDir := t.TempDir()
		copyFile(t, bin, filepath.Join(binDir, "smp-server"), 0o755)
		bin = filepath.Join(binDir, "smp-server")
		// t.TempDir's directories sit in a per-test parent made 0700.
		for _, d := range []string{filepath.Dir(binDir), binDir, dir} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	} else if err := os.Chmod(sock, 0); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := runCmd(t, bin, cred, "admin", "--data", dir, "status")
	if code != 1 || !strings.Contains(errOut, "cannot reach the relay") || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("a caller without permission: exit %d, stderr %q; want 1 and permission denied", code, errOut)
	}
	ping(t, ctx, dial(t, ctx, s), "p")
	if strings.Contains(s.Stderr(), "msg=admin") {
		t.Fatalf("a refused caller's command was carried out:\n%s", s.Stderr())
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCreatorKeyNew: "creator-key new" writes a private key (PEM, 0600) and
// prints a line that --creator-keys accepts; a NEW signed with the private
// key gets IDS, and an unsigned NEW ERR AUTH. It never overwrites a file.
func TestCreatorKeyNew(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	dir := t.TempDir()
	bin := smptest.BuildServer(t)
	var lines []string
	var signers []*codec.Signer
	for _, typ := range []string{"ed25519", "rsa"} {
		out := filepath.Join(dir, typ+".pem")
		stdout, stderr, code := runCmd(t, bin, nil, "creator-key", "new", "--type", typ, "--out", out)
		if code != 0 {
			t.Fatalf("creator-key new --type %s: exit %d: %s", typ, code, stderr)
		}
		fi, err := os.Stat(out)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v, mode %v; want 0600", out, err, fi.Mode())
		}
		lines = append(lines, strings.TrimSpace(stdout))
		signers = append(signers, loadSigner(t, out))
		if _, _, code := runCmd(t, bin, nil, "creator-key", "new", "--out", out); code != 1 {
			t.Fatalf("creator-key new over an existing file: exit %d, want 1", code)
		}
	}
	if _, _, code := runCmd(t, bin, nil, "creator-key", "new"); code != 2 {
		t.Fatalf("creator-key new without --out: exit %d, want 2", code)
	}
	keys := filepath.Join(dir, "creators")
	if err := os.WriteFile(keys, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := smptest.StartServerIn(t, filepath.Join(dir, "data"), "--key-type", "x25519", "--store", "memory", "--creator-keys", keys)
	waitOutput(t, ctx, s, `keys=2`, 1)
	c := dial(t, ctx, s)
	rk := newSigner(t, codec.SigEd25519)
	for i, by := range signers {
		send(t, c, smptest.Cmd(by, "new", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
		if r := next(t, ctx, c); r.Cmd != codec.CmdIDS {
			t.Fatalf("NEW signed by creator key %d: %v, want IDS", i, r)
		}
	}
	send(t, c, smptest.Cmd(nil, "unsigned", nil, codec.CmdNEW, rk.PublicSPKI(), nil))
	expect(t, ctx, c, errResp("unsigned", nil, codec.ErrAuth))

	// admin creator-keys: removing the Ed25519 key refuses its next NEW at
	// once and leaves the file without it; adding it back admits it again.
	newBy := func(corr string, by *codec.Signer) smptest.Response {
		t.Helper()
		send(t, c, smptest.Cmd(by, corr, nil, codec.CmdNEW, rk.PublicSPKI(), nil))
		return next(t, ctx, c)
	}
	data := filepath.Join(dir, "data")
	if out := admin(t, data, 0, "creator-keys", "remove", lines[0]); !strings.Contains(out, "removed; 1 creator keys in force") {
		t.Fatalf("creator-keys remove: %q", out)
	}
	if r := newBy("after-remove", signers[0]); r.Cmd != codec.CmdERR || r.Err != codec.ErrAuth {
		t.Fatalf("NEW by a removed creator key: %v, want ERR AUTH", r)
	}
	if b, _ := os.ReadFile(keys); strings.Contains(string(b), lines[0]) || !strings.Contains(string(b), lines[1]) {
		t.Fatalf("the keys file after remove:\n%s", b)
	}
	if out := admin(t, data, 0, "creator-keys", "remove", lines[0]); !strings.Contains(out, "not listed") {
		t.Fatalf("creator-keys remove again: %q", out)
	}
	if out := admin(t, data, 0, "creator-keys", "add", lines[0]); !strings.Contains(out, "added; 2 creator keys in force") {
		t.Fatalf("creator-keys add: %q", out)
	}
	if r := newBy("after-add", signers[0]); r.Cmd != codec.CmdIDS {
		t.Fatalf("NEW by a creator key added back: %v, want IDS", r)
	}
	admin(t, data, 1, "creator-keys", "add", "not-base64")
}

// loadSigner reads a PKCS #8 PEM private key as creator-key new writes it.
func loadSigner(t *testing.T, path string) *codec.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		t.Fatalf("%s: not a PRIVATE KEY PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	s, err := codec.NewSigner(k.(interface {
		Public() crypto.PublicKey
		Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error)
	}))
	if err != nil {
		t.Fatal(err)
	}
	return s
}
