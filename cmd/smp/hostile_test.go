package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// bob is the sender of the queue q that Alice receives on: sk is his
// sender key SK, which his confirmation carries and Alice secures q with
// (SPEC §10).
type bob struct {
	q  *client.RecipientQueue
	sk *client.SigningKey

	mu   sync.Mutex
	msgs map[uint64]sealedMsg // by seq: what sealed gave
}

type sealedMsg struct {
	text string
	body []byte
}

// aliceState writes a state file whose contact bob is a queue on r that
// Alice receives on, secured with bob's key or not secured yet, and returns
// its path and bob.
func aliceState(t *testing.T, r *fakerelay.Relay, secured bool) (string, *bob) {
	t.Helper()
	rk, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := client.GenerateSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	ek, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	q := &client.RecipientQueue{
		Server: client.Server{Addr: r.Addr, Fingerprint: r.Fingerprint},
		RID:    fakerelay.RandomID(), SID: fakerelay.RandomID(), RecipientKey: rk, EncryptionKey: ek, Secured: secured,
	}
	if secured {
		q.SenderKey = sk.PublicSPKI() // what accept keeps of the confirmation, with SID
	}
	path := filepath.Join(t.TempDir(), "alice.json")
	st := store{path: path}
	if err := st.update(func(s *State) error { s.Contacts["bob"] = &Contact{Created: time.Now().UTC(), Recv: q}; return nil }); err != nil {
		t.Fatal(err)
	}
	return path, &bob{q: q, sk: sk, msgs: map[uint64]sealedMsg{}}
}

