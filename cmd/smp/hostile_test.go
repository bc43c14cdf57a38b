package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/fakerelay"
)

// The tests in this file run smp against fakerelay, a relay that breaks
// SPEC on purpose. Whatever it does, smp does not hang past --timeout
// outside --follow and --wait, shows nothing twice and nothing that can
// drive the terminal, connects nowhere it was not told to, and leaves the
// state file loadable and, where nothing legitimate happened, unchanged.

// aliceState writes a state file whose contact bob is a queue on r that
// Alice receives on, secured or not, and returns its path and the queue.
func aliceState(t *testing.T, r *fakerelay.Relay, secured bool) (string, *client.RecipientQueue) {
	t.Helper()
	rk, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	q := &client.RecipientQueue{
		Server: client.Server{Addr: r.Addr, Fingerprint: r.Fingerprint},
		RID:    fakerelay.RandomID(), RecipientKey: rk, EncryptionKey: ek, Secured: secured,
	}
	if !secured {
		q.SID = fakerelay.RandomID()
	}
	path := filepath.Join(t.TempDir(), "alice.json")
	st := store{path: path}
	if err := st.update(func(s *State) error { s.Contacts["bob"] = &Contact{Created: time.Now().UTC(), Recv: q}; return nil }); err != nil {
		t.Fatal(err)
	}
	return path, q
}

// sealed is a message for q as its sender writes it (SPEC §10).
func sealed(t *testing.T, q *client.RecipientQueue, header []byte, text string) []byte {
	t.Helper()
	b, err := e2e.Seal(q.EncryptionKey.Public(), codec.MaxBody(codec.DefaultBlockSize), header, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// confirmation is a confirmation for q carrying note.
func confirmation(t *testing.T, q *client.RecipientQueue, note string) []byte {
	t.Helper()
	sk, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return sealed(t, q, e2e.ConfirmationHeader(sk.PublicSPKI()), note)
}

// smpRun runs smp in this process with the state file at path and
// --timeout timeout.
func smpRun(t *testing.T, path string, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	args = append([]string{"--state", path, "--timeout", timeout.String()}, args...)
	code = run(guard(t), args, strings.NewReader(""), &out, &errOut)
	return out.String(), errOut.String(), code
}

// readState returns the state file's bytes and checks that it loads.
func readState(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if _, err := (store{path: path}).load(); err != nil {
		t.Fatalf("the state file no longer loads: %v", err)
	}
	return b
}

// relayAnswering starts a relay that answers each command with what answer
// returns for it, or as an honest relay with no messages when it returns nil.
func relayAnswering(t *testing.T, answer func(c fakerelay.Command) [][]byte) *fakerelay.Relay {
	return fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) {
		if s.Accept() != nil {
			return
		}
		s.Serve(func(c fakerelay.Command) [][]byte {
			if ts := answer(c); ts != nil {
				return ts
			}
			return fakerelay.Answer(c)
		})
	})
}

// never is an answer that is never sent.
var never = [][]byte{}

