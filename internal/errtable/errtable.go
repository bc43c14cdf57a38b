// Package errtable is SPEC §6, the error table, written once as data for the
// tests that check it at two levels: the engine's (engine/errors_test.go, a
// Session driven over plaintext blocks) and the relay's
// (cmd/smp-server/integration_test.go, the real binary over TCP). Both range
// over Rows with a subtest per row and per case.
//
// Each Row is one line of §6, in its order: the response, the codec error and
// the cases that provoke it. A Case is a block's transmissions and the corrId
// and queueId the error must echo (SPEC §3.3: each is echoed when it is itself
// valid, and left empty when it is not). A row that one level cannot provoke
// says why in NotEngine or NotRelay, and that level skips it with the reason.
package errtable

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"sync"

	"github.com/smprelay/smprelay/codec"
)

// Fixture is the state a test sets up before it sends the cases, all on one
// connection that subscribes to nothing.
type Fixture struct {
	BlockSize int
	// RID and SID are a queue that is not secured and holds no message,
	// created with the recipient key RK and subscribed by another connection.
	RID, SID []byte
	RK       *codec.Signer
	// FullSID is the SID of another queue, not secured, that holds as many
	// messages as the quota allows.
	FullSID []byte
}

// Need is a condition of the server that a case needs beyond the Fixture.
type Need uint8

const (
	// Nothing: the server as the Fixture left it.
	Nothing Need = iota
	// FailingStore: the server's store fails every write, as a log on a
	// full disk would.
	FailingStore
)

// Case is one way to provoke a row's error.
type Case struct {
	Name  string
	Tx    func(f Fixture) []byte // the plaintext of one block: whole transmissions, unpadded
	Corr  string                 // the corrId the error echoes
	Queue func(f Fixture) []byte // the queueId the error echoes; nil: empty
	Needs Need
}

// Row is one line of SPEC §6.
type Row struct {
	Name      string // the response, unique among the rows
	Condition string // §6's condition, in short
	Err       codec.Error
	Cases     []Case
	// NotEngine and NotRelay say why the row cannot be provoked at that
	// level; empty when it can.
	NotEngine, NotRelay string
}

// Queue IDs the cases use.
var (
	rid     = func(f Fixture) []byte { return f.RID }
	sid     = func(f Fixture) []byte { return f.SID }
	full    = func(f Fixture) []byte { return f.FullSID }
	nowhere = bytes.Repeat([]byte{0xEE}, codec.QueueIDSize) // no queue has this ID
	noQueue = func(Fixture) []byte { return nowhere }
	short   = func(Fixture) []byte { return []byte{1, 2, 3} }
)

// text is a transmission written out, with these placeholders: {RID}, {SID},
// {FULL} and {NOWHERE} for the queue IDs in base64, {RID10} for the first 10
// characters of {RID}, {RK} for RK's public key, {SIG} for a signature-sized
// base64 string that is no valid signature.
func text(s string) func(Fixture) []byte {
	return func(f Fixture) []byte {
		return []byte(strings.NewReplacer(
			"{RID10}", b64(f.RID)[:10],
			"{RID}", b64(f.RID),
			"{SID}", b64(f.SID),
			"{FULL}", b64(f.FullSID),
			"{NOWHERE}", b64(nowhere),
			"{RK}", b64(f.RK.PublicSPKI()),
			"{SIG}", b64(make([]byte, 64)),
		).Replace(s))
	}
}

// signed is a transmission signed by the key by returns (Fixture.RK, or
// Other), with key (nil: none) as the command's parameter.
func signed(by func(Fixture) *codec.Signer, corr string, q func(Fixture) []byte, cmd codec.Cmd, key func(Fixture) []byte) func(Fixture) []byte {
	return func(f Fixture) []byte {
		var k []byte
		if key != nil {
			k = key(f)
		}
		b := codec.AppendSigned(nil, []byte(corr), q(f), cmd, k, nil)
		sig, err := by(f).Sign(b)
		if err != nil {
			panic("errtable: signing: " + err.Error())
		}
		return codec.AppendClientTransmission(nil, sig, b)
	}
}

var (
	rk    = func(f Fixture) *codec.Signer { return f.RK }
	other = func(Fixture) *codec.Signer { return Other() }
	rkKey = func(f Fixture) []byte { return f.RK.PublicSPKI() }
)

