package wal

import (
	"fmt"

	"github.com/smprelay/smprelay/store"
)

// Bodies keeps message bodies outside the log (package bodylog, composed
// with the log by package diskstore). With Options.Bodies set, a message's
// record holds only its size and a ref to its body (recMessageRef), and the
// log keeps this contract with the body keeper:
//
//   - Append writes the body before the record that names it is queued, and
//     the writer calls Flush before it writes a group, so a record that
//     reached the file names a body that reached its file first (kill -9
//     loses neither alone).
//   - The writer runs Sync alongside every fsync of the log and publishes
//     the group as durable once both returned, so every answered change
//     names a durable body. A power cut between the two fsyncs can keep a
//     record whose body was lost; no reply was sent for it, and Read then
//     reports store.ErrBodyLost, so the engine drops the message.
//   - Delete is called after the record that deletes the message (or its
//     queue) was queued, never before.
//   - After every compaction the log calls Erase, so that no body of an
//     acknowledged or deleted message outlives a compaction (SPEC §8); after
//     the start-up compaction it calls Retain with every ref the engine
//     holds, which erases what a crash left behind.
//
// Every method must be safe for concurrent use: Append, Read and Delete come
// from event loops, Flush and Sync from the writer goroutine, Erase and
// Retain from the compaction.
type Bodies interface {
	// Append writes body and returns its ref (never 0); no fsync.
	Append(rid store.QueueID, id store.MsgID, body []byte) (store.BodyRef, error)
	// Read appends the body at ref to dst; an error wrapping
	// store.ErrBodyLost says it is gone for good.
	Read(rid store.QueueID, id store.MsgID, ref store.BodyRef, dst []byte) ([]byte, error)
	// Delete says the body at ref is dead.
	Delete(ref store.BodyRef)
	// DeleteMessage is Delete when the message's IDs are known, which lets
	// the keeper check the ref cheaply before erasing.
	DeleteMessage(rid store.QueueID, id store.MsgID, ref store.BodyRef)
	// Flush hands buffered bodies to the operating system.
	Flush() error
	// Sync makes every body appended so far durable.
	Sync() error
	// Erase removes every deleted body from the disk now.
	Erase() error
	// Retain erases every body older than this run that live does not
	// name; it may reorder live.
	Retain(live []store.BodyRef) error
}

// bodyRecord prepares r for the log when a Bodies keeps the bodies: a
// message's body goes to the body keeper and r keeps only its ref. It
// returns the ref the engine keeps (0 when r names no new body).
func (l *Log) bodyRecord(r *store.Record) (store.BodyRef, error) {
	if l.opts.Bodies == nil || r.Kind != store.MessageStored || r.Ref != 0 {
		return 0, nil
	}
	ref, err := l.opts.Bodies.Append(r.RID, r.MsgID, r.Body)
	if err != nil {
		return 0, fmt.Errorf("wal: storing a message body: %w", err)
	}
	r.Ref, r.Body = ref, nil
	return ref, nil
}

// bodiesDied tells the body keeper which bodies r deleted; r is queued.
func (l *Log) bodiesDied(r *store.Record) {
	if l.opts.Bodies == nil {
		return
	}
	switch r.Kind {
	case store.MessageDeleted:
		if r.Ref != 0 {
			l.opts.Bodies.DeleteMessage(r.RID, r.MsgID, r.Ref)
		}
	case store.QueueDeleted:
		for _, ref := range r.Refs {
			l.opts.Bodies.Delete(ref)
		}
	}
}

// replayBody adapts a replayed message record to the log's body keeping:
// with a Bodies, a body written in its record by an earlier relay that kept
// bodies in the log moves to the body keeper (the start-up compaction then
// rewrites the record with its ref: the migration happens in place); without
// one, a record that names a ref cannot be served.
func (l *Log) replayBody(r *store.Record) error {
	if r.Kind != store.MessageStored {
		return nil
	}
	switch {
	case l.opts.Bodies == nil && r.Ref != 0:
		return ErrBodiesElsewhere
	case l.opts.Bodies != nil && r.Ref == 0:
		ref, err := l.opts.Bodies.Append(r.RID, r.MsgID, r.Body)
		if err != nil {
			return fmt.Errorf("moving a message body out of the log: %w", err)
		}
		r.Ref, r.Body = ref, nil
		l.migrated.Add(1)
		l.migratedRefs = append(l.migratedRefs, ref)
	}
	return nil
}

// ReadBody implements store.Store: with a Bodies it reads the body at ref;
// without one the log gives out no refs, so the engine never calls it.
func (l *Log) ReadBody(rid store.QueueID, id store.MsgID, ref store.BodyRef, dst []byte) ([]byte, error) {
	if l.opts.Bodies == nil {
		return nil, errNoRefs
	}
	return l.opts.Bodies.Read(rid, id, ref, dst)
}
