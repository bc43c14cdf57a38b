package codec

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fzBlock is the block size the transmission fuzz targets parse for: the
// smallest, so that maxBody (3072) is within reach of the mutator.
const fzBlock = MinBlockSize

// fzTransmissionSeeds are vectors.md §1 and §2, a crafted row for each
// parser-detectable row of SPEC §6 (from engine/errors_test.go), and some
// server transmissions for the client side.
func fzTransmissionSeeds() []string {
	const (
		sid = "AQIDBAUGBwgJCgsMDQ4PEA==" // vectors.md §1
		rid = "ERITFBUWFxgZGhscHR4fIA==" // vectors.md §2
		key = "MCowBQYDK2VwAyEA11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
		vec = "urDey9pb1iyyauNUI6z+tBWsOKO7HouCS+kXRnS+ciWP4pPf/LcjUt2+Jt1BjH93XzaWuYVFm3pJzeJ0ZGSeDw==\r\n" +
			"abc1\r\n" + sid + "\r\nSEND 5\r\nhello\r\n\r\n"
	)
	sig := base64.StdEncoding.EncodeToString(make([]byte, 64))
	long := strings.Repeat("c", MaxCorrID+1)
	return []string{
		// vectors.md §1 and §2.
		vec,
		"\r\nabc1\r\n" + sid + "\r\nOK\r\n",
		"\r\n\r\n" + rid + "\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 5\r\nhello\r\n\r\n",
		"\r\nx\r\n" + sid + "\r\nSEND :hi there\r\n",
		"\r\np1\r\n\r\nPING\r\n",
		"\r\np1\r\n\r\nPONG\r\n",
		// Several in one block, then padding (SPEC §3.3).
		"\r\np1\r\n\r\nPING\r\n" + vec + "\r\nx\r\n" + sid + "\r\nSEND :hi there\r\n####",
		// Valid client commands.
		"\r\nn1\r\n\r\nNEW " + key + "\r\n",
		sig + "\r\nk1\r\n" + rid + "\r\nKEY " + key + "\r\n",
		sig + "\r\ns1\r\n" + rid + "\r\nSUB\r\n",
		sig + "\r\na1\r\n" + rid + "\r\nACK\r\n",
		sig + "\r\no1\r\n" + rid + "\r\nOFF\r\n",
		sig + "\r\nd1\r\n" + rid + "\r\nDEL\r\n",
		"\r\nz\r\n" + sid + "\r\nSEND 0\r\n\r\n\r\n",
		"\r\nz\r\n" + sid + "\r\nSEND 00005\r\nhello\r\n\r\n",
		// Valid server transmissions.
		"\r\nc\r\n\r\nIDS " + rid + " " + sid + "\r\n",
		"\r\n\r\n" + rid + "\r\nEND\r\n",
		"\r\nc\r\n" + rid + "\r\nERR SYNTAX 1\r\n",
		"\r\nc\r\n" + rid + "\r\nERR AUTH\r\n",
		"\r\nc\r\n\r\nERR QUOTA\r\n",
		"\r\nc\r\n" + rid + "\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 00000\r\n\r\n\r\n",
		// SPEC §6 rows, as in engine/errors_test.go.
		"\r\nc1\r\n",
		"\r\n" + long + "\r\n\r\nPING\r\n",
		"\r\na b\r\n\r\nPING\r\n",
		"!!!!\r\nc2\r\n\r\nPING\r\n",
		"\r\nc3\r\n" + rid[:10] + "\r\nPING\r\n",
		"\r\nc4\r\nAAAA\nAAA\r\nPING\r\n",
		"\r\nc5\r\n\r\nHELLO\r\n",
		"\r\nc6\r\n" + rid + "\r\nOK\r\n",
		"\r\nc8\r\n" + rid + "\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 2\r\nhi\r\n\r\n",
		"\r\nc9\r\n\r\nEND\r\n",
		"\r\nc11\r\n\r\nERR AUTH\r\n",
		"\r\nc12\r\n\r\nSUB=\r\n",
		"\r\nc13\r\n\r\nping\r\n",
		sig + "\r\nc14\r\n" + rid + "\r\nSUB x\r\n",
		"\r\nc15\r\n\r\nPING \r\n",
		"\r\nc16\r\n\r\nNEW\r\n",
		"\r\nc17\r\n\r\nNEW ***\r\n",
		"\r\nc18\r\n\r\nNEW AAAA\r\n",
		"\r\nc20\r\n\r\nNEW " + key + " " + key + "\r\n",
		"\r\nc21\r\n" + sid + "\r\nSEND\r\n",
		"\r\nc22\r\n" + sid + "\r\nSEND \r\n",
		"\r\nc23\r\n\r\n\r\n",
		"\r\nc24\r\n" + sid + "\r\nSEND hello\r\n",
		"\r\nc25\r\n" + sid + "\r\nSEND 5x\r\n",
		"\r\nc26\r\n" + sid + "\r\nSEND 5\r\nhel\r\n\r\n",
		"\r\nc27\r\n" + sid + "\r\nSEND 123456\r\nx\r\n\r\n",
		"\r\nc28\r\n" + sid + "\r\nSEND 99999\r\n",
		"\r\nc28\r\n" + sid + "\r\nSEND 3073\r\n",
		"\r\nc29\r\n\r\nSEND :hi\r\n",
		"\r\nc30\r\n" + rid + "\r\nSUB\r\n",
		sig + "\r\nc31\r\n\r\nACK\r\n",
		"\r\nc33\r\n" + rid + "\r\nNEW " + key + "\r\n",
		"\r\nc34\r\n" + rid + "\r\nPING\r\n",
		sig + "\r\nc35\r\n\r\nPING\r\n",
		// Boundary lost after a valid transmission: the rest is discarded.
		"\r\np1\r\n\r\nPING\r\n\r\nx\r\n" + sid + "\r\nSEND 30\r\nshort\r\n\r\n\r\np2\r\n\r\nPING\r\n",
	}
}

