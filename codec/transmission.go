package codec

import "bytes"

// Cmd names a command or server transmission (SPEC §5).
type Cmd uint8

// Commands sent by clients, then transmissions sent by the server.
const (
	CmdNone Cmd = iota
	CmdNEW
	CmdSUB
	CmdKEY
	CmdACK
	CmdOFF
	CmdDEL
	CmdSEND
	CmdPING
	CmdIDS
	CmdMSG
	CmdEND
	CmdOK
	CmdPONG
	CmdERR

	numCmds
)

// cmdNames are the command names on the wire. Part of the wire format.
var cmdNames = [numCmds]string{
	CmdNEW: "NEW", CmdSUB: "SUB", CmdKEY: "KEY", CmdACK: "ACK", CmdOFF: "OFF", CmdDEL: "DEL",
	CmdSEND: "SEND", CmdPING: "PING", CmdIDS: "IDS", CmdMSG: "MSG", CmdEND: "END", CmdOK: "OK",
	CmdPONG: "PONG", CmdERR: "ERR",
}

// String returns the command's name on the wire.
func (c Cmd) String() string {
	if c >= numCmds {
		return ""
	}
	return cmdNames[c]
}

// FromServer reports whether c is a transmission only the server sends.
func (c Cmd) FromServer() bool { return c >= CmdIDS && c < numCmds }

// lookupCmd maps a token of letters A–Z to its command; CmdNone if it names none.
func lookupCmd(tok []byte) Cmd {
	for c := CmdNEW; c < numCmds; c++ {
		if string(tok) == cmdNames[c] {
			return c
		}
	}
	return CmdNone
}

// Limits of the wire format (SPEC §2, §4). Part of the wire format.
const (
	QueueIDSize   = 16 // bytes of a RID or SID
	MsgIDSize     = 8  // bytes of a message ID
	MaxCorrID     = 64 // bytes of a corrId
	maxSizeDigits = 5  // digits of a binary body size
	// BlockOverhead is what a block reserves beyond the largest body: maxBody = blockSize − BlockOverhead.
	BlockOverhead = 1024
)

// MaxBody returns the largest message body for a block size (SPEC §4).
func MaxBody(blockSize int) int { return blockSize - BlockOverhead }

// Side says which end of a connection a Parser serves.
type Side uint8

const (
	// ServerSide parses client commands; a server transmission from a client is ErrProhibited.
	ServerSide Side = iota
	// ClientSide parses server transmissions; a client command from a server is ErrProhibited.
	ClientSide
)

// Transmission is one parsed transmission (SPEC §4):
//
//	signature CRLF corrId CRLF queueId CRLF msg CRLF
//	          |<------------- signed ------------->|
//
// where msg is one line, or for a binary body
//
//	cmd SP ... size CRLF body CRLF
//
// All slices point into the buffer given to Parser.Parse or into the Parser's
// scratch space and are valid until the next Parse call on that Parser or
// until the buffer is reused, whichever comes first.
type Transmission struct {
	Err  Error // ErrNone, or the SPEC §6 error for this transmission
	Lost bool  // the transmission's end could not be found: the rest of the block is discarded

	Signature []byte // decoded signature; empty when the field is empty or invalid
	CorrID    []byte // corrId as sent; nil when invalid (so it is not echoed)
	QueueID   []byte // decoded queueId; nil when empty or invalid (so it is not echoed)
	Signed    []byte // the signed bytes: from corrId's first byte to before the final CRLF
	Cmd       Cmd    // the command; CmdNone when the name did not parse

	Key  *VerifyKey // NEW, KEY: the parsed signature key
	Body []byte     // SEND, MSG: the body, binary or string form

	RID, SID []byte // IDS (client side)
	MsgID    []byte // MSG (client side): decoded message ID
	Time     []byte // MSG (client side): RFC 3339 timestamp as sent
	ErrType  Error  // ERR (client side): the error the server reported
}

// Parser splits block plaintext into transmissions. Its scratch space holds
// decoded base64 fields, so one Parser serves one goroutine at a time; the
// engine takes one from a pool for each batch of blocks it handles.
type Parser struct {
	Side    Side // which transmissions are legal
	MaxBody int  // the largest body; sizes above it are ErrSize

	scratch []byte // decoded fields of the current transmission
}

// NewParser returns a parser for blocks of blockSize bytes.
func NewParser(side Side, blockSize int) *Parser {
	return &Parser{Side: side, MaxBody: MaxBody(blockSize), scratch: make([]byte, 0, blockSize)}
}

