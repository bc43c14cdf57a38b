package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/smprelay/smprelay/client/e2e"
	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/internal/errwrap"
)

// ErrDropped reports a message that was acknowledged and dropped because it
// does not open with the queue's key, or is not what the queue expects: how
// a recipient ignores forged confirmations (SPEC §10).
var ErrDropped = errors.New("client: message dropped")

// SigningKey is a signature key pair (a recipient key RK or a sender key SK)
// whose private half can be stored. It is immutable and safe for concurrent
// use.
type SigningKey struct {
	priv   crypto.Signer
	signer *codec.Signer
}

// GenerateSigningKey returns a new Ed25519 key.
func GenerateSigningKey() (*SigningKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("client: generating a signature key: %w", err)
	}
	return newSigningKey(priv)
}

// NewSigningKey wraps an ed25519.PrivateKey or *rsa.PrivateKey that SPEC §2
// allows.
func NewSigningKey(priv crypto.Signer) (*SigningKey, error) { return newSigningKey(priv) }

func newSigningKey(priv crypto.Signer) (*SigningKey, error) {
	s, err := codec.NewSigner(priv)
	if err != nil {
		return nil, err
	}
	return &SigningKey{priv: priv, signer: s}, nil
}

// ParseSigningKey parses the PKCS#8 DER that MarshalBinary returns.
func ParseSigningKey(der []byte) (*SigningKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("client: signature key: %w", err)
	}
	priv, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("client: signature key: PKCS#8 holds %T", k)
	}
	return newSigningKey(priv)
}

// ParseSigningKeyPEM parses a private key in a PEM "PRIVATE KEY" block
// (PKCS#8), as 'openssl genpkey -algorithm ed25519' writes it: how a creator
// key (Options.CreatorKey) is stored. Text around the block is ignored; an
// encrypted key or a block of another type is an error that says so.
func ParseSigningKeyPEM(data []byte) (*SigningKey, error) {
	b, _ := pem.Decode(data)
	switch {
	case b == nil:
		return nil, errors.New(`client: signature key: no PEM block: want "-----BEGIN PRIVATE KEY-----" (PKCS#8)`)
	case b.Type == "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("client: signature key: the PEM key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN)")
	case b.Type != "PRIVATE KEY":
		return nil, fmt.Errorf(`client: signature key: PEM block %q: want "PRIVATE KEY" (PKCS#8; openssl pkey converts)`, b.Type)
	}
	return ParseSigningKey(b.Bytes)
}

// MarshalPEM returns the private key as a PEM "PRIVATE KEY" block (PKCS#8),
// which ParseSigningKeyPEM and openssl read.
func (k *SigningKey) MarshalPEM() ([]byte, error) {
	der, err := k.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// MarshalBinary returns the private key as PKCS#8 DER.
func (k *SigningKey) MarshalBinary() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k.priv) }

// Signer returns the key as the codec signs with it.
func (k *SigningKey) Signer() *codec.Signer { return k.signer }

// PublicSPKI returns the public key as SubjectPublicKeyInfo DER, what NEW and
// KEY carry.
func (k *SigningKey) PublicSPKI() []byte { return k.signer.PublicSPKI() }

// Server names a relay: where it listens and the fingerprint of its
// transport key.
type Server struct {
	Addr        string `json:"addr"`        // host:port
	Fingerprint string `json:"fingerprint"` // base64 SHA-256 of the typed transport key (SPEC §2)
}

// ServerOf returns the server an invitation names.
func ServerOf(inv *codec.Invitation) Server {
	return Server{Addr: inv.Addr(), Fingerprint: inv.ServerKeyHash}
}

// DialServer is Dial with opts.Fingerprint set to s.Fingerprint.
func DialServer(ctx context.Context, s Server, opts Options) (*Conn, error) {
	opts.Fingerprint = s.Fingerprint
	return Dial(ctx, s.Addr, opts)
}

