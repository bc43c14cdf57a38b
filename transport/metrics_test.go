package transport

import (
	"testing"

	"github.com/panjf2000/gnet/v2"
)

// loopConn is a gnet.Conn that names its event loop, for serverStats.shard.
type loopConn struct {
	gnet.Conn
	el gnet.EventLoop
}

func (c loopConn) EventLoop() gnet.EventLoop { return c.el }

// fakeLoop is a distinct event loop (a pointer, as gnet's are).
type fakeLoop struct{ gnet.EventLoop }

// TestLoopShards: each event loop keeps one shard, loops get different
// shards while there are enough, and shard 0 (sessions outside a Server) is
// never handed to a loop.
func TestLoopShards(t *testing.T) {
	var m serverStats
	loops := make([]*fakeLoop, statShards+3)
	seen := map[int]int{}
	for i := range loops {
		loops[i] = &fakeLoop{}
		got := m.shard(loopConn{el: loops[i]})
		if got < 1 || got >= statShards {
			t.Fatalf("loop %d got shard %d, want 1..%d", i, got, statShards-1)
		}
		if again := m.shard(loopConn{el: loops[i]}); again != got {
			t.Fatalf("loop %d got shard %d, then %d", i, got, again)
		}
		seen[got]++
	}
	if len(seen) != statShards-1 {
		t.Fatalf("%d loops share %d shards, want all %d used", len(loops), len(seen), statShards-1)
	}
	if got := m.shard(loopConn{}); got != 0 {
		t.Fatalf("a connection without a loop got shard %d, want 0", got)
	}
}

// TestHandshakeCountedOnce: whichever of the loop and the handshake timer
// counts an outcome first, a connection's handshake is counted once.
func TestHandshakeCountedOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		order []int
		want  int
	}{
		{"ok, then closed", []int{hsOK, hsClosed}, hsOK},
		{"timeout, then closed", []int{hsTimeout, hsClosed}, hsTimeout},
		{"bad hello, then timeout, then closed", []int{hsBadHello, hsTimeout, hsClosed}, hsBadHello},
		{"closed", []int{hsClosed}, hsClosed},
	} {
		c := &conn{mx: &connStats{}}
		for _, o := range tc.order {
			c.countHandshake(o)
		}
		for o := range numOutcomes {
			want := uint64(0)
			if o == tc.want {
				want = 1
			}
			if got := c.mx.handshakes[o].Load(); got != want {
				t.Errorf("%s: %s counted %d times, want %d", tc.name, HandshakeLabels[o], got, want)
			}
		}
	}
}
