package codec

import (
	"bytes"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

// FuzzInvitation checks ParseInvitation on arbitrary text. It never panics;
// a failure wraps ErrInvitation and returns the zero value. A parsed
// invitation holds checked fields (a key, a 16-byte sender ID, a 32-byte
// fingerprint, a host), prints with Text and URI to forms that parse back to
// the same fields and print the same again, and its Addr splits back into
// its host and port. The printed form is the input itself when the input was
// already canonical: the text form with CRLF line ends, the URI form with a
// lower-case scheme (leading and trailing white space aside).
func FuzzInvitation(f *testing.F) {
	const (
		ek   = "AoUg8AmJMKdUdIt93LQ+91oNvzoNJjga9OukqY6qm05q"
		sid  = "AQIDBAUGBwgJCgsMDQ4PEA=="
		fp   = "VlJ8/8GyjK16/MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc="
		text = ek + "\r\n" + sid + "\r\nrelay.example:5223\r\n" + fp
		uri  = "smp://VlJ8_8GyjK16_MCwIiQJ5oDnwyh2ddn7IdkGORC1jYc@relay.example:5223/AQIDBAUGBwgJCgsMDQ4PEA#AoUg8AmJMKdUdIt93LQ-91oNvzoNJjga9OukqY6qm05q"
	)
	for _, s := range []string{
		text, uri, // vectors.md §5
		text + "\r\n",
		strings.ReplaceAll(text, "\r\n", "\n"),
		strings.Replace(text, "relay.example:5223", "relay.example", 1),
		strings.Replace(text, "relay.example:5223", "[2001:db8::1]:443", 1),
		strings.Replace(text, "relay.example:5223", "192.0.2.1:05223", 1),
		strings.Replace(uri, "relay.example:5223", "[::1]", 1),
		strings.Replace(uri, "smp://", "SMP://", 1),
		uri + "?x=1",
		strings.Replace(uri, "AQIDBAUGBwgJCgsMDQ4PEA", "AQIDBAUGBwgJCgsMDQ4PEA==", 1),
		"smp://",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		inv, err := ParseInvitation(s)
		if err != nil {
			if !errors.Is(err, ErrInvitation) || inv.EncryptionKey != nil || inv.SenderID != nil || inv.Host != "" {
				t.Fatalf("ParseInvitation(%q): %+v, %v", s, inv, err)
			}
			return
		}
		if inv.EncryptionKey == nil || len(inv.SenderID) != QueueIDSize || inv.Host == "" ||
			len(inv.ServerKeyHash) != 44 || !strings.HasSuffix(inv.ServerKeyHash, "=") {
			t.Fatalf("ParseInvitation(%q) = %+v", s, inv)
		}
		text, uri := inv.Text(), inv.URI()
		for _, form := range []string{text, uri} {
			got, err := ParseInvitation(form)
			if err != nil {
				t.Fatalf("%q printed as %q, which does not parse: %v", s, form, err)
			}
			if !bytes.Equal(got.EncryptionKey.Bytes(), inv.EncryptionKey.Bytes()) || !bytes.Equal(got.SenderID, inv.SenderID) ||
				got.Host != inv.Host || got.Port != inv.Port || got.ServerKeyHash != inv.ServerKeyHash {
				t.Fatalf("%q printed as %q parses to %+v, want %+v", s, form, got, inv)
			}
			if got.Text() != text || got.URI() != uri {
				t.Fatalf("%q: printing is not stable: %q, %q", s, got.Text(), got.URI())
			}
		}
		in := strings.TrimSpace(s)
		isURI := strings.HasPrefix(strings.ToLower(in), URIScheme+"://")
		if canonical := isURI && strings.HasPrefix(in, URIScheme+"://") ||
			!isURI && strings.Count(in, "\n") == strings.Count(in, "\r\n"); canonical != (in == text || in == uri) {
			t.Fatalf("%q prints as %q and %q (canonical %v)", s, text, uri, canonical)
		}
		host, port, err := net.SplitHostPort(inv.Addr())
		want := int(inv.Port)
		if want == 0 {
			want = DefaultPort
		}
		if err != nil || host != inv.Host || port != strconv.Itoa(want) {
			t.Fatalf("Addr() = %q for host %q port %d", inv.Addr(), inv.Host, inv.Port)
		}
	})
}
