package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/smptest"
)

// party is one side of a contact in a test: the running Contact, what it
// showed, and its state as last saved (through JSON, as a CLI stores it).
type party struct {
	name string
	c    *Contact

	mu      sync.Mutex
	got     []ContactMessage
	notices []ContactNotice
	saved   []byte
	sizes   map[int]int // body length → how many bodies of that length the relays delivered
	more    chan struct{}
}

func (p *party) opts(t *testing.T) ContactOptions {
	return ContactOptions{
		ConnOptions: func(Server) Options {
			return Options{MinBackoff: 5 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Timeout: 10 * time.Second}
		},
		RetryMin: 5 * time.Millisecond, RetryMax: 100 * time.Millisecond,
		Save: func(st *ContactState) error {
			b, err := json.Marshal(st)
			if err != nil {
				t.Errorf("%s: saving: %v", p.name, err)
				return err
			}
			p.mu.Lock()
			p.saved = b
			p.mu.Unlock()
			return nil
		},
		OnMessage: func(m ContactMessage) {
			p.mu.Lock()
			p.got = append(p.got, m)
			p.mu.Unlock()
			kickAll(p.more)
		},
		OnNotice: func(n ContactNotice) {
			p.mu.Lock()
			p.notices = append(p.notices, n)
			p.mu.Unlock()
		},
		testDelivered: func(_ Server, m Message) {
			p.mu.Lock()
			p.sizes[len(m.Body)]++
			p.mu.Unlock()
		},
	}
}

func kickAll(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// open runs st for the party, through a JSON round trip so that what runs
// is what a state file would hold.
func (p *party) open(t *testing.T, st *ContactState, opts ContactOptions) {
	t.Helper()
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back ContactState
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	c, err := OpenContact(&back, opts)
	if err != nil {
		t.Fatal(err)
	}
	p.c = c
	t.Cleanup(func() { c.Close() })
}

func newParty(name string) *party {
	return &party{name: name, sizes: map[int]int{}, more: make(chan struct{}, 1)}
}

// texts returns the texts shown so far.
func (p *party) texts() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, len(p.got))
	for i, m := range p.got {
		out[i] = string(m.Text)
	}
	return out
}

// waitTexts waits until the party has shown n messages.
func (p *party) waitTexts(t *testing.T, ctx context.Context, n int) {
	t.Helper()
	for len(p.texts()) < n {
		select {
		case <-p.more:
		case <-ctx.Done():
			t.Fatalf("%s showed %d of %d messages; status %+v; notices %v", p.name, len(p.texts()), n, p.c.Status(), p.noticeText())
		}
	}
}

func (p *party) noticeText() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, n := range p.notices[max(0, len(p.notices)-20):] {
		out = append(out, n.String())
	}
	return out
}

// settled reports a contact settled on exactly the relays given.
func settled(relays ...Server) func(ContactStatus) bool {
	return func(st ContactStatus) bool { return st.On(relays...) }
}

func serverOf(s *smptest.Server) Server { return Server{Addr: s.Addr, Fingerprint: s.Fingerprint} }

// startRelays starts n relays with args, each in a data directory of its
// own (returned, for restarts).
func startRelays(t *testing.T, n int, args ...string) (srvs []*smptest.Server, relays []Server, dirs []string) {
	t.Helper()
	for range n {
		d := t.TempDir()
		s := smptest.StartServerIn(t, d, args...)
		srvs, relays, dirs = append(srvs, s), append(relays, serverOf(s)), append(dirs, d)
	}
	return srvs, relays, dirs
}

