package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// The contacts scenario (issue 17, "conversations that survive a relay"):
// one contact (client.Contact, docs/contacts.md) on 1, 2 and 3 relays
// (--contact-relays), each relay a separate smp-server started here, pinned
// like every other server of the suite. Per point: Alice creates the
// contact on the first relay, Bob joins, Alice adds the other relays
// (rotation requests that both sides act on) until both directions use
// every relay; then Bob sends to Alice for --contact-duration after
// --contact-warmup, keeping --contact-window messages sent and not yet
// shown. Throughput is messages shown to Alice per second; latency is from
// Bob's Send to Alice's OnMessage (both in this process, one clock). Every
// message goes on every relay: relay CPU and client CPU per message are
// read too, to show what the redundancy costs. Not in the default suite
// (make bench-contacts).

// ContactsResult is the contacts scenario.
type ContactsResult struct {
	Points     []ContactsPoint `json:"points"`
	Window     int             `json:"window"`
	BodyBytes  int             `json:"textBytes"`
	KEM        string          `json:"kem"`
	ServerArgs string          `json:"serverArgs"`
	Note       string          `json:"note"`
}

// ContactsPoint is one contact on Relays relays.
type ContactsPoint struct {
	Relays          int     `json:"relays"`
	SetupSeconds    float64 `json:"setupSeconds"` // create, join and spread to every relay
	Messages        int     `json:"messages"`     // shown during the measured time
	Seconds         float64 `json:"seconds"`
	Throughput      float64 `json:"msgPerSecond"`
	P50Ms           float64 `json:"p50Ms"`
	P99Ms           float64 `json:"p99Ms"`
	MaxMs           float64 `json:"maxMs"`
	ServerCPUPerMsg float64 `json:"serverCpuUsPerMsg"` // all relays together
	ClientCPUPerMsg float64 `json:"clientCpuUsPerMsg"` // this process: both clients
	BlocksPerMsg    int     `json:"clientBlocksPerMsg"`
	Missing         uint64  `json:"missing"` // messages reported missing (must be 0)
}

// contactText is the text of each message: a short chat line, padded by the
// envelope to the block like any other.
var contactText = []byte(strings.Repeat("x", 64))

func (s *suite) contacts() error {
	res := &ContactsResult{Window: s.c.contactWindow, BodyBytes: len(contactText), KEM: codec.KEMX25519.String(),
		ServerArgs: strings.Join(s.c.serverArgs, " "),
		Note: "in-process clients with the state in memory (ContactOptions.Save nil): what the protocol and the relays cost, " +
			"not smp's state file; Alice and Bob each keep one Conn per relay"}
	s.rep.Contacts = res
	for _, n := range s.c.contactRelays {
		pt, err := s.contactPoint(n)
		if err != nil {
			return fmt.Errorf("contacts on %d relays: %w", n, err)
		}
		res.Points = append(res.Points, *pt)
		fmt.Fprintf(s.stderr, "bench: contacts on %d relays: %.0f msg/s, p50 %.2f ms, p99 %.2f ms\n", n, pt.Throughput, pt.P50Ms, pt.P99Ms)
	}
	return nil
}

