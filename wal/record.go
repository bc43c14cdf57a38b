package wal

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/engine"
)

// Sizes of record fields; part of the file format.
const (
	idSize    = codec.QueueIDSize // RID, SID
	msgIDSize = codec.MsgIDSize
	timeSize  = 8
)

// checkRecord reports whether r can be encoded: a known kind with the key
// that kind needs. Append calls it so that encoding in the writer cannot fail.
func checkRecord(r *engine.Record) error {
	switch r.Kind {
	case engine.RecQueueCreated:
		if r.RecipientKey == nil || len(r.RecipientKey.SPKI()) == 0 {
			return fmt.Errorf("%w: queue created without a recipient key", ErrRecord)
		}
	case engine.RecQueueSecured:
		if r.SenderKey == nil || len(r.SenderKey.SPKI()) == 0 {
			return fmt.Errorf("%w: queue secured without a sender key", ErrRecord)
		}
	case engine.RecQueueSuspended, engine.RecQueueDeleted, engine.RecMessageStored, engine.RecMessageDeleted:
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrRecord, r.Kind)
	}
	return nil
}

// recordSize is the length of r's encoding after the length prefix.
func recordSize(r *engine.Record) int {
	n := 1 + idSize
	switch r.Kind {
	case engine.RecQueueCreated:
		n += idSize + len(r.RecipientKey.SPKI())
	case engine.RecQueueSecured:
		n += len(r.SenderKey.SPKI())
	case engine.RecQueueSuspended:
		n += timeSize
	case engine.RecMessageStored:
		n += msgIDSize + timeSize + len(r.Body)
	case engine.RecMessageDeleted:
		n += msgIDSize
	}
	return n
}

// appendRecord appends r's encoding to dst. r has passed checkRecord.
func appendRecord(dst []byte, r *engine.Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(recordSize(r)))
	dst = append(dst, byte(r.Kind))
	dst = append(dst, r.RID[:]...)
	switch r.Kind {
	case engine.RecQueueCreated:
		dst = append(dst, r.SID[:]...)
		dst = append(dst, r.RecipientKey.SPKI()...)
	case engine.RecQueueSecured:
		dst = append(dst, r.SenderKey.SPKI()...)
	case engine.RecQueueSuspended:
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
	case engine.RecMessageStored:
		dst = append(dst, r.MsgID[:]...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
		dst = append(dst, r.Body...)
	case engine.RecMessageDeleted:
		dst = append(dst, r.MsgID[:]...)
	}
	return dst
}

var errShortRecord = errors.New("record runs past the end of its frame")

// recordView is one decoded record whose variable fields alias the frame's
// buffer.
type recordView struct {
	kind  engine.RecordKind
	rid   [idSize]byte
	sid   [idSize]byte
	msgID [msgIDSize]byte
	time  int64
	key   []byte // SPKI of queue created / secured; aliases the buffer
	body  []byte // message stored; aliases the buffer
}

// decodeRecord decodes the record at the start of b and returns how many
// bytes it took.
func decodeRecord(b []byte, v *recordView) (int, error) {
	size, n := binary.Uvarint(b)
	if n <= 0 {
		return 0, errors.New("bad record length")
	}
	if size > uint64(len(b)-n) {
		return 0, errShortRecord
	}
	rec := b[n : n+int(size)]
	if len(rec) < 1+idSize {
		return 0, fmt.Errorf("record of %d bytes is too short", len(rec))
	}
	*v = recordView{kind: engine.RecordKind(rec[0])}
	copy(v.rid[:], rec[1:])
	f := rec[1+idSize:]
	exact := func(want int) error {
		if len(f) != want {
			return fmt.Errorf("record kind %d has %d bytes of fields, want %d", v.kind, len(f), want)
		}
		return nil
	}
	switch v.kind {
	case engine.RecQueueCreated:
		if len(f) <= idSize {
			return 0, errors.New("queue created record without a key")
		}
		copy(v.sid[:], f)
		v.key = f[idSize:]
	case engine.RecQueueSecured:
		if len(f) == 0 {
			return 0, errors.New("queue secured record without a key")
		}
		v.key = f
	case engine.RecQueueSuspended:
		if err := exact(timeSize); err != nil {
			return 0, err
		}
		v.time = int64(binary.LittleEndian.Uint64(f))
	case engine.RecQueueDeleted:
		if err := exact(0); err != nil {
			return 0, err
		}
	case engine.RecMessageStored:
		if len(f) < msgIDSize+timeSize {
			return 0, errors.New("message stored record too short")
		}
		copy(v.msgID[:], f)
		v.time = int64(binary.LittleEndian.Uint64(f[msgIDSize:]))
		v.body = f[msgIDSize+timeSize:]
	case engine.RecMessageDeleted:
		if err := exact(msgIDSize); err != nil {
			return 0, err
		}
		copy(v.msgID[:], f)
	default:
		return 0, fmt.Errorf("unknown record kind %d", v.kind)
	}
	return n + int(size), nil
}

// toRecord fills r from v, parsing keys and copying the body out of the
// frame buffer, which is reused.
func (v *recordView) toRecord(r *engine.Record) error {
	*r = engine.Record{Kind: v.kind, RID: v.rid, Time: v.time, MsgID: v.msgID}
	switch v.kind {
	case engine.RecQueueCreated:
		r.SID = v.sid
		k, err := codec.ParseVerifyKey(v.key)
		if err != nil {
			return fmt.Errorf("recipient key: %w", err)
		}
		r.RecipientKey = k
	case engine.RecQueueSecured:
		k, err := codec.ParseVerifyKey(v.key)
		if err != nil {
			return fmt.Errorf("sender key: %w", err)
		}
		r.SenderKey = k
	case engine.RecMessageStored:
		r.Body = append(make([]byte, 0, len(v.body)), v.body...)
	}
	return nil
}
