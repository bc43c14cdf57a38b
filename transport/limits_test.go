package transport

import (
	"testing"

	"github.com/smprelay/smprelay/codec"
)

// TestSetConnLimits: zero fields take the defaults, and the idle sweep picks
// up a new timeout.
func TestSetConnLimits(t *testing.T) {
	e := testEngine(t)
	key, err := codec.GenerateKEMKey(codec.KEMX25519)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(ServerOptions{Engine: e, Key: key, Limits: ConnLimits{MaxConns: 5}})
	if err != nil {
		t.Fatal(err)
	}
	if l := s.ConnLimits(); l.MaxConns != 5 || l.BlocksPerSecond != DefaultConnLimits.BlocksPerSecond {
		t.Fatalf("limits %+v", l)
	}
	s.SetConnLimits(ConnLimits{MaxConns: 7, MaxOutbound: 1 << 16})
	l := s.ConnLimits()
	if l.MaxConns != 7 || l.MaxOutbound != 1<<16 || l.IdleTimeout != DefaultConnLimits.IdleTimeout ||
		l.MaxInboundBlocks != DefaultConnLimits.MaxInboundBlocks {
		t.Fatalf("limits %+v", l)
	}
	select {
	case <-s.limChanged:
	default:
		t.Fatal("SetConnLimits did not tell the sweep to re-arm")
	}
}