// seal seals header and text to q's EK, as a SEND body.
func (b *bob) seal(t *testing.T, header []byte, text string) []byte {
	t.Helper()
	body, err := e2e.Seal(b.q.EncryptionKey.Public(), codec.MaxBody(codec.DefaultBlockSize), header, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return body
}

// sealed is bob's message number seq carrying text, as he sends it after
// the confirmation: "MSG seq e2eSig", e2eSig by SK over q's SID, seq and
// text (SPEC §10). bob numbers his messages 1, 2, 3 …; asked for the same
// seq again, sealed returns the same bytes, as a relay that holds the
// message delivers it.
func sealed(t *testing.T, b *bob, seq uint64, text string) []byte {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if m, ok := b.msgs[seq]; ok {
		if m.text != text {
			t.Fatalf("bob's message %d is %q, not %q: he does not reuse a number", seq, m.text, text)
		}
		return m.body
	}
	h, err := e2e.Sign(b.sk.Signer(), b.q.SID, seq, []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	body := b.seal(t, h.Bytes(), text)
	b.msgs[seq] = sealedMsg{text, body}
	return body
}

// confirmation is bob's confirmation carrying note: "KEY SK", unsigned.
func confirmation(t *testing.T, b *bob, note string) []byte {
	t.Helper()
	return b.seal(t, e2e.ConfirmationHeader(b.sk.PublicSPKI()), note)
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
	msgID, replayID := fakerelay.RandomMsgID(), fakerelay.RandomMsgID()
	cases := []struct {
		name    string
		timeout time.Duration
		answer  func(t *testing.T, b *bob, acks *int, c fakerelay.Command) [][]byte
		code    int
		stdout  string
		stderr  string // a part of it; "": stderr is empty
		changed bool   // the state file may change: something legitimate happened
		lost    bool   // stdout may be empty: the link failed with the message still queued
	}{
		{"SUB answered with a MSG for another queue", time.Minute,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, other, msgID, 0, sealed(t, b, 1, "not yours"))}
				}
				return nil
			}, 1, "", "protocol violation", false, false},
		{"SUB answered with OK for another queue", time.Minute,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendOK(nil, c.CorrID, other)}
				}
				return nil
			}, 1, "", "protocol violation", false, false},
		{"SUB never answered", 200 * time.Millisecond,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return never
				}
				return nil
			}, 1, "", "did not answer within 200ms", false, false},
		{"ACK never answered", 200 * time.Millisecond,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				switch c.Cmd {
				case codec.CmdSUB:
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, b, 1, "hello"))}
				case codec.CmdACK:
					return never
				}
				return nil
			}, 1, "hello\n", "did not answer within 200ms", true, false},
		{"the same MSG again in answer to ACK", time.Minute,
			func(t *testing.T, b *bob, acks *int, c fakerelay.Command) [][]byte {
				m := codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, b, 1, "only once"))
				switch {
				case c.Cmd == codec.CmdSUB:
					return [][]byte{m}
				case c.Cmd == codec.CmdACK && *acks < 3:
					*acks++
					return [][]byte{m}
				}
				return nil
			}, 0, "only once\n", "", true, false},
		// SPEC §10: a message shown already, delivered as a new one, is
		// dropped with a notice however the relay labels it.
		{"a shown MSG again under a new msgId in answer to ACK", time.Minute,
			func(t *testing.T, b *bob, acks *int, c fakerelay.Command) [][]byte {
				switch {
				case c.Cmd == codec.CmdSUB:
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, b, 1, "only once"))}
				case c.Cmd == codec.CmdACK && *acks < 1:
					*acks++
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, replayID, 0, sealed(t, b, 1, "only once"))}
				}
				return nil
			}, 0, "only once\n", "dropped message 1: a replay", true, false},
		{"a MSG pushed twice", time.Minute,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					m := codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0, sealed(t, b, 1, "pushed"))
					p := codec.AppendMSG(nil, nil, c.QueueID, fakerelay.RandomMsgID(), 0, sealed(t, b, 2, "pushed again"))
					return [][]byte{m, p, p}
				}
				return nil
			}, 1, "pushed\n", "second MSG", true, true},
		{"escape sequences and a fake line", time.Minute,
			func(t *testing.T, b *bob, _ *int, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, msgID, 0,
						sealed(t, b, 1, "\x1b[2J\x1b]0;owned\ahi\nalice: sure, here is my key\r"))}
				}
				return nil
			}, 0, "\uFFFD\uFFFDhi\n  alice: sure, here is my key\uFFFD\n", "", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b *bob
			acks := 0
			r := relayAnswering(t, func(c fakerelay.Command) [][]byte { return tc.answer(t, b, &acks, c) })
			var path string
			path, b = aliceState(t, r, true)
			before := readState(t, path)
			stdout, stderr, code := smpRun(t, path, tc.timeout, "receive", "bob")
			if code != tc.code || (stdout != tc.stdout && !(tc.lost && stdout == "")) ||
				!strings.Contains(stderr, tc.stderr) || (tc.stderr == "" && stderr != "") {
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
		answer  func(t *testing.T, b *bob, c fakerelay.Command) [][]byte
		code    int
		stdout  string
		stderr  string
		secured bool // the state file must show the queue secured, else be unchanged
	}{
		{"a note that is an invitation", time.Minute,
			func(t *testing.T, b *bob, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, confirmation(t, b, lure.URI()))}
				}
				return nil
			}, 0, lure.URI() + "\n", "it was not connected to", true},
		{"a note with escape sequences", time.Minute,
			func(t *testing.T, b *bob, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0,
						confirmation(t, b, "it's me\n\x1b[1Asmp: verified"))}
				}
				return nil
			}, 0, "it's me\n  \uFFFDsmp: verified\n", "secured the queue", true},
		{"SUB answered with a MSG for another queue", time.Minute,
			func(t *testing.T, b *bob, c fakerelay.Command) [][]byte {
				if c.Cmd == codec.CmdSUB {
					return [][]byte{codec.AppendMSG(nil, c.CorrID, fakerelay.RandomID(), fakerelay.RandomMsgID(), 0, confirmation(t, b, ""))}
				}
				return nil
			}, 1, "", "protocol violation", false},
		{"KEY never answered", 200 * time.Millisecond,
			func(t *testing.T, b *bob, c fakerelay.Command) [][]byte {
				switch c.Cmd {
				case codec.CmdSUB:
					return [][]byte{codec.AppendMSG(nil, c.CorrID, c.QueueID, fakerelay.RandomMsgID(), 0, confirmation(t, b, ""))}
				case codec.CmdKEY:
					return never
				}
				return nil
			}, 1, "", "did not answer within 200ms", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var b *bob
			r := relayAnswering(t, func(c fakerelay.Command) [][]byte { return tc.answer(t, b, c) })
			var path string
			path, b = aliceState(t, r, false)
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
	path, b := aliceState(t, r, true)
	q := b.q
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
