package store

import "errors"

// ErrBodyLost is wrapped by a ReadBody error that means the store no longer
// has the body and never will: for example its metadata survived a power cut
// in a mode that fsyncs at intervals or never, and the body did not. The
// engine then deletes the message (logging MessageDeleted with its ref) and
// moves on to the next one, rather than answer ERR INTERNAL for that queue
// forever. A failure that may pass (an I/O error, a closed store) must not
// wrap it.
var ErrBodyLost = errors.New("store: message body lost")

// errNoBodies answers ReadBody on a store that never keeps bodies.
var errNoBodies = errors.New("store: this store keeps no message bodies")