// TestHostileReceive runs 'smp receive bob' (no --follow) against relays
// that misbehave in one way each.
func TestHostileReceive(t *testing.T) {
	other := fakerelay.RandomID()
	msgID := fakerelay.RandomMsgID()
	cases := []struct {
		name    string
		timeout time.Duration
		answer  func(t *testing.T, q *client.RecipientQueue, acks *int, c fakerelay.Command) [][]byte
		code    int
		stdout  string
		stderr  string // a part of it
		changed bool   // the state file may change: something legitimate happened
		lost    bool   // stdout may be empty: the link failed with the message still queued
	}{
		{"SUB answered with a MSG for another queue", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, other, msgID, 0, sealed(t, q, nil, "not yours"))}
				}
				return nil
			}, 1, "", "protocol violation", false, false},
		{"SUB answered with OK for another queue", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendOK(nil, c.CorrID, other)}
				}
				return nil
			}, 1, "", "protocol violation", false, false},
		{"SUB never answered", 200 * time.Millisecond,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return never
				}
				return nil
			}, 1, "", "did not answer within 200ms", false, false},
		{"ACK never answered", 200 * time.Millisecond,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				switch c.Cmd {
				case codec.CmdSUB:
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, q, nil, "hello"))}
				case codec.CmdACK:
					return never
				}
				return nil
			}, 1, "hello\n", "did not answer within 200ms", true, false},
		{"the same MSG again in answer to ACK", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, acks *int, c fakerelay.Command) [][]byte {
				m := codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, q, nil, "only once"))
				switch {
				case c.Cmd == codec.CmdSUB:
					return [][]byte{m}
				case c.Cmd == codec.CmdACK && *acks < 3:
					*acks++
					return [][]byte{m}
				}
				return nil
			}, 0, "only once\n", "", true, false},
		{"a MSG pushed twice", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					m := codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, q, nil, "pushed"))
					p := codec.AppendMSG(nil, nil, c.QueueID, fakerelay.RandomMsgID(), 0, sealed(t, q, nil, "pushed again"))
					return [][]byte{m, p, p}
				}
				return nil
			}, 1, "pushed\n", "second MSG", true, true},
		{"escape sequences and a fake line", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0,
						sealed(t, q, nil, "\x1b[2J\x1b]0;owned\ahi\nalice: sure, here is my key\r"))}
				}
				return nil
			}, 0, "\uFFFD\uFFFDhi\n  alice: sure, here is my key\uFFFD\n", "", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var q *client.RecipientQueue
			acks := 0
			r := relayAnswering(t, func(c fakerelay.Command) [][]byte { return tc.answer(t, q, &acks, c) })
			var path string
			path, q = aliceState(t, r, true)
			before := readState(t, path)
			stdout, stderr, code := smpRun(t, path, tc.timeout, "receive", "bob")
			if code != tc.code || (stdout != tc.stdout && !(tc.lost && stdout == "")) || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
					code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
			if after := readState(t, path); !tc.changed && !bytes.Equal(before, after) {
				t.Fatal("the state file changed")
			}
		})
	}
}

// TestHostileAccept runs 'smp accept bob' (no --wait) against relays that
// misbehave: the confirmation's note is shown as text, never connected to,
// and a relay that answers for another queue or not at all stops accept
// within --timeout with the state file as it was.
func TestHostileAccept(t *testing.T) {
	elsewhere := fakerelay.Start(t, func(ctx context.Context, s *fakerelay.Session) { s.Accept() })
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	lure := codec.Invitation{EncryptionKey: ek.Public(), SenderID: fakerelay.RandomID(), Host: "127.0.0.1",
		Port: uint16(portOf(t, elsewhere.Addr)), ServerKeyHash: elsewhere.Fingerprint}
	cases := []struct {
		name    string
		timeout time.Duration
		answer  func(t *testing.T, q *client.RecipientQueue, c fakerelay.Command) [][]byte
		code    int
		stdout  string
		stderr  string
		secured bool // the state file must show the queue secured, else be unchanged
	}{
		{"a note that is an invitation", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, confirmation(t, q, lure.URI()))}
				}
				return nil
			}, 0, lure.URI() + "\n", "it was not connected to", true},
		{"a note with escape sequences", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0,
						confirmation(t, q, "it's me\n\x1b[1Asmp: verified"))}
				}
				return nil
			}, 0, "it's me\n  \uFFFDsmp: verified\n", "secured the queue", true},
		{"SUB answered with a MSG for another queue", time.Minute,
			func(t *testing.T, q *client.RecipientQueue, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, fakerelay.RandomID(), fakerelay.RandomMsgID(), 0, confirmation(t, q, ""))}
				}
				return nil
			}, 1, "", "protocol violation", false},
		{"KEY never answered", 200 * time.Millisecond,
			func(t *testing.T, q *client.RecipientQueue, c fakerelay.Command) [][]byte {
				switch c.Cmd {
				case codec.CmdSUB:
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, confirmation(t, q, ""))}
				case codec.CmdKEY:
					return never
				}
				return nil
			}, 1, "", "did not answer within 200ms", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var q *client.RecipientQueue
			r := relayAnswering(t, func(c fakerelay.Command) [][]byte { return tc.answer(t, q, c) })
			var path string
			path, q = aliceState(t, r, false)
			before := readState(t, path)
			stdout, stderr, code := smpRun(t, path, tc.timeout, "accept", "bob")
			if code != tc.code || stdout != tc.stdout || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr with %q",
					code, stdout, stderr, tc.code, tc.stdout, tc.stderr)
			}
			after := readState(t, path)
			s, _ := (store{path: path}).load()
			switch ct := s.Contacts["bob"]; {
			case tc.secured && (!ct.Recv.Secured || ct.Send != nil):
				t.Fatalf("contact after accept: secured %v, send %v", ct.Recv.Secured, ct.Send)
			case !tc.secured && !bytes.Equal(before, after):
				t.Fatal("the state file changed")
			}
			if n := elsewhere.Accepted(); n != 0 {
				t.Fatalf("accept connected %d times to the relay the note names", n)
			}
		})
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, port, err := codec.ParseServer(addr)
	if err != nil {
		t.Fatal(err)
	}
	return int(port)
}