// fzRecord is what the parse loop saw of one transmission.
type fzRecord struct {
	off, n int
	err    Error
	cmd    Cmd
	lost   bool
}

// FuzzTransmission parses arbitrary block plaintext on both sides, as the
// engine does, and checks the invariants of Parser.Parse: it never panics,
// never reads or writes outside its input, always makes progress, reports
// only errors the parser can produce, keeps parsing stable under truncation,
// and every clean transmission re-encodes with the Append* encoders to one
// that parses back to the same values (see fzRoundTripClient and
// fzRoundTripServer for the exact property).
func FuzzTransmission(f *testing.F) {
	for _, s := range fzTransmissionSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		// The engine never hands the parser more than a block's plaintext.
		if len(in) > fzBlock-TagSize {
			in = in[:fzBlock-TagSize]
		}
		for _, side := range []Side{ServerSide, ClientSide} {
			full := fzParseAll(t, side, in)
			// Like nats-server's FuzzParser: the first half alone. Every
			// transmission that ends within it parses exactly as before; the one
			// that straddles the cut (if any) is lost and never ErrNone.
			half := len(in) / 2
			part := fzParseAll(t, side, in[:half])
			i := 0
			for ; i < len(full) && full[i].off+full[i].n <= half; i++ {
				if i >= len(part) || part[i] != full[i] {
					t.Fatalf("side %d: transmission %d within the first %d bytes parses as %+v alone, %+v in full",
						side, i, half, fzAt(part, i), full[i])
				}
			}
			switch extra := len(part) - i; {
			case extra == 0:
				if i < len(full) && full[i].off < half {
					t.Fatalf("side %d: transmission at %d straddles the cut at %d but was not seen", side, full[i].off, half)
				}
			case extra == 1:
				r := part[i]
				if i >= len(full) || r.off != full[i].off || !r.lost || r.err == ErrNone || r.off+r.n != half {
					t.Fatalf("side %d: cut at %d: straddling transmission parsed as %+v (full parse: %+v)",
						side, half, r, fzAt(full, i))
				}
			default:
				t.Fatalf("side %d: cut at %d: %d transmissions past the last whole one", side, half, extra)
			}
		}
	})
}

