package codec

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// Block framing constants (SPEC §3.3).
const (
	// TagSize is the AES-GCM tag at the end of every block; part of the wire
	// format.
	TagSize = 16
	// MinBlockSize is the smallest block size a server may announce.
	MinBlockSize = 4096
	// MaxBlockSize is the largest block size a server may announce.
	MaxBlockSize = 65536
	// DefaultBlockSize is the block size of a server started without
	// --block-size.
	DefaultBlockSize = 8192
	// MaxBlocks is the number of blocks one direction may carry: a direction
	// never opens or seals block number MaxBlocks.
	MaxBlocks = 1 << 32
	// Padding fills the rest of a block's plaintext; part of the wire format.
	Padding = '#'
)

// Welcome is the start of the server's first block (s2c block 0); the rest
// of its plaintext is padding. Part of the wire format; do not modify.
var Welcome = []byte("SMP/1\r\n")

// Errors of block encryption.
var (
	// ErrBlockLimit reports that a direction has used all MaxBlocks nonces.
	ErrBlockLimit = errors.New("codec: block counter exhausted")
	// ErrBlockAuth reports a block that fails authentication.
	ErrBlockAuth = errors.New("codec: block authentication failed")
	// ErrBlockSize reports a block whose length is not a valid block size.
	ErrBlockSize = errors.New("codec: invalid block size")
	// errBlockInit reports use of a BlockCipher before Init.
	errBlockInit = errors.New("codec: block cipher not initialized")
)

// ValidBlockSize reports whether n is a power of two in
// [MinBlockSize, MaxBlockSize].
func ValidBlockSize(n int) bool {
	return n >= MinBlockSize && n <= MaxBlockSize && n&(n-1) == 0
}

// BlockNonce returns the nonce of block i:
//
//	 0               4                               12
//	+---------------+-------------------------------+
//	| base[0:4]     | base[4:12] XOR uint64(i) BE   |
//	+---------------+-------------------------------+
func BlockNonce(base [12]byte, i uint64) [12]byte {
	binary.BigEndian.PutUint64(base[4:], binary.BigEndian.Uint64(base[4:])^i)
	return base
}

// BlockCipher seals or opens the blocks of one direction of a connection,
// counting block numbers from 0. It is owned by one goroutine and is not
// safe for concurrent use.
type BlockCipher struct {
	aead  cipher.AEAD
	base  [12]byte
	next  uint64
	nonce [12]byte // scratch held here: a stack array passed to the AEAD interface would escape
}

// Init sets the key and base nonce of the direction and resets the block
// counter to 0.
func (b *BlockCipher) Init(key [32]byte, baseNonce [12]byte) error {
	blk, err := aes.NewCipher(key[:])
	if err != nil {
		return fmt.Errorf("codec: block key: %w", err)
	}
	aead, err := cipher.NewGCM(blk)
	if err != nil {
		return fmt.Errorf("codec: block key: %w", err)
	}
	*b = BlockCipher{aead: aead, base: baseNonce}
	return nil
}

// Next returns the number of the next block to seal or open.
func (b *BlockCipher) Next() uint64 { return b.next }

// prepare checks block and the counter and sets b.nonce for block b.next.
func (b *BlockCipher) prepare(block []byte) error {
	if b.aead == nil {
		return errBlockInit
	}
	if !ValidBlockSize(len(block)) {
		return ErrBlockSize
	}
	if b.next >= MaxBlocks {
		return ErrBlockLimit
	}
	b.nonce = BlockNonce(b.base, b.next)
	return nil
}

// Seal encrypts block in place. block has exactly the block size; its
// plaintext is block[:len(block)-TagSize] and the tag is written over the
// last TagSize bytes:
//
//	+--------------------------------------+-----------+
//	| ciphertext (blockSize - 16)          | tag (16)  |
//	+--------------------------------------+-----------+
//
// Seal does not allocate.
func (b *BlockCipher) Seal(block []byte) error {
	if err := b.prepare(block); err != nil {
		return err
	}
	n := len(block) - TagSize
	b.aead.Seal(block[:0], b.nonce[:], block[:n], nil)
	b.next++
	return nil
}

// Open authenticates and decrypts block (laid out as for Seal) in place and
// returns the plaintext, block[:len(block)-TagSize]. It does not allocate.
// On failure the counter does not advance, the block's contents are
// unspecified, and the caller closes the connection.
func (b *BlockCipher) Open(block []byte) ([]byte, error) {
	if err := b.prepare(block); err != nil {
		return nil, err
	}
	pt, err := b.aead.Open(block[:0], b.nonce[:], block, nil)
	if err != nil {
		return nil, ErrBlockAuth
	}
	b.next++
	return pt, nil
}

// Pad fills p with Padding. It copies the filled prefix over the rest,
// doubling it each time: a byte loop cost as much as sealing the block.
func Pad(p []byte) {
	if len(p) == 0 {
		return
	}
	p[0] = Padding
	for n := 1; n < len(p); n *= 2 {
		copy(p[n:], p[:n])
	}
}
