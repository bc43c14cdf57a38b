package client

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// A contact is a duplex conversation over queues on several relays in each
// direction (docs/contacts.md). Every message of the contact goes on every
// queue the sender sends to, numbered by a contact-wide sequence number; the
// receiver shows each number once, in order. The relays see nothing new:
// the contact header below is the start of SPEC §10's clientBody, inside
// what e2eSig covers.
//
// Contact body (ABNF, RFC 5234; the clientBody of SPEC §10):
//
//	contactBody   = contactHeader CRLF payload
//	contactHeader = %s"SMPC/1" SP cseq SP msgId SP kind
//	cseq          = %x31-39 *19DIGIT   ; 1 … 2^64−1, the contact-wide order
//	msgId         = 12base64char       ; 8 random bytes, base64 with padding (SPEC §2)
//	kind          = %s"TEXT" / %s"QNEW" / %s"QKEY" / %s"QREADY" / %s"QEND"
//	payload       = *OCTET             ; see ContactKind
//
// The sender uses cseq as the message's SPEC §10 seq on every queue it sends
// it on, so a queue's seqs rise with the contact's order and a message sent
// again after a failure is the same on the wire.

// ContactConfirmation is the body of the creator's confirmation of the
// queue a joiner offered (docs/contacts.md, "Setting up"). SPEC §9's
// invitation cannot say which kind of conversation it opens, so this is
// how a joiner such as smp tells a contact in this format from a
// one-queue conversation, whose creator confirms with an empty body.
const ContactConfirmation = "SMPC/1 contact"

// ContactKind is what a contact message carries.
type ContactKind string

// Kinds of contact messages. All but TEXT are control messages of queue
// rotation (docs/contacts.md); the payloads are:
//
//	text     = *OCTET                          ; TEXT: the user's message
//	qnew     = replaced SP mirror SP uri       ; QNEW: a queue of mine for you to send to
//	replaced = base64 / "-"                    ; SID of my queue it replaces, "-" for none
//	mirror   = "0" / "1"                       ; "1": do the same on your side
//	uri      = <SPEC §9 URI form>
//	qkey     = sid SP senderKey                ; QKEY: I will send to your queue sid signed by senderKey (base64 SPKI)
//	qready   = sid                             ; QREADY: your queue sid is secured with that key: send on it
//	qend     = sid                             ; QEND: I send nothing more to your queue sid: delete it
const (
	KindText   ContactKind = "TEXT"
	KindQNew   ContactKind = "QNEW"
	KindQKey   ContactKind = "QKEY"
	KindQReady ContactKind = "QREADY"
	KindQEnd   ContactKind = "QEND"
)

const contactTag = "SMPC/1"

// contactMsgIDSize is the size of a contact message ID, that of SPEC §2's
// message IDs.
const contactMsgIDSize = 8

// maxContactHeader is the longest contactHeader and its CRLF: the tag, 20
// digits, the ID and the longest kind.
const maxContactHeader = len(contactTag) + 1 + 20 + 1 + 12 + 1 + len(KindQReady) + 2

// ErrContactBody reports a clientBody that is not a contact body.
var ErrContactBody = errors.New("client: not a contact message")

// ContactMsg is one message of a contact as its sender keeps it until every
// queue it goes on has stored it. Stored in ContactState.Outbox.
type ContactMsg struct {
	Seq     uint64      `json:"seq"`
	ID      []byte      `json:"id"`
	Kind    ContactKind `json:"kind"`
	Payload []byte      `json:"payload,omitempty"`
}

func newContactMsg(seq uint64, kind ContactKind, payload []byte) (ContactMsg, error) {
	id := make([]byte, contactMsgIDSize)
	if _, err := rand.Read(id); err != nil {
		return ContactMsg{}, fmt.Errorf("client: contact message ID: %w", err)
	}
	return ContactMsg{Seq: seq, ID: id, Kind: kind, Payload: payload}, nil
}

