package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
)

// Errors of a Contact.
var (
	// ErrBacklog reports a Send refused because MaxBacklog messages wait and
	// no relay has stored the oldest of them.
	ErrBacklog = errors.New("client: contact: too many messages wait for a relay")
	// ErrContactClosed reports a call on a closed Contact.
	ErrContactClosed = errors.New("client: contact closed")
)

// Defaults of ContactOptions.
const (
	DefaultMaxBacklog = 1024
	DefaultRetryMin   = 50 * time.Millisecond
	DefaultRetryMax   = 5 * time.Second
	DefaultHoldDown   = 30 * time.Second
)

// ContactOptions configure a running Contact.
type ContactOptions struct {
	// ConnOptions returns the options of the Conn to a relay (Fingerprint
	// is set from the Server, OnEvent by the Contact, and the backoff from
	// RetryMin/RetryMax unless MaxBackoff is set); nil means the defaults.
	// Set CreatorKey there for a relay that needs one, and Proxy for Tor.
	// Options.Timeout also bounds how long the DEL of a queue on an
	// unreachable relay is tried before the queue is dropped.
	ConnOptions func(Server) Options
	// KEM is the kind of encryption key of queues the Contact creates;
	// zero means x25519.
	KEM codec.KEMType
	// Save stores the state. It is called with the state locked, before an
	// ACK of a message handled and before a new message is sent, and must
	// not keep st past its return (marshal it there). An error stops the
	// step that needed it: the message is not acknowledged, or Send fails.
	// Nil keeps the state in memory only.
	Save func(st *ContactState) error
	// OnMessage receives the peer's TEXT messages, each once, in the
	// peer's order, on the goroutine that handled it, with the state
	// locked: it must not call the Contact's methods.
	OnMessage func(ContactMessage)
	// OnNotice receives everything else worth telling the user; same rules
	// as OnMessage.
	OnNotice func(ContactNotice)
	// MaxBacklog bounds Outbox: past it, a route whose relay is down or
	// failing skips the oldest message if another route stored it;
	// otherwise Send fails with ErrBacklog (SendWait waits). Control
	// messages of rotation, a few per switch, are not refused. Zero means
	// DefaultMaxBacklog.
	MaxBacklog int
	// RetryMin and RetryMax bound the wait between retries of a relay that
	// is down or answers errors (doubling, no jitter needed: one contact).
	RetryMin, RetryMax time.Duration
	// HoldDown is how long a queue whose relay went down may still bring
	// the next message: until then the receiver waits for it rather than
	// report the message missing (see drainLocked). Zero means
	// DefaultHoldDown.
	HoldDown time.Duration

	// testDelivered, when set, sees every message a relay delivers; for
	// tests.
	testDelivered func(Server, Message)
}

// ContactMessage is one of the peer's messages, shown once and in order.
type ContactMessage struct {
	Seq   uint64 // the peer's cseq
	ID    []byte // the peer's message ID
	Text  []byte
	Relay Server // the relay whose copy was shown first
	Time  time.Time
}

// NoticeKind says what a ContactNotice reports.
type NoticeKind uint8

// Kinds of notices.
const (
	// NoticeDropped: a relay delivered a message that was dropped (Drop
	// says why): forged, replayed, or not a contact message.
	NoticeDropped NoticeKind = iota + 1
	// NoticeMissing: the peer's messages From … To never came on any queue.
	NoticeMissing
	// NoticeRelayDown and NoticeRelayUp: a relay's connection broke or
	// came back (Err says why it is down).
	NoticeRelayDown
	NoticeRelayUp
	// NoticeQueueAdded, NoticeQueueRemoved: a queue joined or left the
	// contact (Text says which and why).
	NoticeQueueAdded
	NoticeQueueRemoved
	// NoticeBehind: a route skipped messages (see MaxBacklog).
	NoticeBehind
	// NoticeError: a step failed and will be retried, or was given up (Err).
	NoticeError
)

// ContactNotice is something that happened to a contact.
type ContactNotice struct {
	Kind     NoticeKind
	Relay    Server
	Drop     DropReason // NoticeDropped
	From, To uint64     // NoticeMissing
	Text     string
	Err      error
}

