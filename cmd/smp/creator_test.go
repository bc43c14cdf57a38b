package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestCreatorKey runs smp against a relay started with --creator-keys.
// create without a creator key fails naming the cause and --creator-key,
// and leaves no contact; with a key the relay does not list it says the key
// is not one of the relay's; with --creator-key (or SMP_CREATOR_KEY) naming
// the PEM file the queue is created, and Bob, who has no creator key,
// connects, Alice accepts, and a message goes through. connect --reply on
// that relay is refused with its own explanation, since the reply queue is
// signed with no creator key.
func TestCreatorKey(t *testing.T) {
	ctx := guard(t)
	dir := t.TempDir()
	creator, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	keys := filepath.Join(dir, "creator-keys")
	if err := os.WriteFile(keys, []byte(base64.StdEncoding.EncodeToString(creator.PublicSPKI())+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := smptest.StartServer(t, "--creator-keys", keys)
	r := relayAt(t, srv, srv.Addr)
	r.env = append(r.env, "SMP_CREATOR_KEY=")
	writeKey := func(name string, k *client.SigningKey) {
		p, err := k.MarshalPEM()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(r.dir, name), p, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKey("creator.pem", creator)
	stranger, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	writeKey("stranger.pem", stranger)

	_, errOut, code := r.smp(t, ctx, "", nil, "--state", "alice.json", "create", "--kem", "x25519", "bob")
	if code != 1 || !strings.Contains(errOut, "relay "+srv.Addr+" refused to create the queue (ERR AUTH)") ||
		!strings.Contains(errOut, "creator keys") || !strings.Contains(errOut, "give --creator-key FILE (or set SMP_CREATOR_KEY)") {
		t.Fatalf("create without a creator key: exit %d: %s", code, errOut)
	}
	if out := r.must(t, ctx, "--state", "alice.json", "list"); strings.Contains(out, "bob") {
		t.Fatalf("a refused create left a contact: %s", out)
	}
	_, errOut, code = r.smp(t, ctx, "", nil, "--state", "alice.json", "create", "--creator-key", "stranger.pem", "bob")
	if code != 1 || !strings.Contains(errOut, "creator key in --creator-key stranger.pem (ERR AUTH)") ||
		!strings.Contains(errOut, "not one of the relay's creator keys") {
		t.Fatalf("create with a key the relay does not list: exit %d: %s", code, errOut)
	}
	_, errOut, code = r.smp(t, ctx, "", []string{"SMP_CREATOR_KEY=missing.pem"}, "--state", "alice.json", "create", "bob")
	if code != 1 || !strings.Contains(errOut, "SMP_CREATOR_KEY missing.pem") {
		t.Fatalf("SMP_CREATOR_KEY naming no file: exit %d: %s", code, errOut)
	}

	inv := strings.TrimSpace(r.must(t, ctx, "--state", "alice.json", "create", "--kem", "x25519", "--creator-key", "creator.pem", "bob"))
	r.must(t, ctx, "--state", "bob.json", "connect", "alice", inv)
	r.must(t, ctx, "--state", "alice.json", "accept", "bob")
	r.must(t, ctx, "--state", "bob.json", "send", "alice", "hello from a creator-key relay")
	if out := r.must(t, ctx, "--state", "alice.json", "receive", "bob"); !strings.Contains(out, "hello from a creator-key relay") {
		t.Fatalf("receive printed %q", out)
	}

	_, errOut, code = r.smp(t, ctx, "", []string{"SMP_CREATOR_KEY=creator.pem"}, "--state", "alice.json", "create", "--kem", "x25519", "carol")
	if code != 0 {
		t.Fatalf("create with SMP_CREATOR_KEY: exit %d: %s", code, errOut)
	}
	carolInv := strings.TrimSpace(r.must(t, ctx, "--state", "dave.json", "create", "--kem", "x25519", "--creator-key", "creator.pem", "carol"))
	_, errOut, code = r.smp(t, ctx, "", nil, "--state", "carol.json", "connect", "--reply", "dave", carolInv)
	if code != 1 || !strings.Contains(errOut, "refused to create the reply queue (ERR AUTH)") ||
		!strings.Contains(errOut, "connect without --reply") {
		t.Fatalf("connect --reply on a creator-key relay: exit %d: %s", code, errOut)
	}
}