// fzAt is rs[i] for a message, or "none" past the end.
func fzAt(rs []fzRecord, i int) any {
	if i < len(rs) {
		return rs[i]
	}
	return "none"
}

// fzParseAll runs the engine's parse loop over a private copy of in whose
// capacity equals its length, so a read past the end panics instead of
// silently seeing other memory, and checks every transmission.
func fzParseAll(t *testing.T, side Side, in []byte) []fzRecord {
	b := bytes.Clone(in)
	b = b[:len(b):len(b)]
	p := NewParser(side, fzBlock)
	var recs []fzRecord
	var tr Transmission
	for off := 0; More(b[off:]); {
		rest := b[off:]
		n := p.Parse(rest, &tr)
		if n < 1 || n > len(rest) {
			t.Fatalf("side %d: Parse used %d of %d bytes at %d", side, n, len(rest), off)
		}
		fzCheckTransmission(t, p, &tr, rest, n)
		recs = append(recs, fzRecord{off: off, n: n, err: tr.Err, cmd: tr.Cmd, lost: tr.Lost})
		if tr.Err == ErrNone {
			if side == ServerSide {
				fzRoundTripClient(t, &tr, rest[:n])
			} else {
				fzRoundTripServer(t, &tr, rest[:n])
			}
		}
		off += n
	}
	if !bytes.Equal(b, in) {
		t.Fatalf("side %d: Parse modified its input", side)
	}
	return recs
}

// fzWithin fails unless s is nil or a sub-slice of b: same backing array,
// inside b's length (b's capacity equals its length, see fzParseAll).
func fzWithin(t *testing.T, name string, s, b []byte) {
	t.Helper()
	if s == nil {
		return
	}
	i := cap(b) - cap(s) // offset of s in b, if s was sliced from b
	if i < 0 || i+len(s) > len(b) || len(s) > 0 && &s[0] != &b[i] {
		t.Fatalf("%s (%q) does not lie within the input", name, s)
	}
}

// fzParserErrors are the errors Parse can report per side; AUTH, QUOTA,
// INTERNAL and the queueId/signature rows are for the engine or the server side.
var fzParserErrors = [...]map[Error]bool{
	ServerSide: {ErrNone: true, ErrSyntaxStructure: true, ErrUnknown: true, ErrProhibited: true,
		ErrSyntaxParams: true, ErrSyntaxBody: true, ErrSize: true, ErrSyntaxNoQueue: true,
		ErrSyntaxMissing: true, ErrSyntaxExtra: true},
	ClientSide: {ErrNone: true, ErrSyntaxStructure: true, ErrUnknown: true, ErrProhibited: true,
		ErrSyntaxParams: true, ErrSyntaxBody: true, ErrSize: true},
}