// String names the kind, for logs.
func (k NoticeKind) String() string {
	switch k {
	case NoticeDropped:
		return "dropped"
	case NoticeMissing:
		return "missing"
	case NoticeRelayDown:
		return "relay-down"
	case NoticeRelayUp:
		return "relay-up"
	case NoticeQueueAdded:
		return "queue-added"
	case NoticeQueueRemoved:
		return "queue-removed"
	case NoticeBehind:
		return "behind"
	case NoticeError:
		return "error"
	}
	return fmt.Sprintf("NoticeKind(%d)", uint8(k))
}

// String renders the notice for logs; it holds no message text.
func (n ContactNotice) String() string {
	s := n.Kind.String() + " " + n.Relay.Addr
	if n.Text != "" {
		s += " " + n.Text
	}
	if n.Kind == NoticeDropped {
		s += " (" + n.Drop.String() + ")"
	}
	if n.Kind == NoticeMissing {
		s += fmt.Sprintf(" missing %d…%d", n.From, n.To)
	}
	if n.Err != nil {
		s += ": " + n.Err.Error()
	}
	return s
}

// Contact runs a ContactState: a Conn per relay, a sender per queue we send
// to, the ordered receiver, and the rotation steps.
//
// Ownership: mu guards st, relays, heads, workers and changed; every
// goroutine (Conn event callbacks, the route senders, the dialers, the
// rotation steps) takes it to read or change them and never holds it over
// the network. Save, OnMessage and OnNotice run with mu held.
type Contact struct {
	opts   ContactOptions
	ctx    context.Context // cancelled by Close: stops waits, dials and retries
	cancel context.CancelFunc
	// opCtx carries the SENDs and ACKs in flight; Close cancels it only
	// closeGrace after ctx, so that what is in flight usually ends with an
	// answer that is recorded, and a clean exit sends nothing twice.
	opCtx    context.Context
	opCancel context.CancelFunc
	wg       sync.WaitGroup

	mu     sync.Mutex
	st     *ContactState
	closed bool
	relays map[Server]*relayLink
	heads  map[*ContactRecv]*heldMsg
	busy   map[*ContactRecv]bool // a network step on it is running
	// early holds a message delivered while the confirmation before it is
	// still being accepted (the ACK's answer brings it), to be judged once
	// the queue is secured.
	early   map[*ContactRecv]Message
	workers map[*ContactRoute]chan struct{}
	failing map[*ContactRoute]bool // its last attempt failed: it is being retried
	changed chan struct{}          // closed and replaced on every change
	recheck *time.Timer            // runs drainLocked when a down relay's HoldDown ends
}

// relayLink is the Conn to one relay, dialed in the background.
type relayLink struct {
	srv   Server
	conn  *Conn         // set once dialed; guarded by Contact.mu
	ready chan struct{} // closed when conn is set
	up    bool          // subscribed and connected; guarded by Contact.mu
	// downSince is when it was last seen going down (or the link was
	// made); guarded by Contact.mu.
	downSince time.Time
}

// heldMsg is a message a queue delivered that is verified and not yet
// acknowledged: its cseq is beyond the next one to show. It stays on the
// relay (unacknowledged, so the relay delivers nothing more on that queue)
// until its turn: the hold-back buffer is one message per queue.
type heldMsg struct {
	msg     ContactMsg
	lastSeq uint64 // the queue's LastSeq and LastMsgID once it is handled
	lastID  []byte
	relay   Server
	time    time.Time
}

