package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// TestStateV1 loads a state file of version 1 (one recv and one send queue
// per contact, as smp wrote before contacts on several relays), and checks
// that every field survives a change written as version 2.
func TestStateV1(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	inv := codec.Invitation{EncryptionKey: ek.Public(), SenderID: bytes.Repeat([]byte{7}, codec.QueueIDSize), Host: "relay.example", Port: 5223,
		ServerKeyHash: strings.Repeat("A", 43) + "="}
	sq, err := client.NewSenderQueue(&inv)
	if err != nil {
		t.Fatal(err)
	}
	sq.NextSeq = 5
	rk, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	rq := &client.RecipientQueue{Server: client.Server{Addr: "relay.example:5223", Fingerprint: inv.ServerKeyHash},
		RID: bytes.Repeat([]byte{1}, 16), SID: bytes.Repeat([]byte{2}, 16), RecipientKey: rk, EncryptionKey: ek, Secured: true, LastSeq: 3}
	type v1Contact struct { // the version 1 format, spelled out
		Created    time.Time              `json:"created"`
		Recv       *client.RecipientQueue `json:"recv,omitempty"`
		Send       *client.SenderQueue    `json:"send,omitempty"`
		SendStatus string                 `json:"sendStatus,omitempty"`
	}
	old, err := json.MarshalIndent(struct {
		Version  int                   `json:"version"`
		Contacts map[string]*v1Contact `json:"contacts"`
	}{1, map[string]*v1Contact{"bob": {Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Recv: rq, Send: sq, SendStatus: sendSecured}}}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	st := store{path: filepath.Join(t.TempDir(), "state.json")}
	if err := os.WriteFile(st.path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := st.load()
	if err != nil {
		t.Fatalf("a version 1 file does not load: %v", err)
	}
	if ct := s.Contacts["bob"]; ct == nil || ct.Multi != nil || ct.Recv == nil || ct.Send == nil || ct.Send.NextSeq != 5 || ct.Recv.LastSeq != 3 {
		t.Fatalf("version 1 contact read as %+v", ct)
	}
	if err := st.update(func(s *State) error { s.Contacts["carol"] = &Contact{}; return nil }); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(st.path)
	if err != nil {
		t.Fatal(err)
	}
	var now struct {
		Version  int                        `json:"version"`
		Contacts map[string]json.RawMessage `json:"contacts"`
	}
	if err := json.Unmarshal(b, &now); err != nil {
		t.Fatal(err)
	}
	var was struct {
		Contacts map[string]json.RawMessage `json:"contacts"`
	}
	if err := json.Unmarshal(old, &was); err != nil {
		t.Fatal(err)
	}
	if now.Version != stateVersion {
		t.Fatalf("written as version %d", now.Version)
	}
	var a, c bytes.Buffer
	if err := json.Compact(&a, was.Contacts["bob"]); err != nil {
		t.Fatal(err)
	}
	if err := json.Compact(&c, now.Contacts["bob"]); err != nil {
		t.Fatal(err)
	}
	if a.String() != c.String() {
		t.Fatalf("the version 1 contact changed on rewrite:\nwas %s\nnow %s", a.String(), c.String())
	}
}

func TestPickRelays(t *testing.T) {
	fp := strings.Repeat("A", 43) + "="
	a, err := parseRelay("smp://" + strings.Repeat("A", 43) + "@a.example:5223")
	if err != nil || a.Addr != "a.example:5223" || a.Fingerprint != fp {
		t.Fatalf("parseRelay: %+v %v", a, err)
	}
	if relayText(a) != "smp://"+strings.Repeat("A", 43)+"@a.example:5223" {
		t.Fatalf("relayText %q", relayText(a))
	}
	b := client.Server{Addr: "b.example:5223", Fingerprint: fp}
	conf := []client.Server{a, b}
	for _, tc := range []struct {
		v    string
		want int
		err  string
	}{
		{"", 2, ""}, {"all", 2, ""}, {"1", 1, ""}, {"2", 2, ""}, {"3", 0, "only 2"}, {"0", 0, "at least 1"},
		{"b.example:5223", 1, ""}, {"c.example:5223", 0, "not configured"},
		{"smp://" + strings.Repeat("A", 43) + "@c.example:1", 1, ""}, {"smp://nope@c.example", 0, "fingerprint"},
	} {
		got, err := pickRelays(tc.v, conf)
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) || len(got) != tc.want {
			t.Errorf("--relays %q: %d relays, %v; want %d, %q", tc.v, len(got), err, tc.want, tc.err)
		}
	}
	if got, err := pickRelays("", nil); err != nil || got != nil {
		t.Fatalf("no relay list: %v %v", got, err)
	}
	for _, bad := range []string{"a.example:1", "smp://x", "smp://" + fp + "@"} {
		if _, err := parseRelay(bad); err == nil {
			t.Errorf("parseRelay(%q) accepted", bad)
		}
	}
}

// TestMultiRelay runs a contact on two, then three, real relays through the
// smp binary: set up with create --relays 2, connect --reply and accept on
// both sides; chat while the contact spreads to the second relay; send and
// receive while the first relay is stopped; switch from the stopped relay
// to a third; list shows each queue.
func TestMultiRelay(t *testing.T) {
	ctx := guard(t)
	srvs := []*smptest.Server{smptest.StartServer(t), smptest.StartServer(t), smptest.StartServer(t)}
	r := relayAt(t, srvs[0], srvs[0].Addr)
	var relays []string
	for _, s := range srvs {
		relays = append(relays, relayText(client.Server{Addr: s.Addr, Fingerprint: s.Fingerprint}))
	}
	r.env = append(r.env, "SMP_RELAYS="+strings.Join(relays, ","))
	stderr := func(args ...string) string {
		t.Helper()
		_, errOut, code := r.smp(t, ctx, "", nil, args...)
		if code != 0 {
			t.Fatalf("smp %v: exit %d: %s", args, code, errOut)
		}
		return errOut
	}
	// lines returns list's lines for the contact's queues on addr.
	lines := func(state, addr string) []string {
		var out []string
		for l := range strings.SplitSeq(r.must(t, ctx, "--state", state, "list"), "\n") {
			if strings.HasSuffix(l, " "+addr) {
				out = append(out, strings.Join(strings.Fields(l), " "))
			}
		}
		return out
	}
	both := func(state, addr, status string) {
		t.Helper()
		got := lines(state, addr)
		if len(got) != 2 || !strings.Contains(got[0], "receive "+status+" ") || !strings.Contains(got[1], "send "+status+" ") {
			t.Fatalf("%s: list shows %q on %s, want a queue each way, %s", state, got, addr, status)
		}
	}
	talk := func(wait ...string) (alice, bob *interactive) {
		alice = startInteractive(t, ctx, r, "smp", "--state", "alice.json", "chat", "bob")
		bob = startInteractive(t, ctx, r, "smp", "--state", "bob.json", "chat", "alice")
		for _, p := range []*interactive{alice, bob} {
			for _, w := range wait {
				p.waitErr(t, ctx, w)
			}
		}
		return alice, bob
	}

	inv := strings.TrimSpace(r.must(t, ctx, "--state", "alice.json", "create", "--relays", "2", "--kem", "x25519", "bob"))
	r.must(t, ctx, "--state", "bob.json", "connect", "--reply", "alice", inv)
	if errOut := stderr("--state", "alice.json", "accept", "bob"); !strings.Contains(errOut, "confirmed the queue bob offered") {
		t.Fatalf("alice's accept: %q", errOut)
	}
	if errOut := stderr("--state", "bob.json", "accept", "alice"); !strings.Contains(errOut, "on several relays") {
		t.Fatalf("bob's accept: %q", errOut)
	}

	// Chatting, the contact spreads to relay 2 both ways.
	alice, bob := talk("relay " + srvs[1].Addr + ": sending on the peer's new queue")
	if _, errOut, code := r.smp(t, ctx, "", nil, "--state", "bob.json", "send", "alice", "x"); code != 1 || !strings.Contains(errOut, "another smp is running") {
		t.Fatalf("send while chat runs: exit %d, %q", code, errOut)
	}
	bob.say(t, "one")
	alice.waitOut(t, ctx, "bob: one")
	alice.end(t)
	bob.end(t)
	for _, st := range []string{"alice.json", "bob.json"} {
		both(st, srvs[0].Addr, "active")
		both(st, srvs[1].Addr, "active")
	}

	// Relay 1 stops: relay 2 carries the messages.
	srvs[0].Stop()
	if errOut := stderr("--state", "bob.json", "send", "alice", "two"); !strings.Contains(errOut, "relay "+srvs[0].Addr+" is down") {
		t.Fatalf("send with relay 1 down: %q", errOut)
	}
	if got := r.must(t, ctx, "--state", "alice.json", "receive", "bob"); got != "two\n" {
		t.Fatalf("receive with relay 1 down printed %q", got)
	}

	// Switch from the stopped relay to relay 3; the move completes as both
	// sides run.
	if errOut := stderr("--state", "alice.json", "switch", "bob", "--from", srvs[0].Addr, "--to", srvs[2].Addr); !strings.Contains(errOut, "asked bob to move") {
		t.Fatalf("switch: %q", errOut)
	}
	if got := lines("alice.json", srvs[2].Addr); len(got) != 1 || !strings.Contains(got[0], "receive offered") {
		t.Fatalf("after switch, alice's list on relay 3: %q", got)
	}
	alice, bob = talk("relay "+srvs[2].Addr+": sending on the peer's new queue", "relay "+srvs[0].Addr+": stopped sending on the peer's old queue")
	bob.say(t, "three")
	alice.waitOut(t, ctx, "bob: three")
	alice.say(t, "heard you")
	bob.waitOut(t, ctx, "alice: heard you")
	alice.end(t)
	bob.end(t)
	for _, st := range []string{"alice.json", "bob.json"} {
		both(st, srvs[1].Addr, "active")
		both(st, srvs[2].Addr, "active")
		// The old queue waits for relay 1 to be deleted; nothing is sent there.
		if got := lines(st, srvs[0].Addr); len(got) > 1 || (len(got) == 1 && !strings.Contains(got[0], "receive ending")) {
			t.Fatalf("%s: relay 1 after the switch: %q", st, got)
		}
	}
}
