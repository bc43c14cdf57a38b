// Package errwrap wraps an error in another of the same package without
// repeating the package's prefix ("client: "): errors.Is and errors.As see
// both, as with fmt.Errorf("%w: %w", head, err), but the text reads
// "client: handshake with h:1: server key fingerprint mismatch", not
// "client: handshake with h:1: client: server key fingerprint mismatch".
package errwrap

import "strings"

// Wrap returns an error that reads head's text, ": ", then err's text less
// head's prefix (its text up to and including the first ": ") when err's
// text starts with it. It unwraps to head and err.
func Wrap(head, err error) error { return &wrapped{head: head, err: err} }

type wrapped struct{ head, err error }

func (w *wrapped) Error() string {
	h, e := w.head.Error(), w.err.Error()
	if i := strings.Index(h, ": "); i >= 0 {
		e = strings.TrimPrefix(e, h[:i+2])
	}
	return h + ": " + e
}

func (w *wrapped) Unwrap() []error { return []error{w.head, w.err} }