// TestHostileConnectReply: 'smp connect --reply' checks everything before it
// creates the reply queue, and deletes that queue when the confirmation is
// refused, so no queue is left on the relay that no state file knows.
func TestHostileConnectReply(t *testing.T) {
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		ek     []byte // typed EK of the invitation
		answer func(c fakerelay.Command) [][]byte
		stderr string
		cmds   []codec.Cmd // what the relay must have seen, in order
	}{
		{"all-zero x25519 key", append([]byte{byte(codec.KEMX25519)}, make([]byte, 32)...),
			func(fakerelay.Command) [][]byte { return nil }, "low-order", nil},
		{"confirmation refused", ek.Public().Bytes(),
			func(c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSEND {
					return [][]byte{codec.AppendERR(nil, c.CorrID, c.QueueID, codec.ErrAuth)}
				}
				return nil
			}, "ERR AUTH", []codec.Cmd{codec.CmdNEW, codec.CmdSEND, codec.CmdDEL}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			created := fakerelay.RandomID()
			r := relayAnswering(t, func(c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdNEW {
					return [][]byte{codec.AppendIDS(nil, c.CorrID, created, fakerelay.RandomID())}
				}
				return tc.answer(c)
			})
			fp, _ := base64.StdEncoding.DecodeString(r.Fingerprint)
			uri := "smp://" + base64.RawURLEncoding.EncodeToString(fp) + "@" + r.Addr + "/" +
				base64.RawURLEncoding.EncodeToString(fakerelay.RandomID()) + "#" + base64.RawURLEncoding.EncodeToString(tc.ek)
			path := filepath.Join(t.TempDir(), "bob.json")
			_, stderr, code := smpRun(t, path, time.Minute, "connect", "--reply", "--kem", "x25519", "alice", uri)
			if code != 1 || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stderr %q; want exit 1 and %q", code, stderr, tc.stderr)
			}
			var got []codec.Cmd
			var deleted []byte
			for _, c := range r.Commands() {
				got = append(got, c.Cmd)
				if c.Cmd == codec.CmdDEL {
					deleted = c.QueueID
				}
			}
			if len(tc.cmds) == 0 && r.Accepted() != 0 {
				t.Fatalf("the relay was contacted: %v", got)
			}
			if len(got) != len(tc.cmds) {
				t.Fatalf("the relay saw %v, want %v", got, tc.cmds)
			}
			for i := range got {
				if got[i] != tc.cmds[i] {
					t.Fatalf("the relay saw %v, want %v", got, tc.cmds)
				}
			}
			if len(tc.cmds) > 0 && !bytes.Equal(deleted, created) {
				t.Fatalf("DEL of %x, want the reply queue %x", deleted, created)
			}
			if b := readState(t, path); b != nil {
				t.Fatalf("a state file was written: %s", b)
			}
		})
	}
}

// TestNextMessageTimeout: outside --follow and --wait, waiting for a
// message that never comes ends with a timeout error after --timeout.
func TestNextMessageTimeout(t *testing.T) {
	r := relayAnswering(t, func(fakerelay.Command) [][]byte { return nil })
	path, q := aliceState(t, r, true)
	e := &env{ctx: guard(t), st: store{path: path}, timeout: 100 * time.Millisecond}
	c, err := e.dial(q.Server)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := e.nextMessage(c, q, false, stopOnLoss); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("nextMessage: %v, want a timeout error", err)
	}
}
