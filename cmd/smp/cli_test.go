package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
)

// TestTerminalQR reads the half-block drawing back into modules and compares
// them with the encoder's.
func TestTerminalQR(t *testing.T) {
	text := "smp://" + strings.Repeat("x", 300)
	q, err := encodeQR(text)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := drawQR(&buf, q); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	n := q.Size() + 2*qrBorder
	if qrColumns(q) != n {
		t.Fatalf("qrColumns %d, want %d", qrColumns(q), n)
	}
	if len(rows) != (n+1)/2 {
		t.Fatalf("%d rows for %d modules", len(rows), n)
	}
	for r, row := range rows {
		cells := []rune(row)
		if len(cells) != n {
			t.Fatalf("row %d has %d cells, want %d", r, len(cells), n)
		}
		for x, c := range cells {
			top := map[rune]bool{'█': false, '▀': false, '▄': true, ' ': true}[c]
			bottom := map[rune]bool{'█': false, '▀': true, '▄': false, ' ': true}[c]
			mx, my := x-qrBorder, 2*r-qrBorder
			in := func(y int) bool { return mx >= 0 && y >= 0 && mx < q.Size() && y < q.Size() }
			want := in(my) && q.Module(mx, my)
			if top != want {
				t.Fatalf("module (%d,%d): drawn dark=%v, want %v", mx, my, top, want)
			}
			if my+1 < q.Size()+qrBorder {
				if wantB := in(my+1) && q.Module(mx, my+1); bottom != wantB {
					t.Fatalf("module (%d,%d): drawn dark=%v, want %v", mx, my+1, bottom, wantB)
				}
			}
		}
	}
}

func TestParseInterspersed(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	follow := fs.Bool("follow", false, "")
	msg := fs.String("message", "", "")
	pos, err := parseInterspersed(fs, []string{"bob", "--follow", "a", "--message", "hi", "--", "--b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	if !*follow || *msg != "hi" || !reflect.DeepEqual(pos, []string{"bob", "a", "--b", "c"}) {
		t.Fatalf("follow %v message %q positional %q", *follow, *msg, pos)
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "The commands are:") {
		t.Fatalf("--help: %d %q", code, out.String())
	}
	for _, c := range commands {
		out.Reset()
		if code := run(context.Background(), []string{"help", c.name}, nil, &out, &errOut); code != 0 ||
			!strings.HasPrefix(out.String(), "usage: smp "+c.name) || !strings.Contains(usage, "\t"+c.name+" ") || !strings.Contains(usage, c.short) {
			t.Fatalf("help %s: %d %q", c.name, code, out.String())
		}
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"send"}, nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: smp send") {
		t.Fatalf("send without arguments: %d %q", code, errOut.String())
	}
	if code := run(context.Background(), []string{"frobnicate"}, nil, &out, &errOut); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
}