// OpenContact runs st. It returns at once: relays are dialed in the
// background and retried while down. Close it when done; st belongs to the
// Contact until then.
func OpenContact(st *ContactState, opts ContactOptions) (*Contact, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	if opts.KEM == 0 {
		opts.KEM = codec.KEMX25519
	}
	if opts.MaxBacklog <= 0 {
		opts.MaxBacklog = DefaultMaxBacklog
	}
	if opts.RetryMin <= 0 {
		opts.RetryMin = DefaultRetryMin
	}
	if opts.HoldDown <= 0 {
		opts.HoldDown = DefaultHoldDown
	}
	if opts.RetryMax < opts.RetryMin {
		opts.RetryMax = max(DefaultRetryMax, opts.RetryMin)
	}
	st.NextSeq = max(st.NextSeq, 1)
	s := &Contact{opts: opts, st: st, relays: map[Server]*relayLink{}, heads: map[*ContactRecv]*heldMsg{},
		busy: map[*ContactRecv]bool{}, early: map[*ContactRecv]Message{}, workers: map[*ContactRoute]chan struct{}{}, failing: map[*ContactRoute]bool{}, changed: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.opCtx, s.opCancel = context.WithCancel(context.Background())
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range st.Recv {
		s.relayLocked(r.Server)
		s.resumeLocked(r)
	}
	for _, r := range st.Send {
		s.relayLocked(r.Queue.Server)
		s.startRouteLocked(r)
	}
	return s, nil
}

// Close stops the Contact, closes its Conns and saves the state a last
// time. Messages held back stay on their relays, unacknowledged.
func (s *Contact) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	s.mu.Unlock()
	grace := time.AfterFunc(closeGrace, s.opCancel)
	s.wg.Wait()
	grace.Stop()
	s.opCancel()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range s.relays {
		if r.conn != nil {
			r.conn.Close()
		}
	}
	if s.recheck != nil {
		s.recheck.Stop()
	}
	s.changedLocked()
	return s.saveLocked()
}

// closeGrace is how long Close lets SENDs and ACKs in flight finish.
const closeGrace = 2 * time.Second

// Send queues text as our next message, saves the state, and returns its
// cseq; it goes to every route in the background. Flush waits for it.
func (s *Contact) Send(text []byte) (uint64, error) {
	if n := s.MaxText(); len(text) > n {
		return 0, fmt.Errorf("client: contact: a %d-byte message, the queues take %d", len(text), n)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, err := s.enqueueLocked(KindText, text)
	if err != nil {
		return 0, err
	}
	return m.Seq, nil
}

// SendWait is Send that waits, within ctx, while the outbox is full
// (ErrBacklog) for a relay to store what waits.
func (s *Contact) SendWait(ctx context.Context, text []byte) (uint64, error) {
	for {
		s.mu.Lock()
		ch := s.changed // taken first: a change during Send wakes the wait
		s.mu.Unlock()
		seq, err := s.Send(text)
		if !errors.Is(err, ErrBacklog) {
			return seq, err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, errors.Join(err, ctx.Err())
		}
	}
}

// MaxText returns the longest TEXT every queue we send to takes, at the
// default block size.
func (s *Contact) MaxText() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := codec.MaxBody(codec.DefaultBlockSize)
	for _, r := range s.st.Send {
		m, err := e2e.MaxBody(r.Queue.EncryptionKey, codec.MaxBody(codec.DefaultBlockSize), r.Queue.SenderKey.Signer().VerifyKey().SigLen())
		if err == nil {
			n = min(n, m)
		}
	}
	return n - maxContactHeader
}

// enqueueLocked numbers a message, keeps it in the outbox, saves, and
// wakes the route senders.
func (s *Contact) enqueueLocked(kind ContactKind, payload []byte) (ContactMsg, error) {
	if s.closed {
		return ContactMsg{}, ErrContactClosed
	}
	// Control messages answer the peer's, one for one, and must not be
	// lost to a full outbox: only TEXT waits for room.
	if !s.trimLocked() && kind == KindText {
		return ContactMsg{}, fmt.Errorf("%w: %d", ErrBacklog, len(s.st.Outbox))
	}
	m, err := newContactMsg(s.st.NextSeq, kind, payload)
	if err != nil {
		return ContactMsg{}, err
	}
	s.st.NextSeq++
	s.st.Outbox = append(s.st.Outbox, m)
	if err := s.saveLocked(); err != nil {
		s.st.NextSeq--
		s.st.Outbox = s.st.Outbox[:len(s.st.Outbox)-1]
		return ContactMsg{}, err
	}
	for _, k := range s.workers {
		kick(k)
	}
	s.changedLocked()
	return m, nil
}

func kick(k chan struct{}) {
	select {
	case k <- struct{}{}:
	default:
	}
}

// Flush waits until every route that carries messages has stored every
// message sent so far, or ctx ends.
func (s *Contact) Flush(ctx context.Context) error {
	return s.WaitFor(ctx, func(st ContactStatus) bool { return st.Outbox == 0 })
}

