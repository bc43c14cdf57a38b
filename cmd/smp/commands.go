package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
)

func init() {
	commands = []*command{
		{name: "create", args: "[flags] NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "create a queue to receive on and print its invitation", flags: createFlags, long: `
Create creates a queue on a server (seed steps 1-2): new keys for this queue
alone, NEW, and an invitation for the person who will send to you, whom you
name NAME. The invitation goes to standard output as an smp:// URI (with
--text, in the seed's four-line text form). When standard output is a
terminal (or with --qr), a QR code is drawn above it, two modules per
character cell, if the terminal is wide enough; if not, a hint on standard
error says so: use --png FILE. Hand the invitation over by a channel you
trust, then run 'smp accept NAME' once they have connected.

The server is --server and --fingerprint, or SMP_SERVER and SMP_FINGERPRINT;
'smp-server fingerprint' on the relay prints both.

A relay that takes new queues only from holders of its creator keys refuses
the queue unless --creator-key FILE (or SMP_CREATOR_KEY) names the private
key its operator gave you: PEM, PKCS#8 ("BEGIN PRIVATE KEY"), as 'openssl
genpkey -algorithm ed25519' writes it. It signs only the NEW sent to the
relay of --server; other relays never see it. Leave it unset for other
relays: they refuse a NEW signed by it.

With a relay list (SMP_RELAYS, or --relays), create makes a contact on
several relays: the invitation names a queue on the first, and a queue on
each of the others is offered to NAME, inside the contact, once they have
joined ('smp chat --join' or 'smp connect --reply'); they put theirs on the
same relays. --relays all (the default) takes every relay of SMP_RELAYS,
--relays N the first N, --relays R1,R2,... these (see 'smp help'). Then
--creator-key signs the NEW on each of them, and --server is not used.`},
		{name: "connect", args: "[flags] NAME INVITATION", minArgs: 2, maxArgs: 2, argsNames: "a contact name and an invitation",
			short: "connect to an invitation and send the confirmation", flags: connectFlags, long: `
Connect connects to the queue an invitation names (seed step 3): a new sender
key for this queue alone, and the confirmation carrying it, sealed to the
invitation's key and sent unsigned. INVITATION is the smp:// URI, or - to read
the URI or the text form from standard input. Once the queue's owner has run
'smp accept', 'smp send NAME' works.

With --reply, connect also creates a queue for NAME to answer you on, and puts
its invitation in the confirmation: 'smp chat NAME' on the other side connects
to it ('smp accept' only shows it), and 'smp accept NAME' here then secures it
(what 'smp chat --join' does). Everything is checked before the reply queue is
created, and it is deleted again if the confirmation cannot be sent. The
reply queue is on the invitation's relay and signed with no creator key, so a
relay that takes queues only from holders of its creator keys refuses it.`},
		{name: "accept", args: "[flags] NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "accept a waiting confirmation and secure the queue", flags: acceptFlags, long: `
Accept takes the confirmation NAME sent to the queue you created for them
(seed steps 4-5) and secures the queue with the key it carries, so that only
they can send to it. Messages that do not open with the queue's key — forged
confirmations from someone who saw the queue ID but not the invitation — are
acknowledged and dropped. Whatever the confirmation says goes to standard
output, as text: an invitation in it is not connected to, since that would
tell the relay it names (which the sender chose) your address; 'smp chat'
connects to the reply queue its other side offers. The confirmation is not
signed, so take what it says as unverified.

Without --wait, accept exits with status 1 when no confirmation is waiting,
and gives up after --timeout.`},
		{name: "send", args: "[flags] NAME [MESSAGE...]", minArgs: 1, maxArgs: -1, argsNames: "a contact name and a message",
			short: "send a message", flags: sendFlags, long: `
Send numbers MESSAGE (the arguments joined by spaces, or standard input when
there are none), signs it with your sender key, seals it to NAME's queue key
and sends it. NAME shows each message once, in order, and is told of any
number that never arrived.
The server refuses it with ERR AUTH until NAME has accepted your confirmation
and after they suspend or delete the queue, and with ERR QUOTA while the queue
is full, until NAME receives. A message has at most 5911 bytes on a queue with the
default mlkem768x25519 key and a relay with the default 8192-byte blocks
(6999 with an x25519 key); send names the limit when a message exceeds it.

The message and its number are written to the state file before they are
sent. When send cannot tell whether the relay stored it (ERR QUOTA, no
answer, a lost connection), the message is kept, and the next send to NAME
(or chat with NAME) sends it again, unchanged, before the new one; NAME drops
a copy that arrives twice. With --retry, send sends only the kept message.`},
		{name: "receive", args: "[flags] NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "print and acknowledge received messages", flags: receiveFlags, long: `
Receive prints each message waiting on the queue NAME sends to you, one per
line on standard output (further lines of a message are indented, and control
characters are shown as �), and acknowledges it so the server deletes it.
A message is printed only if it is signed by NAME's key and numbered after
the last one printed; when numbers are skipped, a notice on standard error
says which messages are missing. Anything else is acknowledged and dropped
with a notice saying why: it does not open with the queue's key, it is not
signed or its signature is not NAME's, its number is invalid, it is a
replay or came out of order, or it is a repeated confirmation.
Without --follow, it gives up after --timeout.
With --follow it keeps listening until interrupted: when the relay cannot be
reached, at the start or later, it says so on standard error and tries again,
waiting about 1s, then 2s, and so on up to 30s; messages sent meanwhile wait on the
relay and arrive once it is back.`},
		{name: "suspend", args: "NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "suspend a queue you receive on", flags: noFlags(runSuspend), long: `
Suspend suspends the queue NAME sends to you (OFF): the server refuses new
messages, while you can still receive the ones it holds and delete the queue.
The server deletes suspended queues after a while.`},
		{name: "delete", args: "NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "delete a queue you receive on, forget one you send to", flags: noFlags(runDelete), long: `
Delete deletes the queue NAME sends to you, with its messages (DEL), and
forgets the contact, including any queue you send to NAME on (which only its
owner can delete).`},
		{name: "list", args: "", minArgs: 0, maxArgs: 0, argsNames: "no arguments",
			short: "list the local queues", flags: noFlags(runList), long: `
List prints one line per queue in the state file: the contact's name, whether
you receive on it or send to it, its status and its server.`},
		{name: "switch", args: "NAME --from HOST:PORT --to RELAY", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "move a contact from one relay to another", flags: switchFlags, long: `
Switch moves a contact on several relays off the relay --from (HOST:PORT, as
'smp list' shows it) to the relay --to (smp://FINGERPRINT@HOST:PORT, or the
HOST:PORT of a relay in SMP_RELAYS): it creates a queue on --to for NAME to
send to and asks NAME, in a message on every relay, to move their queue the
same way. The move completes as both of you run smp (receive, chat, send):
NAME's smp answers, this side secures the new queue, each side sends on the
new queues and stops using the old ones, which are then deleted. --from may
be unreachable. 'smp list' shows where each queue stands.

Only a contact created with a relay list (SMP_RELAYS or --relays) can
switch; a seed contact is on one queue each way.`},
		{name: "chat", args: "[flags] NAME", minArgs: 1, maxArgs: 1, argsNames: "one contact name",
			short: "set up queues both ways in one flow and talk", flags: chatFlags, long: `
Chat talks with NAME both ways, over two simplex queues (the seed's duplex
idea): each line of standard input is sent, and each message received is
printed as "NAME: text". Standard input at its end stops it.

The first time, chat sets the queues up. One side runs 'smp chat NAME', which
creates a queue and prints its invitation (as create does) and waits. The
other runs 'smp chat --join INVITATION NAME', which connects to it and sends,
inside the confirmation, the invitation of a queue for the answers. The first
side secures its queue and connects to that one; the second secures it; both
then talk. Later runs of 'smp chat NAME' just talk.

Messages are signed, numbered and checked as with send and receive: a
notice on standard error says when one is dropped and why, and which are
missing. A message an earlier send could not confirm is sent again first.

With a relay list (SMP_RELAYS, or --relays, as for create), the chat is a
contact on several relays: each line goes on every relay, each message is
shown once, in order, and the chat carries on while any relay is up. The
joining side needs no relay list: it follows the creator.`},
	}
}

func noFlags(run func(e *env, args []string) error) func(*flag.FlagSet) func(*env, []string) error {
	return func(*flag.FlagSet) func(*env, []string) error { return run }
}

// step is a context for one network step, bounded by --timeout.
func (e *env) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.ctx, e.timeout)
}

// Reconnection backoff: one notice a second at most while a relay is down
// (receive --follow, chat), and at least one attempt every 30 s.
const (
	minBackoff = time.Second
	maxBackoff = 30 * time.Second
)

// dial connects to srv for one step: a broken connection ends the Conn, so
// that the command fails at once with the reason (a relay that broke the
// protocol is named) instead of waiting for a reconnection.
func (e *env) dial(srv client.Server) (*client.Conn, error) { return e.dialWith(srv, false, nil) }

// dialCreator is dial for a command that creates a queue on srv: creator,
// when set, signs its NEW (--creator-key).
func (e *env) dialCreator(srv client.Server, creator *client.SigningKey) (*client.Conn, error) {
	return e.dialWith(srv, false, creator)
}

// dialFollow connects to srv for a command that keeps listening (receive
// --follow, accept --wait, chat): the Conn reconnects on its own.
func (e *env) dialFollow(srv client.Server) (*client.Conn, error) { return e.dialWith(srv, true, nil) }

func (e *env) dialWith(srv client.Server, follow bool, creator *client.SigningKey) (*client.Conn, error) {
	ctx, cancel := e.step()
	defer cancel()
	opts := client.Options{Timeout: e.timeout, MinBackoff: minBackoff, MaxBackoff: maxBackoff, NoReconnect: !follow, Proxy: e.proxy}
	if creator != nil {
		opts.CreatorKey = creator.Signer()
	}
	c, err := client.DialServer(ctx, srv, opts)
	if err != nil && e.ctx.Err() == nil {
		return nil, e.relayError(srv.Addr, err)
	}
	return c, err
}

// once connects to srv, runs f within one step's time and disconnects.
func (e *env) once(srv client.Server, f func(ctx context.Context, c *client.Conn) error) error {
	c, err := e.dial(srv)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := e.step()
	defer cancel()
	return f(ctx, c)
}

// serverFlags defines --server and --fingerprint; the returned function
// resolves them, with SMP_SERVER and SMP_FINGERPRINT as defaults. A
// malformed --fingerprint fails when the flags are parsed.
func serverFlags(fs *flag.FlagSet) func() (client.Server, error) {
	addr := fs.String("server", "", "relay `HOST:PORT` (default $SMP_SERVER)")
	fp := &fingerprintValue{}
	fs.Var(fp, "fingerprint", "fingerprint of the relay's key, as 'smp-server fingerprint' prints it (default $SMP_FINGERPRINT)")
	return func() (client.Server, error) {
		s := client.Server{Addr: *addr, Fingerprint: fp.fp}
		from := "--server"
		if s.Addr == "" {
			s.Addr, from = os.Getenv("SMP_SERVER"), "SMP_SERVER"
		}
		if s.Fingerprint == "" {
			if env := os.Getenv("SMP_FINGERPRINT"); env != "" {
				f, err := parseFingerprint(env)
				if err != nil {
					return s, fmt.Errorf("SMP_FINGERPRINT: %w", err)
				}
				s.Fingerprint = f
			}
		}
		switch {
		case s.Addr == "" && s.Fingerprint == "":
			return s, errors.New("no relay given: use --server HOST:PORT and --fingerprint, or set SMP_SERVER and SMP_FINGERPRINT " +
				"('smp-server fingerprint' on the relay prints both)")
		case s.Addr == "":
			return s, errors.New("no relay address: give --server HOST:PORT or set SMP_SERVER")
		case s.Fingerprint == "":
			return s, missingFingerprint(s.Addr, from)
		}
		host, port, err := codec.ParseServer(s.Addr)
		if err != nil {
			return s, fmt.Errorf("%s: %w", from, err)
		}
		inv := codec.Invitation{Host: host, Port: port}
		s.Addr = inv.Addr()
		return s, nil
	}
}

// creatorKeyFlag defines --creator-key; the returned function loads the
// key it names, or SMP_CREATOR_KEY's, and says where it came from (nil, ""
// when neither is set).
func creatorKeyFlag(fs *flag.FlagSet) func() (*client.SigningKey, string, error) {
	path := fs.String("creator-key", "", "private key `file` (PEM, PKCS#8) that signs the new queue, for a relay that takes\n"+
		"queues only from holders of its creator keys (default $SMP_CREATOR_KEY)")
	return func() (*client.SigningKey, string, error) {
		from, p := "--creator-key", *path
		if p == "" {
			from, p = "SMP_CREATOR_KEY", os.Getenv("SMP_CREATOR_KEY")
		}
		if p == "" {
			return nil, "", nil
		}
		from += " " + p
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", from, err)
		}
		k, err := client.ParseSigningKeyPEM(b)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", from, err)
		}
		return k, from, nil
	}
}

// createRefused explains a NEW that srv refused (ERR AUTH): from names the
// creator key that signed it, "" when none did.
func createRefused(err error, addr, from string) error {
	if !errors.Is(err, client.ErrCreateRefused) {
		return err
	}
	if from == "" {
		return &explained{err, fmt.Sprintf("relay %s refused to create the queue (ERR AUTH): it takes new queues only from "+
			"holders of one of its creator keys; give --creator-key FILE (or set SMP_CREATOR_KEY) with the private key "+
			"its operator gave you", addr)}
	}
	return &explained{err, fmt.Sprintf("relay %s refused to create the queue signed by the creator key in %s (ERR AUTH): "+
		"the key is not one of the relay's creator keys, or the relay takes none (then give no --creator-key and unset "+
		"SMP_CREATOR_KEY), or its operator has closed queue creation", addr, from)}
}

func kemFlag(fs *flag.FlagSet) *string {
	return fs.String("kem", codec.KEMMLKEM768X25519.String(), "kind of the queue's encryption key: mlkem768x25519, x25519 or rsa")
}

// isTerminal reports whether w is a character device, such as a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// addContact records a new contact, refusing to overwrite one.
func (e *env) addContact(name string, ct *Contact) error {
	return e.st.update(func(s *State) error {
		if s.Contacts[name] != nil {
			return fmt.Errorf("contact %q already exists", name)
		}
		s.Contacts[name] = ct
		return nil
	})
}

// contact reads the state file and returns the contact called name.
func (e *env) contact(name string) (*Contact, error) {
	s, err := e.st.load()
	if err != nil {
		return nil, err
	}
	return s.contact(name)
}

// setContact replaces the queues of an existing contact.
func (e *env) setContact(name string, recv *client.RecipientQueue, send *client.SenderQueue) error {
	return e.st.update(func(s *State) error {
		ct, err := s.contact(name)
		if err != nil {
			return err
		}
		ct.Recv, ct.Send = recv, send
		return nil
	})
}

// ---- create ----

type createOpts struct {
	relays      func() ([]client.Server, error) // nil, nil: a seed contact on server
	server      func() (client.Server, error)
	creatorKey  func() (*client.SigningKey, string, error)
	kem         *string
	qr          *bool
	qrSet       func() bool
	png         *string
	textForm    *bool
	quietNotice bool
}

func createFlags(fs *flag.FlagSet) func(*env, []string) error {
	o := &createOpts{relays: relaysFlag(fs), server: serverFlags(fs), creatorKey: creatorKeyFlag(fs), kem: kemFlag(fs)}
	o.qr = fs.Bool("qr", false, "show the invitation as a QR code (default: when standard output is a terminal)")
	o.qrSet = func() bool {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "qr" })
		return set
	}
	o.png = fs.String("png", "", "also write the invitation as a QR code to this PNG `file`")
	o.textForm = fs.Bool("text", false, "print the invitation in the four-line text form instead of the URI")
	return func(e *env, args []string) error {
		_, err := create(e, args[0], o)
		return err
	}
}

// create makes the queue, records it and shows the invitation.
func create(e *env, name string, o *createOpts) (*client.RecipientQueue, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	relays, err := o.relays()
	if err != nil {
		return nil, err
	}
	var srv client.Server
	if len(relays) == 0 {
		if srv, err = o.server(); err != nil {
			return nil, err
		}
	}
	kem, err := codec.ParseKEMType(*o.kem)
	if err != nil {
		return nil, fmt.Errorf("--kem: %w", err)
	}
	creator, from, err := o.creatorKey()
	if err != nil {
		return nil, err
	}
	s, err := e.st.load()
	if err != nil {
		return nil, err
	}
	if s.Contacts[name] != nil {
		return nil, fmt.Errorf("contact %q already exists", name)
	}
	if len(relays) > 0 {
		return nil, createMulti(e, name, o, relays, kem, creator, from)
	}
	c, err := e.dialCreator(srv, creator)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ctx, cancel := e.step()
	defer cancel()
	q, err := client.CreateQueue(ctx, c, kem)
	if err != nil {
		return nil, createRefused(err, srv.Addr, from)
	}
	inv, err := q.Invitation()
	if err == nil {
		err = e.addContact(name, &Contact{Created: time.Now().UTC(), Recv: q})
	}
	if err != nil {
		_ = q.Delete(ctx, c) // leave nothing on the server that no state file knows
		return nil, err
	}
	if err := showInvitation(e, &inv, o); err != nil {
		return nil, err
	}
	if !o.quietNotice {
		where := "the invitation above"
		if !isTerminal(e.stdout) {
			where = "the invitation (printed on standard output)"
		}
		if *o.png != "" {
			where += " or the QR code in " + *o.png
		}
		e.notef("created a queue for %s to send to you; give them %s, then run 'smp accept %s'", name, where, name)
	}
	return q, nil
}

// showInvitation writes the QR code, when wanted and when it fits, then the
// invitation itself, last so that it stays in view; and the PNG file.
func showInvitation(e *env, inv *codec.Invitation, o *createOpts) error {
	if (o.qrSet() && *o.qr) || (!o.qrSet() && isTerminal(e.stdout)) {
		q, err := encodeQR(inv.URI())
		if err != nil {
			return err
		}
		if cols, ok := termColumns(e.stdout); ok && qrColumns(q) > cols {
			e.notef("the QR code needs %d columns and the terminal has %d, so it is not drawn; use --png FILE for an image of it",
				qrColumns(q), cols)
		} else if err := drawQR(e.stdout, q); err != nil {
			return err
		}
	}
	if *o.textForm {
		fmt.Fprintf(e.stdout, "%s\r\n", inv.Text())
	} else {
		fmt.Fprintln(e.stdout, inv.URI())
	}
	if *o.png != "" {
		return writePNG(*o.png, inv.URI())
	}
	return nil
}

// ---- connect ----

type connectOpts struct {
	message *string
	reply   *bool
	kem     *string
}

func connectFlags(fs *flag.FlagSet) func(*env, []string) error {
	o := &connectOpts{
		message: fs.String("message", "", "information for the queue's owner, sent in the confirmation"),
		reply:   fs.Bool("reply", false, "also create a queue for the answers and send its invitation in the confirmation"),
		kem:     kemFlag(fs),
	}
	return func(e *env, args []string) error {
		text := args[1]
		if text == "-" {
			b, err := io.ReadAll(io.LimitReader(e.stdin, 64<<10))
			if err != nil {
				return fmt.Errorf("reading the invitation: %w", err)
			}
			text = string(b)
		}
		inv, err := codec.ParseInvitation(text)
		if err != nil {
			return err
		}
		return connect(e, args[0], &inv, o)
	}
}

// connect sends the confirmation and records the queue; with reply, it also
// creates the answer queue and offers it in the confirmation.
func connect(e *env, name string, inv *codec.Invitation, o *connectOpts) error {
	if err := checkName(name); err != nil {
		return err
	}
	if *o.reply && *o.message != "" {
		return errors.New("--message and --reply exclude each other: the reply invitation is the confirmation's content")
	}
	s, err := e.st.load()
	if err != nil {
		return err
	}
	if s.Contacts[name] != nil {
		return fmt.Errorf("contact %q already exists", name)
	}
	kem, err := codec.ParseKEMType(*o.kem)
	if err != nil {
		return fmt.Errorf("--kem: %w", err)
	}
	sq, err := client.NewSenderQueue(inv)
	if err != nil {
		return err
	}
	c, err := e.dial(sq.Server)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := e.step()
	defer cancel()
	info := []byte(*o.message)
	// Everything that can be checked is checked before the reply queue is
	// created, so that a bad invitation leaves nothing on the relay.
	room, err := e2e.MaxContent(sq.EncryptionKey, c.MaxBody())
	if err == nil {
		room -= len(e2e.ConfirmationHeader(sq.SenderKey.PublicSPKI()))
	}
	need := len(info)
	if *o.reply {
		need = replyURILen(kem, c.Addr())
	}
	switch {
	case err != nil:
		return err
	case need > room:
		return fmt.Errorf("the confirmation would carry %d bytes and %s's queue takes %d", need, name, room)
	}
	var rq *client.RecipientQueue
	if *o.reply {
		if rq, err = client.CreateQueue(ctx, c, kem); err != nil {
			if errors.Is(err, client.ErrCreateRefused) {
				return &explained{err, fmt.Sprintf("relay %s, the invitation's, refused to create the reply queue (ERR AUTH): "+
					"it takes new queues only from holders of its creator keys, and smp signs a reply queue with none; "+
					"connect without --reply (smp chat --join needs a reply queue, so it cannot join through this relay)", sq.Server.Addr)}
			}
			return err
		}
		rinv, err := rq.Invitation()
		if err != nil {
			return deleteReply(ctx, c, rq, err)
		}
		info = []byte(rinv.URI())
	}
	if err := sq.Confirm(ctx, c, info); err != nil {
		return deleteReply(ctx, c, rq, err)
	}
	if err := e.addContact(name, &Contact{Created: time.Now().UTC(), Recv: rq, Send: sq}); err != nil {
		return deleteReply(ctx, c, rq, err)
	}
	e.notef("sent the confirmation to %s's queue; once they accept it, 'smp send %s' reaches them", name, name)
	return nil
}

// replyURILen bounds the length of the URI of a reply queue with an
// encryption key of kind kem on the relay at addr (SPEC §9): 32-byte
// fingerprint, 16-byte sender ID, the typed key (an RSA one is what
// codec.GenerateKEMKey makes, 2048 bits), base64url without padding.
func replyURILen(kem codec.KEMType, addr string) int {
	key := map[codec.KEMType]int{codec.KEMX25519: 1 + 32, codec.KEMMLKEM768X25519: 1 + 1216, codec.KEMRSA: 1 + 294}[kem]
	b64 := base64.RawURLEncoding.EncodedLen
	return len("smp://") + b64(32) + len("@") + len(addr) + len("/") + b64(codec.QueueIDSize) + len("#") + b64(key)
}

// deleteReply deletes the reply queue rq, if any, after err stopped
// connect, so that no queue stays on the relay that no state file knows.
func deleteReply(ctx context.Context, c *client.Conn, rq *client.RecipientQueue, err error) error {
	if rq == nil {
		return err
	}
	if derr := rq.Delete(ctx, c); derr != nil {
		return fmt.Errorf("%w (and deleting the reply queue created for it failed: %w)", err, derr)
	}
	return err
}

// ---- accept ----

var errNoConfirmation = errors.New("no confirmation is waiting (use --wait to wait for one)")

func acceptFlags(fs *flag.FlagSet) func(*env, []string) error {
	wait := fs.Bool("wait", false, "wait until a confirmation arrives")
	return func(e *env, args []string) error { return accept(e, args[0], *wait, false) }
}

// accept secures the queue NAME sends to with the first confirmation that
// opens. For smp chat it then connects to the reply queue offered in it;
// for smp accept it shows what the confirmation says.
func accept(e *env, name string, wait, chat bool) error {
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi != nil {
		return acceptMulti(e, name, ct, wait)
	}
	q := ct.Recv
	switch {
	case q == nil:
		return fmt.Errorf("you have no queue that %s sends to (you connected to their invitation)", name)
	case q.Secured:
		return fmt.Errorf("the queue %s sends to is already secured", name)
	}
	body, aerr, err := e.confirmation(q, wait)
	if err != nil {
		return err
	}
	send := ct.Send
	if err := e.setContact(name, q, send); err != nil {
		return err
	}
	e.notef("secured the queue %s sends to: only the key in their confirmation can send to it now", name)
	if aerr != nil {
		return aerr
	}
	if string(body) == multiMarker && send != nil {
		if err := e.joinedMulti(name, q); err != nil {
			return err
		}
		e.notef("%s's contact is on several relays: your messages go on each of them", name)
		return nil
	}
	return acceptInfo(e, name, body, send == nil, chat)
}

// acceptInfo handles a confirmation's content. smp accept shows it as text
// and connects to nothing: an invitation in it names a relay the sender
// chose, which would learn this user's address. smp chat, whose flow is to
// answer on the queue the other side offers, connects to it.
func acceptInfo(e *env, name string, info []byte, wantReply, chat bool) error {
	if !chat {
		if len(info) == 0 {
			return nil
		}
		fmt.Fprintln(e.stdout, peerText(info, "  "))
		if _, err := codec.ParseInvitationURI(string(info)); err == nil {
			e.notef("%s's note is an invitation; it was not connected to. To send to it, 'smp connect' it under another contact name", name)
		}
		return nil
	}
	rinv, err := codec.ParseInvitationURI(string(info))
	if err != nil || !wantReply {
		return nil
	}
	sq, err := client.NewSenderQueue(&rinv)
	if err != nil {
		return err
	}
	c, err := e.dial(sq.Server)
	if err != nil {
		return fmt.Errorf("connecting to %s's reply queue: %w", name, err)
	}
	defer c.Close()
	ctx, cancel := e.step()
	defer cancel()
	if err := sq.Confirm(ctx, c, nil); err != nil {
		return fmt.Errorf("confirming %s's reply queue: %w", name, err)
	}
	if err := e.st.update(func(s *State) error {
		ct, err := s.contact(name)
		if err != nil {
			return err
		}
		ct.Send, ct.SendStatus = sq, ""
		return nil
	}); err != nil {
		return err
	}
	e.notef("%s offered a queue for your answers: sent it your confirmation; once they accept it, 'smp send %s' reaches them", name, name)
	return nil
}

// subscribe connects to q's server (with dialFollow when follow is set)
// and subscribes to q; got reports that a message arrived with the answer.
// The caller closes c.
func (e *env) subscribe(q *client.RecipientQueue, follow bool) (c *client.Conn, got bool, err error) {
	if c, err = e.dialWith(q.Server, follow, nil); err != nil {
		return nil, false, err
	}
	ctx, cancel := e.step()
	defer cancel()
	if got, err = q.Subscribe(ctx, c); err != nil {
		c.Close()
		return nil, false, err
	}
	return c, got, nil
}

// nextMessage waits for the next message on q: until the command is
// interrupted when follow is set, else for --timeout at most, so that a
// relay that answers and then sends nothing cannot hold the command.
func (e *env) nextMessage(c *client.Conn, q *client.RecipientQueue, follow bool, onLink func(client.Event) error) (client.Message, error) {
	ctx, cancel := e.ctx, context.CancelFunc(func() {})
	if !follow {
		ctx, cancel = e.step()
	}
	defer cancel()
	return nextMessage(ctx, c, q, onLink)
}

// stopOnLoss is the onLink of a command that does not wait: a lost
// connection ends it, with the reason.
func stopOnLoss(ev client.Event) error {
	if ev.Kind == client.EventDisconnected {
		return fmt.Errorf("lost the connection to the relay: %w", ev.Err)
	}
	return nil
}

// nextMessage waits for the next message on q, turning END and a lost
// subscription into errors; onLink gets the events about the connection,
// and an error it returns ends the wait.
func nextMessage(ctx context.Context, c *client.Conn, q *client.RecipientQueue, onLink func(client.Event) error) (client.Message, error) {
	for {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				return client.Message{}, fmt.Errorf("connection closed: %w", c.Err())
			}
			switch ev.Kind {
			case client.EventMessage:
				if string(ev.RID) == string(q.RID) {
					return ev.Message, nil
				}
			case client.EventEnd:
				if string(ev.RID) == string(q.RID) {
					return client.Message{}, errors.New("another client subscribed to this queue: stopping here")
				}
			case client.EventSubscriptionLost:
				if string(ev.RID) == string(q.RID) {
					return client.Message{}, fmt.Errorf("the server dropped the subscription: %w", ev.Err)
				}
			case client.EventDisconnected, client.EventReconnectFailed, client.EventReconnected:
				if err := onLink(ev); err != nil {
					return client.Message{}, err
				}
			}
		case <-ctx.Done():
			return client.Message{}, ctx.Err()
		}
	}
}

// ---- send ----

// maxInput bounds a message read from standard input: more than any queue
// carries (a 64 KiB block), so that a longer one is reported, not cut.
const maxInput = 1 << 20

func sendFlags(fs *flag.FlagSet) func(*env, []string) error {
	retry := fs.Bool("retry", false, "only send again the message an earlier send could not confirm")
	return func(e *env, args []string) error { return runSend(e, args, *retry) }
}

func runSend(e *env, args []string, retry bool) error {
	name := args[0]
	if retry && len(args) > 1 {
		return errors.New("--retry sends the kept message only: give no message")
	}
	var msg []byte
	switch {
	case retry:
	case len(args) > 1:
		msg = []byte(strings.Join(args[1:], " "))
	default:
		b, err := io.ReadAll(io.LimitReader(e.stdin, maxInput+1))
		if err != nil {
			return fmt.Errorf("reading the message: %w", err)
		}
		if len(b) > maxInput {
			return fmt.Errorf("the message on standard input has more than %d bytes, far more than a queue carries", maxInput)
		}
		msg = b
	}
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi != nil {
		return sendMulti(e, name, ct, msg, retry)
	}
	sq := ct.Send
	if sq == nil {
		return fmt.Errorf("you have no queue to send to %s: connect to their invitation first", name)
	}
	if retry && sq.Pending == nil {
		e.notef("no message to %s is waiting to be sent again", name)
		return nil
	}
	return e.once(sq.Server, func(ctx context.Context, c *client.Conn) error {
		if retry {
			return e.sendPending(ctx, c, name, sq)
		}
		return e.sendMessage(ctx, c, name, sq, msg)
	})
}

// ---- receive ----

func receiveFlags(fs *flag.FlagSet) func(*env, []string) error {
	follow := fs.Bool("follow", false, "keep listening for new messages until interrupted")
	return func(e *env, args []string) error { return receive(e, args[0], *follow) }
}

func receive(e *env, name string, follow bool) error {
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi != nil {
		return receiveMulti(e, name, ct, follow)
	}
	q := ct.Recv
	switch {
	case q == nil:
		return fmt.Errorf("you have no queue that %s sends to", name)
	case !q.Secured:
		return fmt.Errorf("the queue %s sends to is not secured yet: run 'smp accept %s' first", name, name)
	}
	var c *client.Conn
	var got bool
	onLink := stopOnLoss
	if follow {
		onLink = e.linkNotice(q.Server.Addr)
		c, got, err = e.subscribeRetrying(q)
	} else {
		c, got, err = e.subscribe(q, false)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	if !got && !follow {
		e.notef("no messages from %s", name)
		return nil
	}
	w := bufio.NewWriter(e.stdout)
	var lastDropped string
	for {
		m, err := e.nextMessage(c, q, follow, onLink)
		if err != nil {
			return err
		}
		if body, ok := e.judge(name, q, m, &lastDropped); ok {
			fmt.Fprintln(w, peerText(body, "  "))
			if err := w.Flush(); err != nil {
				return err
			}
			if err := e.shown(name, q); err != nil {
				return err
			}
		}
		ctx, cancel := e.step()
		more, err := q.Ack(ctx, c)
		cancel()
		if err != nil && follow && e.ctx.Err() == nil && c.Err() == nil {
			// The link broke or stalled: the Conn reconnects and the server
			// delivers the message again, which is acknowledged then.
			continue
		}
		if err != nil {
			return err
		}
		if !more && !follow {
			return nil
		}
	}
}

// subscribeRetrying is subscribe that waits for the relay: while it cannot
// be reached, it says so and tries again with exponential backoff.
func (e *env) subscribeRetrying(q *client.RecipientQueue) (*client.Conn, bool, error) {
	wait, failed := minBackoff, false
	for {
		c, got, err := e.subscribe(q, true)
		if err == nil {
			if failed {
				e.notef("connected to relay %s", q.Server.Addr)
			}
			return c, got, nil
		}
		if !retryable(err) || e.ctx.Err() != nil {
			return nil, false, err
		}
		failed = true
		e.notef("%s; retrying in %v", describe(err, e.timeout), wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-e.ctx.Done():
			t.Stop()
			return nil, false, e.ctx.Err()
		}
		wait = min(2*wait, maxBackoff)
	}
}

// linkNotice returns what tells the user about the connection to the relay
// at addr of a long-running command.
func (e *env) linkNotice(addr string) func(client.Event) error {
	return func(ev client.Event) error {
		switch ev.Kind {
		case client.EventDisconnected:
			e.notef("connection lost; reconnecting…")
		case client.EventReconnectFailed:
			err := e.relayError(addr, ev.Err)
			e.notef("%v; retrying in %v", err, ev.Retry.Round(100*time.Millisecond))
		case client.EventReconnected:
			e.notef("reconnected")
		}
		return nil
	}
}

// ---- suspend, delete, list ----

func runSuspend(e *env, args []string) error {
	name := args[0]
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi != nil {
		return suspendMulti(e, name, ct)
	}
	q := ct.Recv
	if q == nil {
		return fmt.Errorf("you have no queue that %s sends to (only a queue's owner can suspend it)", name)
	}
	if err := e.once(q.Server, q.Suspend); err != nil {
		return err
	}
	if err := e.setContact(name, q, ct.Send); err != nil {
		return err
	}
	e.notef("suspended the queue %s sends to: the server refuses their messages now", name)
	return nil
}

func runDelete(e *env, args []string) error {
	name := args[0]
	ct, err := e.contact(name)
	if err != nil {
		return err
	}
	if ct.Multi != nil {
		if err := deleteMulti(e, name, ct); err != nil {
			return err
		}
	}
	if q := ct.Recv; q != nil {
		switch err := e.once(q.Server, q.Delete); {
		case errors.Is(err, codec.ErrAuth):
			e.notef("the server no longer has the queue %s sent to", name)
		case err != nil:
			return err
		default:
			e.notef("deleted the queue %s sends to, with its messages", name)
		}
	}
	if err := e.st.update(func(s *State) error {
		delete(s.Contacts, name)
		return nil
	}); err != nil {
		return err
	}
	e.notef("forgot %s", name)
	return nil
}

func runList(e *env, _ []string) error {
	s, err := e.st.load()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tQUEUE\tSTATUS\tKEY\tSERVER")
	for _, name := range s.names() {
		ct := s.Contacts[name]
		if ct.Multi != nil {
			listMulti(tw, name, ct.Multi)
			continue
		}
		if q := ct.Recv; q != nil {
			status := "waiting for confirmation"
			switch {
			case q.Suspended:
				status = "suspended"
			case q.Secured:
				status = "secured"
			}
			fmt.Fprintf(tw, "%s\treceive\t%s\t%v\t%s\n", name, status, q.EncryptionKey.Public().Type(), q.Server.Addr)
		}
		if q := ct.Send; q != nil {
			status := "confirmation sent"
			switch ct.SendStatus {
			case sendSecured:
				status = "secured"
			case sendRefused:
				status = "refused (suspended or deleted)"
			}
			if q.Pending != nil {
				status += fmt.Sprintf(", message %d kept to send again", q.Pending.Seq)
			}
			fmt.Fprintf(tw, "%s\tsend\t%s\t%v\t%s\n", name, status, q.EncryptionKey.Type(), q.Server.Addr)
		}
	}
	return tw.Flush()
}
