// Package bucket holds the token buckets of the relay's rate limits: Bucket
// for state one goroutine owns (a connection's, on its event loop), Shared
// for state several goroutines take from (a source's, on every loop that
// runs one of its connections).
package bucket

import (
	"sync"
	"time"
)

// Bucket is a token bucket. The zero value is full on first use. Not safe
// for concurrent use.
type Bucket struct {
	tokens float64
	at     int64 // Unix nanoseconds of the last refill
}

// TakePer takes one token from a bucket refilled at rate tokens per period
// up to burst tokens, refilling first.
func (b *Bucket) TakePer(rate, burst float64, period time.Duration, now int64) bool {
	if b.at == 0 {
		b.tokens, b.at = burst, now
	}
	if now > b.at {
		b.tokens = min(burst, b.tokens+rate*float64(now-b.at)/float64(period))
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Take takes one token from a bucket refilled at rate tokens per second up
// to rate, refilling first; when none is left it returns how long until one
// is.
func (b *Bucket) Take(rate int, now int64) (bool, time.Duration) {
	r := float64(rate)
	if b.at == 0 {
		b.tokens, b.at = r, now
	}
	if now > b.at {
		b.tokens = min(r, b.tokens+r*float64(now-b.at)/float64(time.Second))
		b.at = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / r * float64(time.Second))
}

// Shared is a Bucket behind a mutex. Safe for concurrent use.
type Shared struct {
	mu sync.Mutex
	b  Bucket
}

// Take takes a token, the bucket refilled at rate per period up to burst.
func (s *Shared) Take(rate, burst int, period time.Duration, now int64) bool {
	s.mu.Lock()
	ok := s.b.TakePer(float64(rate), float64(burst), period, now)
	s.mu.Unlock()
	return ok
}