// WaitFor waits until cond holds of the contact's status (checked at once
// and after every change), or ctx ends, or the Contact closes.
func (s *Contact) WaitFor(ctx context.Context, cond func(ContactStatus) bool) error {
	for {
		s.mu.Lock()
		st, ch, closed := s.statusLocked(), s.changed, s.closed
		s.mu.Unlock()
		if cond(st) {
			return nil
		}
		if closed {
			return ErrContactClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: contact: waiting: %w", ctx.Err())
		}
	}
}

// ContactStatus is a snapshot of a contact, for lists and for waiting.
type ContactStatus struct {
	Recv    []QueueStatus // our queues
	Send    []QueueStatus // the peer's queues we send to
	NextSeq uint64        // our next cseq
	Outbox  int           // our messages not yet on every route
	Shown   uint64        // the peer's last cseq handled
}

// QueueStatus is one queue of a contact.
type QueueStatus struct {
	Relay  Server
	Status string // a RecvStatus or RouteStatus
	Up     bool   // its relay's connection is up
	Next   uint64 // for a route: the first cseq not yet stored on it
}

// Settled reports that no step of setting up or rotation is pending: every
// queue in each direction is active (RecvActive, RouteActive), and there is
// at least one each way.
func (s ContactStatus) Settled() bool {
	if len(s.Recv) == 0 || len(s.Send) == 0 {
		return false
	}
	for _, q := range s.Recv {
		if q.Status != string(RecvActive) {
			return false
		}
	}
	for _, q := range s.Send {
		if q.Status != string(RouteActive) {
			return false
		}
	}
	return true
}

// On reports whether the contact is settled on exactly the relays given,
// in each direction: the end of a switch or of adding relays.
func (s ContactStatus) On(relays ...Server) bool {
	if !s.Settled() || len(s.Recv) != len(relays) || len(s.Send) != len(relays) {
		return false
	}
	for _, q := range append(s.Recv, s.Send...) {
		found := false
		for _, r := range relays {
			found = found || r == q.Relay
		}
		if !found {
			return false
		}
	}
	return true
}

// Status returns a snapshot of the contact.
func (s *Contact) Status() ContactStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.statusLocked()
}

func (s *Contact) statusLocked() ContactStatus {
	out := ContactStatus{NextSeq: s.st.NextSeq, Outbox: len(s.st.Outbox), Shown: s.st.Shown}
	for _, r := range s.st.Recv {
		out.Recv = append(out.Recv, QueueStatus{Relay: r.Server, Status: string(r.Status), Up: s.upLocked(r.Server)})
	}
	for _, r := range s.st.Send {
		out.Send = append(out.Send, QueueStatus{Relay: r.Queue.Server, Status: string(r.Status), Up: s.upLocked(r.Queue.Server), Next: r.Next})
	}
	return out
}

func (s *Contact) upLocked(srv Server) bool {
	r := s.relays[srv]
	return r != nil && r.up
}

// Snapshot returns a deep copy of the state, through its JSON form.
func (s *Contact) Snapshot() (*ContactState, error) {
	s.mu.Lock()
	b, err := json.Marshal(s.st)
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var st ContactState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

func (s *Contact) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Contact) saveLocked() error {
	if s.opts.Save == nil {
		return nil
	}
	if err := s.opts.Save(s.st); err != nil {
		return fmt.Errorf("client: contact: saving the state: %w", err)
	}
	return nil
}

func (s *Contact) notice(n ContactNotice) {
	if s.opts.OnNotice != nil {
		s.opts.OnNotice(n)
	}
}

// ---- relays ----

// relayLocked returns the link to srv, starting its dialer if new.
func (s *Contact) relayLocked(srv Server) *relayLink {
	if r := s.relays[srv]; r != nil {
		return r
	}
	r := &relayLink{srv: srv, ready: make(chan struct{}), downSince: time.Now()}
	s.relays[srv] = r
	if !s.closed {
		s.wg.Go(func() { s.dial(r) })
	}
	return r
}

// get waits for the relay's Conn.
func (s *Contact) get(ctx context.Context, r *relayLink) (*Conn, error) {
	select {
	case <-r.ready:
		return r.conn, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("client: contact: relay %s: %w", r.srv.Addr, ctx.Err())
	}
}