// RecipientQueue is what the recipient (Alice in the seed) keeps about a
// queue she receives on. The keys are new for each queue (seed: "unique
// keys").
//
// The seed has Alice delete SID and SK once the queue is secured, so that
// whoever compromises her client later cannot send as Bob. SPEC §10 has her
// verify every message with SK over bytes that include SID, so she keeps
// both; the seed's aim still holds, since sending takes SK's private half,
// which only Bob has. She no longer hands out the invitation.
type RecipientQueue struct {
	Server        Server
	RID           []byte
	SID           []byte // nil in a queue stored by a client that forgot it once secured
	RecipientKey  *SigningKey
	EncryptionKey *codec.KEMPrivateKey // EK: senders seal to its public half
	Secured       bool                 // KEY succeeded
	Suspended     bool                 // OFF succeeded

	// SenderKey is SK, the key the queue was secured with (SPKI DER): every
	// message after the confirmation must be signed by it. Nil on a queue
	// secured by a client that did not keep it; Receive then drops every
	// message (DropNoSenderKey).
	SenderKey []byte
	// LastSeq is the seq of the last message shown, 0 until one is (SPEC
	// §10). Receive advances it: store the queue before acknowledging.
	LastSeq uint64
	// LastMsgID is the server's msgId of that message, so that the same
	// message delivered again because its ACK was lost is recognised.
	LastMsgID []byte

	sk *codec.VerifyKey // parsed SenderKey, on first use
}

// CreateQueue carries out the seed's first step on c: new keys RK and EK
// (EK of kind kem), NEW, and the record that the invitation and every later
// command need. c is then subscribed to the queue.
func CreateQueue(ctx context.Context, c *Conn, kem codec.KEMType) (*RecipientQueue, error) {
	rk, err := GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	ek, err := codec.GenerateKEMKey(kem)
	if err != nil {
		return nil, fmt.Errorf("client: generating the encryption key: %w", err)
	}
	ids, err := c.NewQueue(ctx, rk.Signer())
	if err != nil {
		return nil, err
	}
	return &RecipientQueue{
		Server: Server{Addr: c.Addr(), Fingerprint: c.Fingerprint()},
		RID:    ids.RID, SID: ids.SID, RecipientKey: rk, EncryptionKey: ek,
	}, nil
}

