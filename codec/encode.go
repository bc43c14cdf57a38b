package codec

import (
	"encoding/base64"
	"strconv"
	"time"
)

// The encoders below append one whole transmission to dst and return the
// extended slice. They never allocate when dst has room. Server transmissions
// always carry an empty signature (SPEC §5).

// appendServerHeader appends the empty signature, corrId and queueId lines.
func appendServerHeader(dst, corrID, queueID []byte) []byte {
	dst = append(dst, '\r', '\n')
	dst = append(dst, corrID...)
	dst = append(dst, '\r', '\n')
	dst = base64.StdEncoding.AppendEncode(dst, queueID)
	return append(dst, '\r', '\n')
}

// AppendOK appends "OK" for the command with corrID and queueID.
func AppendOK(dst, corrID, queueID []byte) []byte {
	dst = appendServerHeader(dst, corrID, queueID)
	return append(dst, "OK\r\n"...)
}

// AppendPONG appends the answer to PING.
func AppendPONG(dst, corrID []byte) []byte {
	dst = appendServerHeader(dst, corrID, nil)
	return append(dst, "PONG\r\n"...)
}

// AppendEND appends the END the server sends on its own to a replaced subscriber.
func AppendEND(dst, rid []byte) []byte {
	dst = appendServerHeader(dst, nil, rid)
	return append(dst, "END\r\n"...)
}

// AppendERR appends "ERR <e>" for the command with corrID and queueID.
func AppendERR(dst, corrID, queueID []byte, e Error) []byte {
	dst = appendServerHeader(dst, corrID, queueID)
	dst = append(dst, "ERR "...)
	dst = append(dst, e.String()...)
	return append(dst, '\r', '\n')
}

// AppendIDS appends the answer to NEW; its queueId is empty (SPEC §5).
func AppendIDS(dst, corrID, rid, sid []byte) []byte {
	dst = appendServerHeader(dst, corrID, nil)
	dst = append(dst, "IDS "...)
	dst = base64.StdEncoding.AppendEncode(dst, rid)
	dst = append(dst, ' ')
	dst = base64.StdEncoding.AppendEncode(dst, sid)
	return append(dst, '\r', '\n')
}

// TimeLayout is the timestamp format of MSG: RFC 3339, UTC, whole seconds. Part of the wire format.
const TimeLayout = "2006-01-02T15:04:05Z"

// AppendMSG appends a MSG for the queue rid: the answer to SUB or ACK (with
// their corrID) or a push (empty corrID). ts is in Unix seconds.
func AppendMSG(dst, corrID, rid, msgID []byte, ts int64, body []byte) []byte {
	dst = appendServerHeader(dst, corrID, rid)
	dst = append(dst, "MSG "...)
	dst = base64.StdEncoding.AppendEncode(dst, msgID)
	dst = append(dst, ' ')
	dst = time.Unix(ts, 0).UTC().AppendFormat(dst, TimeLayout)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, body...)
	return append(dst, "\r\n\r\n"...)
}

// MSGSize is the length AppendMSG writes, so a caller can check that it fits
// in what is left of a block before writing it.
func MSGSize(corrID, rid []byte, bodyLen int) int {
	return 2 + len(corrID) + 2 + base64.StdEncoding.EncodedLen(len(rid)) + 2 +
		len("MSG ") + base64.StdEncoding.EncodedLen(MsgIDSize) + 1 + len(TimeLayout) + 1 +
		digits(bodyLen) + 2 + bodyLen + 4
}

func digits(n int) int {
	d := 1
	for ; n >= 10; n /= 10 {
		d++
	}
	return d
}

// MaxResponse bounds every server transmission other than MSG: an ERR or IDS
// with the longest corrId and a queueId of any valid length. A block's
// plaintext that has less room left than this is flushed first.
func MaxResponse(queueIDLen int) int {
	return 2 + MaxCorrID + 2 + base64.StdEncoding.EncodedLen(queueIDLen) + 2 + 64 +
		2*base64.StdEncoding.EncodedLen(QueueIDSize)
}

// AppendSigned appends the signed part of a client command (SPEC §4):
//
//	corrId CRLF queueId CRLF cmd [SP key]
//	corrId CRLF queueId CRLF SEND SP size CRLF body CRLF
//
// key is the SPKI DER of NEW and KEY; body is SEND's body in binary form. The
// result is what the client signs; AppendClientTransmission frames it.
func AppendSigned(dst []byte, corrID, queueID []byte, cmd Cmd, key, body []byte) []byte {
	dst = append(dst, corrID...)
	dst = append(dst, '\r', '\n')
	dst = base64.StdEncoding.AppendEncode(dst, queueID)
	dst = append(dst, '\r', '\n')
	dst = append(dst, cmd.String()...)
	switch cmd {
	case CmdNEW, CmdKEY:
		dst = append(dst, ' ')
		dst = base64.StdEncoding.AppendEncode(dst, key)
	case CmdSEND:
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(len(body)), 10)
		dst = append(dst, '\r', '\n')
		dst = append(dst, body...)
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// AppendClientTransmission appends signature CRLF signed CRLF, with the
// signature in base64 (empty sig for unsigned commands).
func AppendClientTransmission(dst, sig, signed []byte) []byte {
	dst = base64.StdEncoding.AppendEncode(dst, sig)
	dst = append(dst, '\r', '\n')
	dst = append(dst, signed...)
	return append(dst, '\r', '\n')
}
