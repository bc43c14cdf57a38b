// Package wal is the relay's write-ahead log: an append-only, segmented log of
// the state changes the engine reports (store.Record), with group commit,
// crash recovery that cuts off a torn tail, and compaction that rewrites the
// live state so that deleted data leaves the disk (SPEC §8). A *Log
// implements store.Store, store.Compactor and store.StatsReporter. Without
// Options.Bodies it keeps every message body in the log, in its record:
// Append never returns a body ref, so the engine never calls ReadBody. With
// it (package diskstore), a message's record holds its size and a ref to a
// body the Bodies keeps (see Bodies in bodies.go for the order of writes).
//
// # Files
//
// A log lives in one directory (mode 0700; every file 0600):
//
//	LOCK                    flock(2)-ed while a Log is open; holds the owner's pid
//	UNSYNCED                empty; there while a Log in fsync mode interval or never
//	                        is open or after it crashed (see Recovery)
//	0000000000000007.snap   snapshot 7: the live state as of the start of segment 7
//	0000000000000007.wal    segment 7: records appended after snapshot 7 began
//	0000000000000008.wal    segment 8: the records that followed segment 7
//	.*.tmp                  a file being written (internal/atomicfile); deleted at Open
//
// Names are the file's number in 16 lowercase hex digits. Numbers grow by one
// per segment; a snapshot takes the number of the segment that follows it.
// Replay reads the highest-numbered snapshot S, then segments S, S+1, … in
// order; files numbered below S are obsolete and deleted. With no snapshot,
// segments must start at 1. A missing number in the run is an error.
//
// Segments and snapshots are created as a temporary file .NAME.RANDOM.tmp,
// written, fsynced, renamed and the directory fsynced (internal/atomicfile),
// so a file with a final name always has a whole header (segments) or whole
// contents (snapshots). Every file operation goes through Options.FS
// (internal/vfs), the operating system's unless a test simulates a power cut.
//
// # File header
//
// Every file starts with 32 bytes; integers are little-endian throughout:
//
//	 0                 8        10    11    12                20                28      32
//	+-----------------+--------+-----+-----+-----------------+-----------------+-------+
//	| magic "smp-wal\0"| version| kind| 0   | number (u64)    | lsn (u64)       | crc32c|
//	+-----------------+--------+-----+-----+-----------------+-----------------+-------+
//
// version is 1; kind is 1 for a segment, 2 for a snapshot; number repeats the
// file name. For a segment, lsn is the log sequence number (LSN) of its first
// record; for a snapshot it is the LSN of the last record in the segments
// before it, so segment S of snapshot S starts at lsn+1. crc32c (Castagnoli)
// covers bytes 0–27.
//
// # Frames
//
// After the header a file is a sequence of frames:
//
//	 0        4        8      9      10       12       16
//	+--------+--------+------+------+--------+--------+----------------------+
//	| length | crc32c | type | comp | 0 (u16)| rawLen | payload (length B)   |
//	|  u32   |  u32   |  u8  |  u8  |        |  u32   |                      |
//	+--------+--------+------+------+--------+--------+----------------------+
//
// crc32c covers bytes 0–3 (length), 8–15 and the payload. type is 1 (batch)
// or 2 (commit). comp says how a batch payload is compressed: 0 none, 1 s2
// block format, 2 zstd frame (both github.com/klauspost/compress); rawLen is
// its decompressed length. length and rawLen are at most MaxFrameBytes.
//
// A batch frame's decompressed payload is records back to back. A commit
// frame (comp 0) ends a group of batch frames and holds 16 bytes:
//
//	+-------------------+-----------+-----------+
//	| firstLSN (u64)    | count u32 | frames u32|
//	+-------------------+-----------+-----------+
//
// firstLSN is the LSN of the group's first record (0 in a snapshot), count the
// records in the group and frames its batch frames. In a segment, a group is
// what one write(2) and one fsync carry (group commit): the batch frames the
// writer filled while the previous fsync ran, then their commit. A snapshot is
// one group: all its batch frames, one commit frame, end of file.
//
// # Records
//
// A record is a uvarint length (of everything after it), a kind byte, and the
// kind's fields. The kind bytes are the log's own (the rec* constants of
// record.go), mapped to and from store.Kind when records are encoded and
// decoded, so that the engine's naming can change without the format:
//
//	1 recQueueCreated    RID[16] SID[16] recipientKey (rest: SPKI DER)
//	2 recQueueSecured    RID[16] senderKey (rest: SPKI DER)
//	3 recQueueSuspended  RID[16] time (i64, Unix seconds)
//	4 recQueueDeleted    RID[16]
//	5 recMessageStored   RID[16] msgID[8] time (i64, Unix seconds) body (rest)
//	6 recMessageDeleted  RID[16] msgID[8]
//	7 recMessageRef      RID[16] msgID[8] time (i64, Unix seconds) size (u32) ref (u64, not 0)
//	8 recQueueCreatedAt  RID[16] SID[16] time (i64, Unix seconds, not 0) recipientKey (rest: SPKI DER)
//	9 recQueueBlocked    RID[16]
//	10 recQueueUnblocked RID[16]
//
// In kind 5 a message's size is its body's length; Append refuses a
// MessageStored record whose Size disagrees, or that has a Ref, unless
// Options.Bodies keeps the bodies: then the body goes to it and the record
// is kind 7, with the size and the ref it returned. A log with kind 7 records
// does not load without a Bodies (ErrBodiesElsewhere); replay with one moves
// the body of each kind 5 record to it, and the start-up compaction rewrites
// them as kind 7. Kinds 9 and 10 are the operator's block and unblock
// (smp-server admin, issue 16); a compaction's snapshot writes kind 9 after
// the queue's other state for a queue that is blocked, and never kind 10. A
// log holding them does not load in a relay built before they existed
// (unknown record kind): downgrading needs the blocks lifted and a compaction
// first. A queue created with a time (the engine's snapshot gives
// one) is kind 8, without one kind 1. Each record has one encoding: kind 7
// with ref 0 and kind 8 with time 0 do not decode.
//
//	 kind 7, 45 bytes after the length:
//	+---+----------+--------+----------+--------+----------+
//	| 7 | RID (16) | msgID 8| time i64 |size u32| ref u64  |
//	+---+----------+--------+----------+--------+----------+
//
// # Recovery
//
// Replay applies a segment's records one group at a time, when the group's
// commit frame has been read and checked: a group whose commit never reached
// the disk is dropped whole. Damage is a frame that is short, fails its
// checksum or has an implausible header. In the last segment, damage is a
// torn tail — the segment is truncated at the end of the last whole group
// before it, fsynced, and the number of bytes dropped is logged — unless
// what follows proves that the damaged bytes had been fsynced:
//
//   - Without UNSYNCED (the tail was written in fsync mode always), every
//     group is fsynced before the next one is written, so only the last
//     group can be torn, and its pages may reach the disk in any order (its
//     later pages without its first, say). The proof is a complete group
//     starting anywhere after the damaged frame: one or more valid batch
//     frames back to back, then a commit frame whose frame count and record
//     count are theirs and whose first LSN is not below the one the damaged
//     group starts at. A valid frame with no complete group after it is a
//     piece of the torn group, not a proof.
//   - With UNSYNCED (the tail was written in mode interval or never, where
//     many groups are written between two fsyncs and a power cut may keep a
//     later one and not an earlier one), nothing proves it: the tail is cut,
//     complete groups after the damage included, and the log says where the
//     first of them was. UNSYNCED is created, durably, before such a run
//     writes anything, and removed at its clean Close or by the next run in
//     mode always once the tail is repaired.
//
// Anything else — damage followed by such proof, damage in an earlier
// segment or in a snapshot, a gap in LSNs or segment numbers, a frame whose
// checksum is right but whose payload does not decompress or whose records
// do not parse — is an error naming the file and offset (wrapping
// ErrCorrupt), and the log does not open: never a silent loss of fsynced
// data. A corrupted last group cannot be told from a torn one and is cut off
// like it.
//
// # Durability modes
//
//	SyncAlways    each group is written and fsynced before its LSNs are durable;
//	              Append returns real LSNs, the engine holds replies until then.
//	SyncInterval  groups are written at once, fsynced every SyncInterval;
//	              Append returns 0 and replies do not wait. A kill -9 loses what
//	              the writer had not yet written (microseconds); a power loss
//	              up to the last interval.
//	SyncNever     groups are written at once and fsynced only at rotation,
//	              compaction and Close. A kill -9 loses what was not yet
//	              written; a power loss whatever the kernel had not written back.
//
// A write or fsync error fails the log for good (no fsync is ever retried:
// after a failed fsync the kernel may have dropped the dirty pages, so a
// retry that succeeds proves nothing). Every later Append returns an error
// wrapping ErrFailed, Durable stops advancing so no waiting reply is
// released, and the error is logged once.
//
// # Compaction
//
// At start (Attach) and whenever the log's logical size (record bytes in the
// snapshot and the segments after it) exceeds twice the live state — the
// engine's LiveBytes estimate, scaled by how the last snapshot's true size
// compared with it — and at least Options.CompactMinBytes, the log is
// compacted while commands keep running (a fuzzy snapshot):
//
//  1. the writer rotates: every record up to LSN X is in segments < N, every
//     later record goes to segment N and after;
//  2. the live state is written to a temporary file through
//     store.Snapshotter (it may already show changes after X: the engine's
//     replay is idempotent), and fsynced;
//  3. the writer fsyncs what was appended meanwhile, so every change the
//     snapshot shows is also durable in segment N or later;
//  4. the temporary file is renamed to N.snap and the directory fsynced;
//  5. segments and snapshots numbered below N are deleted, directory fsynced.
//
// After step 5 no acknowledged, expired or deleted message and no deleted
// queue that predates the snapshot remains in any file.
//
// # Concurrency
//
// Append and Durable run on the engine's event loops, concurrently: Append
// takes mu for a slice append and never touches the disk; Durable is an atomic
// load. One writer goroutine owns the open segment and everything about
// writing it: it takes the pending records under mu, encodes, compresses,
// writes and fsyncs them, then stores the durable LSN and calls NotifyDurable
// once per distinct Notifier of the group, holding no lock. One compaction
// goroutine runs Snapshotter.Snapshot (which takes queue locks) holding no
// lock of the Log, and talks to the writer through requests. Load runs before
// the writer exists; Close stops compaction, then the writer. The writer
// alone observes the fsync and group histograms behind Metrics and
// Histograms; Stats, StoreStats, Histograms and Metrics read atomics (and the
// failure under mu) and may be called from any goroutine.
//
// With AttachSyncs (async.go) the writer does not block in fsync(2) for a
// group of Options.AsyncMinRecords records or more (fewer still block: see
// async.go for why): it submits the group's fsyncs (the segment's, and the body keeper's from its
// PrepareSync) to io_uring, each hard-linked to a one-byte write to a socket
// pair, and waits on a channel. The caller's event loop polls the other end
// and calls the reaper, which takes the completions under asyncSync.mu and,
// when every fsync of the group succeeded and no blocking directory fsync is
// left, stores the durable LSN and notifies the group itself, then wakes the
// writer. Any failure is left to the writer, which fails the log as after a
// blocking fsync; Durable never covers a group with a failed fsync. A
// writer left waiting (no loop polls, or it stopped) reaps the ring itself.
package wal
