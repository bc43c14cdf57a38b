// Package client is the Go client of an SMP v1 relay (SPEC.md): it dials a
// server with its transport key pinned, carries out the commands of SPEC §5,
// delivers messages, and keeps the connection alive across network failures.
// It is the client the smp command, the benchmark and the integration tests
// use.
//
// # Layers
//
//   - Conn is one logical connection to one server: Dial (fingerprint
//     pinning and the handshake of SPEC §3 for the rsa, x25519 and
//     mlkem768x25519 transport keys), the commands (NewQueue, Subscribe,
//     Secure, Ack, Suspend, Delete, Send, Ping), events (messages pushed by
//     the server, END, reconnections), a PING keep-alive, and automatic
//     reconnection with exponential backoff that subscribes again to every
//     queue the Conn was subscribed to.
//   - RecipientQueue and SenderQueue hold what each side of a queue keeps
//     (IDs, keys, server) and carry out the seed's procedure on a Conn:
//     CreateQueue and Invitation for the recipient, NewSenderQueue and
//     Confirm for the sender, Accept to secure the queue with the sender's
//     key, Send and Receive for the messages. Every body is end-to-end
//     encrypted with package e2e (SPEC §10), so the server only sees opaque
//     bodies of one size.
//   - Every message after the confirmation is numbered and signed by the
//     sender key (SPEC §10). The sender stores NextSeq and the Pending
//     message before sending (Prepare, SendPrepared, Sent) and sends a
//     message whose SEND may not have been stored again, unchanged. The
//     recipient's Receive shows a message only if its signature verifies
//     and its seq is above LastSeq, reports the seqs skipped, and returns a
//     DropReason for everything else, which the caller acknowledges and
//     reports.
//
// # Contacts
//
// A Contact (CreateContact, JoinContact, OpenContact) is a duplex
// conversation over queues on several relays in each direction, the
// client-side redundancy of the seed: every message goes on every queue the
// contact sends to, numbered by a contact-wide seq carried at the start of
// clientBody (under e2eSig), and the receiver shows each number once, in
// order, acting only on messages that passed Receive. A relay that is down
// or answers errors is retried in the background; AddRelay and Switch add
// or move queues with control messages inside the conversation, with no new
// invitation. ContactState is the JSON-serialisable state; the Contact owns
// it while it runs. docs/contacts.md has the envelope's ABNF, the rotation
// steps, and what a relay can and cannot do.
//
// # Concurrency
//
// A Conn is safe for use by many goroutines. Each command gets a fresh
// correlation ID, is signed by the calling goroutine and queued; one writer
// goroutine packs every transmission that is ready into as few blocks as
// possible, and one reader goroutine matches each response to its command by
// correlation ID, so any number of commands can be in flight at once. A
// command returns when its response arrives, when its context ends, or when
// the connection carrying it breaks (the error then wraps ErrConnLost: the
// server may or may not have carried it out). A command issued while the Conn
// is reconnecting waits for the new connection, within its context.
//
// Every command without a deadline in its context gets Options.Timeout, so
// no call waits forever on a server that stopped answering.
//
// Messages (MSG) and other things that happen on their own arrive as Events,
// in order, on the channel Events returns or through Options.OnEvent. The
// reader never blocks on a slow consumer: events wait in an internal queue,
// bounded by Options.MaxEvents (see there for what happens when it is full).
// A MSG that answers Subscribe or Ack is delivered as an event too, before
// that call returns.
//
// # A hostile relay
//
// The Conn checks what the relay sends before it keeps anything of it. An
// answer must carry its command's queue ID and be of a kind SPEC §5 allows
// for the command; a MSG or END the relay sends on its own must be for a
// queue this Conn is subscribed to, and a MSG must not come while the
// previous one on that queue awaits ACK. Anything else fails the link with
// ErrProtocol, which names what the relay did, so per-queue state exists only
// for queues the Conn subscribed to, and the messages waiting are at most one
// per queue and command. After such a failure the Conn reconnects only after
// a backoff wait. Dial and every reconnection attempt end within
// Options.Timeout, whatever the relay sends or withholds. What the relay can
// still do — withhold or delay messages, choose their timestamps, deliver a
// message again (Message.Redelivered marks the same message ID delivered
// again) — is for the end-to-end layer (SPEC §10) and the application.
//
// # Tor
//
// Options.Proxy sends every connection, reconnections included, through a
// SOCKS5 proxy such as Tor's, with the relay's host name handed to the proxy
// unresolved, so the process looks up no relay name. Without a proxy, a
// relay whose host ends in .onion is refused with ErrOnionNeedsProxy before
// anything is dialed or looked up.
//
// # Creator keys
//
// A relay may take new queues only from holders of one of its creator keys
// (SPEC §5, smp-server --creator-keys). Options.CreatorKey then signs every
// NEW of the Conn in place of the recipient key; ParseSigningKeyPEM reads
// the PKCS#8 PEM file the relay's operator hands out. Only NEW needs it: a
// sender, and every other command, is unaffected. A refused NEW fails with
// ErrCreateRefused.
//
// RecipientQueue and SenderQueue values are not safe for concurrent mutation;
// their methods that only read them may run concurrently.
package client