// Invitation returns the out-of-band message for the sender (SPEC §9). It
// fails once the queue is secured: the queue has its sender.
func (q *RecipientQueue) Invitation() (codec.Invitation, error) {
	if q.Secured || q.SID == nil {
		return codec.Invitation{}, errors.New("client: the queue is secured: its invitation is no longer handed out")
	}
	host, portText, err := net.SplitHostPort(q.Server.Addr)
	if err != nil {
		return codec.Invitation{}, fmt.Errorf("client: server address %q: %w", q.Server.Addr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil || port == 0 {
		return codec.Invitation{}, fmt.Errorf("client: server address %q: bad port", q.Server.Addr)
	}
	inv := codec.Invitation{
		EncryptionKey: q.EncryptionKey.Public(), SenderID: q.SID, Host: host, Port: uint16(port),
		ServerKeyHash: q.Server.Fingerprint,
	}
	// Round-trip through the parser so that an address that no invitation
	// can carry (say, a host with an underscore) is reported here.
	if _, err := codec.ParseInvitationURI(inv.URI()); err != nil {
		return codec.Invitation{}, err
	}
	return inv, nil
}

// Subscribe subscribes c to the queue; see Conn.Subscribe.
func (q *RecipientQueue) Subscribe(ctx context.Context, c *Conn) (gotMsg bool, err error) {
	return c.Subscribe(ctx, q.RID, q.RecipientKey.Signer())
}

// Ack acknowledges the message last delivered; see Conn.Ack.
func (q *RecipientQueue) Ack(ctx context.Context, c *Conn) (gotMsg bool, err error) {
	return c.Ack(ctx, q.RID, q.RecipientKey.Signer())
}

// Open opens a message of the queue with EK. An error wraps e2e.ErrOpen.
// It judges neither the header nor the signature: Receive does.
func (q *RecipientQueue) Open(m Message) (e2e.Envelope, error) {
	return e2e.Open(q.EncryptionKey, m.Body)
}

// OpenOrDrop opens m, or acknowledges it and returns an error wrapping
// ErrDropped when it does not open (SPEC §10): the caller goes on with the
// next message. The caller acknowledges a message that opened once it has
// kept it. Like Open, it does not check the signature: on a secured queue
// use Receive.
func (q *RecipientQueue) OpenOrDrop(ctx context.Context, c *Conn, m Message) (e2e.Envelope, error) {
	env, err := q.Open(m)
	if err == nil {
		return env, nil
	}
	if _, aerr := q.Ack(ctx, c); aerr != nil {
		return e2e.Envelope{}, errwrap.Wrap(fmt.Errorf("%w (%w), and acknowledging it failed", ErrDropped, err), aerr)
	}
	return e2e.Envelope{}, fmt.Errorf("%w: %w", ErrDropped, err)
}

// Accept handles a message on a queue that is not secured yet (seed steps 4
// and 5): when m opens and is a confirmation, it secures the queue with the
// sender key it carries (KEY), acknowledges it, marks q secured and returns
// the confirmation's body (the sender's optional information), which SK does
// not sign: show it as unverified text (SPEC §10). Anything else is acknowledged and dropped, and the error
// wraps ErrDropped: forged confirmations, sealed to another key, end here.
func (q *RecipientQueue) Accept(ctx context.Context, c *Conn, m Message) (info []byte, err error) {
	env, err := q.OpenOrDrop(ctx, c, m)
	if err != nil {
		return nil, err
	}
	sk, ok := env.SenderKey()
	if !ok {
		if _, err := q.Ack(ctx, c); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: not a confirmation (header %q)", ErrDropped, env.Header)
	}
	if err := q.Secure(ctx, c, sk); err != nil {
		return nil, err
	}
	if _, err := q.Ack(ctx, c); err != nil {
		return env.Body, err
	}
	return env.Body, nil
}

// Secure sets the queue's sender key (KEY, seed step 5) and marks q
// secured. It keeps the sender key, which every later message must be
// signed by, and starts the count of messages: LastSeq 0 (SPEC §10).
func (q *RecipientQueue) Secure(ctx context.Context, c *Conn, senderKey []byte) error {
	vk, err := codec.ParseVerifyKey(senderKey)
	if err != nil {
		return fmt.Errorf("client: sender key: %w", err)
	}
	if err := c.Secure(ctx, q.RID, q.RecipientKey.Signer(), senderKey); err != nil {
		return err
	}
	q.Secured = true
	q.SenderKey, q.sk = bytes.Clone(senderKey), vk
	q.LastSeq, q.LastMsgID = 0, nil
	return nil
}

// Suspend suspends the queue (OFF) and marks q suspended.
func (q *RecipientQueue) Suspend(ctx context.Context, c *Conn) error {
	if err := c.Suspend(ctx, q.RID, q.RecipientKey.Signer()); err != nil {
		return err
	}
	q.Suspended = true
	return nil
}

// Delete deletes the queue and its messages (DEL).
func (q *RecipientQueue) Delete(ctx context.Context, c *Conn) error {
	return c.Delete(ctx, q.RID, q.RecipientKey.Signer())
}

// recipientJSON is the stored form. Fields added later are omitempty, so a
// file written before them reads as zero: no sender key, LastSeq 0.
type recipientJSON struct {
	Server        Server `json:"server"`
	RID           []byte `json:"rid"`
	SID           []byte `json:"sid,omitempty"`
	RecipientKey  []byte `json:"recipientKey"`  // PKCS#8 DER
	EncryptionKey []byte `json:"encryptionKey"` // codec.KEMPrivateKey.MarshalBinary
	Secured       bool   `json:"secured"`
	Suspended     bool   `json:"suspended"`
	SenderKey     []byte `json:"senderKey,omitempty"` // SPKI DER
	LastSeq       uint64 `json:"lastSeq,omitempty"`
	LastMsgID     []byte `json:"lastMsgId,omitempty"`
}

// MarshalJSON stores the queue with its private keys: keep the result
// secret.
func (q RecipientQueue) MarshalJSON() ([]byte, error) {
	rk, err := q.RecipientKey.MarshalBinary()
	if err != nil {
		return nil, err
	}
	ek, err := q.EncryptionKey.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(recipientJSON{
		Server: q.Server, RID: q.RID, SID: q.SID, RecipientKey: rk, EncryptionKey: ek, Secured: q.Secured, Suspended: q.Suspended,
		SenderKey: q.SenderKey, LastSeq: q.LastSeq, LastMsgID: q.LastMsgID,
	})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (q *RecipientQueue) UnmarshalJSON(b []byte) error {
	var j recipientJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	rk, err := ParseSigningKey(j.RecipientKey)
	if err != nil {
		return err
	}
	ek, err := codec.ParseKEMPrivateKey(j.EncryptionKey)
	if err != nil {
		return err
	}
	if len(j.RID) != codec.QueueIDSize {
		return fmt.Errorf("client: stored RID has %d bytes", len(j.RID))
	}
	*q = RecipientQueue{
		Server: j.Server, RID: j.RID, SID: j.SID, RecipientKey: rk, EncryptionKey: ek, Secured: j.Secured, Suspended: j.Suspended,
		SenderKey: j.SenderKey, LastSeq: j.LastSeq, LastMsgID: j.LastMsgID,
	}
	return nil
}

// SenderQueue is what the sender (Bob in the seed) keeps about a queue he
// sends to: the invitation's server, sender ID and EK, his own sender key
// SK, and the numbering of his messages (SPEC §10).
type SenderQueue struct {
	Server        Server
	SID           []byte
	EncryptionKey *codec.KEMPublicKey
	SenderKey     *SigningKey
	Confirmed     bool // the confirmation was sent

	// NextSeq is the seq of the next message: 1 on a new queue (0 reads as
	// 1). Prepare advances it; store it before sending.
	NextSeq uint64
	// Pending is the message last prepared, until the server is known to
	// have stored it or to have refused it for good; it is sent again,
	// unchanged, before any new message.
	Pending *Outgoing
}

// NewSenderQueue starts the sender's side of an invitation (seed step 3.1):
// a new sender key SK for this queue alone.
func NewSenderQueue(inv *codec.Invitation) (*SenderQueue, error) {
	sk, err := GenerateSigningKey()
	if err != nil {
		return nil, err
	}
	return &SenderQueue{Server: ServerOf(inv), SID: inv.SenderID, EncryptionKey: inv.EncryptionKey, SenderKey: sk, NextSeq: 1}, nil
}

// MaxMessage returns the largest message Send takes on c: the padded size
// of SPEC §10 less its framing and the longest signed header, so that the
// limit does not depend on the message's seq.
func (s *SenderQueue) MaxMessage(c *Conn) (int, error) {
	return e2e.MaxBody(s.EncryptionKey, c.MaxBody(), s.SenderKey.Signer().VerifyKey().SigLen())
}

// Confirm sends the confirmation (seed steps 3.2–3.4): the header
// "KEY <SK>" and info, sealed to EK, unsigned. It may be sent again until
// the recipient secures the queue.
func (s *SenderQueue) Confirm(ctx context.Context, c *Conn, info []byte) error {
	body, err := e2e.Seal(s.EncryptionKey, c.MaxBody(), e2e.ConfirmationHeader(s.SenderKey.PublicSPKI()), info)
	if err != nil {
		return err
	}
	if err := c.Send(ctx, s.SID, nil, body); err != nil {
		return err
	}
	s.Confirmed = true
	return nil
}

// Send sends msg as the next message, numbered and signed (Prepare), sealed
// to EK and sent signed by SK (SendPrepared), after sending again a message
// still pending from an earlier Send (SendPending). Until the recipient has
// secured the queue the server answers ERR AUTH (errors.Is(err,
// codec.ErrAuth)), as it does once the queue is suspended or deleted.
// Callers that store the queue between runs use those three steps and store
// it before each send.
func (s *SenderQueue) Send(ctx context.Context, c *Conn, msg []byte) error {
	if err := s.SendPending(ctx, c); err != nil {
		return err
	}
	o, err := s.Prepare(msg)
	if err != nil {
		return err
	}
	err = s.SendPrepared(ctx, c, o)
	s.Sent(o, err)
	return err
}

// senderJSON is the stored form. Fields added later are omitempty, so a
// file written before them reads as zero: NextSeq 1, nothing pending.
type senderJSON struct {
	Server        Server    `json:"server"`
	SID           []byte    `json:"sid"`
	EncryptionKey []byte    `json:"encryptionKey"` // typed KEM public key
	SenderKey     []byte    `json:"senderKey"`     // PKCS#8 DER
	Confirmed     bool      `json:"confirmed"`
	NextSeq       uint64    `json:"nextSeq,omitempty"`
	Pending       *Outgoing `json:"pending,omitempty"`
}

// MarshalJSON stores the queue with the private sender key: keep the result
// secret.
func (s SenderQueue) MarshalJSON() ([]byte, error) {
	sk, err := s.SenderKey.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(senderJSON{s.Server, s.SID, s.EncryptionKey.Bytes(), sk, s.Confirmed, max(s.NextSeq, 1), s.Pending})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *SenderQueue) UnmarshalJSON(b []byte) error {
	var j senderJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	ek, err := codec.ParseKEMPublicKey(j.EncryptionKey)
	if err != nil {
		return err
	}
	sk, err := ParseSigningKey(j.SenderKey)
	if err != nil {
		return err
	}
	if len(j.SID) != codec.QueueIDSize {
		return fmt.Errorf("client: stored SID has %d bytes", len(j.SID))
	}
	if p := j.Pending; p != nil && (p.Seq == 0 || p.Seq >= max(j.NextSeq, 1)) {
		return fmt.Errorf("client: stored pending message %d is not below the next, %d", p.Seq, max(j.NextSeq, 1))
	}
	*s = SenderQueue{j.Server, j.SID, ek, sk, j.Confirmed, max(j.NextSeq, 1), j.Pending}
	return nil
}