// fzCheckTransmission checks what holds for every parsed transmission, clean
// or not. b is what Parse was given and n what it used.
func fzCheckTransmission(t *testing.T, p *Parser, tr *Transmission, b []byte, n int) {
	if !fzParserErrors[p.Side][tr.Err] {
		t.Fatalf("side %d: Parse(%q) reported %v (%d), which it cannot produce", p.Side, b[:n], tr.Err, tr.Err)
	}
	if tr.Lost && (n != len(b) || tr.Err == ErrNone || tr.Signed != nil) {
		t.Fatalf("side %d: lost transmission used %d of %d bytes, err %v, signed %q", p.Side, n, len(b), tr.Err, tr.Signed)
	}
	if tr.Lost {
		// SPEC §3.3 names SYNTAX 1, SYNTAX 6 and SIZE for a lost boundary, but
		// §6 checks PROHIBITED first, and the parser follows §6 for a MSG sent
		// to the server (or a SEND sent to a client) with a bad binary body.
		// The spec does not say which wins; both readings pass here.
		switch tr.Err {
		case ErrSyntaxStructure, ErrSyntaxBody, ErrSize:
		case ErrProhibited:
			if tr.Cmd != CmdMSG && tr.Cmd != CmdSEND {
				t.Fatalf("side %d: lost %v with PROHIBITED", p.Side, tr.Cmd)
			}
		default:
			t.Fatalf("side %d: lost transmission with %v", p.Side, tr.Err)
		}
	}
	// SIZE keeps its boundary only for a string-form SEND body above maxBody.
	if tr.Err == ErrSize && !tr.Lost && !(tr.Cmd == CmdSEND && bytes.Contains(b[:n], []byte("SEND :"))) {
		t.Fatalf("side %d: SIZE without losing the boundary: %q", p.Side, b[:n])
	}
	for _, f := range []struct {
		name string
		s    []byte
	}{{"CorrID", tr.CorrID}, {"Signed", tr.Signed}, {"Body", tr.Body}, {"Time", tr.Time}} {
		fzWithin(t, f.name, f.s, b[:n])
	}
	if tr.CorrID != nil && !fzCorrID(tr.CorrID) {
		t.Fatalf("side %d: invalid corrId %q kept for the echo", p.Side, tr.CorrID)
	}
	if tr.QueueID != nil && len(tr.QueueID) == 0 {
		t.Fatalf("side %d: empty non-nil queueId", p.Side)
	}
	fzCheckHeader(t, p.Side, tr, b[:n])
	if tr.Err != ErrNone {
		return
	}

	// A clean transmission: its signed part is the whole of it but the
	// signature line and the final CRLF.
	sigLine := base64.StdEncoding.EncodedLen(len(tr.Signature))
	if tr.Cmd == CmdNone || len(tr.Signed) != n-sigLine-4 || !bytes.HasSuffix(b[:n], crlf) ||
		!bytes.Equal(b[sigLine:sigLine+2], crlf) {
		t.Fatalf("side %d: clean %v of %d bytes with a %d-byte signature and signed %q", p.Side, tr.Cmd, n, len(tr.Signature), tr.Signed)
	}
	if (p.Side == ServerSide) == tr.Cmd.FromServer() {
		t.Fatalf("side %d: %v accepted from the wrong side", p.Side, tr.Cmd)
	}
	if (tr.Key != nil) != (tr.Cmd == CmdNEW || tr.Cmd == CmdKEY) {
		t.Fatalf("side %d: %v with key %v", p.Side, tr.Cmd, tr.Key)
	}
	if (tr.Body != nil) != (tr.Cmd == CmdSEND || tr.Cmd == CmdMSG) {
		t.Fatalf("side %d: %v with body %q", p.Side, tr.Cmd, tr.Body)
	}
	// Every body the server accepts must fit a MSG to the client, which
	// rejects sizes above maxBody (SPEC §4).
	if len(tr.Body) > p.MaxBody {
		t.Fatalf("side %d: %v accepted with a %d-byte body, above maxBody %d", p.Side, tr.Cmd, len(tr.Body), p.MaxBody)
	}
	if p.Side == ServerSide {
		// SPEC §5/§6 presence rules, restated.
		hasQ, signed := tr.QueueID != nil, sigLine > 0
		ok := true
		switch tr.Cmd {
		case CmdSEND:
			ok = hasQ
		case CmdSUB, CmdKEY, CmdACK, CmdOFF, CmdDEL:
			ok = hasQ && signed
		case CmdNEW:
			ok = !hasQ
		case CmdPING:
			ok = !hasQ && !signed
		}
		if !ok {
			t.Fatalf("%v accepted with queueId %x and signature %x", tr.Cmd, tr.QueueID, tr.Signature)
		}
	}
}