// body returns the clientBody that carries m.
func (m ContactMsg) body() []byte {
	b := make([]byte, 0, maxContactHeader+len(m.Payload))
	b = append(b, contactTag...)
	b = append(b, ' ')
	b = strconv.AppendUint(b, m.Seq, 10)
	b = append(b, ' ')
	b = base64.StdEncoding.AppendEncode(b, m.ID)
	b = append(b, ' ')
	b = append(b, m.Kind...)
	b = append(b, '\r', '\n')
	return append(b, m.Payload...)
}

// parseContactBody reads a clientBody written by body. The kind is not
// checked against the known ones: a receiver ignores kinds it does not
// know, in their place in the order.
func parseContactBody(b []byte) (ContactMsg, error) {
	line, payload, ok := bytes.Cut(b, []byte("\r\n"))
	if !ok {
		return ContactMsg{}, fmt.Errorf("%w: no CRLF after the header", ErrContactBody)
	}
	f := bytes.Split(line, []byte(" "))
	if len(f) != 4 || string(f[0]) != contactTag {
		return ContactMsg{}, fmt.Errorf("%w: header %.40q is not %q cseq msgId kind", ErrContactBody, line, contactTag)
	}
	seq, err := strconv.ParseUint(string(f[1]), 10, 64)
	if err != nil || seq == 0 || f[1][0] == '0' {
		return ContactMsg{}, fmt.Errorf("%w: cseq %.24q", ErrContactBody, f[1])
	}
	id, err := base64.StdEncoding.Strict().DecodeString(string(f[2]))
	if err != nil || len(id) != contactMsgIDSize {
		return ContactMsg{}, fmt.Errorf("%w: msgId %.24q is not %d bytes in base64", ErrContactBody, f[2], contactMsgIDSize)
	}
	if len(f[3]) == 0 || len(f[3]) > 16 {
		return ContactMsg{}, fmt.Errorf("%w: kind %.24q", ErrContactBody, f[3])
	}
	for _, c := range f[3] {
		if c < 'A' || c > 'Z' {
			return ContactMsg{}, fmt.Errorf("%w: kind %.24q", ErrContactBody, f[3])
		}
	}
	return ContactMsg{Seq: seq, ID: id, Kind: ContactKind(f[3]), Payload: payload}, nil
}

// sidText is a queue's sender ID as control payloads carry it.
func sidText(sid []byte) string { return base64.StdEncoding.EncodeToString(sid) }

func parseSID(b []byte) ([]byte, error) {
	sid, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil || len(sid) != 16 {
		return nil, fmt.Errorf("%w: queue ID %.32q", ErrContactBody, b)
	}
	return sid, nil
}

// qnewPayload and parseQNew are the QNEW payload.
func qnewPayload(replaced []byte, mirror bool, uri string) []byte {
	r := "-"
	if replaced != nil {
		r = sidText(replaced)
	}
	m := "0"
	if mirror {
		m = "1"
	}
	return []byte(r + " " + m + " " + uri)
}

func parseQNew(p []byte) (replaced []byte, mirror bool, uri string, err error) {
	f := bytes.SplitN(p, []byte(" "), 3)
	if len(f) != 3 || (string(f[1]) != "0" && string(f[1]) != "1") {
		return nil, false, "", fmt.Errorf("%w: QNEW payload", ErrContactBody)
	}
	if string(f[0]) != "-" {
		if replaced, err = parseSID(f[0]); err != nil {
			return nil, false, "", err
		}
	}
	return replaced, string(f[1]) == "1", string(f[2]), nil
}

func qkeyPayload(sid, spki []byte) []byte {
	return []byte(sidText(sid) + " " + base64.StdEncoding.EncodeToString(spki))
}

func parseQKey(p []byte) (sid, spki []byte, err error) {
	a, b, ok := bytes.Cut(p, []byte(" "))
	if !ok {
		return nil, nil, fmt.Errorf("%w: QKEY payload", ErrContactBody)
	}
	if sid, err = parseSID(a); err != nil {
		return nil, nil, err
	}
	if spki, err = base64.StdEncoding.Strict().DecodeString(string(b)); err != nil || len(spki) == 0 {
		return nil, nil, fmt.Errorf("%w: QKEY sender key", ErrContactBody)
	}
	return sid, spki, nil
}
