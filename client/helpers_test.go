package client

import (
	"context"
	"testing"
	"time"

	"github.com/smprelay/smprelay/internal/smptest"
)

func TestMain(m *testing.M) { smptest.Main(m) }

// guard bounds a test's waits; see smptest.Guard.
func guard(t *testing.T) context.Context { return smptest.Guard(t) }

// fastOptions reconnect at once and keep the defaults otherwise.
func fastOptions(fp string) Options {
	return Options{Fingerprint: fp, MinBackoff: time.Millisecond, MaxBackoff: 50 * time.Millisecond}
}

func dial(t *testing.T, addr string, opts Options) *Conn {
	t.Helper()
	c, err := Dial(guard(t), addr, opts)
	if err != nil {
		t.Fatalf("Dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// next returns the next event of kind want, failing on any other kind
// except those listed in skip.
func next(t *testing.T, c *Conn, want EventKind, skip ...EventKind) Event {
	t.Helper()
	ctx := guard(t)
	for {
		select {
		case e, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed while waiting for %v (Err %v)", want, c.Err())
			}
			if e.Kind == want {
				return e
			}
			skipped := false
			for _, k := range skip {
				skipped = skipped || e.Kind == k
			}
			if !skipped {
				t.Fatalf("got event %v while waiting for %v", e, want)
			}
		case <-ctx.Done():
			t.Fatalf("no %v event: %v", want, ctx.Err())
		}
	}
}

// nextAny returns the next event, whatever its kind.
func nextAny(t *testing.T, c *Conn) Event {
	t.Helper()
	select {
	case e, ok := <-c.Events():
		if !ok {
			t.Fatalf("events closed (Err %v)", c.Err())
		}
		return e
	case <-guard(t).Done():
		t.Fatal("no event")
	}
	return Event{}
}