// pause waits d, or less when the Contact closes; it reports whether the
// Contact is still open.
func (s *Contact) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.ctx.Done():
		return false
	}
}

// dial connects to a relay, retrying while it is down, then subscribes to
// our queues there. The Conn reconnects on its own afterwards.
func (s *Contact) dial(r *relayLink) {
	wait := s.opts.RetryMin
	var c *Conn
	for {
		var opts Options
		if s.opts.ConnOptions != nil {
			opts = s.opts.ConnOptions(r.srv)
		}
		if opts.MaxBackoff == 0 {
			opts.MinBackoff, opts.MaxBackoff = s.opts.RetryMin, s.opts.RetryMax
		}
		opts.OnEvent = func(e Event) { s.onEvent(r, e) }
		var err error
		c, err = DialServer(s.ctx, r.srv, opts)
		if err == nil {
			break
		}
		s.mu.Lock()
		s.notice(ContactNotice{Kind: NoticeRelayDown, Relay: r.srv, Err: err})
		s.mu.Unlock()
		if !s.pause(wait) {
			return
		}
		wait = min(2*wait, s.opts.RetryMax)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		c.Close()
		return
	}
	r.conn = c
	close(r.ready)
	var subs []*ContactRecv
	for _, q := range s.st.Recv {
		if q.Server == r.srv && q.Queue != nil && q.Status != RecvLost && q.Status != RecvEnding {
			subs = append(subs, q)
		}
	}
	s.mu.Unlock()
	for _, q := range subs {
		// Until a SUB succeeds the Conn does not renew it after a
		// reconnection: retry one that failed for any reason but ERR AUTH.
		for wait := s.opts.RetryMin; ; wait = min(2*wait, s.opts.RetryMax) {
			_, err := q.Queue.Subscribe(s.ctx, c)
			if err == nil {
				break
			}
			s.mu.Lock()
			s.subscriptionLostLocked(r, q.Queue.RID, err)
			s.mu.Unlock()
			if errors.Is(err, codec.ErrAuth) {
				break
			}
			if !s.pause(wait) {
				return
			}
		}
	}
	s.mu.Lock()
	r.up = true
	s.notice(ContactNotice{Kind: NoticeRelayUp, Relay: r.srv})
	acks := s.drainLocked()
	s.changedLocked()
	s.mu.Unlock()
	s.ack(acks)
}

func (s *Contact) subscriptionLostLocked(r *relayLink, rid []byte, err error) {
	q := s.st.recvByRID(rid)
	if q == nil || q.Server != r.srv {
		return
	}
	if !errors.Is(err, codec.ErrAuth) {
		s.notice(ContactNotice{Kind: NoticeError, Relay: r.srv, Text: "subscribing", Err: err})
		return
	}
	if q.Status == RecvEnding {
		s.dropRecvLocked(q, "deleted")
		return
	}
	q.Status = RecvLost
	delete(s.heads, q)
	s.notice(ContactNotice{Kind: NoticeQueueRemoved, Relay: r.srv, Text: "the relay no longer has the queue", Err: err})
	_ = s.saveLocked()
	s.changedLocked()
}

// onEvent handles an event of a relay's Conn.
func (s *Contact) onEvent(r *relayLink, e Event) {
	var acks []ackReq
	s.mu.Lock()
	switch e.Kind {
	case EventMessage:
		if s.opts.testDelivered != nil {
			s.opts.testDelivered(r.srv, e.Message)
		}
		q := s.st.recvByRID(e.RID)
		if q == nil || q.Server != r.srv || s.closed {
			break // a queue no longer in the contact: nothing to do
		}
		acks = s.messageLocked(r, q, e.Message)
	case EventDisconnected:
		r.up, r.downSince = false, time.Now()
		s.notice(ContactNotice{Kind: NoticeRelayDown, Relay: r.srv, Err: e.Err})
	case EventReconnected:
		r.up = true
		s.notice(ContactNotice{Kind: NoticeRelayUp, Relay: r.srv})
		acks = s.drainLocked()
	case EventSubscriptionLost, EventEnd:
		err := e.Err
		if e.Kind == EventEnd {
			err = errors.New("another connection subscribed to the queue")
		}
		s.subscriptionLostLocked(r, e.RID, err)
	}
	s.changedLocked()
	s.mu.Unlock()
	s.ack(acks)
}