// fzCmds are the command names of SPEC §5, spelled out again.
var fzCmds = map[string]Cmd{
	"NEW": CmdNEW, "SUB": CmdSUB, "KEY": CmdKEY, "ACK": CmdACK, "OFF": CmdOFF, "DEL": CmdDEL, "SEND": CmdSEND,
	"PING": CmdPING, "IDS": CmdIDS, "MSG": CmdMSG, "END": CmdEND, "OK": CmdOK, "PONG": CmdPONG, "ERR": CmdERR,
}

// fzCorrID is SPEC §4's corrId = *64(%x21-7E), spelled out again.
func fzCorrID(s []byte) bool {
	return len(s) <= 64 && !bytes.ContainsFunc(s, func(r rune) bool { return r < 0x21 || r > 0x7e })
}

// fzB64 decodes a strict, padded standard base64 field the way SPEC §2 says,
// independently of the parser: Go's decoder skips CR and LF, so they are
// refused first.
func fzB64(s []byte) ([]byte, bool) {
	if bytes.ContainsAny(s, "\r\n") {
		return nil, false
	}
	d, err := base64.StdEncoding.Strict().DecodeString(string(s))
	return d, err == nil
}

// fzCheckHeader restates SPEC §3.3, §4 and the first rows of §6 from the
// bytes of one transmission (tx, what Parse used) and compares: the echo
// (a complete, valid corrId or queueId line is echoed, anything else is
// not), the decoded signature, SYNTAX 1 exactly when a header line is
// missing or invalid or the msg line has no CRLF, then SYNTAX 2 for a token
// that is not A–Z, UNKNOWN for one that names no command, and PROHIBITED for
// a command from the wrong side.
func fzCheckHeader(t *testing.T, side Side, tr *Transmission, tx []byte) {
	var lines [][]byte
	rest := tx
	for range 3 {
		i := bytes.Index(rest, crlf)
		if i < 0 {
			break
		}
		lines = append(lines, rest[:i])
		rest = rest[i+2:]
	}
	hdrOK := len(lines) == 3
	var wantSig, wantQueue []byte
	if len(lines) > 0 && len(lines[0]) > 0 {
		var ok bool
		if wantSig, ok = fzB64(lines[0]); !ok {
			wantSig, hdrOK = nil, false
		}
	}
	var wantCorr []byte
	if len(lines) > 1 {
		if fzCorrID(lines[1]) {
			wantCorr = lines[1]
		} else {
			hdrOK = false
		}
	}
	if len(lines) > 2 && len(lines[2]) > 0 {
		var ok bool
		if wantQueue, ok = fzB64(lines[2]); !ok {
			wantQueue, hdrOK = nil, false
		}
	}
	if (tr.CorrID != nil) != (wantCorr != nil) || !bytes.Equal(tr.CorrID, wantCorr) ||
		(tr.QueueID != nil) != (wantQueue != nil) || !bytes.Equal(tr.QueueID, wantQueue) {
		t.Fatalf("side %d: %q echoes corrId %q queueId %x, want %q %x", side, tx, tr.CorrID, tr.QueueID, wantCorr, wantQueue)
	}
	if !bytes.Equal(tr.Signature, wantSig) {
		t.Fatalf("side %d: signature %x, want %x", side, tr.Signature, wantSig)
	}
	msgEnd := bytes.Index(rest, crlf)
	if !hdrOK || msgEnd < 0 {
		if tr.Err != ErrSyntaxStructure || msgEnd < 0 && !tr.Lost {
			t.Fatalf("side %d: %q: %v (lost %v), want SYNTAX 1", side, tx, tr.Err, tr.Lost)
		}
		return
	}
	if tr.Err == ErrSyntaxStructure {
		t.Fatalf("side %d: %q: SYNTAX 1 with a whole, valid header", side, tx)
	}
	tok, _, _ := bytes.Cut(rest[:msgEnd], []byte(" "))
	var want Error
	switch cmd := fzCmds[string(tok)]; {
	case len(tok) == 0 || bytes.ContainsFunc(tok, func(r rune) bool { return r < 'A' || r > 'Z' }):
		want = ErrSyntaxParams
	case cmd == CmdNone:
		want = ErrUnknown
	case cmd.FromServer() == (side == ServerSide):
		want = ErrProhibited
	default:
		if tr.Cmd != cmd {
			t.Fatalf("side %d: %q parsed as %v", side, tx, tr.Cmd)
		}
		return
	}
	if tr.Err != want {
		t.Fatalf("side %d: %q: %v, want %v", side, tx, tr.Err, want)
	}
}

