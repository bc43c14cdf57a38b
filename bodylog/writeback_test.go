package bodylog

import (
	"math/rand/v2"
	"testing"

	"github.com/smprelay/smprelay/internal/vfs"
)

// TestWritebackHints: with WritebackHints, Flush asks for writeback of the
// segment being written once per writebackHintBytes written, and not more
// often; without it, never.
func TestWritebackHints(t *testing.T) {
	for _, on := range []bool{false, true} {
		var hints []vfs.File
		writeback = func(f vfs.File) { hints = append(hints, f) }
		l := openT(t, t.TempDir(), Options{WritebackHints: on})
		r := rand.New(rand.NewPCG(1, 2))
		const n = 3*writebackHintBytes/8192 + 10 // a little over 3 MiB of records
		for range n {
			m := newMsg(r, 8192-recordHeaderSize)
			if _, err := l.Append(m.rid, m.id, m.body); err != nil {
				t.Fatal(err)
			}
			if err := l.Flush(); err != nil {
				t.Fatal(err)
			}
		}
		want := 0
		if on {
			want = 3
		}
		if len(hints) != want {
			t.Errorf("WritebackHints %v: %d hints for %d bytes written, want %d", on, len(hints), n*8192, want)
		}
		for _, f := range hints {
			if f != l.cur.f {
				t.Errorf("a hint for %v, not the segment being written", f)
			}
		}
		writeback = startWriteback
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