// Other is an Ed25519 key that is no queue's key.
var Other = sync.OnceValue(func() *codec.Signer {
	s, err := codec.NewSigner(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
	if err != nil {
		panic("errtable: " + err.Error())
	}
	return s
})

// p256 is the SPKI of a P-256 key, a kind §2 does not support.
var p256 = sync.OnceValue(func() string {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic("errtable: " + err.Error())
	}
	spki, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		panic("errtable: " + err.Error())
	}
	return b64(spki)
})

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// Rows is SPEC §6, in its order.
var Rows = []Row{
	{
		Name:      "ERR SYNTAX 1",
		Condition: "transmission structure broken: missing CRLFs, corrId too long or with bad bytes, signature or queueId not valid base64",
		Err:       codec.ErrSyntaxStructure,
		Cases: []Case{
			{Name: "missing CRLFs", Tx: text("\r\nc1\r\n"), Corr: "c1"},
			{Name: "corrId of 65 bytes", Tx: text("\r\n" + strings.Repeat("c", codec.MaxCorrID+1) + "\r\n\r\nPING\r\n")},
			{Name: "corrId with a space", Tx: text("\r\na b\r\n{SID}\r\nPING\r\n"), Queue: sid},
			{Name: "signature not base64", Tx: text("***\r\nc2\r\n{SID}\r\nPING\r\n"), Corr: "c2", Queue: sid},
			{Name: "queueId not base64", Tx: text("\r\nc3\r\n!!!!\r\nPING\r\n"), Corr: "c3"},
			{Name: "queueId cut short", Tx: text("\r\nc3b\r\n{RID10}\r\nPING\r\n"), Corr: "c3b"},
			{Name: "queueId in unpadded base64", Tx: text("\r\nc3c\r\nAQI\r\nPING\r\n"), Corr: "c3c"},
			{Name: "queueId with a lone LF", Tx: text("\r\nc4\r\nAAAA\nAAA\r\nPING\r\n"), Corr: "c4"},
			{Name: "block of 'A'", Tx: func(f Fixture) []byte { return bytes.Repeat([]byte("A"), f.BlockSize-codec.TagSize) }},
			{Name: "block of NUL", Tx: func(f Fixture) []byte { return make([]byte, f.BlockSize-codec.TagSize) }},
		},
	},
	{
		Name:      "ERR UNKNOWN",
		Condition: "unknown cmdName",
		Err:       codec.ErrUnknown,
		Cases: []Case{
			{Name: "HELLO", Tx: text("\r\nc5\r\n\r\nHELLO\r\n"), Corr: "c5"},
		},
	},
	{
		Name:      "ERR PROHIBITED (server transmission)",
		Condition: "a server transmission (IDS MSG END OK PONG ERR) sent by a client",
		Err:       codec.ErrProhibited,
		Cases: []Case{
			{Name: "OK", Tx: text("\r\nc6\r\n{RID}\r\nOK\r\n"), Corr: "c6", Queue: rid},
			{Name: "IDS", Tx: text("\r\nc7\r\n\r\nIDS {RID} {SID}\r\n"), Corr: "c7"},
			{Name: "MSG", Tx: text("\r\nc8\r\n{RID}\r\nMSG AQIDBAUGBwg= 2026-11-25T19:07:19Z 2\r\nhi\r\n\r\n"), Corr: "c8", Queue: rid},
			{Name: "END", Tx: text("\r\nc9\r\n{RID}\r\nEND\r\n"), Corr: "c9", Queue: rid},
			{Name: "PONG", Tx: text("\r\nc10\r\n\r\nPONG\r\n"), Corr: "c10"},
			{Name: "ERR", Tx: text("\r\nc11\r\n\r\nERR AUTH\r\n"), Corr: "c11"},
		},
	},
	{
		Name:      "ERR SYNTAX 2",
		Condition: "wrong number or format of parameters (incl. SEND with no body at all), bad terminator, key not a supported SPKI",
		Err:       codec.ErrSyntaxParams,
		Cases: []Case{
			{Name: "command token with '='", Tx: text("\r\nc12\r\n{RID}\r\nSUB=\r\n"), Corr: "c12", Queue: rid},
			{Name: "lower case command", Tx: text("\r\nc13\r\n\r\nping\r\n"), Corr: "c13"},
			{Name: "SUB with a parameter", Tx: text("{SIG}\r\nc14\r\n{RID}\r\nSUB x\r\n"), Corr: "c14", Queue: rid},
			{Name: "PING with a parameter", Tx: text("\r\nc15\r\n\r\nPING x\r\n"), Corr: "c15"},
			{Name: "PING with a trailing space", Tx: text("\r\nc15b\r\n\r\nPING \r\n"), Corr: "c15b"},
			{Name: "NEW without a key", Tx: text("\r\nc16\r\n\r\nNEW\r\n"), Corr: "c16"},
			{Name: "NEW key not base64", Tx: text("\r\nc17\r\n\r\nNEW ***\r\n"), Corr: "c17"},
			{Name: "NEW key not an SPKI", Tx: text("\r\nc18\r\n\r\nNEW AAAA\r\n"), Corr: "c18"},
			{Name: "NEW with a P-256 key", Tx: func(f Fixture) []byte { return []byte("\r\nc18b\r\n\r\nNEW " + p256() + "\r\n") }, Corr: "c18b"},
			{Name: "KEY key not an SPKI", Tx: text("{SIG}\r\nc19\r\n{RID}\r\nKEY AAAA\r\n"), Corr: "c19", Queue: rid},
			{Name: "NEW with two keys", Tx: text("\r\nc20\r\n\r\nNEW {RK} {RK}\r\n"), Corr: "c20"},
			{Name: "SEND without a body", Tx: text("\r\nc21\r\n{SID}\r\nSEND\r\n"), Corr: "c21", Queue: sid},
			{Name: "SEND with an empty body", Tx: text("\r\nc22\r\n{SID}\r\nSEND \r\n"), Corr: "c22", Queue: sid},
			{Name: "empty command", Tx: text("\r\nc23\r\n\r\n\r\n"), Corr: "c23"},
		},
	},
	{
		Name:      "ERR SYNTAX 6",
		Condition: "SEND body present but neither :… nor a decimal size, or the size disagrees with the bytes that follow",
		Err:       codec.ErrSyntaxBody,
		Cases: []Case{
			{Name: "SEND of a bare word", Tx: text("\r\nc24\r\n{SID}\r\nSEND hello\r\n"), Corr: "c24", Queue: sid},
			{Name: "SEND of a size and a word", Tx: text("\r\nc25\r\n{SID}\r\nSEND 5x\r\n"), Corr: "c25", Queue: sid},
			{Name: "SEND size longer than the body", Tx: text("\r\nc26\r\n{SID}\r\nSEND 5\r\nhel\r\n\r\n"), Corr: "c26", Queue: sid},
		},
	},
	{
		Name:      "ERR SIZE",
		Condition: "SEND declared size of more than 5 digits or above maxBody, whatever follows",
		Err:       codec.ErrSize,
		Cases: []Case{
			{Name: "size of 6 digits", Tx: text("\r\nc27\r\n{SID}\r\nSEND 123456\r\nx\r\n\r\n"), Corr: "c27", Queue: sid},
			{Name: "size of 6 digits with a small value", Tx: text("\r\nc27b\r\n{SID}\r\nSEND 000005\r\nhello\r\n\r\n"), Corr: "c27b", Queue: sid},
			{Name: "size above maxBody", Tx: text("\r\nc28\r\n{SID}\r\nSEND 99999\r\n"), Corr: "c28", Queue: sid},
			{Name: "string SEND above maxBody", Tx: func(f Fixture) []byte {
				return text("\r\nc28s\r\n{SID}\r\nSEND :" + strings.Repeat("x", codec.MaxBody(f.BlockSize)+1) + "\r\n")(f)
			}, Corr: "c28s", Queue: sid},
		},
	},
	{
		Name:      "ERR SYNTAX 5",
		Condition: "SEND with empty queueId",
		Err:       codec.ErrSyntaxNoQueue,
		Cases: []Case{
			{Name: "SEND without queueId", Tx: text("\r\nc29\r\n\r\nSEND :hi\r\n"), Corr: "c29"},
		},
	},
	{
		Name:      "ERR SYNTAX 3",
		Condition: "queueId or signature required but empty (SUB KEY ACK OFF DEL)",
		Err:       codec.ErrSyntaxMissing,
		Cases: []Case{
			{Name: "SUB unsigned", Tx: text("\r\nc30\r\n{RID}\r\nSUB\r\n"), Corr: "c30", Queue: rid},
			{Name: "SUB without queueId", Tx: text("{SIG}\r\nc30b\r\n\r\nSUB\r\n"), Corr: "c30b"},
			{Name: "KEY unsigned", Tx: text("\r\nc30c\r\n{RID}\r\nKEY {RK}\r\n"), Corr: "c30c", Queue: rid},
			{Name: "ACK without queueId", Tx: text("{SIG}\r\nc31\r\n\r\nACK\r\n"), Corr: "c31"},
			{Name: "OFF unsigned", Tx: text("\r\nc31b\r\n{RID}\r\nOFF\r\n"), Corr: "c31b", Queue: rid},
			{Name: "DEL unsigned", Tx: text("\r\nc32\r\n{RID}\r\nDEL\r\n"), Corr: "c32", Queue: rid},
		},
	},
	{
		Name:      "ERR SYNTAX 4",
		Condition: "queueId or signature present where not allowed (queueId on NEW or PING, signature on PING)",
		Err:       codec.ErrSyntaxExtra,
		Cases: []Case{
			{Name: "NEW with queueId", Tx: text("\r\nc33\r\n{RID}\r\nNEW {RK}\r\n"), Corr: "c33", Queue: rid},
			{Name: "PING with queueId", Tx: text("\r\nc34\r\n{SID}\r\nPING\r\n"), Corr: "c34", Queue: sid},
			{Name: "PING with a 3-byte queueId", Tx: text("\r\nc34b\r\nAQID\r\nPING\r\n"), Corr: "c34b", Queue: short},
			{Name: "PING signed", Tx: text("{SIG}\r\nc35\r\n\r\nPING\r\n"), Corr: "c35"},
		},
	},
	{
		Name:      "ERR AUTH",
		Condition: "authentication fails (§5, §7)",
		Err:       codec.ErrAuth,
		Cases: []Case{
			{Name: "SUB with a bad signature", Tx: text("{SIG}\r\nc36\r\n{RID}\r\nSUB\r\n"), Corr: "c36", Queue: rid},
			{Name: "SEND signed before KEY", Tx: text("{SIG}\r\nc37\r\n{SID}\r\nSEND :x\r\n"), Corr: "c37", Queue: sid},
			{Name: "NEW signed by another key", Tx: signed(other, "c38", func(Fixture) []byte { return nil }, codec.CmdNEW, rkKey), Corr: "c38"},
			{Name: "SEND to no queue", Tx: text("\r\nc39\r\n{NOWHERE}\r\nSEND :x\r\n"), Corr: "c39", Queue: noQueue},
			{Name: "KEY on no queue", Tx: signed(rk, "c40", noQueue, codec.CmdKEY, rkKey), Corr: "c40", Queue: noQueue},
			{Name: "SUB on a SID", Tx: signed(rk, "c41", sid, codec.CmdSUB, nil), Corr: "c41", Queue: sid},
			{Name: "ACK with the wrong key", Tx: signed(other, "c42", rid, codec.CmdACK, nil), Corr: "c42", Queue: rid},
		},
	},
	{
		Name:      "ERR PROHIBITED (ACK)",
		Condition: "ACK without subscription or without a delivered message",
		Err:       codec.ErrProhibited,
		Cases: []Case{
			{Name: "ACK from a connection that is not the subscriber", Tx: signed(rk, "c43", rid, codec.CmdACK, nil), Corr: "c43", Queue: rid},
		},
	},
	{
		Name:      "ERR QUOTA",
		Condition: "queue full",
		Err:       codec.ErrQuota,
		Cases: []Case{
			{Name: "SEND to a full queue", Tx: text("\r\nc44\r\n{FULL}\r\nSEND :one too many\r\n"), Corr: "c44", Queue: full},
		},
	},
	{
		Name:      "ERR INTERNAL",
		Condition: "the server failed (e.g. its log cannot be written)",
		Err:       codec.ErrInternal,
		Cases: []Case{
			{Name: "NEW while the store fails", Tx: text("\r\nc45\r\n\r\nNEW {RK}\r\n"), Corr: "c45", Needs: FailingStore},
		},
		NotRelay: "the relay would need a store that fails its writes: it has no switch for that, and the tests run as root, " +
			"for whom file modes do not make the log unwritable; the engine level provokes it with a Store whose Append fails",
	},
}