// TestStateFile: the state is created 0600 in a 0700 folder, refuses
// unknown versions, and reports missing contacts with a hint.
func TestStateFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cfg", "smp")
	st := store{path: filepath.Join(dir, "state.json")}
	if err := st.update(func(s *State) error { s.Contacts["x"] = &Contact{}; return nil }); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(st.path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi.Mode(), err)
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Fatalf("state folder mode %v", di.Mode().Perm())
	}
	s, err := st.load()
	if err != nil || s.Contacts["x"] == nil {
		t.Fatalf("load: %v", err)
	}
	if _, err := s.contact("y"); err == nil || !strings.Contains(err.Error(), "smp list") {
		t.Fatalf("missing contact: %v", err)
	}
	if err := os.WriteFile(st.path, []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.load(); err == nil {
		t.Fatal("a state file of another version loaded")
	}
	for _, bad := range []string{"", "-x", "a b", strings.Repeat("a", 65), "ä"} {
		if checkName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
}

func TestDefaultStatePath(t *testing.T) {
	t.Setenv("SMP_STATE", "")
	t.Setenv("XDG_CONFIG_HOME", "/cfg")
	t.Setenv("HOME", "/home/x")
	p, err := defaultStatePath()
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.UserConfigDir()
	if p != filepath.Join(want, "smp", "state.json") {
		t.Fatalf("default state path %q", p)
	}
	t.Setenv("SMP_STATE", "/tmp/s.json")
	if p, _ := defaultStatePath(); p != "/tmp/s.json" {
		t.Fatalf("SMP_STATE ignored: %q", p)
	}
}

// TestShowInvitation: the QR code comes before the invitation and only when
// it fits the width; otherwise a hint names --png.
func TestShowInvitation(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	inv := codec.Invitation{EncryptionKey: ek.Public(), SenderID: make([]byte, codec.QueueIDSize), Host: "127.0.0.1", Port: 5223,
		ServerKeyHash: strings.Repeat("A", 43) + "="}
	q, err := encodeQR(inv.URI())
	if err != nil {
		t.Fatal(err)
	}
	need := qrColumns(q)
	yes, no, empty := true, false, ""
	for _, c := range []struct {
		columns string
		drawn   bool
	}{
		{strconv.Itoa(need), true},
		{strconv.Itoa(need - 1), false},
		{"", true}, // width unknown: drawn, as --qr asks
	} {
		t.Setenv("COLUMNS", c.columns)
		var out, errOut bytes.Buffer
		e := &env{stdout: &out, stderr: &errOut}
		o := &createOpts{qr: &yes, qrSet: func() bool { return true }, png: &empty, textForm: &no}
		if err := showInvitation(e, &inv, o); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if lines[len(lines)-1] != inv.URI() {
			t.Fatalf("COLUMNS=%q: the last line is not the invitation", c.columns)
		}
		drawn := len(lines) == 1+(need+1)/2
		hint := strings.Contains(errOut.String(), fmt.Sprintf("needs %d columns and the terminal has %s", need, c.columns)) &&
			strings.Contains(errOut.String(), "--png FILE")
		if drawn != c.drawn || hint == c.drawn || (!c.drawn && len(lines) != 1) {
			t.Fatalf("COLUMNS=%q (code %d wide): %d lines, stderr %q", c.columns, need, len(lines), errOut.String())
		}
	}
}

// TestStateCompat: a contact stored before sendStatus existed loads and
// lists as "confirmation sent"; the field is written only once it is set.
func TestStateCompat(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	inv := codec.Invitation{EncryptionKey: ek.Public(), SenderID: make([]byte, codec.QueueIDSize), Host: "relay.example", Port: 5223,
		ServerKeyHash: strings.Repeat("A", 43) + "="}
	sq, err := client.NewSenderQueue(&inv)
	if err != nil {
		t.Fatal(err)
	}
	st := store{path: filepath.Join(t.TempDir(), "state.json")}
	if err := st.update(func(s *State) error { s.Contacts["alice"] = &Contact{Send: sq}; return nil }); err != nil {
		t.Fatal(err)
	}
	list := func() string {
		var out bytes.Buffer
		if err := runList(&env{st: st, stdout: &out}, nil); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	if b, _ := os.ReadFile(st.path); bytes.Contains(b, []byte("sendStatus")) {
		t.Fatal("an unset sendStatus is written: the file differs from the old format")
	}
	if !strings.Contains(list(), "alice  send   confirmation sent") {
		t.Fatalf("old-format contact lists as %q", list())
	}
	if err := st.update(func(s *State) error { s.Contacts["alice"].SendStatus = sendSecured; return nil }); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(list(), "alice  send   secured") {
		t.Fatalf("after a message was accepted: %q", list())
	}
}

func TestParseFingerprint(t *testing.T) {
	std := "sIwSSGRI6rLfFCIQW/yvOPjGwlI3PeGB92iveo2FDD8="
	for _, c := range []struct{ in, want string }{
		{std, std},
		{"sIwSSGRI6rLfFCIQW_yvOPjGwlI3PeGB92iveo2FDD8", std}, // as in an invitation URI
		{"", ""},
		{"xyz", ""},
		{"c2VjcmV0", ""},                    // base64, but not 32 bytes
		{std[:43] + "9", ""},                // no padding
		{std + " ", ""},                     // trailing space
		{strings.Repeat("A", 44) + "=", ""}, // 33 bytes' worth
	} {
		got, err := parseFingerprint(c.in)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("parseFingerprint(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if err != nil && !strings.Contains(err.Error(), "smp-server fingerprint") {
			t.Errorf("parseFingerprint(%q): %v does not say where to get one", c.in, err)
		}
	}
}

func TestClean(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"client: handshake with h:1: client: server key fingerprint mismatch: x", "handshake with h:1: server key fingerprint mismatch: x"},
		{"client: SEND: smp: ERR INTERNAL", "SEND: ERR INTERNAL"},
		{"codec: malformed invitation: encryption key: codec: bad key", "malformed invitation: encryption key: bad key"},
		{"client: client: connection lost", "connection lost"},
		{`no contact "client" in the state file`, `no contact "client" in the state file`},
		{"smp://x@h:1/y", "smp://x@h:1/y"},
	} {
		if got := clean(c.in); got != c.want {
			t.Errorf("clean(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestDefaultMaxMessage pins the longest message with the defaults (an
// mlkem768x25519 queue key, 8192-byte blocks, an Ed25519 sender key):
// maxBody 7168 less the 1136-byte seal overhead, the 4-byte length, the two
// CRLFs and the longest signed header, "MSG " + 20 digits + " " + 88 base64
// (SPEC §10); and with an x25519 key, whose overhead is 48. The help text
// quotes both.
func TestDefaultMaxMessage(t *testing.T) {
	for kt, want := range map[codec.KEMType]int{codec.KEMMLKEM768X25519: 5911, codec.KEMX25519: 6999} {
		ek, err := codec.GenerateKEMKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		n, err := e2e.MaxBody(ek.Public(), codec.MaxBody(codec.DefaultBlockSize), ed25519.SignatureSize)
		if err != nil || n != want {
			t.Fatalf("%v: longest message %d (%v), want %d", kt, n, err, want)
		}
		if !strings.Contains(lookup("send").long, strconv.Itoa(want)) {
			t.Fatalf("smp help send does not say %d", want)
		}
	}
}
