// Package enginetest holds helpers for the tests outside package engine that
// drive an *engine.Engine (on a wal.Log, a diskstore.Store, …). Package
// engine's own tests cannot import it: it imports engine.
package enginetest

import (
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/smprelay/smprelay/engine"
	"github.com/smprelay/smprelay/store"
)

// A Body renders the body of r, a store.MessageStored record of a Snapshot,
// for State. An error fails the test.
type Body func(r *store.Record) (string, error)

// InlineBody renders r.Body, the body the record carries, quoted:
// body="…". It suits a store that keeps every body inline.
func InlineBody(r *store.Record) (string, error) {
	return fmt.Sprintf("body=%q", r.Body), nil
}

// StoredBody renders the body of r as s keeps it: read back from s (by
// ref) when r carries a ref, else r.Body; it must be r.Size bytes long. It
// is shown by its size and SHA-256: size=… sha=….
func StoredBody(s store.Store) Body {
	return func(r *store.Record) (string, error) {
		body := r.Body
		if r.Ref != 0 {
			b, err := s.ReadBody(r.RID, r.MsgID, r.Ref, nil)
			if err != nil {
				return "", fmt.Errorf("reading the body of message %x: %w", r.MsgID, err)
			}
			body = b
		}
		if len(body) != r.Size {
			return "", fmt.Errorf("message %x: %d bytes read, size %d", r.MsgID, len(body), r.Size)
		}
		return fmt.Sprintf("size=%d sha=%x", r.Size, sha256.Sum256(body)), nil
	}
}

// State renders e's state canonically, from its own Snapshot: one block per
// queue, sorted, with the queue's records in the snapshot's order, each
// message's body rendered by body. Two engines with the same queues, keys,
// flags and messages (msgId, timestamp, body, order) render the same string.
// Creation times are left out. A record of an unknown kind, an error of body
// or of Snapshot fails the test.
func State(t testing.TB, e *engine.Engine, body Body) string {
	t.Helper()
	per := map[[16]byte][]string{}
	err := e.Snapshot(func(r *store.Record) error {
		var line string
		switch r.Kind {
		case store.QueueCreated:
			line = fmt.Sprintf("created sid=%x rk=%x", r.SID, r.RecipientKey.SPKI())
		case store.QueueSecured:
			line = fmt.Sprintf("secured sk=%x", r.SenderKey.SPKI())
		case store.QueueSuspended:
			line = fmt.Sprintf("suspended at=%d", r.Time)
		case store.QueueBlocked:
			line = "blocked"
		case store.MessageStored:
			b, err := body(r)
			if err != nil {
				return err
			}
			line = fmt.Sprintf("msg id=%x ts=%d %s", r.MsgID, r.Time, b)
		default:
			return fmt.Errorf("snapshot emitted kind %d", r.Kind)
		}
		per[r.RID] = append(per[r.RID], line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var qs []string
	for rid, lines := range per {
		qs = append(qs, fmt.Sprintf("queue %x\n  %s", rid, strings.Join(lines, "\n  ")))
	}
	sort.Strings(qs)
	return strings.Join(qs, "\n")
}