// fzRoundTripClient re-encodes a clean client command with AppendSigned and
// AppendClientTransmission and parses it again. The property: the re-encoding
// parses cleanly to the same Cmd, CorrID, QueueID, Signature, key SPKI and
// Body, its Signed is exactly what AppendSigned wrote, and it is byte for
// byte the original transmission unless the original was a SEND whose body
// was in string form (":…") or whose size had leading zeros ("SEND 005") —
// the only two choices the grammar leaves a sender (base64 is strict, so
// every other field has one spelling).
func fzRoundTripClient(t *testing.T, tr *Transmission, orig []byte) {
	var key []byte
	if tr.Key != nil {
		key = tr.Key.SPKI()
	}
	signed := AppendSigned(nil, tr.CorrID, tr.QueueID, tr.Cmd, key, tr.Body)
	wire := AppendClientTransmission(nil, tr.Signature, signed)

	canonical := tr.Cmd != CmdSEND || fzCanonicalSize(tr.Signed, len(tr.Body))
	if canonical != bytes.Equal(wire, orig) {
		t.Fatalf("client %v re-encoded as %q from %q (canonical %v)", tr.Cmd, wire, orig, canonical)
	}

	p := NewParser(ServerSide, fzBlock)
	var tr2 Transmission
	b := wire[:len(wire):len(wire)]
	if n := p.Parse(b, &tr2); n != len(b) || tr2.Err != ErrNone {
		t.Fatalf("client %v re-encoded as %q parses with %v, used %d of %d", tr.Cmd, wire, tr2.Err, n, len(b))
	}
	var key2 []byte
	if tr2.Key != nil {
		key2 = tr2.Key.SPKI()
	}
	if tr2.Cmd != tr.Cmd || !bytes.Equal(tr2.CorrID, tr.CorrID) || !bytes.Equal(tr2.QueueID, tr.QueueID) ||
		!bytes.Equal(tr2.Signature, tr.Signature) || !bytes.Equal(key2, key) || !bytes.Equal(tr2.Body, tr.Body) ||
		!bytes.Equal(tr2.Signed, signed) {
		t.Fatalf("client %v: %q re-encoded as %q parses to different values", tr.Cmd, orig, wire)
	}
	if canonical && !bytes.Equal(tr2.Signed, tr.Signed) {
		t.Fatalf("client %v: signed %q re-encoded as %q", tr.Cmd, tr.Signed, tr2.Signed)
	}
}

