// Package codec turns SMP v1 bytes into values and back (SPEC §2–§4, §6). It
// does no I/O: the engine and the client feed it bytes they read and write the
// bytes it returns.
//
// What it holds:
//
//   - transmissions: Parser (block plaintext -> Transmission) and the Append*
//     encoders (server transmissions and signed client commands);
//   - protocol errors: Error, one value for each row of SPEC §6;
//   - blocks: BlockCipher (AES-256-GCM with a per-direction counter nonce) and padding;
//   - the handshake: ServerHello and ClientHello;
//   - keys: typed KEM keys (rsa, x25519, mlkem768x25519) that seal the client
//     hello, and signature keys (Ed25519, RSA-PSS) with timing-safe verification,
//     one at a time (VerifyTimingSafe) or in batches (BatchVerifier).
//
// # Ed25519 verification rules
//
// SPEC §2 asks for pure Ed25519 (RFC 8032), which leaves the verification
// equation and the decoding of non-canonical points open. The relay applies
// the ZIP-215 rules on every path, single and batch: A and R decoded
// permissively (y ≥ p and x = −0 accepted), S < ℓ required, and the
// cofactored equation [8]([S]B − R − [k]A) = 0, k = SHA-512(R ‖ A ‖ M) over
// the bytes as sent. Every signature crypto/ed25519 accepts is accepted; the
// only ones accepted that crypto/ed25519 rejects have a non-canonical
// encoding of R or a small-order component in R or A, and making one takes
// the key's private half. One rule set on both paths is what lets a batch
// (which needs the cofactored equation to be sound) accept exactly the
// signatures single verification accepts. See ed25519.go for the details
// (and the library that does the arithmetic) and batch.go for the batch's
// timing.
//
// # Decoded-key cache
//
// A VerifyKey keeps only the 32 bytes of an Ed25519 key (48 bytes in all, so
// that an idle queue costs little: issue 14). The decoded points of the keys
// in use are kept in one cache shared by the process (edcache.go), so that a
// verification under an active key decodes nothing (issue 15):
//
//   - size: DefaultKeyCacheSize (65,536) keys, about 196 bytes each (12.25
//     MiB), allocated on the first Ed25519 verification; SetKeyCacheSize
//     replaces it with an empty cache of another size, or none;
//   - eviction: 8-way set-associative, the set chosen by a hash under a
//     random per-process seed, CLOCK within the set; a key enters only when a
//     signature verified under it;
//   - concurrency: a mutex per set, held only to compare and copy. Any
//     goroutine may call VerifyKey.Verify, VerifyTimingSafe,
//     SetKeyCacheSize and ReadKeyCacheStats at any time; a BatchVerifier
//     belongs to one goroutine, as before, and shares the cache;
//   - timing (SPEC §7): every failed verification whose signature decodes
//     pays exactly one key decoding, whether its key was cached (it decodes
//     the dummy's bytes after the check), not cached (it decoded the key
//     before), or the dummy of a missing queue (kept decoded, never cached;
//     it decodes like a hit). So a failure costs the same whether the queue
//     exists and whatever the cache holds; only a signature that verifies,
//     which takes the private key, is cheaper on a hit.
//
// # Wire format
//
// Server hello, plaintext, sent by the server on accept (big-endian):
//
//	+------------+------------+-----------+--------+----------------+
//	| minVersion | maxVersion | blockSize | keyLen | typed KEM key  |
//	|  2 bytes   |  2 bytes   |  4 bytes  | 2 bytes| keyLen bytes   |
//	+------------+------------+-----------+--------+----------------+
//
// Client hello: 2-byte sealedLen, then the 94-byte plaintext below sealed to
// the server key:
//
//	+---------+-----------+--------+----------+--------+----------+
//	| version | blockSize | c2sKey | c2sNonce | s2cKey | s2cNonce |
//	|    2    |     4     |   32   |    12    |   32   |    12    |
//	+---------+-----------+--------+----------+--------+----------+
//
// Then blocks of exactly blockSize bytes in each direction:
//
//	+------------------------------------------------------+---------+
//	| AES-256-GCM(plaintext), nonce = base XOR (0^4 ‖ i)    | tag 16  |
//	+------------------------------------------------------+---------+
//	plaintext = transmission* '#'*        (blockSize − 16 bytes)
//
// A transmission (signature empty on every server transmission):
//
//	signature CRLF corrId CRLF queueId CRLF msg CRLF
//	          |<------------ signed ------------>|
//	msg = CMD [SP params]                       one line, or
//	msg = CMD SP ... size CRLF body CRLF        a binary body (SEND, MSG)
//
// Invariants: a transmission never spans two blocks; a parser never reads past
// the slice it is given; every malformed input yields a SPEC §6 Error, never
// a panic.
package codec
