package codec

import (
	"bytes"
	"testing"
)

// fzBlockKey is vectors.md §4's s2cKey (32 bytes of 0x42); with vectorBase
// its block 0 is the welcome block.
var fzBlockKey = [32]byte{
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
	0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42, 0x42,
}

// fzCipher returns a BlockCipher with key and vectorBase whose next block
// is number ctr (set directly: the counter has no setter).
func fzCipher(t *testing.T, key [32]byte, ctr uint64) *BlockCipher {
	t.Helper()
	var c BlockCipher
	if err := c.Init(key, vectorBase); err != nil {
		t.Fatal(err)
	}
	c.next = ctr
	return &c
}

// fzWelcomeBlock is vectors.md §4's welcome block.
func fzWelcomeBlock(t testing.TB) []byte {
	var c BlockCipher
	if err := c.Init(fzBlockKey, vectorBase); err != nil {
		t.Fatal(err)
	}
	block := make([]byte, MinBlockSize)
	Pad(block[copy(block, Welcome) : len(block)-TagSize])
	if err := c.Seal(block); err != nil {
		t.Fatal(err)
	}
	return block
}

// FuzzBlockOpen checks BlockCipher.Open on arbitrary bytes with the fixed
// key at block number ctr, and Seal→Open of arbitrary plaintext.
//
// Open never panics. A length that is not a block size is ErrBlockSize;
// otherwise Open succeeds exactly when the bytes are what Seal writes for
// their plaintext with this key at this counter (checked by sealing the
// opened plaintext again: AES-GCM is deterministic for a fixed key and
// nonce), and then advances the counter by one and returns the plaintext in
// place; every failure is ErrBlockAuth and leaves the counter alone.
//
// Any plaintext, padded with '#' to a block of 4096<<(sizeSel%5) bytes (or
// the smallest that holds it), seals and opens back to itself at any ctr,
// does not open again (replay) or under another key, and the counter stops
// at MaxBlocks with ErrBlockLimit.
func FuzzBlockOpen(f *testing.F) {
	welcome := fzWelcomeBlock(f)
	f.Add(welcome, uint32(0), uint8(0))
	f.Add(welcome, uint32(1), uint8(0))
	f.Add(welcome[:len(welcome)-1], uint32(0), uint8(1))
	f.Add([]byte("\r\np1\r\n\r\nPING\r\n"), uint32(MaxBlocks-1), uint8(4))
	f.Add(make([]byte, DefaultBlockSize), uint32(7), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, ctr uint32, sizeSel uint8) {
		// Open of the input itself, and of it cut or zero-extended to 4096
		// bytes so that most inputs reach the AEAD.
		fixed := make([]byte, MinBlockSize)
		copy(fixed, data)
		for _, b := range [][]byte{data, fixed} {
			in := bytes.Clone(b)
			rx := fzCipher(t, fzBlockKey, uint64(ctr))
			pt, err := rx.Open(in)
			switch {
			case !ValidBlockSize(len(b)):
				if err != ErrBlockSize || pt != nil || rx.Next() != uint64(ctr) {
					t.Fatalf("%d-byte block: %v, next %d", len(b), err, rx.Next())
				}
			case err != nil:
				if err != ErrBlockAuth || pt != nil || rx.Next() != uint64(ctr) {
					t.Fatalf("rejected block: %v, next %d, want ErrBlockAuth at %d", err, rx.Next(), ctr)
				}
			default:
				if rx.Next() != uint64(ctr)+1 || len(pt) != len(b)-TagSize || &pt[0] != &in[0] {
					t.Fatalf("opened: %d-byte plaintext, next %d", len(pt), rx.Next())
				}
				again := append(bytes.Clone(pt), make([]byte, TagSize)...)
				if err := fzCipher(t, fzBlockKey, uint64(ctr)).Seal(again); err != nil || !bytes.Equal(again, b) {
					t.Fatalf("block %d opened but is not the sealing of its plaintext (%v)", ctr, err)
				}
				if _, err := fzCipher(t, fzBlockKey, uint64(ctr)+1).Open(bytes.Clone(b)); err == nil {
					t.Fatalf("block %d also opens as block %d", ctr, ctr+1)
				}
			}
		}

		// Seal then Open of data as plaintext.
		size := MinBlockSize << (sizeSel % 5)
		for size-TagSize < len(data) && size < MaxBlockSize {
			size *= 2
		}
		block := make([]byte, size)
		Pad(block[copy(block[:size-TagSize], data) : size-TagSize])
		want := bytes.Clone(block[:size-TagSize])
		tx, rx := fzCipher(t, fzBlockKey, uint64(ctr)), fzCipher(t, fzBlockKey, uint64(ctr))
		if err := tx.Seal(block); err != nil {
			t.Fatalf("Seal of a %d-byte block at %d: %v", size, ctr, err)
		}
		sealed := bytes.Clone(block)
		other := fzBlockKey
		other[0] ^= 1
		if _, err := fzCipher(t, other, uint64(ctr)).Open(bytes.Clone(sealed)); err != ErrBlockAuth {
			t.Fatalf("opens under another key: %v", err)
		}
		pt, err := rx.Open(block)
		if err != nil || !bytes.Equal(pt, want) {
			t.Fatalf("Seal then Open at %d: %v", ctr, err)
		}
		if tx.Next() != uint64(ctr)+1 || rx.Next() != uint64(ctr)+1 {
			t.Fatalf("counters %d, %d after block %d", tx.Next(), rx.Next(), ctr)
		}
		// The same block again is a replay: wrong nonce, or no nonces left.
		wantErr := ErrBlockAuth
		if uint64(ctr)+1 == MaxBlocks {
			wantErr = ErrBlockLimit
			if err := tx.Seal(block); err != ErrBlockLimit {
				t.Fatalf("Seal of block MaxBlocks: %v", err)
			}
		}
		if _, err := rx.Open(sealed); err != wantErr || rx.Next() != uint64(ctr)+1 {
			t.Fatalf("replayed block %d: %v, next %d; want %v", ctr, err, rx.Next(), wantErr)
		}
	})
}