// fzRoundTripServer re-encodes a clean server transmission with its Append*
// encoder and parses it again. The property: the re-encoding parses cleanly
// to the same Cmd, CorrID (not for END, whose encoder has none), QueueID (not
// for IDS and PONG, whose encoders have none), RID, SID, MsgID, Time,
// ErrType and Body; and it is byte for byte the original exactly when the
// original had an empty signature, no corrId on END, no queueId on IDS or
// PONG, and on MSG a size without leading zeros and a timestamp in
// TimeLayout. MSG with a timestamp that does not parse as TimeLayout is not
// re-encoded: the client parser accepts any token there.
func fzRoundTripServer(t *testing.T, tr *Transmission, orig []byte) {
	canonical := len(tr.Signature) == 0
	var wire []byte
	switch tr.Cmd {
	case CmdOK:
		wire = AppendOK(nil, tr.CorrID, tr.QueueID)
	case CmdERR:
		wire = AppendERR(nil, tr.CorrID, tr.QueueID, tr.ErrType)
	case CmdIDS:
		wire = AppendIDS(nil, tr.CorrID, tr.RID, tr.SID)
		canonical = canonical && tr.QueueID == nil
	case CmdPONG:
		wire = AppendPONG(nil, tr.CorrID)
		canonical = canonical && tr.QueueID == nil
	case CmdEND:
		wire = AppendEND(nil, tr.QueueID)
		canonical = canonical && len(tr.CorrID) == 0
	case CmdMSG:
		ts, err := time.Parse(TimeLayout, string(tr.Time))
		if err != nil {
			return
		}
		wire = AppendMSG(nil, tr.CorrID, tr.QueueID, tr.MsgID, ts.Unix(), tr.Body)
		canonical = canonical && ts.Format(TimeLayout) == string(tr.Time) && fzCanonicalSize(tr.Signed, len(tr.Body))
	default:
		t.Fatalf("server transmission %v parsed cleanly on the client side", tr.Cmd)
	}
	if canonical != bytes.Equal(wire, orig) {
		t.Fatalf("server %v re-encoded as %q from %q (canonical %v)", tr.Cmd, wire, orig, canonical)
	}

	p := NewParser(ClientSide, fzBlock)
	var tr2 Transmission
	b := wire[:len(wire):len(wire)]
	if n := p.Parse(b, &tr2); n != len(b) || tr2.Err != ErrNone {
		t.Fatalf("server %v re-encoded as %q parses with %v, used %d of %d", tr.Cmd, wire, tr2.Err, n, len(b))
	}
	corr, queue := tr.CorrID, tr.QueueID
	switch tr.Cmd {
	case CmdEND:
		corr = []byte{}
	case CmdIDS, CmdPONG:
		queue = nil
	}
	timeOK := tr.Cmd != CmdMSG || canonical || bytes.Equal(tr2.Time, []byte(mustTime(t, tr.Time)))
	if tr2.Cmd != tr.Cmd || !bytes.Equal(tr2.CorrID, corr) || !bytes.Equal(tr2.QueueID, queue) ||
		!bytes.Equal(tr2.RID, tr.RID) || !bytes.Equal(tr2.SID, tr.SID) || !bytes.Equal(tr2.MsgID, tr.MsgID) ||
		tr2.ErrType != tr.ErrType || !bytes.Equal(tr2.Body, tr.Body) || len(tr2.Signature) != 0 || !timeOK {
		t.Fatalf("server %v: %q re-encoded as %q parses to different values", tr.Cmd, orig, wire)
	}
	if canonical && (!bytes.Equal(tr2.Signed, tr.Signed) || !bytes.Equal(tr2.Time, tr.Time)) {
		t.Fatalf("server %v: signed %q re-encoded as %q", tr.Cmd, tr.Signed, tr2.Signed)
	}
}

// fzCanonicalSize reports whether signed ends with a binary body of bodyLen
// bytes whose size is spelled without leading zeros:
// "… SP size CRLF body CRLF". A string-form body cannot end with CRLF.
func fzCanonicalSize(signed []byte, bodyLen int) bool {
	if !bytes.HasSuffix(signed, crlf) || len(signed) < bodyLen+4 {
		return false
	}
	line := signed[:len(signed)-bodyLen-4]
	return bytes.HasSuffix(line, []byte(" "+strconv.Itoa(bodyLen)))
}

// mustTime returns ts, which parsed as TimeLayout, in its one canonical spelling.
func mustTime(t *testing.T, ts []byte) string {
	t.Helper()
	tm, err := time.Parse(TimeLayout, string(ts))
	if err != nil {
		t.Fatal(err)
	}
	return tm.Format(TimeLayout)
}