// ackReq is an ACK to send for a queue's delivered message.
type ackReq struct {
	relay *relayLink
	q     *RecipientQueue
}

// ack sends the ACKs in the background: one relay's delay must not hold
// the others. A lost ACK brings the message again, which Receive knows.
func (s *Contact) ack(acks []ackReq) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, a := range acks {
		s.wg.Go(func() {
			c, err := s.get(s.opCtx, a.relay)
			if err == nil {
				_, err = a.q.Ack(s.opCtx, c)
			}
			if err != nil && s.ctx.Err() == nil && !errors.Is(err, ErrConnLost) {
				s.mu.Lock()
				s.notice(ContactNotice{Kind: NoticeError, Relay: a.relay.srv, Text: "acknowledging", Err: err})
				s.mu.Unlock()
			}
		})
	}
}

// ---- receiving ----

// messageLocked judges a message a queue delivered. Only a message that
// passed RecipientQueue.Receive (opens, signed by the queue's sender key,
// seq above the queue's LastSeq) reaches the contact's ordering: nobody
// without the peer's key for that queue can steer it.
func (s *Contact) messageLocked(r *relayLink, q *ContactRecv, m Message) []ackReq {
	one := []ackReq{{r, q.Queue}}
	switch q.Status {
	case RecvInvited:
		if s.busy[q] {
			s.early[q] = m
			return nil
		}
		s.busy[q] = true
		s.wg.Go(func() { s.accept(r, q, m) })
		return nil
	case RecvActive, RecvEnding:
	default:
		// Offered or keyed: the peer has not been told to send on it, so
		// nothing on it is theirs.
		s.notice(ContactNotice{Kind: NoticeDropped, Relay: r.srv, Drop: DropNoSenderKey, Text: "a message on a queue not yet in use"})
		return one
	}
	cp := *q.Queue
	rc := cp.Receive(m)
	if rc.Drop != DropNone {
		if rc.Drop != DropRedelivered {
			s.notice(ContactNotice{Kind: NoticeDropped, Relay: r.srv, Drop: rc.Drop, Err: rc.Err})
		}
		return one
	}
	cm, err := parseContactBody(rc.Body)
	if err != nil {
		// Signed by the peer but not a contact message: skip it on this
		// queue only.
		q.Queue.LastSeq, q.Queue.LastMsgID = cp.LastSeq, cp.LastMsgID
		s.notice(ContactNotice{Kind: NoticeDropped, Relay: r.srv, Drop: DropNone, Text: "signed by the peer but not a contact message", Err: err})
		if s.saveLocked() != nil {
			return nil
		}
		return one
	}
	s.heads[q] = &heldMsg{msg: cm, lastSeq: cp.LastSeq, lastID: cp.LastMsgID, relay: r.srv, time: m.Time}
	return s.drainLocked()
}

// drainLocked handles every held message whose turn has come: a cseq
// already handled is a copy (acknowledged quietly), the next one is shown.
// When every queue that can still deliver holds a message beyond the next
// cseq, the next one can come on none of them (each queue is FIFO, and the
// sender sends in cseq order on each): those before the lowest held are
// reported missing. A queue can still deliver when its relay is up and it
// holds nothing, or its relay went down less than HoldDown ago (a
// restarting relay brings its messages back); a timer checks again when
// that time is up. The state is saved before the ACKs go out.
func (s *Contact) drainLocked() []ackReq {
	var acks []ackReq
	handled := false
	for {
		progress := false
		for _, q := range s.st.Recv {
			h := s.heads[q]
			if h == nil || h.msg.Seq > s.st.Shown+1 {
				continue
			}
			delete(s.heads, q)
			q.Queue.LastSeq, q.Queue.LastMsgID = h.lastSeq, h.lastID
			if h.msg.Seq == s.st.Shown+1 {
				s.st.Shown++
				s.handleLocked(q, h)
			}
			acks = append(acks, ackReq{s.relays[q.Server], q.Queue})
			progress, handled = true, true
		}
		if progress {
			continue
		}
		lowest, blocked := uint64(0), len(s.heads) > 0
		var wake time.Time
		for _, q := range s.st.Recv {
			if h := s.heads[q]; h != nil {
				if lowest == 0 || h.msg.Seq < lowest {
					lowest = h.msg.Seq
				}
				continue
			}
			if !q.receiving() {
				continue
			}
			r := s.relays[q.Server]
			if end := r.downSince.Add(s.opts.HoldDown); r.up || time.Now().Before(end) {
				blocked = false
				if !r.up && (wake.IsZero() || end.Before(wake)) {
					wake = end
				}
			}
		}
		if !blocked {
			if !wake.IsZero() && len(s.heads) > 0 {
				s.recheckLocked(time.Until(wake))
			}
			break
		}
		s.notice(ContactNotice{Kind: NoticeMissing, From: s.st.Shown + 1, To: lowest - 1})
		s.st.Shown = lowest - 1
	}
	if handled && s.saveLocked() != nil {
		return nil // unacknowledged: the relays deliver them again
	}
	return acks
}

