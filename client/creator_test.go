package client

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// opensslKey is a test key written by 'openssl genpkey -algorithm ed25519';
// opensslPub is what 'openssl pkey -pubout -outform DER | base64 -w0'
// prints for it, the line an operator puts in the relay's creator-keys file.
const (
	opensslKey = "-----BEGIN PRIVATE KEY-----\n" +
		"MC4CAQAwBQYDK2VwBCIEIJXIfxNuCQlUbDTUjcmGKHacTEbXgYzFkx+Os9y4qflY\n" +
		"-----END PRIVATE KEY-----\n"
	opensslPub = "MCowBQYDK2VwAyEAfSTyYnBUqOvlo0LKb0WH5l+3OHBywlmTjgTagJC9IsQ="
)

// TestParseSigningKeyPEM: the key openssl writes loads, with the public key
// openssl derives; MarshalPEM round-trips; other PEM blocks are refused with
// a reason.
func TestParseSigningKeyPEM(t *testing.T) {
	k, err := ParseSigningKeyPEM([]byte("a comment line\n" + opensslKey))
	if err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(k.PublicSPKI()); got != opensslPub {
		t.Fatalf("public key %s, openssl says %s", got, opensslPub)
	}
	p, err := k.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	if string(p) != opensslKey {
		t.Fatalf("MarshalPEM wrote\n%s, want what openssl wrote:\n%s", p, opensslKey)
	}
	for _, c := range []struct{ in, want string }{
		{"", "no PEM block"},
		{"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", "encrypted"},
		{"-----BEGIN PUBLIC KEY-----\n" + opensslPub + "\n-----END PUBLIC KEY-----\n", `"PUBLIC KEY"`},
		{"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "signature key"},
	} {
		if _, err := ParseSigningKeyPEM([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("ParseSigningKeyPEM(%q): %v, want an error saying %q", c.in, err, c.want)
		}
	}
}

// TestCreatorKey runs against a relay started with --creator-keys: a NEW
// signed by the recipient key, or by a key not in the file, is refused with
// an error that names Options.CreatorKey; with the creator key the queue is
// created, secured by a sender whose Conn has no creator key (only NEW
// needs one), and a message goes through. A relay without creator keys
// refuses a NEW signed by a creator key (SPEC §5).
func TestCreatorKey(t *testing.T) {
	ctx := guard(t)
	creator, err := ParseSigningKeyPEM([]byte(opensslKey))
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(t.TempDir(), "creator-keys")
	if err := os.WriteFile(keys, []byte("# the test's creator\n"+opensslPub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := smptest.StartServer(t, "--creator-keys", keys)

	for _, c := range []struct {
		name string
		key  *codec.Signer
		want string
	}{
		{"no creator key", nil, "set Options.CreatorKey"},
		{"another key", stranger.Signer(), "Options.CreatorKey is not one of its creator keys"},
	} {
		opts := fastOptions(srv.Fingerprint)
		opts.CreatorKey = c.key
		conn := dial(t, srv.Addr, opts)
		_, err := CreateQueue(ctx, conn, codec.KEMX25519)
		if !errors.Is(err, ErrCreateRefused) || !errors.Is(err, codec.ErrAuth) || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%s: CreateQueue: %v, want ErrCreateRefused and ERR AUTH saying %q", c.name, err, c.want)
		}
	}

	opts := fastOptions(srv.Fingerprint)
	opts.CreatorKey = creator.Signer()
	alice := dial(t, srv.Addr, opts)
	q, err := CreateQueue(ctx, alice, codec.KEMX25519)
	if err != nil {
		t.Fatalf("CreateQueue with the creator key: %v", err)
	}
	inv, err := q.Invitation()
	if err != nil {
		t.Fatal(err)
	}
	bobQ, err := NewSenderQueue(&inv)
	if err != nil {
		t.Fatal(err)
	}
	bob := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	if err := bobQ.Confirm(ctx, bob, []byte("Bob here")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Accept(ctx, alice, next(t, alice, EventMessage).Message); err != nil {
		t.Fatal(err)
	}
	if err := bobQ.Send(ctx, bob, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if r := q.Receive(next(t, alice, EventMessage).Message); r.Drop != DropNone || string(r.Body) != "hello" {
		t.Fatalf("received %+v, want \"hello\"", r)
	}
	if _, err := q.Ack(ctx, alice); err != nil {
		t.Fatal(err)
	}

	open := smptest.StartServer(t)
	opts = fastOptions(open.Fingerprint)
	opts.CreatorKey = creator.Signer()
	_, err = CreateQueue(ctx, dial(t, open.Addr, opts), codec.KEMX25519)
	if !errors.Is(err, ErrCreateRefused) || !strings.Contains(err.Error(), "leave Options.CreatorKey unset") {
		t.Fatalf("a creator key on a relay without creator keys: %v, want ErrCreateRefused", err)
	}
}