// More reports whether the rest of a block's plaintext holds another
// transmission: it is not empty and does not begin with padding (SPEC §3.3).
func More(rest []byte) bool { return len(rest) > 0 && rest[0] != Padding }

// Parse reads the transmission at the start of b into t and returns how many
// bytes it used. When the transmission's end cannot be found (t.Lost), it uses
// all of b, so the caller discards the rest of the block (SPEC §3.3). Parse
// never fails otherwise: a malformed transmission comes back with t.Err set
// and with CorrID and QueueID set only where they are valid, for the echo.
//
// Parse does not allocate, except when it parses a key (NEW, KEY).
func (p *Parser) Parse(b []byte, t *Transmission) int {
	*t = Transmission{}
	p.scratch = p.scratch[:0]

	// The three header lines, then the msg line.
	var line [4][]byte
	pos := 0
	for i := range line {
		n := indexCRLF(b[pos:])
		if n < 0 {
			t.Lost = true
			t.Err = ErrSyntaxStructure
			p.header(t, line[:i])
			return len(b)
		}
		line[i] = b[pos : pos+n]
		pos += n + 2
	}
	signedStart := len(line[0]) + 2
	msg := line[3]
	end := pos // just past the msg line's CRLF

	tok, params, hasParams := cut(msg)
	cmd := CmdNone
	tokErr := ErrNone
	if len(tok) == 0 || !allUpper(tok) {
		// SPEC §4: a token with any byte other than A–Z is SYNTAX 2. We treat an empty
		// token the same way (the table names no row for it).
		tokErr = ErrSyntaxParams
	} else if cmd = lookupCmd(tok); cmd == CmdNone {
		tokErr = ErrUnknown
	}

	// Binary bodies extend the transmission beyond the msg line (SPEC §4).
	var bodyErr Error
	var body []byte
	binary := false
	if cmd == CmdSEND || cmd == CmdMSG {
		sizeText := params
		if cmd == CmdMSG {
			sizeText = lastField(params)
		}
		if hasParams && len(sizeText) > 0 && allDigits(sizeText) {
			binary = true
			if len(sizeText) > maxSizeDigits {
				bodyErr = ErrSize
			} else if size := atoi(sizeText); size > p.MaxBody {
				bodyErr = ErrSize
			} else if len(b)-end < size+4 || b[end+size] != '\r' || b[end+size+1] != '\n' ||
				b[end+size+2] != '\r' || b[end+size+3] != '\n' {
				bodyErr = ErrSyntaxBody
			} else {
				body = b[end : end+size]
				end += size + 4
			}
		}
	}
	if bodyErr != ErrNone {
		t.Lost = true
		end = len(b)
	}
	t.Signed = b[signedStart : end-2]
	if t.Lost {
		t.Signed = nil
	}

	// Checks in the order of SPEC §6.
	if !p.header(t, line[:3]) {
		t.Err = ErrSyntaxStructure
		return end
	}
	if tokErr != ErrNone {
		t.Err = tokErr
		return end
	}
	t.Cmd = cmd
	if (p.Side == ServerSide) == cmd.FromServer() {
		t.Err = ErrProhibited
		return end
	}
	if bodyErr != ErrNone {
		t.Err = bodyErr
		return end
	}
	if binary {
		t.Body = body
	}
	t.Err = p.params(t, params, hasParams, binary)
	if t.Err == ErrNone && p.Side == ServerSide {
		t.Err = presence(t, len(line[0]) > 0)
	}
	return end
}

// header decodes the signature, corrId and queueId lines that are present and
// reports whether all of them are valid. Valid corrId and queueId are kept for
// the echo even when another field is invalid.
func (p *Parser) header(t *Transmission, lines [][]byte) bool {
	ok := true
	if len(lines) > 1 {
		if validCorrID(lines[1]) {
			t.CorrID = lines[1]
		} else {
			ok = false
		}
	}
	if len(lines) > 2 && len(lines[2]) > 0 {
		if id, valid := p.decode(lines[2]); valid {
			t.QueueID = id
		} else {
			ok = false
		}
	}
	if len(lines) > 0 && len(lines[0]) > 0 {
		if sig, valid := p.decode(lines[0]); valid {
			t.Signature = sig
		} else {
			ok = false
		}
	}
	return ok
}

