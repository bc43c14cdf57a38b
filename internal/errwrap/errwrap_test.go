package errwrap

import (
	"errors"
	"fmt"
	"io"
	"testing"
)

func TestWrap(t *testing.T) {
	errMismatch := errors.New("client: fingerprint mismatch")
	errLost := errors.New("client: connection lost")
	for _, tc := range []struct {
		head, err error
		want      string
	}{
		{errors.New("client: handshake"), fmt.Errorf("%w: key x", errMismatch), "client: handshake: fingerprint mismatch: key x"},
		{errLost, fmt.Errorf("reading: %w", io.EOF), "client: connection lost: reading: EOF"},
		{errors.New("codec: malformed invitation: key"), errors.New("codec: bad key"), "codec: malformed invitation: key: bad key"},
		{errors.New("client: SEND"), errors.New("smp: ERR AUTH"), "client: SEND: smp: ERR AUTH"}, // another package's prefix stays
		{errors.New("no prefix"), errors.New("client: x"), "no prefix: client: x"},
	} {
		err := Wrap(tc.head, tc.err)
		if got := err.Error(); got != tc.want {
			t.Errorf("Wrap(%q, %q) = %q, want %q", tc.head, tc.err, got, tc.want)
		}
		if !errors.Is(err, tc.head) || !errors.Is(err, tc.err) {
			t.Errorf("Wrap(%q, %q) does not unwrap to both", tc.head, tc.err)
		}
	}
	if err := Wrap(errLost, fmt.Errorf("%w: key x", errMismatch)); !errors.Is(err, errMismatch) {
		t.Errorf("%v does not unwrap to what err wraps", err)
	}
}