// recheckLocked runs drainLocked again after d.
func (s *Contact) recheckLocked(d time.Duration) {
	if s.recheck != nil {
		s.recheck.Stop()
	}
	s.recheck = time.AfterFunc(d, func() {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		acks := s.drainLocked()
		s.changedLocked()
		s.mu.Unlock()
		s.ack(acks)
	})
}

// handleLocked acts on the peer's next message, in the peer's order.
func (s *Contact) handleLocked(q *ContactRecv, h *heldMsg) {
	m := h.msg
	var err error
	switch m.Kind {
	case KindText:
		if s.opts.OnMessage != nil {
			s.opts.OnMessage(ContactMessage{Seq: m.Seq, ID: m.ID, Text: m.Payload, Relay: h.relay, Time: h.time})
		}
		return
	case KindQNew:
		err = s.qnewLocked(m.Payload)
	case KindQKey:
		err = s.qkeyLocked(m.Payload)
	case KindQReady:
		err = s.qreadyLocked(m.Payload)
	case KindQEnd:
		err = s.qendLocked(m.Payload)
	default:
		err = fmt.Errorf("unknown kind %q, ignored", m.Kind)
	}
	if err != nil {
		s.notice(ContactNotice{Kind: NoticeError, Relay: q.Server, Text: fmt.Sprintf("peer's %s message %d", m.Kind, m.Seq), Err: err})
	}
}

// ---- sending ----

// startRouteLocked starts the sender of a route that carries messages.
func (s *Contact) startRouteLocked(rt *ContactRoute) {
	if !rt.carries() || s.workers[rt] != nil || s.closed {
		return
	}
	k := make(chan struct{}, 1)
	s.workers[rt] = k
	r := s.relayLocked(rt.Queue.Server)
	s.wg.Go(func() { s.runRoute(rt, r, k) })
}

// nextForLocked returns the next message a route is to store.
func (s *Contact) nextForLocked(rt *ContactRoute) (ContactMsg, bool) {
	from := max(rt.Next, rt.From)
	if len(s.st.Outbox) == 0 {
		return ContactMsg{}, false
	}
	first := s.st.Outbox[0].Seq
	if from < first {
		// Trimmed while it failed: skip to what is left.
		rt.Skipped += first - from
		s.notice(ContactNotice{Kind: NoticeBehind, Relay: rt.Queue.Server,
			Text: fmt.Sprintf("messages %d…%d skipped: the relay was failing while the outbox was full", from, first-1)})
		rt.Next, from = first, first
	}
	i := from - first
	if i >= uint64(len(s.st.Outbox)) {
		return ContactMsg{}, false
	}
	return s.st.Outbox[i], true
}

