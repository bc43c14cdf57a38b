package wal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/smprelay/smprelay/codec"
	"github.com/smprelay/smprelay/store"
)

// Sizes of record fields; part of the file format.
const (
	idSize    = codec.QueueIDSize // RID, SID
	msgIDSize = codec.MsgIDSize
	timeSize  = 8
	sizeSize  = 4 // a body's length in recMessageRef
	refSize   = 8 // a store.BodyRef in recMessageRef
)

// Record kinds as the log writes them: part of the file format, never
// renumber. store.Kind is the engine's naming and may change; fileKind and
// storeKind map between the two.
const (
	recQueueCreated   byte = 1
	recQueueSecured   byte = 2
	recQueueSuspended byte = 3
	recQueueDeleted   byte = 4
	recMessageStored  byte = 5
	recMessageDeleted byte = 6
	recMessageRef     byte = 7  // a message whose body a Bodies keeps: size and ref instead of the body
	recQueueCreatedAt byte = 8  // queue created, with its creation time
	recQueueBlocked   byte = 9  // the operator blocked the queue (smp-server admin block)
	recQueueUnblocked byte = 10 // the operator lifted the block
)

// fileKind returns the kind byte of k's first form, and false for a kind the
// log cannot store; recordKind picks the form a record needs.
func fileKind(k store.Kind) (byte, bool) {
	switch k {
	case store.QueueCreated:
		return recQueueCreated, true
	case store.QueueSecured:
		return recQueueSecured, true
	case store.QueueSuspended:
		return recQueueSuspended, true
	case store.QueueDeleted:
		return recQueueDeleted, true
	case store.MessageStored:
		return recMessageStored, true
	case store.MessageDeleted:
		return recMessageDeleted, true
	case store.QueueBlocked:
		return recQueueBlocked, true
	case store.QueueUnblocked:
		return recQueueUnblocked, true
	}
	return 0, false
}

// storeKind returns the store.Kind of the kind byte b, and false for a byte
// no record kind has.
func storeKind(b byte) (store.Kind, bool) {
	switch b {
	case recQueueCreated:
		return store.QueueCreated, true
	case recQueueSecured:
		return store.QueueSecured, true
	case recQueueSuspended:
		return store.QueueSuspended, true
	case recQueueDeleted:
		return store.QueueDeleted, true
	case recMessageStored, recMessageRef:
		return store.MessageStored, true
	case recMessageDeleted:
		return store.MessageDeleted, true
	case recQueueCreatedAt:
		return store.QueueCreated, true
	case recQueueBlocked:
		return store.QueueBlocked, true
	case recQueueUnblocked:
		return store.QueueUnblocked, true
	}
	return 0, false
}

// recordKind returns the kind byte r is written with: a message kept by ref
// and a queue with a creation time have forms of their own, so that logs
// written before those fields existed read as they did.
func recordKind(r *store.Record) byte {
	switch {
	case r.Kind == store.MessageStored && r.Ref != 0:
		return recMessageRef
	case r.Kind == store.QueueCreated && r.Time != 0:
		return recQueueCreatedAt
	}
	k, _ := fileKind(r.Kind)
	return k
}

// checkRecord is checkRecord for this log: refs are valid only when a Bodies
// keeps the bodies they name.
func (l *Log) checkRecord(r *store.Record) error { return checkRecord(r, l.opts.Bodies != nil) }

// checkRecord reports whether r can be encoded: a known kind with the key
// that kind needs. Append calls it so that encoding in the writer cannot fail.
func checkRecord(r *store.Record, refs bool) error {
	switch r.Kind {
	case store.QueueCreated:
		if r.RecipientKey == nil || len(r.RecipientKey.SPKI()) == 0 {
			return fmt.Errorf("%w: queue created without a recipient key", ErrRecord)
		}
	case store.QueueSecured:
		if r.SenderKey == nil || len(r.SenderKey.SPKI()) == 0 {
			return fmt.Errorf("%w: queue secured without a sender key", ErrRecord)
		}
	case store.MessageStored:
		// Without a Bodies the log keeps every body itself, in the record:
		// it can write neither a body another store holds nor one whose
		// size is wrong.
		if r.Ref != 0 {
			if !refs {
				return fmt.Errorf("%w: message stored by reference, without its body", ErrRecord)
			}
			if r.Body != nil || r.Size < 0 || r.Size > math.MaxUint32 {
				return fmt.Errorf("%w: message stored by reference with a body or a size of %d", ErrRecord, r.Size)
			}
			break
		}
		if r.Size != len(r.Body) {
			return fmt.Errorf("%w: message stored with size %d and a body of %d bytes", ErrRecord, r.Size, len(r.Body))
		}
	case store.QueueSuspended, store.QueueDeleted, store.MessageDeleted, store.QueueBlocked, store.QueueUnblocked:
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrRecord, r.Kind)
	}
	return nil
}

// recordSize is the length of r's encoding after the length prefix.
func recordSize(r *store.Record) int {
	n := 1 + idSize
	switch r.Kind {
	case store.QueueCreated:
		n += idSize + len(r.RecipientKey.SPKI())
		if r.Time != 0 {
			n += timeSize
		}
	case store.QueueSecured:
		n += len(r.SenderKey.SPKI())
	case store.QueueSuspended:
		n += timeSize
	case store.MessageStored:
		n += msgIDSize + timeSize
		if r.Ref != 0 {
			n += sizeSize + refSize
		} else {
			n += len(r.Body)
		}
	case store.MessageDeleted:
		n += msgIDSize
	}
	return n
}

