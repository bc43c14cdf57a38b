// Package bodylog keeps message bodies on disk for the relay (issue 14): an
// append-only log of body records in segment files, read back by ref when a
// message is delivered, behind the last append buffers and a ristretto cache
// bounded in bytes. The owner (the disk store: the wal for metadata plus this
// log) keeps per message only
// its id, time, size and the 8-byte store.BodyRef that Append returns, so the
// relay's memory is bounded by its configuration, not by what is stored.
//
// Invariants:
//
//   - Bodies never move: a ref stays valid until the owner deletes it, so the
//     owner's index is never rewritten.
//   - A ref is durable only after a Sync that began after its Append returned;
//     the owner's metadata writer calls Sync before each fsync of its own, so a
//     durable metadata record never points at a body that is not durable.
//   - Every record a ref points at is checked when read: checksum, and that it
//     is the body of the queue and message the caller names.
//   - A deleted body (Delete, or absent from the live set given to Retain)
//     leaves every file of the directory within bounded time, with at most one
//     erasure per dead record (SPEC §8), and no byte of it, nor its queue or
//     message ID, remains: the whole record is erased.
//
// # Files
//
// A log lives in one directory of its own (mode 0700; every file 0600):
//
//	LOCK                     flock(2)-ed while a Log is open (vfs.FS.Lock)
//	0000000000000001.body    segment 1: body records, appended in order
//	0000000000000002.body    segment 2, and so on; numbers grow by one per segment
//	CLEAN                    summary left by a clean Close; deleted by Open
//	*.tmp                    a file being written; deleted at Open
//
// Names are the segment's number in 16 lowercase hex digits, from 1 to
// 2³²−1. Numbers are never reused: Open starts a new segment one past the
// highest in the directory, and a segment's directory entry is durable
// before any record of the owner that names it can reach the disk (see
// Durability), so no ref the owner replays names a segment a crash lost.
// Gaps in the run are normal (segments whose bodies are all dead are
// deleted).
//
// # Segment header
//
// Every segment starts with 32 bytes; integers are little-endian throughout:
//
//	 0                  8         10        12        16                 24        28       32
//	+------------------+---------+---------+---------+------------------+---------+--------+
//	| magic "smp-body" | version | 0 (u16) | 0 (u32) | number (u64)     | 0 (u32) | crc32c |
//	+------------------+---------+---------+---------+------------------+---------+--------+
//
// version is 1; number repeats the file name; crc32c (Castagnoli) covers
// bytes 0–27.
//
// # Records
//
// After the header a segment is a sequence of records, each starting at a
// multiple of 8 bytes:
//
//	 0        4        8                          24              32
//	+--------+--------+--------------------------+---------------+------------------+---------+
//	| size   | crc32c | rid (queue ID)           | msgID         | body             | padding |
//	|  u32   |  u32   | 16 B                     | 8 B           | size − 32 bytes  | zeros   |
//	+--------+--------+--------------------------+---------------+------------------+---------+
//
// size is 32 plus the body's length, from 32 to 1 MiB (so a body has at most
// MaxBodyBytes); crc32c covers bytes 0–3 (size) and 8 to size (IDs and body).
// padding brings the record's extent to the next multiple of 8. There is no
// partial record: bytes whose size word is implausible, that run past the end
// of the file, whose checksum fails or whose padding is not zero are not a
// record.
//
// Erased space is zeros. A size word of 0 never starts a record (a record's
// size is at least 32), so a zero 8-byte word where a record would start is
// erased space or padding, and a scanner steps over it 8 bytes at a time.
//
// # Refs
//
// A ref packs the segment number and the record's byte offset in the segment
// file; part of the file format, since refs are kept in the owner's log:
//
//	 63                             32 31                                     0
//	+---------------------------------+----------------------------------------+
//	| segment number (1 … 2³²−1)      | offset of the record (≥ 32, ≡ 0 mod 8) |
//	+---------------------------------+----------------------------------------+
//
// A ref is never 0 (store.BodyRef's "the body is in memory"): segment numbers
// start at 1. Segments are at most MaxSegmentBytes (2 GiB) so that offsets
// fit; SplitRef unpacks a ref.
//
// # Summary
//
// A clean Close writes CLEAN (as CLEAN.tmp, fsynced, renamed, directory
// fsynced), the live counts of every segment, so that the next Retain need
// not read anything:
//
//	 0                  8         10        12          16
//	+------------------+---------+---------+-----------+--------------------------------------+--------+
//	| magic "smp-bcln" | version | 0 (u16) | count u32 | count × (number u64, records u64,     | crc32c |
//	|                  |         |         |           |          bytes u64: live extents)     |  u32   |
//	+------------------+---------+---------+-----------+--------------------------------------+--------+
//
// crc32c covers everything before it. Open reads it and deletes it (directory
// fsynced) before it changes anything, so it never outlives the state it
// describes.
//
// # Recovery
//
// Open reads no record. It lists the directory, checks each segment's header,
// reads CLEAN if present, deletes leftover *.tmp files, and starts a new
// segment: it never appends to a segment from before, so a torn tail (a
// crash in the middle of writing records) is never parsed, let alone
// extended. The rule that makes this enough: a ref the owner keeps durably
// points at a record that was synced before the owner's record was (Sync
// before the owner's fsync), so it lies before any torn bytes; records after
// it that no durable ref names are dead. A segment whose header is bad holds
// no synced record unless the disk corrupted it, and serves none either way:
// Read reports every ref into it (ErrCorrupt), and Retain deletes it, with
// whatever pages of bodies a power cut left in it.
//
// What a crash leaves behind — Deletes not yet erased, records appended but
// never named by a durable owner record, torn tails — is dead space, and
// Retain erases it: the owner calls Retain once after loading its metadata,
// with the ref of every live message. In each older segment everything that
// is not a live record is dead: Retain deletes segments with no live ref, and
// in the others erases the ranges between live records and truncates the file
// after the last one. It reads each live record's size word to find where the
// record ends (one page per live record, never a body) — unless CLEAN vouched
// for the segment (its count matches the live refs: a clean Close erased every
// pending Delete), in which case it reads nothing.
//
// A live ref whose record does not check — a power loss may keep the
// owner's record and lose the body (its last group in SyncAlways, any group
// after the last fsync in SyncInterval and SyncNever), as it may lose the
// owner's record itself — makes Read answer ErrMissing (zeros, end of file)
// or ErrCorrupt, and the owner drops that message. When its size word
// reached the disk, Retain counts the record by it and Delete erases it by
// it; when it did not, no record can be read there and Retain erases the
// ref's bytes with the dead space around them.
//
// # Durability
//
// Append writes to a buffer (and to the file when the buffer fills) and never
// fsyncs; Flush writes the buffer, and fsyncs the directory when a segment
// was created since its last fsync; Sync writes the buffer and fsyncs the
// current segment, the segments sealed since the last Sync, and the
// directory when a segment was created since then. A segment not written
// nor erased since its last fsync is not fsynced again: nothing in it is
// waiting to be made durable. The owner's modes carry
// over unchanged: every write of a group is preceded by Flush (a kill -9
// then loses no body the owner's written records name, and a power cut no
// segment they name), and every fsync the owner makes by Sync. A write or
// fsync error fails the
// log for good, as in the wal: Append and Sync then return an error wrapping
// ErrFailed (no fsync is retried: after a failed fsync the kernel may have
// dropped the dirty pages).
//
// # Space reclamation
//
// Delete(ref) drops the body from the cache and the tail (below) at once
// and queues the ref. The
// eraser goroutine wakes every EraseInterval (default 100 ms: small
// batches, and it yields its processor every few records, so that erasing
// never holds a one-core relay's only processor long) and erases the queued
// refs that were already queued at its previous wake-up, or after
// which at least three Syncs have started. The second rule is the one that
// normally applies: the owner appends its deletion record, then calls Delete;
// its writer, which calls Sync before each fsync of a group, has fsynced that
// record by the time the third Sync starts. Erasing only then means a crash
// never leaves a message whose deletion was not durable without its body.
// The first rule bounds the time when Syncs are rare (SyncNever) or slower
// than an interval: a deleted body leaves the disk within two intervals
// either way, and then a power loss can bring back a deleted message without
// its body, which the owner drops (ErrMissing): it was deleted. Erase applies every queued Delete at once (for
// compaction, tests and Close).
//
// To erase a record the eraser reads it and checks it (so a repeated Delete,
// a wrong ref or a corrupt size never erases a neighbour): after
// DeleteMessage, which names the message, its 32-byte header — size word and
// IDs — is the check, so an acknowledged body is never read back; after
// Delete, the whole record and its checksum. In an older
// segment that Retain swept, a record that does not check but whose size
// word does (a body a power cut tore) is erased by that size word, which
// Retain trusted to count it and to erase around it — then erases its
// whole extent — header, IDs, body, padding — in place, merging adjacent
// records into one range: it punches a hole (fallocate(2)
// FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE, Linux), so the blocks go back to
// the file system and the range reads as zeros, or, where that is not
// supported, writes zeros over it. It then fsyncs each sealed segment it
// changed (the current one is fsynced by the owner's next Sync; Erase fsyncs
// every one). A
// record still in the append buffer is zeroed there and never reaches the
// file. Write amplification is at most one overwrite of each dead record's
// extent (none with holes: the kernel only zeroes the partial blocks at the
// ends of a range), plus one read of it.
//
// Each segment counts its live records. A sealed segment (not the one being
// appended to) whose count reaches zero is deleted, and the directory fsynced.
// Counts of the segments older than this Open are known once Retain has run
// (from CLEAN or from the live refs); until then such segments are erased in
// place but not deleted.
//
// What erasure does not do: a punched block or an overwritten one may still
// be readable on the device itself (a copy-on-write file system, an SSD's
// flash translation layer). "Gone from the data directory" means gone from
// every file the relay or anyone reading its directory can read; full-disk
// encryption is the answer below that. The holes left by live records' dead
// neighbours show the sizes of the runs of dead records, not what they held.
//
// # Cache
//
// Recently appended bodies are read from memory without a cache lookup: the
// log keeps its last tailChunks append buffers (1 MiB each, 4 MiB: about half
// a second of appends at full load) after writing them, as they were
// written, and Read copies a record from there, checking its size word and
// IDs. Delete zeroes a written record's copy there at once (an unwritten
// one stays for the eraser, which zeroes it in the buffer) and hands the
// eraser the extent it checked there, so that the eraser need not read the
// record's header back from the file (a pread(2) per acknowledged message
// before). A buffer is cleared when it is reused (leaving the tail, or, with
// no tail, once written), so a body deleted after its buffer left the tail
// does not stay in the spare capacity. This tail replaced offering every
// appended body to the cache: a
// Set per SEND (an allocation, and a hand-off to ristretto's goroutine), a
// Get per delivery and a Del per ACK.
//
// A ristretto cache keyed by ref holds recently read bodies (a private
// copy) that were no longer in the tail, with their queue and message IDs so
// that a hit is checked as a disk read is. An entry costs its body's length
// plus ristretto's per-entry bookkeeping, so empty bodies are bounded too.
// SetCacheBytes changes the bound while the relay runs; 0 drops the cache
// and the tail.
//
// # Concurrency
//
// Append, Read, Delete, Sync, Erase, Retain, SetCacheBytes and Stats may be
// called from any goroutine. Append and Delete take mu, the append lock, for
// a copy or a slice append (and a write(2) when the buffer fills, or file
// creation at rotation); the checksum is computed before. Every use of the
// cache holds cacheMu for reading (ristretto's own Get and Set are lock-free
// enough); SetCacheBytes and Close hold it for writing only to swap the cache
// out, because ristretto's Close must not run during a Get or Set. Read takes
// the segment list's read lock to find the segment, mu to look in the append
// buffer and the tail (and copy the body from there), and cacheMu when they
// do not hold it; file reads are pread(2)s. Sync takes
// syncMu (one Sync at a time), mu to write the buffer, and fsyncs holding
// neither mu nor any lock an appender needs. The eraser goroutine, Erase,
// Retain and Close take eraseMu for a whole batch; erasure writes with
// pwrite(2) or fallocate(2) on ranges no appender touches, and takes mu only
// to zero a record still in the buffer. Lock order: eraseMu, then mu, then
// segMu; syncMu, then mu; cacheMu is never held while taking another. Close stops the eraser, erases what is pending,
// syncs and writes CLEAN; the owner closes its metadata log first.
package bodylog
