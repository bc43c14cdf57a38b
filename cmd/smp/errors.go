package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/smprelay/smprelay/client"
	"github.com/smprelay/smprelay/codec"
)

// pkgPrefix matches the package prefixes that library errors carry ("client:
// ", "codec: "…), at the start of a message or of a wrapped part: the CLI
// prints its own prefix, and wrapping repeats theirs.
var pkgPrefix = regexp.MustCompile(`(^|: )((client|codec|e2e|smp): )+`)

// clean renders an error message for the user, without package prefixes.
func clean(msg string) string { return pkgPrefix.ReplaceAllString(msg, "$1") }

// relayError is a failure to reach or talk to a relay, said in its terms.
type relayError struct {
	addr    string
	proxy   string // the SOCKS5 proxy's HOST:PORT, if any
	timeout time.Duration
	err     error
}

// relayError is err, met connecting to the relay at addr, in the relay's terms.
func (e *env) relayError(addr string, err error) *relayError {
	re := &relayError{addr: addr, timeout: e.timeout, err: err}
	if e.proxy != nil {
		re.proxy = e.proxy.Host
	}
	return re
}

func (e *relayError) Unwrap() error { return e.err }

func (e *relayError) Error() string {
	if errors.Is(e.err, client.ErrFingerprint) {
		msg := clean(e.err.Error())
		if _, keys, ok := strings.Cut(msg, "mismatch: "); ok {
			msg = keys
		}
		return fmt.Sprintf("relay %s has another key than its fingerprint says (%s): compare --fingerprint or SMP_FINGERPRINT "+
			"with what 'smp-server fingerprint' prints on the relay; for an invitation's relay, ask for a new invitation", e.addr, msg)
	}
	switch {
	case errors.Is(e.err, client.ErrOnionNeedsProxy):
		return fmt.Sprintf("relay %s is an onion service, reachable only through Tor: give --proxy socks5://127.0.0.1:9050 "+
			"(Tor's SOCKS port) or set SMP_PROXY; smp does not look onion names up itself", e.addr)
	case errors.Is(e.err, client.ErrProxyUnreachable):
		return fmt.Sprintf("relay %s unreachable: cannot reach the SOCKS5 proxy %s (%s); is Tor, or the proxy, running?",
			e.addr, e.proxy, reason(e.err, e.timeout))
	case e.proxy != "":
		return fmt.Sprintf("relay %s unreachable through the SOCKS5 proxy %s (%s)", e.addr, e.proxy, reason(e.err, e.timeout))
	}
	return fmt.Sprintf("relay %s unreachable (%s)", e.addr, reason(e.err, e.timeout))
}

// retryable reports whether connecting again may succeed: not when the relay
// has another key, and not when the server refused a command.
func retryable(err error) bool {
	var ce codec.Error
	return !errors.Is(err, client.ErrFingerprint) && !errors.As(err, &ce)
}

// reason says briefly why a connection failed, for "unreachable (...)".
func reason(err error, timeout time.Duration) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no such host " + dns.Name
	case errors.As(err, &dns):
		return "looking up " + dns.Name + ": " + dns.Err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("no answer within %v, the --timeout", timeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return "it closed the connection"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	}
	return clean(err.Error())
}

// describe is the message for a command's error: package prefixes removed,
// and a step that timed out named as such.
func describe(err error, timeout time.Duration) string {
	msg := clean(err.Error())
	var re *relayError
	if errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &re) {
		msg += fmt.Sprintf(" (the relay did not answer within %v, the --timeout)", timeout)
	}
	return msg
}

// explained is an error said in the user's terms; errors.Is still sees
// the one it explains (e.g. codec.ErrAuth).
type explained struct {
	err error
	msg string
}

func (e *explained) Error() string { return e.msg }
func (e *explained) Unwrap() error { return e.err }

// fingerprintHelp says what a fingerprint looks like and where to get one.
const fingerprintHelp = "a relay key fingerprint is 44 characters of base64 ending in '=' " +
	"(e.g. sIwSSGRI6rLfFCIQW/yvOPjGwlI3PeGB92iveo2FDD8=), as 'smp-server fingerprint' prints on the relay"

// parseFingerprint checks a fingerprint, base64 of a SHA-256 (SPEC §2), and
// returns it in standard base64. The unpadded base64url form, as in an
// invitation URI, is accepted too.
func parseFingerprint(s string) (string, error) {
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		b, err = base64.RawURLEncoding.Strict().DecodeString(s)
	}
	if err != nil || len(b) != 32 {
		return "", errors.New("not a fingerprint: " + fingerprintHelp)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// fingerprintValue is the --fingerprint flag: checked when it is parsed.
type fingerprintValue struct{ fp string }

func (v *fingerprintValue) String() string { return v.fp }

func (v *fingerprintValue) Set(s string) error {
	fp, err := parseFingerprint(s)
	if err != nil {
		return err
	}
	v.fp = fp
	return nil
}

// missingFingerprint explains a server given without its fingerprint.
func missingFingerprint(addr, from string) error {
	return fmt.Errorf("%s %s is given without its key fingerprint: add --fingerprint or set SMP_FINGERPRINT "+
		"(run 'smp-server fingerprint' on the relay to print it)", from, addr)
}