func (s *suite) contactPoint(n int) (*ContactsPoint, error) {
	var srvs []*server
	defer func() {
		for _, sv := range srvs {
			_ = sv.stop()
		}
	}()
	var relays []client.Server
	for range n {
		sv, err := s.start()
		if err != nil {
			return nil, err
		}
		srvs = append(srvs, sv)
		relays = append(relays, client.Server{Addr: sv.Addr, Fingerprint: sv.Fingerprint})
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
	defer cancel()
	t0 := time.Now()

	// Shown to Alice: the send time of each of Bob's cseqs. Lock order: mu
	// before Bob's Contact (send), Alice's before mu (OnMessage); Bob's
	// callbacks take no lock of ours.
	var mu sync.Mutex
	sent := map[uint64]time.Time{}
	var lat []int64
	var missing atomic.Uint64
	measuring := false
	shown := make(chan struct{}, 1<<16)
	opts := func(show func(client.ContactMessage)) client.ContactOptions {
		return client.ContactOptions{KEM: codec.KEMX25519,
			OnMessage: show,
			OnNotice: func(nt client.ContactNotice) {
				if nt.Kind == client.NoticeMissing {
					missing.Add(nt.To - nt.From + 1)
				}
			}}
	}
	alice, bob, err := contactPair(ctx, relays[0], opts(func(m client.ContactMessage) {
		now := time.Now()
		mu.Lock()
		if t, ok := sent[m.Seq]; ok {
			delete(sent, m.Seq)
			if measuring {
				lat = append(lat, now.Sub(t).Nanoseconds())
			}
		}
		mu.Unlock()
		shown <- struct{}{}
	}), opts(nil))
	if err != nil {
		return nil, err
	}
	defer alice.Close()
	defer bob.Close()
	for _, r := range relays[1:] {
		if err := alice.AddRelay(ctx, r); err != nil {
			return nil, err
		}
	}
	everywhere := func(st client.ContactStatus) bool {
		act := 0
		for _, q := range st.Send {
			if q.Status == string(client.RouteActive) {
				act++
			}
		}
		return act == n && len(st.Send) == n
	}
	for _, c := range []*client.Contact{alice, bob} {
		if err := c.WaitFor(ctx, everywhere); err != nil {
			return nil, fmt.Errorf("spreading to %d relays: %w (Alice %+v, Bob %+v)", n, err, alice.Status(), bob.Status())
		}
	}
	pt := &ContactsPoint{Relays: n, SetupSeconds: time.Since(t0).Seconds(), BlocksPerMsg: 2 * n}

	// The closed loop: Bob keeps window messages in flight.
	inflight := 0
	send := func() error {
		mu.Lock()
		defer mu.Unlock()
		seq, err := bob.Send(contactText)
		if err != nil {
			return err
		}
		sent[seq] = time.Now()
		inflight++
		return nil
	}
	run := func(d time.Duration) (int, error) {
		count := 0
		end := time.NewTimer(d)
		defer end.Stop()
		for {
			for inflight < s.c.contactWindow {
				if err := send(); err != nil {
					return count, err
				}
			}
			select {
			case <-shown:
				inflight--
				count++
			case <-end.C:
				return count, nil
			case <-s.ctx.Done():
				return count, s.ctx.Err()
			}
		}
	}
	if _, err := run(s.c.contactWarmup); err != nil {
		return nil, err
	}
	before, err := serversCPU(srvs)
	if err != nil {
		return nil, err
	}
	self0, err := procUsage(os.Getpid())
	if err != nil {
		return nil, err
	}
	mu.Lock()
	measuring = true
	mu.Unlock()
	start := time.Now()
	count, err := run(s.c.contactDuration)
	el := time.Since(start)
	mu.Lock()
	measuring = false
	got := slices.Clone(lat)
	mu.Unlock()
	pt.Missing = missing.Load()
	if err != nil {
		return nil, err
	}
	after, err := serversCPU(srvs)
	if err != nil {
		return nil, err
	}
	self1, err := procUsage(os.Getpid())
	if err != nil {
		return nil, err
	}
	if count == 0 {
		return nil, fmt.Errorf("no message was shown (Alice %+v, Bob %+v, in flight %d)", alice.Status(), bob.Status(), inflight)
	}
	slices.Sort(got)
	pt.Messages, pt.Seconds, pt.Throughput = count, el.Seconds(), float64(count)/el.Seconds()
	pt.P50Ms, pt.P99Ms, pt.MaxMs = pctMs(got, 50), pctMs(got, 99), pctMs(got, 100)
	pt.ServerCPUPerMsg = float64((after - before).Microseconds()) / float64(count)
	pt.ClientCPUPerMsg = float64((self1.CPU - self0.CPU).Microseconds()) / float64(count)
	return pt, nil
}

// serversCPU is the CPU time of all of srvs.
func serversCPU(srvs []*server) (time.Duration, error) {
	var t time.Duration
	for _, sv := range srvs {
		u, err := sv.usage()
		if err != nil {
			return 0, err
		}
		t += u.CPU
	}
	return t, nil
}

// contactPair sets up a contact between Alice (who creates it on first)
// and Bob (who joins with a reply queue on the same relay), and runs both
// until each side's first queue is secured and its route to the other works.
func contactPair(ctx context.Context, first client.Server, aOpts, bOpts client.ContactOptions) (alice, bob *client.Contact, err error) {
	ac, err := client.DialServer(ctx, first, client.Options{})
	if err != nil {
		return nil, nil, err
	}
	defer ac.Close()
	ast, inv, err := client.CreateContact(ctx, ac, codec.KEMX25519)
	if err != nil {
		return nil, nil, err
	}
	bc, err := client.DialServer(ctx, client.ServerOf(&inv), client.Options{})
	if err != nil {
		return nil, nil, err
	}
	defer bc.Close()
	bst, err := client.JoinContact(ctx, &inv, bc, bc, codec.KEMX25519)
	if err != nil {
		return nil, nil, err
	}
	if alice, err = client.OpenContact(ast, aOpts); err != nil {
		return nil, nil, err
	}
	if bob, err = client.OpenContact(bst, bOpts); err != nil {
		alice.Close()
		return nil, nil, err
	}
	fail := func(err error) (*client.Contact, *client.Contact, error) {
		alice.Close()
		bob.Close()
		return nil, nil, fmt.Errorf("setting the contact up: %w", err)
	}
	active := func(st client.ContactStatus) bool {
		return len(st.Send) == 1 && st.Send[0].Status == string(client.RouteActive)
	}
	// A route turns active with its first stored message: one each way.
	for _, c := range []*client.Contact{alice, bob} {
		if _, err := c.Send([]byte("hello")); err != nil {
			return fail(err)
		}
	}
	for _, c := range []*client.Contact{alice, bob} {
		if err := c.WaitFor(ctx, active); err != nil {
			return fail(err)
		}
	}
	return alice, bob, nil
}

// markdown renders the contacts scenario.
func (r *ContactsResult) markdown() string {
	var b strings.Builder
	b.WriteString("## contacts (one contact on N relays)\n\n")
	fmt.Fprintf(&b, "Bob sends %d-byte texts to Alice with %d in flight; every message goes on a queue on each relay (%s queue keys); "+
		"relay flags `%s`; %s.\n\n", r.BodyBytes, r.Window, r.KEM, r.ServerArgs, r.Note)
	b.WriteString("| relays | msg/s shown | p50 ms | p99 ms | max ms | relay CPU µs/msg (all relays) | client CPU µs/msg (both sides) | client blocks/msg | missing | set-up s |\n" +
		"|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range r.Points {
		fmt.Fprintf(&b, "| %d | %.0f | %.2f | %.2f | %.2f | %.0f | %.0f | %d | %d | %.2f |\n", p.Relays, p.Throughput, p.P50Ms, p.P99Ms, p.MaxMs,
			p.ServerCPUPerMsg, p.ClientCPUPerMsg, p.BlocksPerMsg, p.Missing, p.SetupSeconds)
	}
	b.WriteString("\nLatency: Bob's Send to Alice's OnMessage (the first copy of the message to arrive). Client blocks per message: " +
		"a SEND to each relay and a MSG from each (plus the ACKs).\n\n")
	return b.String()
}