// params parses the parameters of t.Cmd (SPEC §4, §5).
func (p *Parser) params(t *Transmission, params []byte, hasParams, binary bool) Error {
	switch t.Cmd {
	case CmdSUB, CmdACK, CmdOFF, CmdDEL, CmdPING, CmdEND, CmdOK, CmdPONG:
		if hasParams {
			return ErrSyntaxParams
		}
	case CmdNEW, CmdKEY:
		if !hasParams || len(params) == 0 {
			return ErrSyntaxParams
		}
		der, ok := p.decode(params)
		if !ok {
			return ErrSyntaxParams
		}
		k, err := ParseVerifyKey(der)
		if err != nil {
			return ErrSyntaxParams
		}
		t.Key = k
	case CmdSEND:
		if binary {
			return ErrNone
		}
		if !hasParams || len(params) == 0 {
			return ErrSyntaxParams
		}
		if params[0] != ':' {
			return ErrSyntaxBody
		}
		if len(params)-1 > p.MaxBody {
			// SPEC §4 bounds only declared sizes; a string body above maxBody
			// could not be delivered in one block, so it gets the same SIZE,
			// with its boundary intact.
			return ErrSize
		}
		for _, c := range params[1:] {
			if c == 0 || c == '\r' || c == '\n' {
				return ErrSyntaxParams // SPEC §4 stringMsg excludes NUL, CR and LF
			}
		}
		t.Body = params[1:]
	case CmdIDS:
		rid, rest, ok := cut(params)
		if !hasParams || !ok || indexByte(rest, ' ') >= 0 {
			return ErrSyntaxParams
		}
		var valid bool
		if t.RID, valid = p.decode(rid); !valid || len(t.RID) != QueueIDSize {
			return ErrSyntaxParams
		}
		if t.SID, valid = p.decode(rest); !valid || len(t.SID) != QueueIDSize {
			return ErrSyntaxParams
		}
	case CmdMSG:
		if !binary {
			return ErrSyntaxParams
		}
		id, rest, _ := cut(params)
		ts, size, ok := cut(rest)
		var valid bool
		if t.MsgID, valid = p.decode(id); !ok || !valid || len(t.MsgID) != MsgIDSize || len(ts) == 0 ||
			indexByte(size, ' ') >= 0 {
			return ErrSyntaxParams
		}
		t.Time = ts
	case CmdERR:
		e, ok := ParseError(params)
		if !hasParams || !ok {
			return ErrSyntaxParams
		}
		t.ErrType = e
	}
	return ErrNone
}

// presence applies the queueId and signature rules of SPEC §6 to a client command.
func presence(t *Transmission, signed bool) Error {
	hasQueue := t.QueueID != nil
	switch t.Cmd {
	case CmdSEND:
		if !hasQueue {
			return ErrSyntaxNoQueue
		}
	case CmdSUB, CmdKEY, CmdACK, CmdOFF, CmdDEL:
		if !hasQueue || !signed {
			return ErrSyntaxMissing
		}
	case CmdNEW:
		if hasQueue {
			return ErrSyntaxExtra
		}
	case CmdPING:
		if hasQueue || signed {
			return ErrSyntaxExtra
		}
	}
	return ErrNone
}

// decode decodes strict, padded standard base64 into the scratch space.
func (p *Parser) decode(s []byte) ([]byte, bool) {
	start := len(p.scratch)
	need := len(s) / 4 * 3
	if cap(p.scratch)-start < need {
		// Only reachable with a scratch smaller than the block; grow rather than fail.
		grown := make([]byte, start, 2*cap(p.scratch)+need)
		copy(grown, p.scratch)
		p.scratch = grown
	}
	dst := p.scratch[start : start+need]
	n, ok := decodeB64(dst, s)
	if !ok {
		return nil, false
	}
	p.scratch = p.scratch[:start+n]
	return dst[:n:n], true
}

// validCorrID: *64(%x21-7E).
func validCorrID(s []byte) bool {
	if len(s) > MaxCorrID {
		return false
	}
	for _, c := range s {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

var crlf = []byte("\r\n")

func indexCRLF(b []byte) int { return bytes.Index(b, crlf) }

func indexByte(b []byte, c byte) int { return bytes.IndexByte(b, c) }

// cut splits at the first space; found reports whether there was one.
func cut(b []byte) (before, after []byte, found bool) {
	if i := indexByte(b, ' '); i >= 0 {
		return b[:i], b[i+1:], true
	}
	return b, nil, false
}

func lastField(b []byte) []byte {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == ' ' {
			return b[i+1:]
		}
	}
	return b
}

func allUpper(b []byte) bool {
	for _, c := range b {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// atoi reads at most maxSizeDigits digits, so it cannot overflow.
func atoi(b []byte) int {
	n := 0
	for _, c := range b {
		n = n*10 + int(c-'0')
	}
	return n
}
