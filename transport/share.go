package transport

import (
	"crypto/rand"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/smprelay/smprelay/codec"
)

// shareLifetime is how long one X25519 share goes into the hellos of new
// connections: SPEC §3.1 allows up to 60 s, which saves a key generation per
// handshake while keeping forward secrecy to about a minute's traffic.
const shareLifetime = 60 * time.Second

// shareDead marks a share whose private key has been dropped.
const shareDead = math.MinInt64 / 2

// serverShare is the server's ephemeral X25519 key (SPEC §3.1). Connections
// take a reference when their hello carries it and give it back when their
// handshake finishes, fails or times out; once the share is retired (a newer
// one serves new connections) and the last reference is back, the private
// key is dropped (SPEC §3.1: erased once every handshake it was sent in has
// finished): the scalar is zeroed then (codec.X25519Key.Erase).
type serverShare struct {
	priv    *codec.X25519Key // nil once dropped; read only by holders of a reference
	pub     [32]byte
	born    time.Time
	users   atomic.Int64 // references held; shareDead once dropped
	retired atomic.Bool
}

func newServerShare(now time.Time) (*serverShare, error) {
	var scalar [32]byte
	defer clear(scalar[:])
	if _, err := rand.Read(scalar[:]); err != nil {
		return nil, fmt.Errorf("transport: server share: %w", err)
	}
	priv, err := codec.NewX25519Key(scalar[:])
	if err != nil {
		return nil, fmt.Errorf("transport: server share: %w", err)
	}
	sh := &serverShare{priv: priv, born: now}
	copy(sh.pub[:], priv.PublicKey().Bytes())
	return sh, nil
}

// acquire takes a reference unless the share is already dropped.
func (sh *serverShare) acquire() bool {
	for {
		n := sh.users.Load()
		if n < 0 {
			return false
		}
		if sh.users.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release gives a reference back, dropping the key if it was the last one of
// a retired share.
func (sh *serverShare) release() {
	if sh.users.Add(-1) == 0 && sh.retired.Load() {
		sh.drop()
	}
}

// retire stops new references from being handed out by shares (the caller
// has replaced it) and drops the key if nobody holds it.
func (sh *serverShare) retire() {
	sh.retired.Store(true)
	sh.drop()
}

// drop drops the key if no reference is held; whoever wins the swap to
// shareDead does it, so it runs once.
func (sh *serverShare) drop() {
	if sh.users.CompareAndSwap(0, shareDead) {
		sh.priv.Erase()
		sh.priv = nil
	}
}

// shares hands out the current share and makes a new one every
// shareLifetime. current is read lock-free by every loop; mu serialises the
// rotation, once a minute.
type shares struct {
	current atomic.Pointer[serverShare]
	mu      sync.Mutex
}

// acquire returns the share for a new connection's hello, with a reference
// taken. Safe for concurrent use.
func (s *shares) acquire(now time.Time) (*serverShare, error) {
	for {
		sh := s.current.Load()
		if sh == nil || now.Sub(sh.born) >= shareLifetime {
			var err error
			if sh, err = s.rotate(now); err != nil {
				return nil, err
			}
		}
		if sh.acquire() {
			return sh, nil
		}
		// Retired and dropped between the load and the reference: a newer
		// share is current by now.
	}
}

// rotate replaces an expired share and returns the current one.
func (s *shares) rotate(now time.Time) (*serverShare, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.current.Load()
	if old != nil && now.Sub(old.born) < shareLifetime {
		return old, nil // another loop rotated first
	}
	sh, err := newServerShare(now)
	if err != nil {
		return nil, err
	}
	s.current.Store(sh)
	if old != nil {
		old.retire()
	}
	// Retired when its minute is up even if no connection comes to replace
	// it: an idle relay must not keep the key (SPEC §3.1).
	time.AfterFunc(shareLifetime, func() { s.expire(sh) })
	return sh, nil
}

// expire retires sh if it is still current; its key is dropped once the
// last handshake it was sent in has ended. Safe for concurrent use.
func (s *shares) expire(sh *serverShare) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current.CompareAndSwap(sh, nil) {
		sh.retire()
	}
}