// runRoute sends every message on one route in cseq order, each until its
// relay stores it, retrying with backoff while the relay is down or
// answers errors that a retry may change.
func (s *Contact) runRoute(rt *ContactRoute, r *relayLink, k chan struct{}) {
	wait := s.opts.RetryMin
	for {
		s.mu.Lock()
		if s.closed || s.workers[rt] != k {
			s.mu.Unlock()
			return
		}
		sq := rt.Queue
		confirm := !sq.Confirmed
		m, ok := s.nextForLocked(rt)
		s.mu.Unlock()
		if !ok && !confirm {
			select {
			case <-k:
			case <-s.ctx.Done():
				return
			}
			continue
		}
		select {
		case <-r.ready:
		default:
			// Never reached yet: the route counts as failing meanwhile,
			// so that a full outbox does not wait for it.
			s.mu.Lock()
			s.failing[rt] = true
			s.trimLocked()
			s.mu.Unlock()
		}
		c, err := s.get(s.ctx, r)
		if err != nil {
			return
		}
		if confirm {
			cp := *sq
			if err = cp.Confirm(s.opCtx, c, []byte(ContactConfirmation)); err == nil {
				s.mu.Lock()
				sq.Confirmed = true
				_ = s.saveLocked()
				s.mu.Unlock()
			}
		} else {
			err = sendOn(s.opCtx, c, sq, m)
		}
		s.mu.Lock()
		retry := s.sentLocked(rt, m, confirm, err)
		s.changedLocked()
		s.mu.Unlock()
		if !retry {
			wait = s.opts.RetryMin
			continue
		}
		if !s.pause(wait) {
			return
		}
		wait = min(2*wait, s.opts.RetryMax)
	}
}

// sendOn sends m on sq with m's cseq as the SPEC §10 seq.
func sendOn(ctx context.Context, c *Conn, sq *SenderQueue, m ContactMsg) error {
	body := m.body()
	h, err := e2e.Sign(sq.SenderKey.Signer(), sq.SID, m.Seq, body)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	return sq.SendPrepared(ctx, c, Outgoing{Seq: m.Seq, Sig: h.Sig, Body: body})
}

// sentLocked records how a SEND (or the confirmation) on a route ended and
// reports whether to wait before the next attempt.
func (s *Contact) sentLocked(rt *ContactRoute, m ContactMsg, confirm bool, err error) (retry bool) {
	if s.st.routeBySID(rt.Queue.SID) != rt {
		return false // removed meanwhile; the loop ends
	}
	s.failing[rt] = err != nil
	switch {
	case err == nil && confirm:
		return false
	case err == nil:
		if rt.Next <= m.Seq {
			rt.Next = m.Seq + 1
			rt.Queue.NextSeq = rt.Next
		}
		if rt.Status == RouteJoining {
			rt.Status = RouteActive
			_ = s.saveLocked()
		}
		s.trimLocked()
		return false
	case errors.Is(err, codec.ErrAuth) && rt.Status == RouteJoining:
		return true // the peer has not secured it yet
	case errors.Is(err, codec.ErrAuth):
		rt.Status = RouteRefused
		delete(s.workers, rt)
		s.notice(ContactNotice{Kind: NoticeQueueRemoved, Relay: rt.Queue.Server, Text: "the relay refuses our messages: the queue is gone", Err: err})
		s.trimLocked()
		_ = s.saveLocked()
		return false
	case SendAgain(err) || confirm:
		return true
	}
	// A refusal no retry changes (the message does not fit this relay's
	// blocks): skip it on this route.
	s.notice(ContactNotice{Kind: NoticeError, Relay: rt.Queue.Server, Text: fmt.Sprintf("message %d not sent here", m.Seq), Err: err})
	rt.Next, rt.Skipped = m.Seq+1, rt.Skipped+1
	s.trimLocked()
	return false
}

// trimLocked drops outbox messages every carrying route has stored, and
// the oldest message while the outbox is full, some route has stored it
// and every route that has not is failing (its relay down or refusing for
// now): those skip it. A route that makes progress is never skipped, so a
// full outbox makes Send wait for the slowest live relay. It reports
// whether there is room for another message.
func (s *Contact) trimLocked() bool {
	for len(s.st.Outbox) > 0 {
		oldest := s.st.Outbox[0].Seq
		stored, all, live := false, true, false
		for _, rt := range s.st.Send {
			if !rt.carries() {
				continue
			}
			switch {
			case max(rt.Next, rt.From) > oldest:
				stored = true
			case s.failing[rt]:
				all = false
			default:
				all, live = false, true
			}
		}
		full := len(s.st.Outbox) >= s.opts.MaxBacklog
		if !stored || (!all && (!full || live)) {
			break
		}
		s.st.Outbox = s.st.Outbox[1:]
	}
	return len(s.st.Outbox) < s.opts.MaxBacklog
}