// newContactPair sets up a contact between alice and bob on relays[0]
// (invitation, join, confirmation), then adds the other relays in band.
func newContactPair(t *testing.T, relays []Server, optsOf func(*party) ContactOptions) (alice, bob *party) {
	t.Helper()
	ctx := guard(t)
	alice, bob = newParty("alice"), newParty("bob")
	ca := dial(t, relays[0].Addr, fastOptions(relays[0].Fingerprint))
	stA, inv, err := CreateContact(ctx, ca, codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	cb := dial(t, relays[0].Addr, fastOptions(relays[0].Fingerprint))
	stB, err := JoinContact(ctx, &inv, cb, cb, codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	ca.Close()
	cb.Close()
	alice.open(t, stA, optsOf(alice))
	bob.open(t, stB, optsOf(bob))
	for _, r := range relays[1:] {
		if err := alice.c.AddRelay(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	waitSettled(t, ctx, relays, alice, bob)
	return alice, bob
}

// waitSettled waits until each party's queues are in use on exactly the
// relays given.
func waitSettled(t *testing.T, ctx context.Context, relays []Server, ps ...*party) {
	t.Helper()
	for _, p := range ps {
		if err := p.c.WaitFor(ctx, settled(relays...)); err != nil {
			for _, q := range ps {
				t.Logf("%s: %+v; notices %v", q.name, q.c.Status(), q.noticeText())
			}
			t.Fatalf("%s: %v", p.name, err)
		}
	}
}

// exchange has alice and bob each send n messages, prefixed with their
// names, concurrently, pacing themselves on a full backlog.
func exchange(t *testing.T, ctx context.Context, alice, bob *party, from, n int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, p := range []*party{alice, bob} {
		wg.Go(func() { sendAll(t, ctx, p, from, n) })
	}
	wg.Wait()
}

// talk has alice and bob each send messages from … from+n−1 (exchange), and
// checks that each showed the other's 0 … from+n−1 once, in order, with no
// message missing or dropped.
func talk(t *testing.T, ctx context.Context, alice, bob *party, from, n int) {
	t.Helper()
	exchange(t, ctx, alice, bob, from, n)
	alice.waitTexts(t, ctx, from+n)
	bob.waitTexts(t, ctx, from+n)
	checkShown(t, alice, "bob", from+n)
	checkShown(t, bob, "alice", from+n)
	checkQuiet(t, alice, bob)
}

// sendAll has p send n messages, prefixed with its name.
func sendAll(t *testing.T, ctx context.Context, p *party, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := p.c.SendWait(ctx, fmt.Appendf(nil, "%s %04d", p.name, i)); err != nil {
			t.Errorf("%s: send %d: %v", p.name, i, err)
			return
		}
	}
}

// checkShown fails unless p showed exactly the peer's messages 0 … n−1,
// each once, in order.
func checkShown(t *testing.T, p *party, peer string, n int) {
	t.Helper()
	got := p.texts()
	if len(got) != n {
		t.Fatalf("%s showed %d messages, want %d", p.name, len(got), n)
	}
	for i, s := range got {
		if want := fmt.Sprintf("%s %04d", peer, i); s != want {
			t.Fatalf("%s: message %d is %q, want %q", p.name, i, s, want)
		}
	}
}

// checkSizes fails unless every body the relays delivered to p has the same
// length.
func checkSizes(t *testing.T, p *party) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.sizes) != 1 {
		t.Fatalf("%s: the relays delivered bodies of several lengths: %v", p.name, p.sizes)
	}
}

func TestContactHeader(t *testing.T) {
	m, err := newContactMsg(18446744073709551615, KindText, []byte("hi\r\nthere"))
	if err != nil {
		t.Fatal(err)
	}
	b := m.body()
	if len(b)-len(m.Payload) > maxContactHeader {
		t.Fatalf("header of %d bytes, maxContactHeader %d", len(b)-len(m.Payload), maxContactHeader)
	}
	back, err := parseContactBody(b)
	if err != nil || back.Seq != m.Seq || !bytes.Equal(back.ID, m.ID) || back.Kind != KindText || string(back.Payload) != "hi\r\nthere" {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, bad := range []string{
		"", "SMPC/1 1 AAAAAAAAAAA= TEXT", "SMPC/2 1 AAAAAAAAAAA= TEXT\r\n", "SMPC/1 0 AAAAAAAAAAA= TEXT\r\n",
		"SMPC/1 01 AAAAAAAAAAA= TEXT\r\n", "SMPC/1 18446744073709551616 AAAAAAAAAAA= TEXT\r\n",
		"SMPC/1 1 AAAA TEXT\r\n", "SMPC/1 1 AAAAAAAAAAA= text\r\n", "SMPC/1 1 AAAAAAAAAAA=  TEXT\r\n",
		"SMPC/1 1 AAAAAAAAAAA= TEXT x\r\n", "SMPC/1 1 AAAAAAAAAAA=\r\n",
	} {
		if _, err := parseContactBody([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	sid := bytes.Repeat([]byte{7}, 16)
	r, mirror, uri, err := parseQNew(qnewPayload(sid, true, "smp://x"))
	if err != nil || !bytes.Equal(r, sid) || !mirror || uri != "smp://x" {
		t.Fatalf("QNEW round trip: %x %v %q %v", r, mirror, uri, err)
	}
	if r, _, _, err := parseQNew(qnewPayload(nil, false, "u")); err != nil || r != nil {
		t.Fatalf("QNEW without a replaced queue: %x %v", r, err)
	}
	s2, k, err := parseQKey(qkeyPayload(sid, []byte{1, 2}))
	if err != nil || !bytes.Equal(s2, sid) || !bytes.Equal(k, []byte{1, 2}) {
		t.Fatalf("QKEY round trip: %v", err)
	}
}

// TestContactThreeRelays: two people exchange 1,000 messages each way over
// a contact on three relays, while one relay is killed (kill -9, for good)
// and another is restarted on the same address and data. Each side shows
// every message of the other once, in order; every body the relays
// delivered has the same length.
func TestContactThreeRelays(t *testing.T) {
	const n = 1000
	args := []string{"--key-type", "x25519", "--quota", "2000"}
	srvs, relays, dirs := startRelays(t, 3, args...)
	optsOf := func(p *party) ContactOptions {
		o := p.opts(t)
		o.MaxBacklog = 200
		o.HoldDown = time.Minute
		return o
	}
	alice, bob := newContactPair(t, relays, optsOf)
	ctx := guard(t)

	done := make(chan struct{})
	go func() {
		defer close(done)
		exchange(t, ctx, alice, bob, 0, n)
	}()
	// Kill one relay after a fifth, restart another after half.
	alice.waitTexts(t, ctx, n/5)
	srvs[1].Kill()
	t.Logf("killed %s at %d", relays[1].Addr, len(alice.texts()))
	alice.waitTexts(t, ctx, n/2)
	if code := srvs[2].Stop(); code != 0 {
		t.Fatalf("stopping %s: status %d", relays[2].Addr, code)
	}
	srvs[2] = smptest.StartServerIn(t, dirs[2], append(args, "--listen", relays[2].Addr)...)
	t.Logf("restarted %s at %d", relays[2].Addr, len(alice.texts()))
	<-done
	t.Logf("all sent")
	alice.waitTexts(t, ctx, n)
	bob.waitTexts(t, ctx, n)
	checkShown(t, alice, "bob", n)
	checkShown(t, bob, "alice", n)
	checkSizes(t, alice)
	checkSizes(t, bob)
	checkQuiet(t, alice, bob)
}

// oldQueues returns the queues of p's state that are on relay srv.
func oldQueues(t *testing.T, p *party, srv Server) []*RecipientQueue {
	t.Helper()
	st, err := p.c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var out []*RecipientQueue
	for _, q := range st.Recv {
		if q.Server == srv {
			out = append(out, q.Queue)
		}
	}
	if len(out) != 1 {
		t.Fatalf("%s has %d queues on %s, want 1", p.name, len(out), srv.Addr)
	}
	return out
}

// checkDeleted fails unless relay srv has none of qs (SUB answers ERR AUTH).
func checkDeleted(t *testing.T, srv Server, qs []*RecipientQueue) {
	t.Helper()
	c := dial(t, srv.Addr, fastOptions(srv.Fingerprint))
	for _, q := range qs {
		if _, err := q.Subscribe(guard(t), c); !errors.Is(err, codec.ErrAuth) {
			t.Fatalf("SUB of an old queue on %s: %v, want ERR AUTH (deleted)", srv.Addr, err)
		}
	}
	c.Close()
}

// checkQuiet fails on any notice of a missing or dropped message, except
// replays: a SEND whose answer was lost (a relay stopped or killed with it
// in flight) is sent again, and if the first one was stored, SPEC §10 has
// the receiver drop the second as a replay, with a notice. checkShown is
// what shows that nothing was shown twice.
func checkQuiet(t *testing.T, ps ...*party) {
	t.Helper()
	for _, p := range ps {
		p.mu.Lock()
		replays := 0
		for _, nt := range p.notices {
			switch {
			case nt.Kind == NoticeDropped && nt.Drop == DropReplay:
				replays++
			case nt.Kind == NoticeMissing || nt.Kind == NoticeDropped:
				t.Errorf("%s: %v", p.name, nt)
			}
		}
		p.mu.Unlock()
		if replays > 0 {
			t.Logf("%s: %d messages sent again after a lost answer were dropped as replays", p.name, replays)
		}
	}
}

// TestContactSwitch: a contact on relays A and B moves A's queue to C while
// both sides are sending; once the switch is done, both sides' queues on A
// are deleted, A is stopped for good, and the conversation goes on over B
// and C with nothing lost or shown twice.
func TestContactSwitch(t *testing.T) {
	const n = 300
	srvs, relays, _ := startRelays(t, 3, "--key-type", "x25519")
	a, b, c := relays[0], relays[1], relays[2]
	// A short outbox paces the senders, so that the switch happens while
	// messages flow.
	alice, bob := newContactPair(t, []Server{a, b}, func(p *party) ContactOptions {
		o := p.opts(t)
		o.MaxBacklog = 16
		return o
	})
	ctx := guard(t)
	onA := append(oldQueues(t, alice, a), oldQueues(t, bob, a)...)

	done := make(chan struct{})
	go func() {
		defer close(done)
		exchange(t, ctx, alice, bob, 0, n)
	}()
	alice.waitTexts(t, ctx, n/3)
	if err := alice.c.Switch(ctx, a, c); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx, []Server{b, c}, alice, bob)
	t.Logf("switched at %d/%d", len(alice.texts()), len(bob.texts()))
	checkDeleted(t, a, onA)
	if code := srvs[0].Stop(); code != 0 {
		t.Fatalf("stopping A: status %d", code)
	}
	<-done
	talk(t, ctx, alice, bob, n, n)
	for _, p := range []*party{alice, bob} {
		if st := p.c.Status(); !settled(b, c)(st) || st.Outbox != 0 && p.c.Flush(ctx) != nil {
			t.Fatalf("%s after the switch: %+v", p.name, st)
		}
	}
}

// TestContactSwitchFromDeadRelay: relay A is killed first; the switch from A
// to C still completes over B, and the queues on A are dropped from both
// states.
func TestContactSwitchFromDeadRelay(t *testing.T) {
	srvs, relays, _ := startRelays(t, 3, "--key-type", "x25519")
	a, b, c := relays[0], relays[1], relays[2]
	optsOf := func(p *party) ContactOptions {
		o := p.opts(t)
		inner := o.ConnOptions
		o.ConnOptions = func(s Server) Options {
			opts := inner(s)
			opts.Timeout = time.Second // how long the DEL of a queue on the dead relay is tried
			return opts
		}
		return o
	}
	alice, bob := newContactPair(t, []Server{a, b}, optsOf)
	ctx := guard(t)
	exchange(t, ctx, alice, bob, 0, 20)
	alice.waitTexts(t, ctx, 20)
	bob.waitTexts(t, ctx, 20)
	srvs[0].Kill()
	if err := alice.c.Switch(ctx, a, c); err != nil {
		t.Fatal(err)
	}
	waitSettled(t, ctx, []Server{b, c}, alice, bob)
	talk(t, ctx, alice, bob, 20, 20)
}

// TestContactForgedAndReplayed: a relay (or anyone who learned a queue's
// IDs and even its encryption key) delivers forged, replayed and moved
// messages to a contact. None is shown, the contact's order does not move,
// and the conversation goes on with nothing lost or shown twice. Outsiders
// who know a sender ID cannot even get a message stored.
func TestContactForgedAndReplayed(t *testing.T) {
	_, relays, _ := startRelays(t, 2, "--key-type", "x25519")
	a, b := relays[0], relays[1]
	var mu sync.Mutex
	seen := map[Server][]Message{} // what the relays delivered to bob
	alice, bob := newContactPair(t, relays, func(p *party) ContactOptions {
		o := p.opts(t)
		if p.name == "bob" {
			inner := o.testDelivered
			o.testDelivered = func(s Server, m Message) {
				inner(s, m)
				mu.Lock()
				seen[s] = append(seen[s], m)
				mu.Unlock()
			}
		}
		return o
	})
	ctx := guard(t)
	exchange(t, ctx, alice, bob, 0, 10)
	bob.waitTexts(t, ctx, 10)
	alice.waitTexts(t, ctx, 10)
	// Each text is shown from whichever relay brings it first; the other
	// relay's copy may come later. Wait for every copy, so that "the last
	// message" below is the last each queue delivered, not one overtaken
	// by a copy arriving while the test runs.
	if err := bob.c.WaitFor(ctx, func(st ContactStatus) bool {
		bob.c.mu.Lock()
		defer bob.c.mu.Unlock()
		for _, q := range bob.c.st.Recv {
			if q.Queue.LastSeq != st.Shown {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}

	st, err := bob.c.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var qa, qb *RecipientQueue
	for _, q := range st.Recv {
		switch q.Server {
		case a:
			qa = q.Queue
		case b:
			qb = q.Queue
		}
	}
	shown := bob.c.Status().Shown

	// Outsiders who know the sender ID: the relay refuses.
	out := dial(t, a.Addr, fastOptions(a.Fingerprint))
	stranger, _ := GenerateSigningKey()
	for _, sk := range []*codec.Signer{nil, stranger.Signer()} {
		if err := out.Send(ctx, qa.SID, sk, []byte("hello")); !errors.Is(err, codec.ErrAuth) {
			t.Fatalf("a stranger's SEND to a secured queue: %v, want ERR AUTH", err)
		}
	}

	// What a hostile relay can deliver.
	mu.Lock()
	onA, onB := seen[a], seen[b]
	mu.Unlock()
	// The message qa holds as its last: what a relay repeating itself
	// would deliver again (a relay also repeats older ones after a
	// reconnection, which are replays).
	var last Message
	for _, m := range onA {
		if bytes.Equal(m.ID, qa.LastMsgID) {
			last = m
		}
	}
	if last.ID == nil {
		t.Fatalf("relay A never delivered qa's last message %x", qa.LastMsgID)
	}
	forge := func(seq uint64, kind ContactKind, text string) Message {
		m := ContactMsg{Seq: seq, ID: make([]byte, contactMsgIDSize), Kind: kind, Payload: []byte(text)}
		body := m.body()
		h, err := e2e.Sign(stranger.Signer(), qa.SID, seq, body)
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := e2e.Seal(qa.EncryptionKey.Public(), out.MaxBody(), h.Bytes(), body)
		if err != nil {
			t.Fatal(err)
		}
		return Message{RID: qa.RID, ID: []byte("forged01"), Time: last.Time, Body: sealed}
	}
	lateKey, err := e2e.Seal(qa.EncryptionKey.Public(), out.MaxBody(), e2e.ConfirmationHeader(stranger.PublicSPKI()), ContactMsg{Seq: shown + 1, ID: make([]byte, 8), Kind: KindText}.body())
	if err != nil {
		t.Fatal(err)
	}
	injected := []struct {
		name string
		m    Message
		want DropReason
	}{
		{"replay with a new ID", Message{RID: qa.RID, ID: []byte("replay01"), Time: last.Time, Body: onA[len(onA)-2].Body}, DropReplay},
		{"the last message again", last, DropRedelivered},
		{"moved from another queue", Message{RID: qa.RID, ID: []byte("moved001"), Time: last.Time, Body: onB[len(onB)-1].Body}, DropNotOpen},
		{"forged next message", forge(shown+1, KindText, "forged"), DropBadSignature},
		{"forged far-ahead message", forge(shown+1000, KindText, "ahead"), DropBadSignature},
		{"forged control message", forge(shown+1, KindQEnd, sidText(qb.SID)), DropBadSignature},
		{"forged confirmation", Message{RID: qa.RID, ID: []byte("latekey1"), Time: last.Time, Body: lateKey}, DropLateKey},
	}
	bob.c.mu.Lock()
	link := bob.c.relays[a]
	bob.c.mu.Unlock()
	for _, in := range injected {
		bob.mu.Lock()
		before := len(bob.notices)
		bob.mu.Unlock()
		in.m.RID = qa.RID
		bob.c.onEvent(link, Event{Kind: EventMessage, RID: qa.RID, Message: in.m})
		bob.mu.Lock()
		var drops []DropReason
		for _, n := range bob.notices[before:] {
			if n.Kind == NoticeDropped {
				drops = append(drops, n.Drop)
			}
		}
		bob.mu.Unlock()
		switch {
		case in.want == DropRedelivered && len(drops) != 0:
			t.Errorf("%s: notices %v, want none", in.name, drops)
		case in.want != DropRedelivered && (len(drops) != 1 || drops[0] != in.want):
			t.Errorf("%s: dropped for %v, want %v", in.name, drops, in.want)
		}
		if st := bob.c.Status(); st.Shown != shown || len(bob.texts()) != 10 {
			t.Fatalf("%s moved the contact: shown %d (was %d), %d texts", in.name, st.Shown, shown, len(bob.texts()))
		}
	}
	// The relay's answers to the ACKs of injected messages are errors; the
	// conversation goes on regardless.
	exchange(t, ctx, alice, bob, 10, 10)
	bob.waitTexts(t, ctx, 20)
	alice.waitTexts(t, ctx, 20)
	checkShown(t, bob, "alice", 20)
	checkShown(t, alice, "bob", 20)
	if st := bob.c.Status(); !settled(a, b)(st) {
		t.Fatalf("bob's contact changed: %+v", st)
	}
}

// reopen closes p's Contact and runs it again from the state it saved last,
// as a command that runs and exits does between two runs.
func (p *party) reopen(t *testing.T, opts ContactOptions) {
	t.Helper()
	if err := p.c.Close(); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	saved := p.saved
	p.mu.Unlock()
	var st ContactState
	if err := json.Unmarshal(saved, &st); err != nil {
		t.Fatal(err)
	}
	p.open(t, &st, opts)
}

// TestContactReopen: both sides close their Contacts and run them again from
// the saved JSON, once in the middle of a conversation and once right after
// a switch was asked for: nothing is lost or shown twice, and the switch
// completes across the runs.
func TestContactReopen(t *testing.T) {
	_, relays, _ := startRelays(t, 3, "--key-type", "x25519")
	a, b, c := relays[0], relays[1], relays[2]
	optsOf := func(p *party) ContactOptions { return p.opts(t) }
	alice, bob := newContactPair(t, []Server{a, b}, optsOf)
	ctx := guard(t)

	done := make(chan struct{})
	go func() {
		defer close(done)
		sendAll(t, ctx, alice, 0, 60)
	}()
	alice.c.WaitFor(ctx, func(s ContactStatus) bool { return s.NextSeq > 20 })
	bob.reopen(t, optsOf(bob))
	<-done
	sendAll(t, ctx, bob, 0, 60)
	alice.waitTexts(t, ctx, 60)
	bob.waitTexts(t, ctx, 60)

	if err := alice.c.Switch(ctx, a, c); err != nil {
		t.Fatal(err)
	}
	alice.reopen(t, optsOf(alice))
	bob.reopen(t, optsOf(bob))
	waitSettled(t, ctx, []Server{b, c}, alice, bob)
	talk(t, ctx, alice, bob, 60, 20)
}
