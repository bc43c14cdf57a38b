package codec

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"testing"
)

var vectorBase = [12]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}

func TestValidBlockSize(t *testing.T) {
	for n, want := range map[int]bool{
		0: false, -4096: false, 2048: false, 4095: false, 4096: true, 6144: false,
		8192: true, 16384: true, 32768: true, 65536: true, 65537: false, 131072: false,
	} {
		if got := ValidBlockSize(n); got != want {
			t.Errorf("ValidBlockSize(%d) = %v", n, got)
		}
	}
	if !ValidBlockSize(DefaultBlockSize) {
		t.Error("default block size invalid")
	}
}

// TestVectorBlockNonce reproduces vectors.md §3.
func TestVectorBlockNonce(t *testing.T) {
	for _, tc := range []struct {
		i    uint64
		want string
	}{
		{0, "000102030405060708090a0b"},
		{1, "000102030405060708090a0a"},
		{258, "000102030405060708090b09"},
		{MaxBlocks - 1, "0001020304050607f7f6f5f4"},
	} {
		n := BlockNonce(vectorBase, tc.i)
		if got := hex.EncodeToString(n[:]); got != tc.want {
			t.Errorf("BlockNonce(%d) = %s, want %s", tc.i, got, tc.want)
		}
	}
}

// TestVectorWelcome reproduces vectors.md §4.
func TestVectorWelcome(t *testing.T) {
	var key [32]byte
	for i := range key {
		key[i] = 0x42
	}
	var c BlockCipher
	if err := c.Init(key, vectorBase); err != nil {
		t.Fatal(err)
	}
	block := make([]byte, 4096)
	n := copy(block, Welcome)
	Pad(block[n : len(block)-TagSize])
	if got := bytes.Count(block, []byte{'#'}); got != 4073 {
		t.Fatalf("%d padding bytes, want 4073", got)
	}
	if err := c.Seal(block); err != nil {
		t.Fatal(err)
	}
	if len(block) != 4096 {
		t.Errorf("block length %d", len(block))
	}
	if got, want := hex.EncodeToString(block[:32]), "5693c1f28021f828be256730f2fe781811beed49836ac1ca30ba0304b9379edc"; got != want {
		t.Errorf("first 32 bytes = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(block[len(block)-TagSize:]), "6af49f0da8b02fb9d4ceaca766a041ce"; got != want {
		t.Errorf("tag = %s, want %s", got, want)
	}
	sum := sha256.Sum256(block)
	if got, want := hex.EncodeToString(sum[:]), "1b5caaeb8493217e745f55e9e66a4f079d165d099a0e5a1e729b263847e7d668"; got != want {
		t.Errorf("SHA-256 = %s, want %s", got, want)
	}
	var r BlockCipher
	r.Init(key, vectorBase)
	pt, err := r.Open(block)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(pt, Welcome) || len(pt) != 4096-TagSize || r.Next() != 1 {
		t.Errorf("opened welcome %q..., %d bytes, next %d", pt[:8], len(pt), r.Next())
	}
}

func newPair(t testing.TB) (s, r *BlockCipher) {
	t.Helper()
	key := [32]byte{1, 2, 3}
	nonce := [12]byte{9, 8, 7}
	s, r = new(BlockCipher), new(BlockCipher)
	if err := s.Init(key, nonce); err != nil {
		t.Fatal(err)
	}
	if err := r.Init(key, nonce); err != nil {
		t.Fatal(err)
	}
	return s, r
}

func TestBlockRoundTrip(t *testing.T) {
	s, r := newPair(t)
	for i := range 5 {
		block := make([]byte, DefaultBlockSize)
		Pad(block[:len(block)-TagSize])
		block[0] = byte(i)
		want := bytes.Clone(block[:len(block)-TagSize])
		if err := s.Seal(block); err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(block[:len(want)], want) {
			t.Fatal("Seal did not encrypt")
		}
		pt, err := r.Open(block)
		if err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if !bytes.Equal(pt, want) || &pt[0] != &block[0] {
			t.Fatalf("block %d: wrong or moved plaintext", i)
		}
		if s.Next() != uint64(i+1) || r.Next() != uint64(i+1) {
			t.Fatalf("counters %d, %d after block %d", s.Next(), r.Next(), i)
		}
	}
}

func TestBlockOpenRejects(t *testing.T) {
	sealed := func(s *BlockCipher) []byte {
		block := make([]byte, MinBlockSize)
		Pad(block)
		if err := s.Seal(block); err != nil {
			t.Fatal(err)
		}
		return block
	}
	for _, tc := range []struct {
		name   string
		mangle func(s, r *BlockCipher) []byte
	}{
		{"flipped ciphertext byte", func(s, r *BlockCipher) []byte { b := sealed(s); b[100] ^= 1; return b }},
		{"flipped first byte", func(s, r *BlockCipher) []byte { b := sealed(s); b[0] ^= 0x80; return b }},
		{"flipped tag byte", func(s, r *BlockCipher) []byte { b := sealed(s); b[len(b)-1] ^= 1; return b }},
		{"block 1 opened as block 0", func(s, r *BlockCipher) []byte { sealed(s); return sealed(s) }},
		{"block 0 opened as block 1", func(s, r *BlockCipher) []byte {
			b := sealed(s)
			r.next = 1
			return b
		}},
		{"wrong key", func(s, r *BlockCipher) []byte {
			r.Init([32]byte{0xff}, [12]byte{9, 8, 7})
			return sealed(s)
		}},
		{"wrong base nonce", func(s, r *BlockCipher) []byte {
			r.Init([32]byte{1, 2, 3}, [12]byte{9, 8, 6})
			return sealed(s)
		}},
	} {
		s, r := newPair(t)
		b := tc.mangle(s, r)
		before := r.Next()
		if _, err := r.Open(b); !errors.Is(err, ErrBlockAuth) {
			t.Errorf("%s: error = %v, want ErrBlockAuth", tc.name, err)
		}
		if r.Next() != before {
			t.Errorf("%s: counter advanced on failure", tc.name)
		}
	}
}

func TestBlockMisuse(t *testing.T) {
	var z BlockCipher
	if err := z.Seal(make([]byte, MinBlockSize)); err == nil {
		t.Error("uninitialized Seal succeeded")
	}
	if _, err := z.Open(make([]byte, MinBlockSize)); err == nil {
		t.Error("uninitialized Open succeeded")
	}
	s, r := newPair(t)
	for _, n := range []int{0, 1, TagSize, 4095, 4097, 6144, 2 * MaxBlockSize} {
		if err := s.Seal(make([]byte, n)); !errors.Is(err, ErrBlockSize) {
			t.Errorf("Seal(%d bytes) error = %v", n, err)
		}
		if _, err := r.Open(make([]byte, n)); !errors.Is(err, ErrBlockSize) {
			t.Errorf("Open(%d bytes) error = %v", n, err)
		}
	}
	if s.Next() != 0 || r.Next() != 0 {
		t.Error("counter advanced on misuse")
	}
}

// TestBlockLimit checks that block MaxBlocks-1 is the last one either way.
func TestBlockLimit(t *testing.T) {
	s, r := newPair(t)
	s.next, r.next = MaxBlocks-1, MaxBlocks-1 // test hook: same package
	block := make([]byte, MinBlockSize)
	if err := s.Seal(block); err != nil {
		t.Fatalf("Seal of block 2^32-1: %v", err)
	}
	if _, err := r.Open(block); err != nil {
		t.Fatalf("Open of block 2^32-1: %v", err)
	}
	if s.Next() != MaxBlocks || r.Next() != MaxBlocks {
		t.Fatalf("counters %d, %d", s.Next(), r.Next())
	}
	other := make([]byte, MinBlockSize)
	if err := s.Seal(other); !errors.Is(err, ErrBlockLimit) {
		t.Errorf("Seal of block 2^32: error = %v", err)
	}
	if _, err := r.Open(block); !errors.Is(err, ErrBlockLimit) {
		t.Errorf("Open of block 2^32: error = %v", err)
	}
	if s.Next() != MaxBlocks || r.Next() != MaxBlocks {
		t.Errorf("counters moved past the limit: %d, %d", s.Next(), r.Next())
	}
}

func TestBlockInitResets(t *testing.T) {
	s, _ := newPair(t)
	s.Seal(make([]byte, MinBlockSize))
	if err := s.Init([32]byte{}, [12]byte{}); err != nil || s.Next() != 0 {
		t.Errorf("Init: %v, next %d", err, s.Next())
	}
}

func TestBlockAllocs(t *testing.T) {
	s, r := newPair(t)
	block := make([]byte, DefaultBlockSize)
	if n := testing.AllocsPerRun(100, func() {
		Pad(block[:len(block)-TagSize])
		if err := s.Seal(block); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Open(block); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Seal+Open allocate %v times", n)
	}
}

func TestPad(t *testing.T) {
	p := make([]byte, 10)
	Pad(p[2:])
	if string(p[2:]) != "########" || p[0] != 0 || p[1] != 0 {
		t.Errorf("Pad = %q", p)
	}
	Pad(nil)
	// Lengths around the powers of two Pad doubles through, and a whole block.
	for _, n := range []int{1, 2, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, DefaultBlockSize - TagSize} {
		buf := make([]byte, n+2)
		Pad(buf[1 : n+1])
		if buf[0] != 0 || buf[n+1] != 0 {
			t.Errorf("Pad of %d bytes wrote outside its slice", n)
		}
		if i := bytes.IndexFunc(buf[1:n+1], func(r rune) bool { return r != Padding }); i >= 0 {
			t.Errorf("Pad of %d bytes left byte %d as %q", n, i, buf[1+i])
		}
	}
}

func BenchmarkBlockSeal8192(b *testing.B) {
	s, _ := newPair(b)
	block := make([]byte, 8192)
	b.SetBytes(int64(len(block)))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Seal(block); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkBlockOpen8192(b *testing.B) {
	s, r := newPair(b)
	sealed := make([]byte, 8192)
	Pad(sealed)
	if err := s.Seal(sealed); err != nil {
		b.Fatal(err)
	}
	block := make([]byte, len(sealed))
	b.SetBytes(int64(len(block)))
	b.ReportAllocs()
	for b.Loop() {
		copy(block, sealed)
		r.next = 0 // reopen the same block 0
		if _, err := r.Open(block); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPad pads the rest of a block after one short transmission, as the
// server does for most blocks it sends.
func BenchmarkPad(b *testing.B) {
	blk := make([]byte, DefaultBlockSize)
	b.SetBytes(int64(DefaultBlockSize - TagSize - 64))
	for b.Loop() {
		Pad(blk[64 : DefaultBlockSize-TagSize])
	}
}
