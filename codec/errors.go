package codec

// Error is a protocol error: one value for each row of the SPEC §6 table, in
// the table's order of precedence. The zero value means "no error" so that the
// hot path can carry it without an interface.
//
// Error values are immutable and safe for concurrent use.
type Error uint8

const (
	// ErrNone is not an error; it marks a transmission that parsed cleanly.
	ErrNone Error = iota
	// ErrSyntaxStructure (SYNTAX 1): missing CRLFs, bad corrId, signature or queueId not valid base64.
	ErrSyntaxStructure
	// ErrUnknown (UNKNOWN): a command name of letters A–Z that names no command.
	ErrUnknown
	// ErrProhibited (PROHIBITED): a server transmission sent by a client, or ACK without
	// subscription or delivered message.
	ErrProhibited
	// ErrSyntaxParams (SYNTAX 2): wrong number or format of parameters, bad terminator,
	// unsupported key, or a command token with bytes other than A–Z.
	ErrSyntaxParams
	// ErrSyntaxBody (SYNTAX 6): a SEND body that is neither ":…" nor a decimal size, or whose
	// size disagrees with the bytes that follow.
	ErrSyntaxBody
	// ErrSize (SIZE): a declared body size of more than 5 digits or above maxBody.
	ErrSize
	// ErrSyntaxNoQueue (SYNTAX 5): SEND with an empty queueId.
	ErrSyntaxNoQueue
	// ErrSyntaxMissing (SYNTAX 3): queueId or signature required but empty.
	ErrSyntaxMissing
	// ErrSyntaxExtra (SYNTAX 4): queueId or signature present where not allowed.
	ErrSyntaxExtra
	// ErrAuth (AUTH): authentication failed (SPEC §5, §7).
	ErrAuth
	// ErrQuota (QUOTA): the queue holds its quota of messages.
	ErrQuota
	// ErrInternal (INTERNAL): the server failed, e.g. its log cannot be written.
	ErrInternal

	numErrors
)

// errorText is what follows "ERR " on the wire for each Error. Part of the wire format.
var errorText = [numErrors]string{
	ErrNone:            "",
	ErrSyntaxStructure: "SYNTAX 1",
	ErrUnknown:         "UNKNOWN",
	ErrProhibited:      "PROHIBITED",
	ErrSyntaxParams:    "SYNTAX 2",
	ErrSyntaxBody:      "SYNTAX 6",
	ErrSize:            "SIZE",
	ErrSyntaxNoQueue:   "SYNTAX 5",
	ErrSyntaxMissing:   "SYNTAX 3",
	ErrSyntaxExtra:     "SYNTAX 4",
	ErrAuth:            "AUTH",
	ErrQuota:           "QUOTA",
	ErrInternal:        "INTERNAL",
}

// String returns the error as it follows "ERR " on the wire, e.g. "SYNTAX 1".
func (e Error) String() string {
	if e >= numErrors {
		return "INTERNAL"
	}
	return errorText[e]
}

// Error implements the error interface: "smp: ERR SYNTAX 1".
func (e Error) Error() string { return "smp: ERR " + e.String() }

// ParseError maps the text after "ERR " back to an Error. It reports false for
// text that names no SPEC §6 error.
func ParseError(text []byte) (Error, bool) {
	for e := ErrSyntaxStructure; e < numErrors; e++ {
		if string(text) == errorText[e] {
			return e, true
		}
	}
	return ErrNone, false
}