// appendRecord appends r's encoding to dst. r has passed checkRecord.
func appendRecord(dst []byte, r *store.Record) []byte {
	dst = binary.AppendUvarint(dst, uint64(recordSize(r)))
	dst = append(dst, recordKind(r))
	dst = append(dst, r.RID[:]...)
	switch r.Kind {
	case store.QueueCreated:
		dst = append(dst, r.SID[:]...)
		if r.Time != 0 {
			dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
		}
		dst = append(dst, r.RecipientKey.SPKI()...)
	case store.QueueSecured:
		dst = append(dst, r.SenderKey.SPKI()...)
	case store.QueueSuspended:
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
	case store.MessageStored:
		dst = append(dst, r.MsgID[:]...)
		dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Time))
		if r.Ref != 0 {
			dst = binary.LittleEndian.AppendUint32(dst, uint32(r.Size))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(r.Ref))
		} else {
			dst = append(dst, r.Body...)
		}
	case store.MessageDeleted:
		dst = append(dst, r.MsgID[:]...)
	}
	return dst
}

var errShortRecord = errors.New("record runs past the end of its frame")

// recordView is one decoded record whose variable fields alias the frame's
// buffer.
type recordView struct {
	kind  byte // the file's kind byte (recQueueCreated, …)
	rid   [idSize]byte
	sid   [idSize]byte
	msgID [msgIDSize]byte
	time  int64
	key   []byte // SPKI of queue created / secured; aliases the buffer
	body  []byte // message stored; aliases the buffer
	size  uint32 // message stored by ref: the body's length
	ref   uint64 // message stored by ref: where the body is
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
	*v = recordView{kind: rec[0]}
	copy(v.rid[:], rec[1:])
	f := rec[1+idSize:]
	exact := func(want int) error {
		if len(f) != want {
			return fmt.Errorf("record kind %d has %d bytes of fields, want %d", v.kind, len(f), want)
		}
		return nil
	}
	switch v.kind {
	case recQueueCreated:
		if len(f) <= idSize {
			return 0, errors.New("queue created record without a key")
		}
		copy(v.sid[:], f)
		v.key = f[idSize:]
	case recQueueCreatedAt:
		if len(f) <= idSize+timeSize {
			return 0, errors.New("queue created record without a key")
		}
		copy(v.sid[:], f)
		v.time = int64(binary.LittleEndian.Uint64(f[idSize:]))
		v.key = f[idSize+timeSize:]
		if v.time == 0 {
			// Time 0 is "unknown", written as kind 1: each record has one
			// encoding (as a ref of 0 is never written as kind 7).
			return 0, errors.New("queue created record with time 0")
		}
	case recQueueSecured:
		if len(f) == 0 {
			return 0, errors.New("queue secured record without a key")
		}
		v.key = f
	case recQueueSuspended:
		if err := exact(timeSize); err != nil {
			return 0, err
		}
		v.time = int64(binary.LittleEndian.Uint64(f))
	case recQueueDeleted, recQueueBlocked, recQueueUnblocked:
		if err := exact(0); err != nil {
			return 0, err
		}
	case recMessageStored:
		if len(f) < msgIDSize+timeSize {
			return 0, errors.New("message stored record too short")
		}
		copy(v.msgID[:], f)
		v.time = int64(binary.LittleEndian.Uint64(f[msgIDSize:]))
		v.body = f[msgIDSize+timeSize:]
	case recMessageRef:
		if err := exact(msgIDSize + timeSize + sizeSize + refSize); err != nil {
			return 0, err
		}
		copy(v.msgID[:], f)
		v.time = int64(binary.LittleEndian.Uint64(f[msgIDSize:]))
		v.size = binary.LittleEndian.Uint32(f[msgIDSize+timeSize:])
		v.ref = binary.LittleEndian.Uint64(f[msgIDSize+timeSize+sizeSize:])
		if v.ref == 0 {
			return 0, errors.New("message stored by ref with ref 0")
		}
	case recMessageDeleted:
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
func (v *recordView) toRecord(r *store.Record) error {
	k, ok := storeKind(v.kind)
	if !ok {
		return fmt.Errorf("unknown record kind %d", v.kind) // decodeRecord rejects it first
	}
	*r = store.Record{Kind: k, RID: v.rid, Time: v.time, MsgID: v.msgID}
	switch v.kind {
	case recQueueCreated, recQueueCreatedAt:
		r.SID = v.sid
		k, err := codec.ParseVerifyKey(v.key)
		if err != nil {
			return fmt.Errorf("recipient key: %w", err)
		}
		r.RecipientKey = k
	case recQueueSecured:
		k, err := codec.ParseVerifyKey(v.key)
		if err != nil {
			return fmt.Errorf("sender key: %w", err)
		}
		r.SenderKey = k
	case recMessageStored:
		r.Size = len(v.body)
		r.Body = append(make([]byte, 0, len(v.body)), v.body...)
	case recMessageRef:
		r.Size, r.Ref = int(v.size), store.BodyRef(v.ref)
	}
	return nil
}
